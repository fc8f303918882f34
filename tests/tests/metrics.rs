//! `/metrics` against the live kernel, checked by Prometheus's own tools: `promtool check
//! metrics` on a real scrape (plain, and gzipped to curl), and a real Prometheus server
//! (loopback only, temporary data dir) that scrapes two daemons, one with the default
//! power-of-two `le` bounds and one with the fine ones, while a workload with a known profile
//! runs, then answers PromQL, the dashboard's quantile among it.
//!
//! The workload's series are isolated by pid (`--metrics-per-pid`): its comm, `workload`, may
//! be shared by other test runs on the same host, a pid is not.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{pid_of, require_root, workload_bin, Daemon};

/// The real Prometheus server's test.
#[path = "metrics/prometheus.rs"]
mod prometheus;

/// Prometheus interpolates linearly inside a bucket, so its quantile is within the bucket:
/// at most 1/8 of the bucket's lower bound away (docs/design.md), i.e. 12.5%.
const INTERPOLATION_ERROR: f64 = 0.125;

/// The default `le` just below the 2 ms sleeps' power-of-two band, [2^20, 2^21) ns: 2^20 − 1
/// ns, under which no sleep can be.
const BELOW_SLEEPS: &str = "0.001048575";

fn per_pid_daemon() -> Daemon {
    Daemon::start(&[
        "--interval",
        "100ms",
        "--retention",
        "2m",
        "--metrics-per-pid",
        "--metrics-top-pids",
        "10000",
        // Off by default (it slows every BPF program on the host); this test checks the figures.
        "--bpf-stats",
    ])
}

/// GET /metrics with an `Accept` header: (content type, body).
fn scrape(daemon: &Daemon, accept: &str) -> (String, String) {
    let url = format!("{}/metrics", daemon.base);
    let r = ureq::get(&url)
        .set("Accept", accept)
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status(), 200);
    let ct = r.header("Content-Type").unwrap_or("").to_string();
    // Not into_string(): it refuses bodies over 10 MB, and a busy host's per-pid body passes
    // that (42 MB with 7,900 per-pid series on the project's VM while other builds ran).
    let mut body = String::new();
    std::io::Read::read_to_string(&mut r.into_reader(), &mut body).expect("body");
    (ct, body)
}

/// The value of the one sample of `name` whose labels include all of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let found: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied()
}

fn promtool() -> PathBuf {
    which("promtool")
}

fn which(bin: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{bin} is not installed: `apt-get install -y prometheus` (.ci/run does it)")
        })
}

struct Workload {
    child_pid: u32,
    sleep_median_ns: u64,
    /// Measured around the call in user space: the kernel's time, entry to return, is less.
    sleep_max_ns: u64,
}

