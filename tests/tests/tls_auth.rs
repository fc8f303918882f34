//! HTTPS and basic auth from a web config file, end to end, with a certificate made here.

use std::{io::Write, net::TcpStream, sync::Arc, time::Duration};

use base64::Engine;
use tests::{get_json, tls::setup, Daemon, Spawn};

/// The Authorization header for basic auth.
fn basic(user: &str, password: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {creds}")
}

fn tls_agent(ca_pem: Option<&str>) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(Duration::from_secs(10))
        .build()
}

#[test]
fn https_with_basic_auth() {
    let s = setup("correct horse");
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--web-config",
        s.web.to_str().unwrap(),
    ]);
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    let url = format!("{}/stats?top=1", daemon.base);
    let agent = tls_agent(Some(&s.ca_pem));

    let (status, body) = get_json(&agent, &url, None);
    assert_eq!(status, 401, "no credentials: {body}");
    let (status, _) = get_json(&agent, &url, Some(&basic("alice", "wrong")));
    assert_eq!(status, 401, "wrong password");
    let (status, _) = get_json(&agent, &url, Some(&basic("mallory", "correct horse")));
    assert_eq!(status, 401, "unknown user");
    let (status, body) = get_json(&agent, &url, Some(&basic("alice", "correct horse")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema_version"], 2);
    // Auth covers every endpoint but /healthz, which liveness probes reach without
    // credentials.
    for path in ["/metrics", "/", "/history", "/insights"] {
        let (status, _) = get_json(&agent, &format!("{}{path}", daemon.base), None);
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = get_json(&agent, &format!("{}/healthz", daemon.base), None);
    assert_eq!((status, body.as_str()), (200, Some("ok\n")));

    let r = ureq::get(&url)
        .set("Authorization", &basic("alice", "wrong"))
        .call();
    match r {
        Err(ureq::Error::Status(401, resp)) => assert_eq!(
            resp.header("WWW-Authenticate"),
            Some("Basic realm=\"syscall-profiler\"")
        ),
        // The default agent does not trust our certificate: also a refusal, before any auth.
        Err(ureq::Error::Transport(_)) => {}
        other => panic!("unexpected {other:?}"),
    }

    // A client that does not trust the certificate cannot talk to it.
    let untrusting = tls_agent(None);
    assert!(matches!(
        untrusting.get(&url).call(),
        Err(ureq::Error::Transport(_))
    ));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let addr = daemon.base.trim_start_matches("https://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("200 OK"),
        "plain HTTP must not be served"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_bad_web_config_exits_2_naming_it() {
    tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.toml");
    std::fs::write(&web, "[basic_auth_users]\nalice = \"not-a-hash\"\n").unwrap();
    let (code, stderr) = Spawn::new(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--web-config",
        web.to_str().unwrap(),
    ])
    .output();
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("basic_auth_users.alice"), "{stderr}");
}

/// Waits until `needle` is in the daemon's log `times` times.
fn wait_log_times(daemon: &tests::Daemon, needle: &str, times: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon.stderr().matches(needle).count() < times {
        assert!(
            std::time::Instant::now() < deadline,
            "'{needle}' not {times} times in the log:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_refuses_an_empty_users_table_and_logs_who_may_connect() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.toml");
    let users = |pairs: &[(&str, &str)]| {
        let mut text = String::from("[basic_auth_users]\n");
        for (user, password) in pairs {
            text.push_str(&format!(
                "{user} = \"{}\"\n",
                bcrypt::hash(password, 4).unwrap()
            ));
        }
        text
    };
    std::fs::write(&web, users(&[("alice", "a")])).unwrap();
    let daemon = Daemon::start(&["--web-config", web.to_str().unwrap()]);
    let agent = daemon.agent();
    // Not /healthz: it needs no credentials.
    let metrics = format!("{}/metrics", daemon.base);
    let status = |auth: Option<&str>| get_json(&agent, &metrics, auth).0;
    assert_eq!(status(None), 401);

    // An empty table would be no authentication at all: refused, the users stay.
    std::fs::write(&web, "[basic_auth_users]\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reload refused", Duration::from_secs(5));
    assert!(
        daemon.stderr().contains("[basic_auth_users] is empty"),
        "{}",
        daemon.stderr()
    );
    assert_eq!(status(None), 401, "authentication must stay on");
    assert_eq!(status(Some(&basic("alice", "a"))), 200);

    std::fs::write(&web, users(&[("alice", "a2"), ("bob", "b")])).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(
        "basic auth users changed: added: bob; new password: alice",
        Duration::from_secs(5),
    );
    wait_log_times(&daemon, "configuration reloaded", 1);
    assert_eq!(status(Some(&basic("bob", "b"))), 200);
    assert_eq!(status(Some(&basic("alice", "a"))), 401, "old password");

    // Leaving the table out is how authentication is turned off, and the log says so.
    std::fs::write(&web, "").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(
        "basic auth turned off: every client is served",
        Duration::from_secs(5),
    );
    wait_log_times(&daemon, "configuration reloaded", 2);
    assert_eq!(status(None), 200);
    assert_eq!(daemon.terminate(), Some(0));
}
