//! Property: whatever query string a client sends to /stats, over real HTTP, the answer is 2xx
//! or 4xx, never 5xx, and the daemon keeps running.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use tests::Daemon;

/// One request on its own connection; the raw query goes on the wire as generated (the
/// generators keep to bytes a request line may hold, so hyper's own 400s for malformed request
/// lines do not hide what the handler does).
fn status_of(addr: &str, query: &str) -> u16 {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /stats?{query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)
        .unwrap_or_else(|e| panic!("no answer to /stats?{query}: {e}"));
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|s| s[..3].parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {text:?}"))
}

/// Percent-encodes everything outside the unreserved set, so any string is a valid target.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("100000".to_string()),
        Just("100001".to_string()),
        prop::sample::select(
            &[
                "count",
                "total",
                "p99",
                "errors",
                "cpu",
                "blocked",
                "true",
                "false",
                "all",
                "10000",
                "read",
                "getppid",
                "syscall_99999",
                ""
            ][..]
        )
        .prop_map(str::to_string),
        any::<String>(),
        "[ -~]{0,40}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(
            &[
                "pid", "comm", "syscall", "top", "sort", "limit", "offset", "syscalls", "buckets",
                "exited"
            ][..]
        )
        .prop_map(str::to_string),
        any::<String>(),
    ];
    let pair = (key, value(), any::<bool>()).prop_map(|(k, v, raw)| {
        if raw {
            // Unencoded but request-line-safe: printable ASCII without space, '#' or '%'.
            let keep = |s: &str| {
                s.chars()
                    .filter(|c| c.is_ascii_graphic() && !"#%".contains(*c))
                    .collect::<String>()
            };
            format!("{}={}", keep(&k), keep(&v))
        } else {
            format!("{}={}", encode(&k), encode(&v))
        }
    });
    prop_oneof![
        prop::collection::vec(pair, 0..6).prop_map(|p| p.join("&")),
        // Raw junk made of request-line-safe bytes, including stray '&', '=' and '%'.
        "[!-~&&[^#]]{0,80}",
    ]
}

#[test]
fn any_query_gets_2xx_or_4xx_never_5xx() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let addr = daemon.base.trim_start_matches("http://").to_string();
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&query(), |q| {
        let status = status_of(&addr, &q);
        *seen.borrow_mut().entry(status).or_default() += 1;
        prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "/stats?{} answered {}",
            q,
            status
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\ndaemon log:\n{}", daemon.stderr());
    }
    // Both kinds of answer were exercised, or the generators are not doing their job.
    let seen = seen.into_inner();
    assert!(seen.get(&200).copied().unwrap_or(0) > 10, "{seen:?}");
    assert!(seen.get(&400).copied().unwrap_or(0) > 10, "{seen:?}");
    assert_eq!(daemon.get("/healthz").0, 200, "still serving");
    assert!(!daemon.stderr().contains("panicked"), "{}", daemon.stderr());
}
