//! The BTF programs keep each thread's syscall in flight in an array indexed by tid (TIDS,
//! docs/kernel-maps.md), owned by (tid, start time): counts stay exact when threads exit and
//! others take their entries, when live threads share an entry (the second keeps its start in
//! task storage, counted in `tids_shared`), and when a thread that is not its process's leader
//! execs and so takes the leader's tid (its entry moves with it, and its execve counts).

use tests::{counts, native_abi, pid_of, process, processes, workload, Daemon, Spawn};

/// The line of the workload's output that names the child.
fn child_of(lines: &[serde_json::Value]) -> u32 {
    let line = lines
        .iter()
        .find(|l| l.get("child_pid").is_some())
        .expect("the workload names its child");
    pid_of(line, "child_pid")
}

/// `serve` logging what it attached, with `env`.
fn serve(env: &[(&str, &str)]) -> Daemon {
    let mut spawn = Spawn::serve(&["--interval", "100ms"]);
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    spawn.start()
}

/// Eight threads of a child, each making 20,000 getppid and 300 failing close, counted exactly;
/// the stats it was read from.
fn eight_threads_count_exactly(daemon: &Daemon) -> serde_json::Value {
    let lines = workload(&["threads", "8", "20000", "300"]);
    let child = child_of(&lines);
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    let c = counts(p, native_abi());
    assert_eq!(c.get("getppid"), Some(&(160_000, 0)), "{p:#}");
    assert_eq!(c.get("close"), Some(&(2_400, 2_400)), "{p:#}");
    stats
}

#[test]
fn threads_sharing_entries_count_exactly() {
    // Four entries: the child's nine threads (and every other thread on the host) share them.
    let daemon = serve(&[("SYSCALL_PROFILER_TIDS_ENTRIES", "4")]);
    let log = daemon.stderr();
    assert!(log.contains("4 entries in TIDS"), "{log}");
    let stats = eight_threads_count_exactly(&daemon);
    let shared = stats["kernel_maps"]["tids_shared"].as_u64().unwrap();
    assert!(shared > 0, "no thread was sent to task storage: {stats:#}");
}

/// Kernels before 6.16 (no `group_dead`) get the other BTF exit program, which frees entries
/// the same way.
#[test]
fn the_pre_6_16_exit_program_counts_exactly_too() {
    let daemon = serve(&[
        ("SYSCALL_PROFILER_TIDS_ENTRIES", "4"),
        ("SYSCALL_PROFILER_SKIP_PROGRAMS", "sched_process_exit_btf"),
    ]);
    let log = daemon.stderr();
    assert!(
        log.contains("attached sched_process_exit_leader_btf to tracepoint sched_process_exit"),
        "{log}"
    );
    eight_threads_count_exactly(&daemon);
}

#[test]
fn threads_on_their_own_entries_count_exactly_and_share_none() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let stats = eight_threads_count_exactly(&daemon);
    // pid_max is at most TIDS's length here (32,768 by default), so no two live tids share.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if pid_max <= profiler_common::TIDS_MAX_ENTRIES {
        assert_eq!(stats["kernel_maps"]["tids_shared"], 0, "{stats:#}");
    }
}

#[test]
fn a_non_leader_exec_keeps_its_execve() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["thread-exec", "100"]);
    let child = child_of(&lines);
    let stats = daemon.final_stats(child);
    assert_eq!(processes(&stats, child).len(), 1, "{stats:#}");
    let p = process(&stats, child).unwrap();
    let c = counts(p, native_abi());
    // The execve made by the second thread returns (as the leader) into the new image.
    assert_eq!(c.get("execve"), Some(&(1, 0)), "{p:#}");
    assert_eq!(c.get("getppid"), Some(&(100, 0)), "{p:#}");
}

/// The test knob is refused, in one line with exit 2, when it is not a power of two the array
/// can take: never ignored for the default size.
#[test]
fn a_bad_array_length_is_refused() {
    for value in ["3", "0", "65536", "four"] {
        let out = std::process::Command::new(tests::daemon_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("SYSCALL_PROFILER_TIDS_ENTRIES", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("SYSCALL_PROFILER_TIDS_ENTRIES=\"{value}\"")),
            "{stderr}"
        );
    }
}
