//! `/metrics` against the live kernel, checked by Prometheus's own tools: `promtool check
//! metrics` on a real scrape, and a real Prometheus server (loopback only, temporary data dir)
//! that scrapes the daemon while a workload with a known profile runs, then answers PromQL.
//!
//! The workload's series are isolated by pid (`--metrics-per-pid`): its comm, `workload`, may
//! be shared by other test runs on the same host, a pid is not.

use std::{
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{pid_of, require_root, workload, Daemon};

/// Prometheus interpolates linearly inside a bucket, so its quantile is within the bucket:
/// at most 1/8 of the bucket's lower bound away (docs/design.md), i.e. 12.5%.
const INTERPOLATION_ERROR: f64 = 0.125;

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
    (ct, r.into_string().expect("body"))
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
}

fn run_workload(getppid: u32, enoent: u32, sleep: u32) -> Workload {
    let lines = workload(&[
        "calls",
        &format!("getppid={getppid}"),
        &format!("enoent={enoent}"),
        &format!("sleep={sleep}"),
    ]);
    Workload {
        child_pid: pid_of(&lines[0], "child_pid"),
        sleep_median_ns: lines[1]["sleep_median_ns"].as_u64().unwrap(),
    }
}

#[test]
fn a_real_scrape_passes_promtool_and_counts_the_workload_exactly() {
    require_root();
    let daemon = per_pid_daemon();
    let run = run_workload(1000, 100, 20);
    daemon.final_stats(run.child_pid);

    let (ct, body) = scrape(&daemon, "text/plain");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
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

    // Buckets are cumulative and end at the count: every nanosleep is under its last finite
    // le, and the le bounds ascend.
    let buckets: Vec<(f64, f64)> = body
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{fam}_duration_seconds_bucket{{"))
                && l.contains(&pid)
                && l.contains("syscall=\"nanosleep\"")
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
        .collect();
    assert!(buckets.len() >= 3, "{buckets:?}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 20.0));
    assert_eq!(buckets[buckets.len() - 2].1, 20.0);

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
    assert!(sample(&body, "syscall_profiler_drain_duration_seconds_total", &[]).unwrap() > 0.0);
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
}

/// A Prometheus server on a free loopback port, scraping only the daemon every second and
/// evaluating deploy/prometheus/rules.yml every second.
struct Prometheus {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("metrics-e2e-prometheus-{}", port));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  \
                 evaluation_interval: 1s\nrule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: syscall-profiler\n    static_configs:\n      \
                 - targets: ['{target}']\n",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy/prometheus/rules.yml")
                    .display()
            ),
        )
        .unwrap();
        let child = Command::new(which("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        p.wait_until("Prometheus ready", Duration::from_secs(60), || {
            ureq::get(&format!("{}/-/ready", p.base)).call().is_ok()
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn wait_until(&self, what: &str, timeout: Duration, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant query: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let r: Value = ureq::get(&format!("{}/api/v1/query", self.base))
            .query("query", q)
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap_or_else(|e| panic!("query {q}: {e}"))
            .into_json()
            .unwrap();
        assert_eq!(r["status"], "success", "{q}: {r}");
        r["data"]["result"].as_array().unwrap().clone()
    }

    /// The value of a query that must give exactly one series.
    fn scalar(&self, q: &str) -> Option<f64> {
        let v = self.query(q);
        assert!(v.len() <= 1, "{q} gives several series: {v:?}");
        v.first()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_answers_promql() {
    require_root();
    let daemon = per_pid_daemon();
    let target = daemon.base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target);
    prom.wait_until("the daemon target up", Duration::from_secs(30), || {
        prom.scalar("up{job=\"syscall-profiler\"}") == Some(1.0)
    });

    let run = run_workload(200, 100, 50);
    daemon.final_stats(run.child_pid);
    let pid = run.child_pid;
    let sleep_count = format!(
        "syscall_profiler_process_syscall_duration_seconds_count{{pid=\"{pid}\",syscall=\"nanosleep\"}}"
    );
    prom.wait_until(
        "the workload's series in Prometheus",
        Duration::from_secs(30),
        || prom.scalar(&sleep_count) == Some(50.0),
    );

    // Errors by errno, exactly.
    let by_errno = prom.query(&format!(
        "sum by (errno) (syscall_profiler_process_syscall_errors_total{{pid=\"{pid}\"}})"
    ));
    assert_eq!(by_errno.len(), 1, "{by_errno:?}");
    assert_eq!(by_errno[0]["metric"]["errno"], "ENOENT");
    assert_eq!(by_errno[0]["value"][1], "100");
    assert_eq!(
        prom.scalar(&format!(
            "syscall_profiler_process_syscall_duration_seconds_count{{pid=\"{pid}\",syscall=\"getppid\"}}"
        )),
        Some(200.0)
    );

    // The median 2 ms sleep, interpolated by Prometheus inside the kernel bucket.
    let p50 = prom
        .scalar(&format!(
            "histogram_quantile(0.5, syscall_profiler_process_syscall_duration_seconds_bucket{{pid=\"{pid}\",syscall=\"nanosleep\"}})"
        ))
        .expect("a quantile");
    let truth = run.sleep_median_ns as f64 / 1e9;
    assert!(
        (p50 - truth).abs() / truth <= INTERPOLATION_ERROR,
        "histogram_quantile(0.5) = {p50} s vs measured median {truth} s"
    );
    assert!(p50 >= 0.002 * (1.0 - INTERPOLATION_ERROR), "{p50}");

    // The default (comm, cgroup) series exist for the workload, and self-telemetry is there.
    assert!(!prom
        .query("syscall_profiler_syscall_duration_seconds_count{comm=\"workload\",syscall=\"nanosleep\"}")
        .is_empty());
    assert!(prom
        .scalar("sum(syscall_profiler_bpf_program_runs_total{program=\"sys_exit\"})")
        .is_some_and(|n| n > 0.0));
    assert_eq!(prom.scalar("syscall_profiler_build_info"), Some(1.0));

    // The dashboard's recording rules evaluate on the real series (--bpf-stats is on, so the
    // overhead per run exists too), and a healthy daemon fires no alert. A rate needs the
    // series to grow after its first sample: a second run.
    let again = run_workload(10, 10, 1);
    daemon.final_stats(again.child_pid);
    for rule in [
        "instance_comm_cgroup:syscall_profiler_syscall_duration_seconds_sum:rate5m{comm=\"workload\"}",
        "instance_comm_cgroup:syscall_profiler_syscall_duration_seconds_count:rate5m{comm=\"workload\"}",
        "instance_comm_cgroup_errno:syscall_profiler_syscall_errors:rate5m{comm=\"workload\",errno=\"ENOENT\"}",
        "instance_program:syscall_profiler_bpf_program_run_duration_ns_per_run:rate5m{program=\"sys_exit\"}",
    ] {
        prom.wait_until(rule, Duration::from_secs(30), || {
            prom.scalar(rule).is_some_and(|v| v > 0.0)
        });
    }
    let occupancy = prom.query("instance_map:syscall_profiler_kernel_map_occupancy:ratio");
    assert_eq!(
        occupancy.len(),
        4,
        "one ratio per kernel map: {occupancy:?}"
    );
    assert_eq!(
        prom.query("ALERTS{alertstate=\"firing\"}"),
        Vec::<Value>::new()
    );
}
