//! The daemon against the live kernel: exact counts for a known workload, over real HTTP.

use std::{collections::BTreeMap, process::Command, time::Duration};

use serde_json::Value;
use tests::{
    bucket_total, counts, native_abi, process, require_root, run_workload, syscall, Daemon,
};

/// The nanosleep p50 is a bucket midpoint: within 6.25% of the true median (docs/design.md).
const BUCKET_ERROR: f64 = 0.0625;

#[test]
fn known_workload_gives_exact_counts_errors_and_latency() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let run = run_workload(1000, 100, 50);
    let query = format!("?pid={}&buckets=true", run.child_pid);
    // Exited and then drained once more: every event of the child is in.
    let stats = daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_some_and(|p| p["exited"] == true)
    });
    let drains_then = stats["host"]["drains"].as_u64().unwrap();
    let stats = daemon.wait_for(&query, Duration::from_secs(10), |s| {
        s["host"]["drains"].as_u64().unwrap() > drains_then + 1
    });
    let p = process(&stats, run.child_pid).expect("child in /stats");

    assert_eq!(p["comm"], "workload");
    let expected: BTreeMap<String, (u64, u64)> = [
        ("getppid".to_string(), (1000, 0)),
        ("openat".to_string(), (100, 100)),
        ("nanosleep".to_string(), (50, 0)),
    ]
    .into();
    assert_eq!(
        counts(p, native_abi()),
        expected,
        "the child's syscalls, exactly"
    );
    assert_eq!(p["count"], 1150);
    assert_eq!(p["errors"], 100);

    let sleep = syscall(&p["syscalls"], "nanosleep").unwrap();
    let p50 = sleep["p50_ns"].as_u64().unwrap() as f64;
    let truth = run.sleep_median_ns as f64;
    assert!(
        (p50 - truth).abs() / truth <= BUCKET_ERROR,
        "nanosleep p50 {p50} ns vs measured median {truth} ns: beyond the {BUCKET_ERROR} bucket error"
    );
    assert!(
        p50 >= 2e6 * (1.0 - BUCKET_ERROR),
        "a 2 ms sleep cannot take {p50} ns"
    );
    let mean = sleep["mean_ns"].as_u64().unwrap();
    assert_eq!(mean, sleep["total_ns"].as_u64().unwrap() / 50);
    let bucket_sum = bucket_total(sleep);
    assert_eq!(bucket_sum, 50, "buckets hold every call");
    for b in sleep["buckets"].as_array().unwrap() {
        assert!(b["lower_ns"].as_u64().unwrap() < b["upper_ns"].as_u64().unwrap());
    }

    // System-wide totals include the child's calls.
    let all = daemon.stats("?syscall=getppid");
    let sys = syscall(&all["syscalls"], "getppid").unwrap();
    assert!(sys["count"].as_u64().unwrap() >= 1000, "{sys}");
    assert_eq!(
        all["syscalls"].as_array().unwrap().len(),
        1,
        "syscall filter applies"
    );
    assert_eq!(all["schema_version"], 2);
}

#[test]
fn filters_sort_and_top() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let run = run_workload(300, 7, 0);
    let stats = daemon.wait_for("?comm=workload", Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_some_and(|p| p["count"] == 307)
    });
    for p in stats["processes"].as_array().unwrap() {
        assert_eq!(p["comm"], "workload");
    }
    let by_errors = daemon.stats(&format!("?pid={}&sort=errors&syscalls=1", run.child_pid));
    let procs = by_errors["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1);
    let calls = procs[0]["syscalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "syscalls=1 keeps one syscall per process");
    assert!(
        procs[0]["syscalls_total"].as_u64().unwrap() >= 2,
        "and says how many it cut"
    );
    assert_eq!(
        procs[0]["count"], 307,
        "the process's sums count every syscall, listed or not"
    );
    assert_eq!(calls[0]["name"], "openat");
    assert_eq!(calls[0]["errors"], 7);
    let by_count = daemon.stats(&format!("?pid={}&sort=count", run.child_pid));
    assert_eq!(by_count["processes"][0]["syscalls"][0]["name"], "getppid");
    let system = daemon.stats("?sort=count");
    let counts: Vec<u64> = system["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted by count: {counts:?}"
    );
}

#[test]
fn the_daemon_does_not_profile_itself() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    // Let it drain a few times and serve a few requests: its own syscalls would show by now.
    let drained = daemon.wait_for("", Duration::from_secs(10), |s| {
        s["host"]["drains"].as_u64().unwrap() >= 5
    });
    assert!(
        !drained["processes"].as_array().unwrap().is_empty(),
        "other processes are seen"
    );
    let own = daemon.stats(&format!("?pid={}", daemon.pid()));
    assert_eq!(
        own["processes"],
        Value::Array(vec![]),
        "daemon's own syscalls were recorded"
    );
}

#[test]
fn exited_processes_leave_after_retention_but_totals_stay() {
    let daemon = Daemon::start(&["--interval", "100ms", "--retention", "1s"]);
    let run = run_workload(123, 0, 0);
    let query = format!("?pid={}", run.child_pid);
    daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_some_and(|p| p["exited"] == true && p["count"] == 123)
    });
    let before = daemon.stats("?syscall=getppid");
    let total_before = syscall(&before["syscalls"], "getppid").unwrap()["count"]
        .as_u64()
        .unwrap();
    daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_none()
    });
    let after = daemon.stats("?syscall=getppid");
    let total_after = syscall(&after["syscalls"], "getppid").unwrap()["count"]
        .as_u64()
        .unwrap();
    assert!(
        total_after >= total_before,
        "system totals went backwards: {total_before} -> {total_after}"
    );
}

#[test]
fn bad_query_params_get_400_naming_the_param() {
    let daemon = Daemon::start(&[]);
    for (query, param) in [
        ("pid=abc", "pid"),
        ("top=0", "top"),
        ("top=many", "top"),
        ("limit=0", "limit"),
        ("top=5&limit=5", "limit"),
        ("offset=-1", "offset"),
        ("syscalls=1001", "syscalls"),
        ("buckets=maybe", "buckets"),
        ("exited=maybe", "exited"),
        ("sort=cpus", "sort"),
        ("sort=latency", "sort"),
        ("syscall=not_a_syscall", "syscall"),
        ("comm=", "comm"),
        ("bogus=1", "bogus"),
    ] {
        let (status, body) = daemon.get(&format!("/stats?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["param"], param, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(param), "{body}");
    }
    for ok in [
        "sort=p99&top=3",
        "sort=cpu&limit=3&offset=2",
        "sort=blocked&syscalls=0&exited=true",
    ] {
        let (status, body) = daemon.get(&format!("/stats?{ok}"));
        assert_eq!(status, 200, "{ok}: {body}");
    }
}

#[test]
fn healthz_and_clean_exit_on_sigterm() {
    let daemon = Daemon::start(&[]);
    let r = ureq::get(&format!("{}/healthz", daemon.base))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = daemon.stderr();
    assert!(log.contains("attached"), "{log}");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn without_capabilities_it_says_so_in_one_line() {
    require_root();
    // Root with every capability dropped from all sets: bpf() would fail with EPERM.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(tests::daemon_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .expect("running setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace: {stderr}");
    assert!(
        lines[0].contains("CAP_BPF") && lines[0].contains("root"),
        "{stderr}"
    );
}
