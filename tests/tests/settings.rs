//! Settings from file, environment and flags in a running daemon; SIGHUP reload; HTTP limits.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use tests::{process, run_workload, Daemon, Spawn};

fn write_config(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn file_env_and_flags_layer_and_sighup_applies_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    write_config(
        &config,
        "listen = \"127.0.0.1:0\"\ninterval = \"300ms\"\nretention = \"1h\"\nmax_connections = 50\n",
    );
    let daemon = Spawn::new(&["serve", "--config", config.to_str().unwrap()])
        .env("SYSCALL_PROFILER_INTERVAL", "100ms")
        .start();
    let s = daemon.stats("");
    assert_eq!(
        s["host"]["interval_ms"], 100,
        "the environment beats the file"
    );

    let run = run_workload(10, 0, 0);
    let query = format!("?pid={}", run.child_pid);
    daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_some_and(|p| p["exited"] == true)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        process(&daemon.stats(&query), run.child_pid).is_some(),
        "kept for the file's 1h retention"
    );

    // A broken file is refused; the daemon keeps running on what it had.
    write_config(&config, "retention = \"soon\"\n");
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reload refused", Duration::from_secs(5));
    assert!(
        daemon.stderr().contains("key 'retention'"),
        "{}",
        daemon.stderr()
    );
    assert!(process(&daemon.stats(&query), run.child_pid).is_some());

    write_config(
        &config,
        "listen = \"127.0.0.1:0\"\ninterval = \"300ms\"\nretention = \"0s\"\nmax_connections = 60\n",
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("configuration reloaded", Duration::from_secs(5));
    assert!(
        daemon
            .stderr()
            .contains("max_connections changed: it takes effect at the next restart"),
        "{}",
        daemon.stderr()
    );
    daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_none()
    });
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn an_oversized_answer_is_refused_with_400_not_truncated() {
    let daemon = Daemon::start(&["--interval", "100ms", "--max-response-bytes", "1KiB"]);
    // A syscall number nothing makes: a small answer, under the limit.
    daemon.wait_for("?syscall=999", Duration::from_secs(10), |s| {
        s["host"]["drains"].as_u64().unwrap() >= 2
    });
    let (status, body) = daemon.get("/stats");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_response_bytes"),
        "{body}"
    );
    let (status, _) = daemon.get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let daemon = Daemon::start(&["--request-timeout", "300ms"]);
    let addr = daemon.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // EOF (possibly after a 408) instead of waiting forever for the rest of the headers.
    let _ = conn.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "connection held {waited:?} with incomplete headers"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // And the daemon still serves others.
    assert_eq!(daemon.get("/healthz").0, 200);
}

#[test]
fn a_log_level_that_would_silence_the_log_is_refused_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    write_config(&config, "listen = \"127.0.0.1:0\"\nlog_level = \"info\"\n");
    let daemon = Spawn::new(&["serve", "--config", config.to_str().unwrap()]).start();

    write_config(&config, "listen = \"127.0.0.1:0\"\nlog_level = \"loud\"\n");
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reload refused", Duration::from_secs(5));
    assert!(
        daemon
            .stderr()
            .contains("key 'log_level': 'loud' is not a log filter"),
        "{}",
        daemon.stderr()
    );

    // The running filter stays: the next refusal is still logged.
    write_config(&config, "listen = \"127.0.0.1:0\"\nretention = \"soon\"\n");
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("key 'retention'", Duration::from_secs(5));

    write_config(
        &config,
        "listen = \"127.0.0.1:0\"\nretention = \"0s\"\nlog_level = \"debug\"\n",
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(
        "configuration reloaded: retention 5m → 0s, log_level info → debug",
        Duration::from_secs(5),
    );
    assert_eq!(daemon.terminate(), Some(0));
}
