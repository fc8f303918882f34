//! Answers kept between drains (profiler/src/http/cache.rs), end to end: an answer is the store
//! as of the last drain, never older (a workload's calls appear once a drain that ran after it
//! commits); many clients asking at once for the same answer all get it whole, the same bytes
//! for the same drain, rendered once per drain; and a kept answer goes to no one the
//! authentication layer refuses.

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{get_json, run_workload, syscall, Daemon};

/// The drain an answer of /stats is as of.
fn drains(stats: &Value) -> u64 {
    stats["host"]["drains"].as_u64().expect("host.drains")
}

/// getppid() calls the daemon counted system-wide, in an answer to `QUERY`.
fn getppid_calls(stats: &Value) -> u64 {
    syscall(&stats["syscalls"], "getppid").map_or(0, |s| s["count"].as_u64().unwrap())
}

/// One query, asked again and again: every request gets the answer kept for it until a drain
/// commits.
const QUERY: &str = "?syscall=getppid&syscalls=1&limit=1";

#[test]
fn an_answer_changes_at_the_next_drain_and_never_goes_back() {
    let daemon = Daemon::start(&["--interval", "300ms"]);
    let before = daemon.stats(QUERY);
    const CALLS: u32 = 5000;
    run_workload(CALLS, 0, 0);
    // Asked once the workload has exited: the answer may still be one kept from before it (at
    // drain `d`). A drain that commits after this one started reading the kernel after this
    // request, so every answer as of `d + 2` or later counts all the calls.
    let d = drains(&daemon.stats(QUERY));
    let mut last = d;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = daemon.stats(QUERY);
        let now = drains(&s);
        assert!(
            now >= last,
            "an answer as of drain {now} came after one as of drain {last}"
        );
        last = now;
        if now >= d + 2 {
            assert!(
                getppid_calls(&s) >= getppid_calls(&before) + u64::from(CALLS),
                "as of drain {now} (the workload ended before drain {d} + 1 committed), \
                 getppid: {} before, {} now",
                getppid_calls(&before),
                getppid_calls(&s)
            );
        }
        if now >= d + 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the answer stayed as of drain {now} for 30 s (from drain {d})"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `clients` threads, each asking `each` times for `path` on its own keep-alive connection
/// (with `headers`): every answer's status and body.
fn ask_at_once(
    daemon: &Daemon,
    path: &str,
    clients: usize,
    each: usize,
    headers: &[(&str, &str)],
) -> Vec<(u16, String)> {
    let url = format!("{}{path}", daemon.base);
    thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let url = &url;
                s.spawn(move || {
                    let agent = daemon.agent();
                    (0..each)
                        .map(|_| {
                            let mut req = agent.get(url);
                            for (k, v) in headers {
                                req = req.set(k, v);
                            }
                            let resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
                            let status = resp.status();
                            let mut body = String::new();
                            std::io::Read::read_to_string(&mut resp.into_reader(), &mut body)
                                .expect("a whole body");
                            (status, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect()
    })
}

/// Every sample line of a Prometheus text body is `name[{labels}] value`, and it ends with a
/// newline: the body is whole.
fn assert_whole_exposition(body: &str) {
    assert!(
        body.ends_with('\n'),
        "cut short: …{}",
        &body[body.len().saturating_sub(200)..]
    );
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
    }
}

#[test]
fn clients_asking_at_once_get_whole_answers_the_same_bytes_per_drain() {
    let daemon = Daemon::start(&["--interval", "1s"]);
    // Something to render: a few hundred processes, gone by the time the clients ask.
    tests::workload(&["storm", "300"]);
    let wait = Duration::from_secs(30);
    let first = drains(&daemon.wait_for("", wait, |s| drains(s) >= 2));
    const CLIENTS: usize = 50;
    const EACH: usize = 6;

    let stats = ask_at_once(&daemon, "/stats", CLIENTS, EACH, &[]);
    let insights = ask_at_once(&daemon, "/insights", CLIENTS, EACH, &[]);
    let metrics = ask_at_once(&daemon, "/metrics", CLIENTS, EACH, &[]);
    let last = drains(&daemon.stats(""));
    let drains_seen = (last - first + 1) as usize;

    let mut by_drain: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (status, body) in &stats {
        assert_eq!(*status, 200, "{body}");
        let v: Value = serde_json::from_str(body).expect("a whole JSON answer");
        assert_eq!(v["schema_version"], 2);
        by_drain.entry(drains(&v)).or_default().insert(body);
    }
    for (d, bodies) in &by_drain {
        assert_eq!(
            bodies.len(),
            1,
            "/stats answers as of drain {d} differ: every request between two drains gets \
             the same bytes"
        );
    }

    let mut distinct = BTreeSet::new();
    for (status, body) in &insights {
        assert_eq!(*status, 200, "{body}");
        let v: Value = serde_json::from_str(body).expect("a whole JSON answer");
        assert_eq!(v["schema_version"], 2);
        distinct.insert(body);
    }
    assert!(
        distinct.len() <= drains_seen,
        "{} different /insights answers over {drains_seen} drains",
        distinct.len()
    );

    // Each /metrics render reads the daemon's own CPU time and the scrapes so far, so two
    // renders differ: at most two distinct bodies per drain (the drain commits the store, then
    // its own cost) means the 300 scrapes shared their renders.
    let mut distinct = BTreeSet::new();
    for (status, body) in &metrics {
        assert_eq!(*status, 200, "{body}");
        assert_whole_exposition(body);
        assert!(body.contains("syscall_profiler_drains_total "), "{body}");
        distinct.insert(body);
    }
    assert!(
        distinct.len() <= 2 * drains_seen,
        "{} different /metrics bodies over {drains_seen} drains",
        distinct.len()
    );
}

#[test]
fn a_kept_answer_goes_to_no_one_the_authentication_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.toml");
    let hash = bcrypt::hash("a", 4).unwrap();
    std::fs::write(&web, format!("[basic_auth_users]\nalice = \"{hash}\"\n")).unwrap();
    let daemon = Daemon::start(&["--interval", "5s", "--web-config", web.to_str().unwrap()]);
    let agent = daemon.agent();
    let basic = |credentials: &str| {
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("Basic {}", base64::Engine::encode(&b64, credentials))
    };
    let (alice, wrong) = (basic("alice:a"), basic("alice:b"));
    for path in ["/stats", "/insights", "/history", "/metrics"] {
        let url = format!("{}{path}", daemon.base);
        let (status, body) = get_json(&agent, &url, Some(&alice));
        assert_eq!(status, 200, "{path}: {body}");
        // The same request, right after (the drain interval is 5 s): kept, but not for these.
        let (status, _) = get_json(&agent, &url, None);
        assert_eq!(status, 401, "{path} without credentials");
        let (status, _) = get_json(&agent, &url, Some(&wrong));
        assert_eq!(status, 401, "{path} with a wrong password");
        let (status, again) = get_json(&agent, &url, Some(&alice));
        assert_eq!(status, 200, "{path}: {again}");
    }
}
