//! record ends when the whole tree has: a background job that outlives the command is waited
//! for and counted (as `strace -f` does), and only then is the kernel read for the last time;
//! `--duration` still ends it on time.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::record::{differences, record, record_counts, strace_counts, text};

/// The command exits at once; its background job sleeps, then lists a directory.
const OUTLIVED: &str = "(sleep 0.4; ls / > /dev/null) & echo started";

#[test]
fn a_background_job_that_outlives_the_command_is_waited_for() {
    let started = Instant::now();
    let out = record(&["--json", "--", "sh", "-c", OUTLIVED]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(400), "{stderr}");
    assert_eq!(text(&out.stdout), "started\n");
    let report: Value = serde_json::from_str(&stderr[stderr.find("\n{\n").unwrap()..]).unwrap();
    let ls = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "ls")
        .unwrap_or_else(|| panic!("the background ls is missing: {report:#}"));
    let getdents = ls["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "getdents64")
        .unwrap_or_else(|| panic!("ls listed nothing: {ls:#}"));
    assert!(getdents["calls"].as_u64().unwrap() >= 2);
}

#[test]
fn the_outlived_tree_equals_strace() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = ["sh", "-c", OUTLIVED];
    let strace = strace_counts(&cmd, dir.path());
    let record = record_counts(&cmd, dir.path());
    assert_eq!(
        record,
        strace,
        "record vs strace -c -f: {:?}",
        differences(&record, &strace)
    );
}

#[test]
fn duration_does_not_wait_for_what_outlives_the_command() {
    // The child outlives the command by far more than loading the programs can take (seconds
    // on a busy host), so waiting for it could not pass unseen; its output goes elsewhere, or
    // the test would wait for it on record's inherited pipes.
    let started = Instant::now();
    let out = record(&[
        "--duration",
        "300ms",
        "--",
        "sh",
        "-c",
        "sleep 40 >/dev/null 2>&1 & exit 0",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
