//! In-kernel filters: only the allowlisted syscalls, processes or cgroup are recorded.

use std::process::Command;

use serde_json::Value;
use tests::{
    cgroup2_root, counts, native_abi, output_in_cgroup, pid_of, process, run_workload,
    workload_bin, Cgroups, Daemon, RunningWorkload,
};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn only_allowlisted_syscalls_are_recorded() {
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--filter-syscalls",
        "getppid,nanosleep",
    ]);
    let run = run_workload(100, 10, 3);
    let stats = daemon.final_stats(run.child_pid);
    let p = process(&stats, run.child_pid).unwrap();
    let c = counts(p, native_abi());
    assert_eq!(c.get("getppid"), Some(&(100, 0)));
    assert_eq!(c.get("nanosleep"), Some(&(3, 0)));
    assert!(!c.contains_key("openat"), "openat was filtered out: {c:?}");
    for name in names(&stats["syscalls"]) {
        assert!(
            name == "getppid" || name == "nanosleep",
            "{name} recorded despite the filter"
        );
    }
    assert_eq!(stats["kernel_maps"]["drops"]["starts_full"], 0);
}

#[test]
fn only_allowlisted_processes_are_recorded() {
    // The parent sleeps, then releases its child; only the parent is allowlisted.
    let mut w = RunningWorkload::start(&["block", "2"]);
    let first = w.next_line();
    let (parent, child) = (pid_of(&first, "pid"), pid_of(&first, "child_pid"));
    let daemon = Daemon::start(&["--interval", "100ms", "--filter-pids", &parent.to_string()]);
    assert_eq!(w.next_line()["released"], true);
    w.wait_success();
    let stats = daemon.final_stats(parent);
    let pids: Vec<u64> = stats["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pids,
        vec![u64::from(parent)],
        "only the allowlisted process (child {child})"
    );
    let p = process(&stats, parent).unwrap();
    assert!(
        counts(p, native_abi()).contains_key("write"),
        "the parent's release: {p:#}"
    );
}

/// The kernel side knows a left-out thread by its kernel stack (programs/filters.rs,
/// LEFT_OUT), which the kernel gives to a later thread once the first exits: threads of the
/// allowlisted process that start on the stacks of left-out ones that just exited are counted,
/// every call.
#[test]
fn an_allowlisted_thread_on_a_left_out_threads_stack_is_recorded() {
    let (rounds, n) = (300, 50);
    let mut w = RunningWorkload::start(&["stack-reuse", &rounds.to_string(), &n.to_string()]);
    let pid = pid_of(&w.next_line(), "pid");
    let daemon = Daemon::start(&["--interval", "100ms", "--filter-pids", &pid.to_string()]);
    w.send_line();
    assert_eq!(w.next_line()["getppid"], rounds * n);
    w.wait_success();
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).unwrap();
    assert_eq!(
        counts(p, native_abi()).get("getppid"),
        Some(&(rounds * n, 0)),
        "every getppid of the allowlisted process's threads"
    );
    assert_eq!(
        stats["processes"].as_array().unwrap().len(),
        1,
        "only {pid}"
    );
}

#[test]
fn only_processes_in_the_cgroup_are_recorded() {
    tests::require_root();
    let mut made = Cgroups::default();
    let cg =
        made.create(cgroup2_root().join(format!("syscall-profiler-test-{}", std::process::id())));
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--filter-cgroup",
        cg.to_str().unwrap(),
    ]);

    let mut cmd = Command::new(workload_bin());
    cmd.args(["calls", "getppid=77"]);
    let line = &output_in_cgroup(cmd, &cg)[0];
    let (parent, child) = (pid_of(line, "pid"), pid_of(line, "child_pid"));

    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert_eq!(counts(p, native_abi()).get("getppid"), Some(&(77, 0)));
    for p in stats["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap() as u32;
        assert!(
            pid == parent || pid == child,
            "pid {pid} ({}) is outside the cgroup",
            p["comm"]
        );
    }
    // /metrics names the cgroup by its path in the v2 hierarchy (not a v1 controller's).
    let metrics = ureq::get(&format!("{}/metrics", daemon.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let label = format!("cgroup=\"/{}\"", cg.file_name().unwrap().to_str().unwrap());
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("comm=\"workload\"") && l.contains(&label)),
        "no workload series with {label}"
    );
}

#[test]
fn a_bad_filter_is_refused_in_one_line() {
    for (args, needle) in [
        (
            ["--filter-syscalls", "getppid,no_such_call"],
            "no_such_call",
        ),
        (["--filter-pids", "12,abc"], "abc"),
        (
            ["--filter-cgroup", "/nonexistent/cgroup"],
            "/nonexistent/cgroup",
        ),
    ] {
        let out = Command::new(tests::daemon_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}
