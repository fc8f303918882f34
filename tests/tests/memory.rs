//! The daemon's memory bound (docs/performance.md, "The daemon's memory"): a host with 10,000
//! live (process, syscall) series and 20,000 short-lived processes of 20 syscalls each, scraped
//! all along, keeps the daemon's peak RSS (VmHWM) under the bound. A memory bound is a property,
//! not a timing: the test checks it as it would a count.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{workload, Daemon, RunningWorkload};

/// MiB. See docs/performance.md for what it is made of.
const BOUND_MIB: u64 = 160;

/// A `kB` figure of /proc/PID/status (VmRSS, VmHWM), in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// /stats of pid 1 alone: the store and kernel map figures without every process's entry.
fn small_stats(daemon: &Daemon) -> Value {
    daemon.stats("?pid=1")
}

fn scrape(daemon: &Daemon) {
    // Not into_string(): it refuses bodies over 10 MB, and with 20,000 processes' groups the
    // body can pass that.
    let mut metrics = String::new();
    std::io::Read::read_to_string(
        &mut ureq::get(&format!("{}/metrics", daemon.base))
            .call()
            .unwrap()
            .into_reader(),
        &mut metrics,
    )
    .unwrap();
    assert!(metrics.contains("syscall_profiler_syscall_duration_seconds"));
    small_stats(daemon);
}

#[test]
fn peak_memory_stays_within_its_bound_with_10k_series_and_20k_processes() {
    // Faster drains free the slots of exited processes sooner: 20,000 processes of 20 syscalls
    // in about a minute stay within HISTS beside the 10,000 live series.
    let daemon = Daemon::start(&["--interval", "200ms"]);
    let mut live = RunningWorkload::start(&["live-series", "100", "100"]);
    live.next_line();
    let deadline = Instant::now() + Duration::from_secs(60);
    while small_stats(&daemon)["kernel_maps"]["hists_entries"]
        .as_u64()
        .unwrap()
        < 10_000
    {
        assert!(Instant::now() < deadline, "the 10,000 series never showed");
        scrape(&daemon);
        std::thread::sleep(Duration::from_millis(500));
    }
    let quiet_hwm = status_kib(daemon.pid(), "VmHWM");

    let storm = std::thread::spawn(|| workload(&["series", "20000", "20", "1"]));
    while !storm.is_finished() {
        scrape(&daemon);
        std::thread::sleep(Duration::from_millis(500));
    }
    storm.join().unwrap();
    for _ in 0..5 {
        scrape(&daemon);
        std::thread::sleep(Duration::from_millis(300));
    }

    let s = small_stats(&daemon);
    let (rss, hwm) = (
        status_kib(daemon.pid(), "VmRSS"),
        status_kib(daemon.pid(), "VmHWM"),
    );
    let summary = format!(
        "VmHWM {} MiB (with the series alone {} MiB), VmRSS {} MiB; store {}; kernel maps {}",
        hwm / 1024,
        quiet_hwm / 1024,
        rss / 1024,
        s["store"],
        s["kernel_maps"]
    );
    eprintln!("{summary}");
    // The load was what it says: the store holds --max-exited's 10,000 exited processes (the
    // rest evicted), and no histogram was lost to a full map.
    assert_eq!(s["store"]["exited_processes"], 10_000, "{summary}");
    assert!(
        s["store"]["evicted_early"].as_u64().unwrap() >= 9_000,
        "{summary}"
    );
    assert_eq!(s["kernel_maps"]["drops"]["hists_full"], 0, "{summary}");
    assert!(
        hwm <= BOUND_MIB * 1024,
        "over the {BOUND_MIB} MiB bound: {summary}"
    );
    drop(live.child.stdin.take());
    live.wait_success();
}
