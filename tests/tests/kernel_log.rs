//! The kernel programs' aya-log lines reach the daemon's log: a map found full says so, once
//! per CPU, with its counter. Alone in its own test binary (cargo runs test binaries one after
//! another): filling HISTS would fill every other daemon's HISTS running meanwhile.

use std::time::Duration;

use profiler_common::HISTS_MAX_ENTRIES;
use tests::{Daemon, RunningWorkload};

const LINE: &str = "HISTS is full: a new (process, syscall) series is not timed";

#[test]
fn a_full_map_is_logged_by_the_kernel_program_once_per_cpu() {
    let daemon = Daemon::start(&["--interval", "200ms"]);
    // One process with more distinct (unallocated, ENOSYS) syscall numbers than HISTS has slots:
    // its series stay live, so the slots run out on its first round.
    let nrs = HISTS_MAX_ENTRIES + 1_000;
    let mut live = RunningWorkload::start(&["live-series", "1", &nrs.to_string()]);
    live.next_line();
    daemon.wait_log(LINE, Duration::from_secs(30));

    let stats = daemon.wait_for("?top=1", Duration::from_secs(10), |s| {
        s["kernel_maps"]["drops"]["hists_full"].as_u64() > Some(0)
    });
    let full = stats["kernel_maps"]["drops"]["hists_full"]
        .as_u64()
        .unwrap();
    // More calls dropped than lines: the line says when it began, the counter how often.
    std::thread::sleep(Duration::from_millis(600));
    let log = daemon.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(LINE)).collect();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        !lines.is_empty() && lines.len() <= cpus,
        "one line per CPU at most ({cpus} CPUs), {full} calls dropped:\n{log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("ERROR") && l.contains("kernel")),
        "at ERROR, under the `kernel` target: {lines:?}"
    );
    assert!(
        full > lines.len() as u64,
        "{full} dropped, {} lines",
        lines.len()
    );

    drop(live.child.stdin.take());
    live.child.wait().unwrap();
    daemon.terminate();
}
