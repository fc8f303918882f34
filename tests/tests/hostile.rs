//! Hostile clients cannot starve the daemon (issue 11): connections that never read their
//! answers, slowloris at max_connections, a flood of wrong passwords. These assert liveness with
//! generous bounds, never speed: `cargo xtask bench` measures the latencies (docs/benchmarks.md).

use std::{
    io::Write,
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use tests::{
    get_json,
    raw_http::{addr_of, open_sockets, proc_status, small_window_connection},
    Daemon,
};

/// The bound every liveness check here uses: far above the goals (100 ms for /healthz, 250 ms
/// for an authorised scrape), far below what the defects cost (forever, 10 s, 1.5 s and up).
const LIVELY: Duration = Duration::from_secs(2);

/// One scenario at a time: each loads the machine's two cores, and would slow the others.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// GETs `path` on a fresh connection and asserts a 200 within [`LIVELY`].
fn answers_promptly(daemon: &Daemon, path: &str, auth: Option<&str>, what: &str) {
    let agent = ureq::AgentBuilder::new().timeout(LIVELY).build();
    let url = format!("{}{path}", daemon.base);
    let t0 = Instant::now();
    let mut req = agent.get(&url);
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let outcome = req.call().map(|r| r.status());
    let took = t0.elapsed();
    assert!(
        matches!(outcome, Ok(200)) && took < LIVELY,
        "GET {path} {what}: {outcome:?} after {took:?} (bound {LIVELY:?})"
    );
}

/// SIGTERM, then asserts a clean exit within `bound`.
fn stops_within(mut daemon: Daemon, bound: Duration) {
    let t0 = Instant::now();
    daemon.signal(libc::SIGTERM);
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
            break;
        }
        assert!(
            t0.elapsed() < bound,
            "still running {bound:?} after SIGTERM:\n{}",
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connections that send many requests at once and never read: once the socket buffers are
/// full the daemon cannot write their answers.
fn stalled_readers(addr: &str, n: usize) -> Vec<TcpStream> {
    // /metrics is rendered once per drain, so these cost the daemon little CPU: what they
    // hold is the answers, and the connections.
    let pipelined = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n".to_string()
        + &"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(60);
    (0..n)
        .map(|_| {
            let mut c = small_window_connection(addr).expect("connecting");
            c.write_all(pipelined.as_bytes()).expect("sending requests");
            c
        })
        .collect()
}

#[test]
fn clients_that_never_read_hold_no_slot_for_long_and_do_not_delay_the_stop() {
    let _one = one_at_a_time();
    let daemon = Daemon::start(&["--interval", "200ms", "--request-timeout", "3s"]);
    let addr = addr_of(&daemon.base).to_string();
    answers_promptly(&daemon, "/metrics", None, "before any stalled client");
    let sockets_before = open_sockets(daemon.pid());

    let stalled = stalled_readers(&addr, 100);
    thread::sleep(Duration::from_secs(1));
    for _ in 0..10 {
        answers_promptly(&daemon, "/healthz", None, "while 100 clients never read");
        thread::sleep(Duration::from_millis(100));
    }
    // Answers that need a render slot too: stalled answers hold memory, not the slots.
    for _ in 0..5 {
        answers_promptly(&daemon, "/metrics", None, "while 100 clients never read");
        answers_promptly(
            &daemon,
            "/stats?top=1",
            None,
            "while 100 clients never read",
        );
    }

    // A connection whose answer makes no progress for request_timeout (3 s) is closed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = open_sockets(daemon.pid());
        if open <= sockets_before + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sockets still open 15 s after 100 clients stopped reading (before: \
             {sockets_before}); request_timeout is 3 s"
        );
        thread::sleep(Duration::from_millis(200));
    }
    drop(stalled);

    // Stalled at the stop (their socket buffers full by now): SIGTERM does not wait for them.
    let _stalled = stalled_readers(&addr, 20);
    thread::sleep(Duration::from_secs(3));
    // Was 5 s (the drain's bound); now about 1 s (a second without progress), 2 s when loaded.
    stops_within(daemon, Duration::from_secs(4));
}

