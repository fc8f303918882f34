//! `GET /insights` against the live kernel: each kind of finding is raised by a workload that
//! should raise it, and not by one just under its threshold; findings are per program (runs of
//! one program are one finding listing their pids) and about now (a process that exited before
//! the window has no current rate).

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{pid_of, workload, workload_as, Daemon, RunningWorkload};

fn findings(daemon: &Daemon, query: &str) -> Vec<Value> {
    let (status, body) = daemon.get(&format!("/insights{query}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema_version"], 2, "{body}");
    body["findings"].as_array().unwrap().clone()
}

fn of_kind<'a>(f: &'a [Value], kind: &str) -> Vec<&'a Value> {
    f.iter().filter(|x| x["kind"] == kind).collect()
}

fn pids(f: &Value) -> Vec<u32> {
    f["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect()
}

/// The findings of `kind` about `syscall`, once one is there (drains may run late on a loaded
/// machine), or none after `within`.
fn wait_finding(daemon: &Daemon, kind: &str, syscall: &str, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<Value> = findings(daemon, "?top=1000")
            .into_iter()
            .filter(|f| f["kind"] == kind && f["syscall"] == syscall)
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn failing_calls_are_reported_above_the_threshold_only() {
    let daemon = Daemon::start(&["--interval", "100ms", "--insight-failures-per-sec", "100"]);
    let loud = pid_of(&workload(&["calls", "enoent=20000"])[0], "child_pid");
    daemon.final_stats(loud);

    let f = findings(&daemon, &format!("?pid={loud}"));
    let failing = of_kind(&f, "failing_calls");
    assert_eq!(failing.len(), 1, "{f:#?}");
    let x = failing[0];
    assert_eq!(x["syscall"], "openat");
    assert_eq!(x["errno"], "ENOENT");
    assert_eq!(x["comm"], "workload");
    assert!(pids(x).contains(&loud), "{x}");
    // 20,000 failures in a window of at most 10 s.
    assert!(x["rate_per_sec"].as_f64().unwrap() >= 2000.0, "{x}");
    assert!(x["window_seconds"].as_f64().unwrap() <= 10.5, "{x}");
    assert!(x["first_seen_unix_ms"].as_u64() <= x["last_seen_unix_ms"].as_u64());
    let summary = x["summary"].as_str().unwrap();
    assert!(
        summary.contains(" made ")
            && summary.contains("failing openat() calls/s (ENOENT)")
            && summary.contains("of syscall time"),
        "{summary}"
    );
    assert!(
        x["evidence"]
            .as_str()
            .unwrap()
            .contains("openat() calls failed with ENOENT in the last"),
        "{x}"
    );
    let (status, body) = daemon.get("/insights?pid=x");
    assert_eq!((status, body["param"].as_str()), (400, Some("pid")));

    // 5 failures (and the few of the parent's start-up: the finding is the program's) in a
    // window of 5 s or more (the daemon's first seconds are a shorter one): far below 100/s.
    let daemon = Daemon::start(&["--interval", "100ms", "--insight-failures-per-sec", "100"]);
    thread::sleep(Duration::from_secs(5));
    // Under a name of its own: the finding is the program's, and the other tests' `workload`s
    // fail by the thousand meanwhile.
    let quiet = pid_of(
        &workload_as("quietrun", &["calls", "enoent=5", "getppid=100"])[0],
        "child_pid",
    );
    daemon.final_stats(quiet);
    let f = findings(&daemon, &format!("?pid={quiet}"));
    assert!(of_kind(&f, "failing_calls").is_empty(), "{f:#?}");
}

#[test]
fn eight_runs_of_one_program_are_one_finding_listing_eight_pids() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    // At once, so that all eight are inside the window (5 to 10 s) on a slow machine too; under
    // a name of their own, so that the other tests' `workload`s, running meanwhile, are not in
    // the finding.
    let runs: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                let lines = workload_as("eightruns", &["calls", "enoent=2000"]);
                pid_of(&lines[0], "child_pid")
            })
        })
        .collect();
    let children: Vec<u32> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for &c in &children {
        daemon.final_stats(c);
    }
    let f = findings(&daemon, "?comm=eightruns");
    let failing: Vec<&Value> = of_kind(&f, "failing_calls")
        .into_iter()
        .filter(|x| x["syscall"] == "openat" && x["errno"] == "ENOENT")
        .collect();
    assert_eq!(failing.len(), 1, "one finding for the program: {f:#?}");
    let x = failing[0];
    let listed = pids(x);
    for c in &children {
        assert!(listed.contains(c), "pid {c} missing from {x}");
    }
    assert_eq!(x["processes"].as_u64(), Some(listed.len() as u64), "{x}");
    assert_eq!(x["exited"], true, "every run has exited: {x}");
    let summary = x["summary"].as_str().unwrap();
    assert!(summary.contains(" eightruns processes made "), "{summary}");
    assert!(summary.contains("(exited "), "{summary}");
}

