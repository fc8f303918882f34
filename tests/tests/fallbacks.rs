//! Paths this machine never takes on its own, forced, with counts as exact as ever: the loader's
//! fallback programs — raw-tracepoint `sys_enter` and counts-only `sys_exit` (kernels that
//! refuse BTF tracepoints) and `sched_process_exit_leader` (kernels before 6.16), which
//! `SYSCALL_PROFILER_SKIP_PROGRAMS` makes it take — and shared histogram shards (hosts with more
//! CPUs than shards), which `SYSCALL_PROFILER_SHARED_SHARDS` turns on.

use serde_json::Value;
use tests::{
    bucket_total, count_map, counts, native_abi, pid_of, process, syscall, workload, Daemon, Spawn,
};

const SKIP: &str = "SYSCALL_PROFILER_SKIP_PROGRAMS";

fn start(skip: &str, args: &[&str]) -> Daemon {
    Spawn::serve(args).env(SKIP, skip).start()
}

/// Runs a workload child whose calls are known (int 0x80 ones too on x86_64: the raw
/// `sys_enter` reads the compat flag with a probe-read helper), checks the daemon counted each
/// exactly, under the right ABI, and returns the child's entry.
fn counts_a_known_child_exactly(daemon: &Daemon) -> Value {
    let mut calls = vec!["calls", "getppid=500", "enoent=40", "ebadf=7", "sleep=3"];
    if cfg!(target_arch = "x86_64") {
        calls.push("int80=25");
    }
    let lines = workload(&calls);
    let child = pid_of(&lines[0], "child_pid");
    // Exit detection is the exit program's job: final_stats waits for it.
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap().clone();
    assert_eq!(
        counts(&p, native_abi()),
        count_map(&[
            ("getppid", (500, 0)),
            ("openat", (40, 40)),
            ("close", (7, 7)),
            ("nanosleep", (3, 0)),
        ])
    );
    if cfg!(target_arch = "x86_64") {
        assert_eq!(counts(&p, "i386"), count_map(&[("getppid", (25, 0))]));
    }
    p
}

#[test]
fn raw_tracepoint_sys_enter_and_pre_6_16_exit_program_count_exactly() {
    let daemon = start("sys_enter_btf,sched_process_exit", &["--interval", "100ms"]);
    let log = daemon.stderr();
    assert!(
        log.contains("attached sys_enter to tracepoint sys_enter"),
        "{log}"
    );
    assert!(
        log.contains("attached sched_process_exit_leader to tracepoint sched_process_exit"),
        "{log}"
    );
    let p = counts_a_known_child_exactly(&daemon);
    let sleep = syscall(&p["syscalls"], "nanosleep").unwrap();
    assert!(
        sleep["p50_ns"].as_u64().unwrap() >= 1_800_000,
        "a 2 ms sleep timed by the raw sys_enter: {sleep}"
    );
    // The split, from the marks sched_switch and the parked exit take with probe reads.
    let split = &sleep["time_split"];
    assert_eq!(split["blocked_calls"], 3, "{sleep}");
    assert!(split["blocked_share"].as_f64().unwrap() >= 0.9, "{sleep}");
}

#[test]
fn raw_tracepoint_counts_only_exit_counts_exactly() {
    let daemon = start(
        "sys_exit_counts_btf",
        &["--interval", "100ms", "--counts-only"],
    );
    let log = daemon.stderr();
    assert!(
        log.contains("attached sys_exit_counts to tracepoint sys_exit"),
        "{log}"
    );
    counts_a_known_child_exactly(&daemon);
}

#[test]
fn leaving_out_every_program_for_a_tracepoint_is_one_clear_error() {
    tests::require_root();
    let (code, stderr) = Spawn::new(&["serve", "--listen", "127.0.0.1:0"])
        .env(SKIP, "sys_enter_btf, sys_enter")
        .output();
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("no program left for tracepoint sys_enter"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Shared shards take atomic adds, mark every bucket block touched (so the drain reads whole
/// slots) and count errnos in ERRNOS: threads on both CPUs, failing and not.
#[test]
fn shared_shards_as_on_big_hosts_count_exactly() {
    let daemon = Spawn::serve(&["--interval", "100ms"])
        .env("SYSCALL_PROFILER_SHARED_SHARDS", "1")
        .start();
    let log = daemon.stderr();
    assert!(log.contains("shards will use atomic adds"), "{log}");
    let lines = workload(&["threads", "4", "50000", "300"]);
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    let c = counts(p, native_abi());
    assert_eq!(c.get("getppid"), Some(&(200_000, 0)));
    assert_eq!(c.get("close"), Some(&(1_200, 1_200)));
    let close = syscall(&p["syscalls"], "close").unwrap();
    assert_eq!(close["errnos"]["EBADF"], 1_200, "{close}");
    let buckets = bucket_total(close);
    assert_eq!(buckets, 1_200, "every bucket read: {close}");
}
