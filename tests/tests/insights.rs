//! `GET /insights` against the live kernel: each kind of finding is raised by a workload that
//! should raise it, and not by one just under its threshold.

use std::{thread, time::Duration};

use serde_json::Value;
use tests::{pid_of, workload, Daemon, RunningWorkload};

fn findings(daemon: &Daemon, query: &str) -> Vec<Value> {
    let (status, body) = daemon.get(&format!("/insights{query}"));
    assert_eq!(status, 200, "{body}");
    body["findings"].as_array().unwrap().clone()
}

fn of_kind<'a>(f: &'a [Value], kind: &str) -> Vec<&'a Value> {
    f.iter().filter(|x| x["kind"] == kind).collect()
}

#[test]
fn failing_calls_are_reported_above_the_threshold_only() {
    let daemon = Daemon::start(&["--interval", "100ms", "--insight-failures-per-sec", "100"]);
    let loud = pid_of(&workload(&["calls", "enoent=20000"])[0], "child_pid");
    // 5 failures over at least one 100 ms interval: at most 50/s.
    let quiet = pid_of(
        &workload(&["calls", "enoent=5", "getppid=100"])[0],
        "child_pid",
    );
    daemon.final_stats(loud);
    daemon.final_stats(quiet);

    let f = findings(&daemon, &format!("?pid={loud}"));
    let failing = of_kind(&f, "failing_calls");
    assert_eq!(failing.len(), 1, "{f:#?}");
    let x = failing[0];
    assert_eq!(x["syscall"], "openat");
    assert_eq!(x["errno"], "ENOENT");
    assert_eq!(x["comm"], "workload");
    assert!(x["rate_per_sec"].as_f64().unwrap() >= 100.0);
    let summary = x["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("pid {loud} (workload) made "))
            && summary.contains("failing openat() calls/s (ENOENT)")
            && summary.contains("of syscall time"),
        "{summary}"
    );
    assert!(
        x["evidence"]
            .as_str()
            .unwrap()
            .starts_with("20000 of 20000 openat() calls failed"),
        "{x}"
    );

    let f = findings(&daemon, &format!("?pid={quiet}"));
    assert!(of_kind(&f, "failing_calls").is_empty(), "{f:#?}");
    let (status, body) = daemon.get("/insights?pid=x");
    assert_eq!((status, body["param"].as_str()), (400, Some("pid")));
}

#[test]
fn a_process_blocked_in_a_syscall_is_reported() {
    let daemon = Daemon::start(&["--interval", "100ms", "--insight-blocked-share", "0.5"]);
    let busy = pid_of(&workload(&["calls", "getppid=2000"])[0], "child_pid");
    daemon.final_stats(busy);
    let mut blocked = RunningWorkload::start(&["block", "3"]);
    let child = pid_of(&blocked.next_line(), "child_pid");
    thread::sleep(Duration::from_millis(1200));

    let f = findings(&daemon, &format!("?pid={child}"));
    let b = of_kind(&f, "blocked");
    assert_eq!(b.len(), 1, "{f:#?}");
    assert_eq!(b[0]["syscall"], "read");
    let summary = b[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("pid {child} (workload) spends "))
            && summary.ends_with("% of wall time blocked in read"),
        "{summary}"
    );
    assert!(
        b[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("one call blocked for"),
        "{}",
        b[0]
    );

    let f = findings(&daemon, &format!("?pid={busy}"));
    assert!(of_kind(&f, "blocked").is_empty(), "{f:#?}");
    blocked.wait_success();
}

/// Fast i386 nanosleeps, then (a window later) `slow_ns` ones; returns /insights's
/// regressions of that syscall.
fn regression_run(slow_ns: u64) -> Vec<Value> {
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--insight-window",
        "3s",
        "--insight-min-calls",
        "50",
        "--insight-p99-ratio",
        "10",
    ]);
    workload(&["int80-sleep", "100", "0"]);
    // The fast calls' slice must have aged into the previous window.
    thread::sleep(Duration::from_secs(4));
    workload(&["int80-sleep", "100", &slow_ns.to_string()]);
    // Until the slow calls are drained into the history (a loaded machine drains late), while
    // they are still inside the last window.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    loop {
        thread::sleep(Duration::from_millis(200));
        let found: Vec<Value> = findings(&daemon, "?top=1000")
            .into_iter()
            .filter(|f| f["kind"] == "p99_regression" && f["syscall"] == "nanosleep [i386]")
            .collect();
        if !found.is_empty() || std::time::Instant::now() > deadline {
            return found;
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_p99_regression_is_reported_and_a_steady_p99_is_not() {
    // 10 ms against the fast calls' p99 (about 0.1 ms here, more on a loaded machine): far
    // above the 10× threshold however noisy the fast side is.
    let r = regression_run(10_000_000);
    assert_eq!(r.len(), 1, "{r:#?}");
    let summary = r[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("nanosleep [i386]() p99 rose ") && summary.contains("in the last 3 s"),
        "{summary}"
    );
    assert!(
        r[0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("system-wide, 100 calls in the last 3 s vs 100 in the 3 s before"),
        "{}",
        r[0]
    );
    assert!(regression_run(0).is_empty());
}

#[test]
fn thresholds_are_checked_at_start() {
    for args in [
        &["--insight-p99-ratio", "1"][..],
        &["--insight-blocked-share", "0"],
        &["--insight-window", "10m"],
        &["--insight-failures-per-sec", "lots"],
    ] {
        let out = std::process::Command::new(tests::daemon_bin())
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}