#[test]
fn a_process_that_exited_is_not_reported_at_its_old_rate() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    // Under a name of its own: a finding is the program's, exited only once all its processes
    // are, and the other tests' `workload`s run meanwhile (this one failed so, joined by two).
    let loud = pid_of(
        &workload_as("exitedrun", &["calls", "enoent=20000"])[0],
        "child_pid",
    );
    daemon.final_stats(loud);
    let f = findings(&daemon, &format!("?pid={loud}"));
    let failing = of_kind(&f, "failing_calls");
    assert_eq!(failing.len(), 1, "{f:#?}");
    assert_eq!(failing[0]["exited"], true, "{f:#?}");

    // The window is 5 to 10 s: once it has moved past the exit, no current rate is left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = findings(&daemon, &format!("?pid={loud}"));
        if f.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still reported 30 s after its exit: {f:#?}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    // Its totals are still held (retention), and still say what it did.
    let s = daemon.stats(&format!("?pid={loud}"));
    assert_eq!(s["processes"][0]["errors"], 20_000, "{s}");
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
    let b: Vec<&Value> = of_kind(&f, "blocked")
        .into_iter()
        .filter(|x| x["syscall"] == "read")
        .collect();
    assert_eq!(b.len(), 1, "{f:#?}");
    assert!(pids(b[0]).contains(&child), "{}", b[0]);
    let summary = b[0]["summary"].as_str().unwrap();
    assert!(
        summary.ends_with("% of wall time blocked in read"),
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

fn regression_daemon() -> Daemon {
    Daemon::start(&[
        "--interval",
        "100ms",
        "--insight-window",
        "3s",
        "--insight-min-calls",
        "50",
        "--insight-p99-ratio",
        "10",
    ])
}

/// A sleeper's nanosleeps get 100 times longer: its p99 rises far past the ratio, but the calls
/// are asleep, so that is a longer wait, not a regression; the sleeper is "blocked".
#[test]
#[cfg(target_arch = "x86_64")]
fn a_sleeper_is_blocked_and_its_longer_sleeps_are_not_a_regression() {
    let daemon = regression_daemon();
    workload(&["int80-sleep", "100", "100000"]);
    // The short sleeps' slice must have aged into the previous window.
    thread::sleep(Duration::from_secs(4));
    let slow = pid_of(
        &workload(&["int80-sleep", "100", "10000000"])[0],
        "child_pid",
    );
    let blocked = wait_finding(
        &daemon,
        "blocked",
        "nanosleep [i386]",
        Duration::from_secs(3),
    );
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    assert!(pids(&blocked[0]).contains(&slow), "{}", blocked[0]);
    // While the long sleeps are in the last window (they were drained for the finding above).
    let regressions: Vec<Value> = findings(&daemon, "?top=1000")
        .into_iter()
        .filter(|f| f["kind"] == "p99_regression" && f["syscall"] == "nanosleep [i386]")
        .collect();
    assert!(regressions.is_empty(), "{regressions:#?}");
    let h = daemon.get("/history?seconds=3&top=1000").1;
    let i386 = h["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "nanosleep" && s["abi"] == "i386")
        .unwrap_or_else(|| panic!("{h}"));
    // It did rise: 10 ms sleeps (a bucket midpoint within 6.25% of one) against 0.1 ms ones.
    assert!(i386["p99_ns"].as_u64().unwrap() >= 5_000_000, "{i386}");
}

/// getrandom of 16 bytes, then of 1 MiB: p99 rises by far more than 10×, on a CPU — a real
/// regression — and the burner is kernel-bound.
#[test]
fn a_getrandom_burner_is_kernel_bound_and_its_slower_calls_a_regression() {
    // A 5 s window: the fast calls' slice (it ends up to a second after them) is in the window
    // before however long the slow calls take on a loaded machine, up to about 3 s.
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--insight-window",
        "5s",
        "--insight-min-calls",
        "50",
        "--insight-p99-ratio",
        "10",
    ]);
    workload(&["compute", "1000", "16"]);
    thread::sleep(Duration::from_secs(6));
    let burner = pid_of(&workload(&["compute", "300", "1048576"])[0], "child_pid");
    let r = wait_finding(
        &daemon,
        "p99_regression",
        "getrandom",
        Duration::from_secs(2),
    );
    assert_eq!(r.len(), 1, "{r:#?}");
    let summary = r[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("getrandom() p99 rose ") && summary.contains("in the last 5 s"),
        "{summary}"
    );
    let bound = wait_finding(&daemon, "kernel_bound", "getrandom", Duration::from_secs(3));
    assert_eq!(bound.len(), 1, "{bound:#?}");
    assert!(pids(&bound[0]).contains(&burner), "{}", bound[0]);
    let summary = bound[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("% of wall time on a CPU inside getrandom (kernel-bound)"),
        "{summary}"
    );
    assert!(bound[0]["share"].as_f64().unwrap() >= 0.5, "{}", bound[0]);
}

#[test]
fn thresholds_are_checked_at_start() {
    for args in [
        &["--insight-p99-ratio", "1"][..],
        &["--insight-blocked-share", "0"],
        &["--insight-kernel-share", "0"],
        &["--insight-runq-share", "x"],
        &["--insight-wait-share", "0"],
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
