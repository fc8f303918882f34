//! Where a syscall's time went (issue 15): every call's latency split into on a CPU, runnable
//! on a runqueue, and blocked, read from the scheduler's own per-task clocks. Checked against
//! what the calls are known to do, and against the kernel's own accounting of the whole process
//! (/proc/PID/schedstat): no syscall can have run longer, or waited for a CPU longer, than its
//! process did.

use serde_json::Value;
use tests::{native_abi, pid_of, process, syscall, workload, Daemon, RunningWorkload};

/// A syscall entry's split: (on-CPU, runnable, blocked) ns and the calls that blocked.
fn split(entry: &Value) -> (u64, u64, u64, u64) {
    let s = &entry["time_split"];
    assert!(s.is_object(), "no time split in {entry}");
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (
        n("on_cpu_ns"),
        n("runq_ns"),
        n("blocked_ns"),
        n("blocked_calls"),
    )
}

/// Share of `part` in the entry's total time.
fn share(entry: &Value, part: u64) -> f64 {
    part as f64 / entry["total_ns"].as_u64().unwrap() as f64
}

/// The child's entry once it has exited and been read for the last time.
fn child_entry(daemon: &Daemon, lines: &[Value]) -> Value {
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    process(&stats, child)
        .unwrap_or_else(|| panic!("child {child} not in /stats"))
        .clone()
}

fn start() -> Daemon {
    Daemon::start(&["--interval", "100ms"])
}

#[test]
fn sleeping_calls_are_blocked() {
    let daemon = start();
    let p = child_entry(&daemon, &workload(&["calls", "sleep=100"]));
    let sleep = syscall(&p["syscalls"], "nanosleep").unwrap();
    let (on_cpu, _, blocked, blocked_calls) = split(sleep);
    assert_eq!(blocked_calls, 100, "every 2 ms sleep blocked: {sleep}");
    assert!(share(sleep, blocked) >= 0.9, "blocked ≥ 90%: {sleep}");
    assert!(share(sleep, on_cpu) <= 0.05, "on-CPU small: {sleep}");
}

#[test]
fn computing_calls_are_on_cpu() {
    let daemon = start();
    let p = child_entry(&daemon, &workload(&["compute", "40", "4194304"]));
    let random = syscall(&p["syscalls"], "getrandom").unwrap();
    assert_eq!(random["count"], 40);
    let (on_cpu, _, _, blocked_calls) = split(random);
    assert_eq!(
        blocked_calls, 0,
        "generating random bytes never sleeps: {random}"
    );
    assert!(share(random, on_cpu) >= 0.8, "on-CPU ≥ 80%: {random}");
}

/// Two CPU-bound processes on one CPU: the one in long computing calls spends part of them
/// preempted, waiting for its turn, and none of it blocked.
#[test]
fn a_shared_cpu_shows_as_runnable_time() {
    let daemon = start();
    let p = child_entry(&daemon, &workload(&["contend", "40", "4194304"]));
    let random = syscall(&p["syscalls"], "getrandom").unwrap();
    let (on_cpu, runq, blocked, blocked_calls) = split(random);
    assert_eq!(
        (blocked, blocked_calls),
        (0, 0),
        "preempted, never asleep: {random}"
    );
    assert!(
        share(random, runq) >= 0.2,
        "a measurable share waiting for the CPU: {random}"
    );
    assert!(on_cpu > 0, "{random}");
}

/// Every syscall of a child that sleeps, computes, fails and returns at once: the parts add
/// up to the total, no part is negative, and summed over the child they stay within what the
/// scheduler accounted for its whole life.
#[test]
fn parts_add_up_and_stay_within_the_schedulers_accounting() {
    let daemon = start();
    let lines = workload(&[
        "calls",
        "getppid=3000",
        "enoent=300",
        "eagain=300",
        "sleep=50",
        "random=30",
    ]);
    let p = child_entry(&daemon, &lines);
    let (mut on_cpu_sum, mut runq_sum) = (0, 0);
    for s in p["syscalls"].as_array().unwrap() {
        let (on_cpu, runq, blocked, blocked_calls) = split(s);
        assert_eq!(
            on_cpu + runq + blocked,
            s["total_ns"].as_u64().unwrap(),
            "the parts add up: {s}"
        );
        assert!(blocked_calls <= s["count"].as_u64().unwrap(), "{s}");
        on_cpu_sum += on_cpu;
        runq_sum += runq;
    }
    let names: Vec<&str> = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["abi"] == native_abi())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for want in ["getppid", "openat", "read", "nanosleep", "getrandom"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let runtime = lines[1]["runtime_ns"].as_u64().unwrap();
    let run_delay = lines[1]["run_delay_ns"].as_u64().unwrap();
    // A call that never left its CPU counts its whole latency on-CPU, time stolen by a
    // hypervisor included, which the scheduler's run time leaves out: 1% of slack for it.
    assert!(
        on_cpu_sum <= runtime + runtime / 100,
        "on-CPU in syscalls {on_cpu_sum} ns ≤ the child's run time {runtime} ns"
    );
    assert!(
        runq_sum <= run_delay,
        "runnable in syscalls {runq_sum} ns ≤ the child's run delay {run_delay} ns"
    );
}

/// A call still blocked is in flight (the in-flight iterator reads task storage), and once it
/// returns its split says it blocked.
#[test]
fn a_blocked_read_is_in_flight_then_blocked() {
    let daemon = start();
    let mut w = RunningWorkload::start(&["block", "2"]);
    let child = pid_of(&w.next_line(), "child_pid");
    let query = format!("?pid={child}");
    daemon.wait_for(&query, std::time::Duration::from_secs(10), |s| {
        process(s, child).is_some_and(|p| p["in_flight"][0]["name"] == "read")
    });
    w.wait_success();
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    let read = syscall(&p["syscalls"], "read").unwrap();
    let (_, _, blocked, blocked_calls) = split(read);
    assert_eq!(blocked_calls, 1, "{read}");
    assert!(blocked >= 1_500_000_000, "blocked about 2 s: {read}");
}