/// Slowloris: `n` connections that send a request head a byte a second, reopened as the daemon
/// closes them, until dropped.
struct Slowloris {
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Slowloris {
    fn start(addr: &str, n: usize) -> Slowloris {
        let stop = Arc::new(AtomicBool::new(false));
        let reopened = Arc::new(AtomicU64::new(0));
        let (addr, flag, count) = (addr.parse().unwrap(), stop.clone(), reopened.clone());
        let open = move || -> Option<TcpStream> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            c.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(c)
        };
        let thread = thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
            // Bounded in time whatever happens to the test.
            let end = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                for c in conns.iter_mut() {
                    let alive = c.as_mut().is_some_and(|s| s.write_all(b"X").is_ok());
                    if !alive {
                        *c = open();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
        Slowloris {
            stop,
            reopened,
            thread: Some(thread),
        }
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn slowloris_at_max_connections_does_not_keep_healthz_waiting() {
    let _one = one_at_a_time();
    // The defaults: max_connections 256, request_timeout (and so the head deadline) 10 s.
    let daemon = Daemon::start(&["--interval", "200ms"]);
    let addr = addr_of(&daemon.base).to_string();
    let loris = Slowloris::start(&addr, 300);
    thread::sleep(Duration::from_secs(3));
    for _ in 0..20 {
        answers_promptly(
            &daemon,
            "/healthz",
            None,
            "while 300 slowloris clients trickle",
        );
        thread::sleep(Duration::from_millis(200));
    }
    answers_promptly(
        &daemon,
        "/stats?top=1",
        None,
        "while 300 slowloris clients trickle",
    );
    let reopened = loris.reopened.load(Ordering::Relaxed);
    stops_within(daemon, Duration::from_secs(3));
    drop(loris);
    eprintln!("slowloris connections reopened after the daemon closed them: {reopened}");
}

fn basic(user: &str, password: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {creds}")
}

/// A web config with user alice at bcrypt cost 10, `htpasswd -B`'s default: the cost a flood
/// of wrong passwords turns against the daemon.
fn web_config(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    let hash = bcrypt::hash(password, 10).unwrap();
    let web = dir.join("web.toml");
    std::fs::write(&web, format!("[basic_auth_users]\nalice = \"{hash}\"\n")).unwrap();
    web
}

/// `clients` threads GET /metrics back to back with a wrong password until `until`: the same
/// one, or a new one each time (which no cache of failures can answer). Returns the answers'
/// status codes seen.
fn wrong_password_flood(
    base: &str,
    clients: usize,
    until: Instant,
    distinct: bool,
) -> thread::JoinHandle<Vec<u16>> {
    let url = format!("{base}/metrics");
    thread::spawn(move || {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let url = url.clone();
                thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(30))
                        .build();
                    let mut seen = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < until {
                        i += 1;
                        let password = if distinct {
                            format!("wrong-{c}-{i}")
                        } else {
                            "wrong".to_string()
                        };
                        let auth = basic("alice", &password);
                        // 0: no HTTP answer at all.
                        let status = match agent.get(&url).set("Authorization", &auth).call() {
                            Ok(r) => r.status(),
                            Err(ureq::Error::Status(code, _)) => code,
                            Err(ureq::Error::Transport(_)) => 0,
                        };
                        if !seen.contains(&status) {
                            seen.push(status);
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut seen: Vec<u16> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    })
}

#[test]
fn a_wrong_password_flood_neither_multiplies_threads_nor_delays_authorised_scrapes() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let web = web_config(dir.path(), "correct horse");
    let daemon = Daemon::start(&["--interval", "200ms", "--web-config", web.to_str().unwrap()]);
    let alice = basic("alice", "correct horse");
    // The first success pays bcrypt; it is remembered from then on.
    answers_promptly(&daemon, "/metrics", Some(&alice), "(first, uncached)");

    for distinct in [false, true] {
        let what = if distinct {
            "during a flood of distinct wrong passwords"
        } else {
            "during a flood of one wrong password"
        };
        let until = Instant::now() + Duration::from_secs(6);
        let flood = wrong_password_flood(&daemon.base, 100, until, distinct);
        thread::sleep(Duration::from_secs(1));
        let mut most_threads = 0;
        while Instant::now() + Duration::from_millis(500) < until {
            answers_promptly(&daemon, "/metrics", Some(&alice), what);
            most_threads = most_threads.max(proc_status(daemon.pid(), "Threads").unwrap());
            thread::sleep(Duration::from_millis(200));
        }
        let statuses = flood.join().unwrap();
        assert!(
            statuses.iter().all(|&s| s == 401 || s == 429),
            "wrong passwords got {statuses:?}: only 401, or 429 when too many checks wait"
        );
        // The runtime's 2 workers, main, the drain, the password checker and a few of tokio's.
        assert!(
            most_threads <= 12,
            "{most_threads} daemon threads {what}: password checks must run on a bounded pool"
        );
    }
    answers_promptly(&daemon, "/metrics", Some(&alice), "after the flood");
}

#[test]
fn passwords_past_bcrypts_72_bytes_are_refused_not_truncated() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let right = "x".repeat(72);
    let web = web_config(dir.path(), &right);
    let daemon = Daemon::start(&["--web-config", web.to_str().unwrap()]);
    let agent = daemon.agent();
    // Not /healthz: it needs no credentials.
    let url = format!("{}/metrics", daemon.base);
    let (status, _) = get_json(&agent, &url, Some(&basic("alice", &right)));
    assert_eq!(status, 200, "72 bytes is bcrypt's limit, and allowed");
    // bcrypt would see the same 72 bytes and say yes.
    let (status, body) = get_json(&agent, &url, Some(&basic("alice", &format!("{right}y"))));
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("72 bytes"), "the 401 says why: {body}");
}
