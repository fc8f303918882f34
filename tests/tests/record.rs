//! `syscall-profiler record` against the live kernel: exact counts for known commands, their
//! descendants, and nobody else.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    daemon_bin, pid_of,
    record::{parse_table, record, text},
    require_root, workload_bin, RunningWorkload,
};

/// A histogram estimate's largest error: a bucket is at most 1/8 of its lower bound wide, and
/// the estimate is its midpoint.
const BUCKET_ERROR: f64 = 0.0625;

/// Starts `record ARGS` and returns once it has attached (its first progress line says so).
fn start_recording(args: &[&str]) -> std::process::Child {
    let mut rec = Command::new(daemon_bin())
        .arg("record")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running record");
    let mut line = String::new();
    BufReader::new(rec.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("recording"), "{line}");
    rec
}

/// The JSON report on stderr, after the progress lines (the first line that is just `{`).
fn parse_json(stderr: &str) -> Value {
    let at = stderr
        .find("\n{\n")
        .map(|i| i + 1)
        .or_else(|| stderr.starts_with("{\n").then_some(0))
        .unwrap_or_else(|| panic!("no JSON report in:\n{stderr}"));
    serde_json::from_str(&stderr[at..]).expect("the report is JSON")
}

fn proc_counts(report: &Value, pid: u32) -> BTreeMap<String, (u64, u64)> {
    let p = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in the report: {report:#}"));
    p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (s["calls"].as_u64().unwrap(), s["errors"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn workload_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .take_while(|l| l.starts_with("{\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn expected(pairs: &[(&str, u64, u64)]) -> BTreeMap<String, (u64, u64)> {
    pairs
        .iter()
        .map(|&(n, c, e)| (n.to_string(), (c, e)))
        .collect()
}

#[test]
fn table_counts_a_commands_known_calls_exactly() {
    let w = workload_bin();
    let out = record(&[
        "--",
        w.to_str().unwrap(),
        "calls",
        "getppid=1000",
        "enoent=100",
        "ebadf=7",
        "sleep=5",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let (rows, total) = parse_table(&stderr);
    let table: BTreeMap<String, (u64, u64, String)> = rows
        .into_iter()
        .map(|(name, r)| (name, (r.calls, r.errors, r.p99_us)))
        .collect();
    // The workload's parent (loader, runtime) makes no getppid or nanosleep of its own, and
    // only its child fails close().
    assert_eq!(table["getppid"].0, 1000, "{stdout}");
    assert_eq!(table["getppid"].1, 0);
    assert_eq!(table["nanosleep"].0, 5);
    assert_eq!(table["close"].1, 7);
    assert!(table["openat"].1 >= 100);
    // p99 of five sleeps is the longest. The workload timed each one around the syscall, so the
    // kernel's time for it is no longer; a busy host can stretch a sleep well past 2 ms, so the
    // bound is what the workload measured, not the 2 ms it asked for.
    let p99: f64 = table["nanosleep"].2.parse().unwrap();
    let longest_us = workload_lines(&stdout)[1]["sleep_max_ns"].as_f64().unwrap() / 1e3;
    assert!(
        p99 <= longest_us * (1.0 + BUCKET_ERROR),
        "nanosleep p99 {p99} µs, yet the longest sleep the workload measured took {longest_us} µs"
    );
    assert!(
        p99 >= 2000.0 * (1.0 - BUCKET_ERROR),
        "a 2 ms sleep's p99: {p99} µs"
    );
    assert_eq!(total.calls, table.values().map(|r| r.0).sum::<u64>());
    assert_eq!(total.errors, table.values().map(|r| r.1).sum::<u64>());
    assert!(stderr.contains("recording"), "progress on stderr: {stderr}");
}

#[test]
fn json_report_is_exact_per_process_and_follows_descendants() {
    let w = workload_bin();
    let w = w.to_str().unwrap();
    // A shell runs two workloads, each of which clones a child: grandchildren and
    // great-grandchildren of record, all short-lived.
    let script = format!("{w} calls getppid=300 enoent=30; {w} calls getppid=200 ebadf=5; exit 7");
    let out = record(&["--json", "--", "sh", "-c", &script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(7),
        "record exits with the command's code\n{}",
        text(&out.stderr)
    );
    let lines = workload_lines(&stdout);
    let first = pid_of(&lines[0], "child_pid");
    let second = pid_of(&lines[2], "child_pid");
    let report = parse_json(&stderr);
    assert_eq!(report["exit_code"], 7);
    assert_eq!(report["lost_process_events"], 0);
    assert_eq!(
        proc_counts(&report, first),
        expected(&[("getppid", 300, 0), ("openat", 30, 30)])
    );
    assert_eq!(
        proc_counts(&report, second),
        expected(&[("getppid", 200, 0), ("close", 5, 5)])
    );
    for parent in [pid_of(&lines[0], "pid"), pid_of(&lines[2], "pid")] {
        assert!(
            proc_counts(&report, parent).contains_key("wait4"),
            "the workload parents are in the tree too"
        );
    }
    // Aggregates are the sums of the processes.
    for name in ["getppid", "openat", "close", "execve"] {
        let row = report["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        let sum: u64 = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["syscalls"].as_array().unwrap())
            .filter(|s| s["name"] == name)
            .map(|s| s["calls"].as_u64().unwrap())
            .sum();
        assert_eq!(row["calls"].as_u64().unwrap(), sum, "{name}");
    }
    assert!(report["syscalls"][0]["p99_ns"].as_u64().is_some());
}

#[test]
fn processes_outside_the_tree_are_not_counted() {
    // Runs during the whole recording, but was not started by the recorded command.
    let mut outsider = RunningWorkload::start(&["calls", "getppid=4000", "--wait-go"]);
    let outsider_child = pid_of(&outsider.next_line(), "child_pid");
    let w = workload_bin();
    let rec = start_recording(&["--json", "--", w.to_str().unwrap(), "block", "1"]);
    outsider.send_line();
    outsider.wait_success();
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let report = parse_json(&text(&out.stderr));
    let pids: Vec<u64> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(!pids.contains(&u64::from(outsider_child)), "{pids:?}");
    let blocked = pid_of(&workload_lines(&stdout)[0], "child_pid");
    assert_eq!(proc_counts(&report, blocked), expected(&[("read", 1, 0)]));
}

#[test]
fn pid_mode_records_one_running_process_until_it_exits() {
    require_root();
    let mut w = RunningWorkload::start(&["calls", "getppid=123", "ebadf=4", "--wait-go"]);
    let child = pid_of(&w.next_line(), "child_pid");
    let rec = start_recording(&["--json", "--pid", &child.to_string()]);
    w.send_line();
    w.wait_success();
    let started = Instant::now();
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stops when the pid exits"
    );
    let report = parse_json(&text(&out.stderr));
    assert_eq!(report["pid"], child);
    assert_eq!(
        proc_counts(&report, child),
        expected(&[("getppid", 123, 0), ("close", 4, 4)])
    );
    assert_eq!(report["processes"].as_array().unwrap().len(), 1);
}

#[test]
fn duration_ends_a_command_like_timeout() {
    let started = Instant::now();
    let out = record(&["--duration", "300ms", "--", "sleep", "30"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let (table, _) = parse_table(&text(&out.stderr));
    assert!(table.contains_key("execve"), "{table:?}");
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    for args in [
        &["--pid", "0"][..],
        &["--pid", "4000000000"],
        &["--interval", "5ms"],
        &["--duration", "soon"],
        &["--", "/nonexistent/program"],
        &["--", "no-such-program-anywhere"],
        &["--output", "/nonexistent/dir/report.txt", "--", "true"],
        &["--pid", "1", "--", "true"],
    ] {
        let out = record(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("% time"), "{args:?} printed a report: {err}");
    }
}
