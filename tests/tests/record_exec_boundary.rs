//! A command's calls count from its exec on, the execve's own return included, as
//! `strace -c CMD` counts them: record's set-up of its child before the exec (signal
//! dispositions and mask reset, its mark in the kernel map) is not the command's. Both ways
//! the kernel side keeps a syscall's start (task storage, and the raw-tracepoint fallback's
//! per-CPU slot parked in STARTS).

use std::process::{Command, Stdio};

use tests::{
    daemon_bin,
    record::{
        differences, record_counts, record_report, strace_counts, table_counts, text, Counts,
    },
    require_root,
};

const SKIP: &str = "SYSCALL_PROFILER_SKIP_PROGRAMS";

fn record_with_skip(skip: &str, cmd: &[&str]) -> std::process::Output {
    require_root();
    Command::new(daemon_bin())
        .arg("record")
        .arg("--")
        .args(cmd)
        .env(SKIP, skip)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bin_true_is_exactly_what_strace_counts() {
    let dir = tempfile::tempdir().unwrap();
    let strace = strace_counts(&["/bin/true"], dir.path());
    let record = record_counts(&["/bin/true"], dir.path());
    assert_eq!(
        record,
        strace,
        "record vs strace -c -f: {:?}",
        differences(&record, &strace)
    );
    assert_eq!(record["execve"], (1, 0), "the exec that starts the command");
    assert!(
        !record.contains_key("rt_sigaction"),
        "/bin/true sets no signal handler; record's child set-up did: {record:?}"
    );
}

#[test]
fn the_fallback_programs_draw_the_same_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let strace = strace_counts(&["/bin/true"], dir.path());
    let out = record_with_skip("sys_enter_btf", &["/bin/true"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let record = table_counts(&stderr);
    assert_eq!(
        record,
        strace,
        "raw tracepoints: {:?}",
        differences(&record, &strace)
    );
}

#[test]
fn without_the_btf_exec_program_record_refuses_a_command() {
    // The task storage programs keep a thread's process in its entry, which only the BTF exec
    // program can move to the command's incarnation: counting the set-up silently would be
    // wrong, so record says why and does not run the command.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let out = record_with_skip(
        "sched_process_exec_btf",
        &["touch", marker.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sched_process_exec_btf"),
        "names the program: {stderr}"
    );
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn a_command_that_execs_again_stays_one_process() {
    // sh execs ls in place (`exec`, by its path: by name, sh would try each $PATH entry):
    // strace counts both execs in one process; so does record.
    let dir = tempfile::tempdir().unwrap();
    let cmd = ["sh", "-c", "exec /bin/ls /"];
    let strace = strace_counts(&cmd, dir.path());
    let json: serde_json::Value =
        serde_json::from_str(&record_report(&["--json"], &cmd, dir.path())).unwrap();
    let processes = json["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{json:#}");
    assert_eq!(processes[0]["pid"], json["command_pid"]);
    assert_eq!(processes[0]["comm"], "ls");
    let execve = processes[0]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "execve")
        .unwrap();
    assert_eq!(execve["calls"], 2);
    let record: Counts = json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            (
                s["name"].as_str().unwrap().to_string(),
                (n("calls"), n("errors")),
            )
        })
        .collect();
    assert_eq!(
        record,
        strace,
        "record vs strace -c -f: {:?}",
        differences(&record, &strace)
    );
}
