//! A program calling thousands of unallocated syscall numbers (a fuzzer, a test) gets each number
//! kept apart in its own and the system-wide totals, while the aggregates over processes —
//! /metrics and the history — count them all as one `unnamed` syscall: /metrics stays a scrape
//! Prometheus can take (20,000 numbers once made it refuse every scrape, past its 64 MiB answer
//! limit), and the history does not grow by 20,000 entries a second (it held over a gigabyte
//! after five minutes of 33,000 numbers). Alone in its binary: it takes 20,000 HISTS slots.

use std::time::Duration;

use tests::{syscall, Daemon, RunningWorkload};

/// Distinct unallocated numbers the workload calls, every 100 ms: 1100, 1101, …
const NRS: u64 = 20_000;
/// How long the daemon's memory is watched once every number has been drained.
const WATCH: Duration = Duration::from_secs(15);

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

fn metrics(daemon: &Daemon) -> String {
    let mut body = String::new();
    std::io::Read::read_to_string(
        &mut ureq::get(&format!("{}/metrics", daemon.base))
            .call()
            .expect("/metrics answers")
            .into_reader(),
        &mut body,
    )
    .unwrap();
    body
}

#[test]
fn thousands_of_unallocated_numbers_are_one_unnamed_syscall_in_metrics_and_history() {
    let daemon = Daemon::start(&["--interval", "200ms"]);
    let mut live = RunningWorkload::start(&["live-series", "1", &NRS.to_string()]);
    live.next_line();
    let last = format!("syscall_{}", 1100 + NRS - 1);
    // Every number has been drained once the last has (the drain reads them all each time).
    daemon.wait_for(
        &format!("?syscall={last}&top=1"),
        Duration::from_secs(60),
        |s| syscall(&s["syscalls"], &last).is_some(),
    );
    // The views are read all along, as a dashboard and a scraper would. The first seconds
    // settle what every series holds whatever the history (its latency buckets fill in).
    let read_for = |secs: Duration| {
        let start = std::time::Instant::now();
        while start.elapsed() < secs {
            metrics(&daemon);
            daemon.get("/history?seconds=300&top=1000");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    read_for(Duration::from_secs(5));
    let before = rss_kib(daemon.pid());
    read_for(WATCH);
    let grew_kib = rss_kib(daemon.pid()).saturating_sub(before);

    // The system-wide totals keep every number apart.
    for nr in [1100, 1100 + NRS / 2, 1100 + NRS - 1] {
        let name = format!("syscall_{nr}");
        let s = daemon.stats(&format!("?syscall={name}&top=1"));
        let e = syscall(&s["syscalls"], &name).unwrap_or_else(|| panic!("{name}: {s}"));
        assert!(e["count"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["errnos"]["ENOSYS"], e["count"], "{e}");
    }

    // /metrics: one unnamed series of the workload's group holds them all; none by number.
    let body = metrics(&daemon);
    let numbered: Vec<&str> = body
        .lines()
        .filter(|l| l.contains("syscall=\"syscall_"))
        .take(3)
        .collect();
    assert!(numbered.is_empty(), "series by number: {numbered:#?}");
    let unnamed: u64 = body
        .lines()
        .filter(|l| l.starts_with("syscall_profiler_syscall_duration_seconds_count{"))
        .filter(|l| l.contains("comm=\"workload\"") && l.contains("syscall=\"unnamed\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() as u64)
        .sum();
    assert!(
        unnamed >= NRS * 10,
        "the workload's unnamed calls: {unnamed}, at least {} expected ({} B of /metrics)",
        NRS * 10,
        body.len()
    );

    // The history: one unnamed row, no row by number.
    let (status, h) = daemon.get("/history?seconds=300&top=1000");
    assert_eq!(status, 200, "{h}");
    let rows = h["syscalls"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("syscall_")),
        "rows by number: {names:?}"
    );
    let row = rows
        .iter()
        .find(|r| r["name"] == "unnamed")
        .unwrap_or_else(|| panic!("no unnamed row: {names:?}"));
    // (Other processes' calls count there too: a syscall newer than the table is unnamed.)
    assert!(row["errors"].as_u64().unwrap() >= NRS * 10, "{row}");

    // Nothing grows with the slices: 20,000 entries a second took about 8 MB a second.
    eprintln!("the daemon's RSS grew by {} KiB in {WATCH:?}", grew_kib);
    assert!(
        grew_kib < 32 * 1024,
        "the daemon's RSS grew by {grew_kib} KiB in {WATCH:?}"
    );

    drop(live.child.stdin.take());
    live.wait_success();
}