/// `workload calls` run from `bin`, making each (kind, count) of calls; a copy of the workload
/// under another name runs with that comm.
fn run_workload_as(bin: &Path, calls: &[(&str, u32)]) -> Workload {
    let out = Command::new(bin)
        .arg("calls")
        .args(calls.iter().map(|(kind, n)| format!("{kind}={n}")))
        .output()
        .expect("running the workload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("workload prints JSON lines"))
        .collect();
    Workload {
        child_pid: pid_of(&lines[0], "child_pid"),
        sleep_median_ns: lines[1]["sleep_median_ns"].as_u64().unwrap(),
        sleep_max_ns: lines[1]["sleep_max_ns"].as_u64().unwrap(),
    }
}

fn run_workload(getppid: u32, enoent: u32, sleep: u32) -> Workload {
    run_workload_as(
        &workload_bin(),
        &[("getppid", getppid), ("enoent", enoent), ("sleep", sleep)],
    )
}

/// The smallest default `le` (2^k − 1 ns) at or above `ns`.
fn power_of_two_le_above(ns: u64) -> f64 {
    let k = (ns + 1).next_power_of_two();
    (k - 1) as f64 / 1e9
}

/// (le, cumulative count) of one histogram series in a scrape.
fn buckets_of(body: &str, family: &str, labels: &[&str]) -> Vec<(f64, f64)> {
    body.lines()
        .filter(|l| {
            l.starts_with(&format!("{family}_bucket{{")) && labels.iter().all(|w| l.contains(w))
        })
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn a_real_scrape_passes_promtool_and_counts_the_workload_exactly() {
    require_root();
    let daemon = per_pid_daemon();
    let run = run_workload(1000, 100, 20);
    daemon.final_stats(run.child_pid);

    let (ct, body) = scrape(&daemon, "text/plain");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    promtool_check(&body);

    let pid = format!("pid=\"{}\"", run.child_pid);
    let fam = "syscall_profiler_process_syscall";
    let count = |sc: &str| {
        sample(
            &body,
            &format!("{fam}_duration_seconds_count"),
            &[&pid, &format!("syscall=\"{sc}\"")],
        )
    };
    assert_eq!(count("getppid"), Some(1000.0));
    assert_eq!(count("openat"), Some(100.0));
    assert_eq!(count("nanosleep"), Some(20.0));
    assert_eq!(
        sample(
            &body,
            &format!("{fam}_errors_total"),
            &[&pid, "syscall=\"openat\"", "errno=\"ENOENT\""]
        ),
        Some(100.0)
    );
    let errno_series = body
        .lines()
        .filter(|l| l.starts_with(&format!("{fam}_errors_total{{")) && l.contains(&pid))
        .count();
    assert_eq!(errno_series, 1, "only ENOENT failed");

    // The default bounds: the same 30 powers of two and +Inf for every histogram, cumulative,
    // and exact: no 2 ms sleep is at or below 2^20 − 1 ns, every one at or below the first
    // bound above the longest (2^21 − 1 ns unless the VM delayed one past 2.097 ms).
    let buckets = buckets_of(
        &body,
        &format!("{fam}_duration_seconds"),
        &[&pid, "syscall=\"nanosleep\""],
    );
    let bounds: Vec<f64> = (7..=36)
        .map(|k| ((1u64 << k) - 1) as f64 / 1e9)
        .chain([f64::INFINITY])
        .collect();
    assert_eq!(
        buckets.iter().map(|b| b.0).collect::<Vec<_>>(),
        bounds,
        "{buckets:?}"
    );
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    let at = |le: f64| buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert_eq!(at(BELOW_SLEEPS.parse().unwrap()), 0.0, "{buckets:?}");
    assert_eq!(
        at(power_of_two_le_above(run.sleep_max_ns)),
        20.0,
        "{buckets:?}"
    );
    assert_eq!(at(f64::INFINITY), 20.0);
    let distinct_les: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(distinct_les.len(), 31, "{distinct_les:?}");

    // The (comm, cgroup) aggregate has the workload's calls (other runs may add to it).
    let group_openat = sample(
        &body,
        "syscall_profiler_syscall_errors_total",
        &[
            "comm=\"workload\"",
            "syscall=\"openat\"",
            "errno=\"ENOENT\"",
        ],
    );
    assert!(group_openat.is_some_and(|n| n >= 100.0), "{group_openat:?}");

    // Self-telemetry.
    assert_eq!(
        sample(&body, "syscall_profiler_bpf_stats_enabled", &[]),
        Some(1.0)
    );
    for prog in ["sys_enter", "sys_exit"] {
        let runs = sample(
            &body,
            "syscall_profiler_bpf_program_runs_total",
            &[&format!("program=\"{prog}\"")],
        )
        .unwrap_or(0.0);
        assert!(runs >= 1120.0, "{prog} ran {runs} times");
        let secs = sample(
            &body,
            "syscall_profiler_bpf_program_run_duration_seconds_total",
            &[&format!("program=\"{prog}\"")],
        )
        .unwrap_or(0.0);
        assert!(secs > 0.0, "{prog} run time {secs}");
    }
    assert!(sample(&body, "syscall_profiler_drains_total", &[]).unwrap() >= 2.0);
    let drain_secs = sample(&body, "syscall_profiler_drain_duration_seconds_total", &[]).unwrap();
    assert!(drain_secs > 0.0);
    // The drain thread's CPU by phase: every phase listed, the slots' and the store's work
    // counted, and no more CPU than the drains' own time (one thread; 1 ms for the sums'
    // rounding and the two clocks' read order).
    let cpu = |phase: &str| {
        sample(
            &body,
            "syscall_profiler_drain_cpu_seconds_total",
            &[&format!("phase=\"{phase}\"")],
        )
        .unwrap_or_else(|| panic!("no drain CPU for phase {phase}"))
    };
    let phases = ["slots", "maps", "store", "finish"].map(cpu);
    assert!(phases[0] > 0.0 && phases[2] > 0.0, "{phases:?}");
    let cpu_secs: f64 = phases.iter().sum();
    assert!(
        cpu_secs <= drain_secs + 0.001,
        "CPU {cpu_secs} s over {drain_secs} s of drains"
    );
    assert_eq!(
        sample(
            &body,
            "syscall_profiler_kernel_map_capacity",
            &["map=\"hists\""]
        ),
        Some(f64::from(profiler_common::HISTS_MAX_ENTRIES))
    );

    // OpenMetrics when asked for, as Prometheus asks.
    let (ct, om) = scrape(
        &daemon,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE syscall_profiler_process_syscall_errors counter"));
    assert!(om.contains("# UNIT syscall_profiler_syscall_duration_seconds seconds"));
    // Counters only grow: a later scrape never reads less.
    let (_, later) = scrape(&daemon, "text/plain");
    for name in [
        "syscall_profiler_unmatched_exits_total",
        "syscall_profiler_drains_total",
    ] {
        assert!(
            sample(&later, name, &[]) >= sample(&body, name, &[]),
            "{name}"
        );
    }

    // The daemon's own process, under the standard names.
    let pid_start = sample(&later, "process_start_time_seconds", &[]).unwrap();
    let daemon_start = sample(&later, "syscall_profiler_start_time_seconds", &[]).unwrap();
    assert!(
        (pid_start - daemon_start).abs() < 5.0,
        "{pid_start} vs {daemon_start}"
    );
    assert!(sample(&later, "process_cpu_seconds_total", &[]).unwrap() > 0.0);
    assert!(sample(&later, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    let (open, max) = (
        sample(&later, "process_open_fds", &[]).unwrap(),
        sample(&later, "process_max_fds", &[]).unwrap(),
    );
    assert!(
        open > 10.0 && max >= open,
        "{open} of {max} fds (BPF maps and programs hold fds)"
    );

    gzip_to_curl(&daemon);

    // No parameters: a scrape config's `params` would be silently ignored otherwise.
    let (status, err) = daemon.get("/metrics?le=fine");
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["param"], "le", "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("no query parameters"),
        "{err}"
    );
}

/// A real client that asks for gzip (curl --compressed) gets it, and what it unpacks passes
/// promtool.
fn gzip_to_curl(daemon: &Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let (body, headers) = (dir.path().join("body"), dir.path().join("headers"));
    let out = Command::new("curl")
        .args(["-sS", "--compressed", "-w", "%{size_download}", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .arg(format!("{}/metrics", daemon.base))
        .output()
        .expect("curl is not installed: `apt-get install -y curl`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = std::fs::read_to_string(headers)
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("\r\ncontent-encoding: gzip\r\n"),
        "{headers}"
    );
    assert!(
        headers.contains("\r\nvary: accept, accept-encoding\r\n"),
        "{headers}"
    );
    let sent: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let body = std::fs::read_to_string(body).unwrap();
    assert!(body.contains("\nsyscall_profiler_drains_total "));
    assert!(
        sent * 4 < body.len() as u64,
        "{sent} bytes sent for a body of {}",
        body.len()
    );
    promtool_check(&body);
}

fn promtool_check(body: &str) {
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}
