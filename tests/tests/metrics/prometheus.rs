//! A real Prometheus server scraping two daemons (the default `le` bounds and the fine ones),
//! one of them through a relay that shows what went over the wire, while a workload with a
//! known profile runs; then PromQL, the dashboard's own quantile among it.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{require_root, workload_bin, Daemon};

use super::{power_of_two_le_above, run_workload_as, which, BELOW_SLEEPS, INTERPOLATION_ERROR};

/// A Prometheus server on a free loopback port, scraping only the given targets every second
/// and evaluating deploy/prometheus/rules.yml every second.
struct Prometheus {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(targets: &[&str]) -> Prometheus {
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
                 - targets: ['{}']\n",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy/prometheus/rules.yml")
                    .display(),
                targets.join("', '")
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

    /// Its log, and how its scrapes went (each target's last error).
    fn log(&self) -> String {
        let targets = ureq::get(&format!("{}/api/v1/targets", self.base))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        format!("{log}\ntargets: {targets}")
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

/// A TCP relay in front of a daemon that counts the gzipped answers passing through it: what
/// Prometheus asked for and got, seen on the wire.
struct GzipWatch {
    addr: String,
    gzipped: Arc<AtomicUsize>,
}

impl GzipWatch {
    fn start(upstream: &str) -> GzipWatch {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let gzipped = Arc::new(AtomicUsize::new(0));
        let (count, upstream) = (gzipped.clone(), upstream.to_string());
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut asks, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || std::io::copy(&mut asks, &mut to_server));
                let count = count.clone();
                thread::spawn(move || relay_answers(server, client, &count));
            }
        });
        GzipWatch { addr, gzipped }
    }
}

/// Copies answers to the client, counting the `Content-Encoding: gzip` headers among them (a
/// header split between two reads included).
fn relay_answers(mut from: TcpStream, mut to: TcpStream, gzipped: &AtomicUsize) {
    const HEADER: &[u8] = b"\r\ncontent-encoding: gzip\r\n";
    let mut window: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        window.extend(buf[..n].iter().map(u8::to_ascii_lowercase));
        let found = window
            .windows(HEADER.len())
            .filter(|w| *w == HEADER)
            .count();
        gzipped.fetch_add(found, Ordering::Relaxed);
        // Keep less than a header: a match is never counted twice.
        let keep = window.len().saturating_sub(HEADER.len() - 1);
        window.drain(..keep);
    }
}

/// The dashboard's p99 panel query, with its variables filled in.
fn dashboard_quantile(instance: &str, comm: &str, syscall: &str) -> String {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/syscall-profiler.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let expr = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .find(|e| e.starts_with("histogram_quantile(0.99,"))
        .expect("the dashboard's p99 panel")
        .to_string();
    expr.replace("$instance", instance)
        .replace("$comm", comm)
        .replace("$cgroup", ".*")
        .replace("$syscall", syscall)
        .replace("$__rate_interval", "1m")
}

/// The workload's comm here: a copy of it runs under this name.
const WORKLOAD: &str = "promql-e2e";
const COMM: &str = "comm=\"promql-e2e\"";

#[test]
fn a_real_prometheus_scrapes_the_daemons_and_answers_promql() {
    require_root();
    // Both see every syscall on the host; Prometheus reaches the default one through a relay
    // that shows what went over the wire. No per-pid series: the workload runs under a comm
    // of its own, so its (comm, cgroup) group holds its calls alone.
    let args = ["--interval", "100ms", "--retention", "2m", "--bpf-stats"];
    let daemon = Daemon::start(&args);
    let fine = Daemon::start(&[&args[..], &["--metrics-fine-buckets"]].concat());
    let watch = GzipWatch::start(daemon.base.trim_start_matches("http://"));
    let fine_target = fine.base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&[&watch.addr, &fine_target]);
    prom.wait_until("both targets up", Duration::from_secs(30), || {
        prom.query("up{job=\"syscall-profiler\"} == 1").len() == 2
    });
    let (coarse, fine_sel) = (
        format!("instance=\"{}\"", watch.addr),
        format!("instance=\"{fine_target}\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join(WORKLOAD);
    std::fs::copy(workload_bin(), &bin).unwrap();

    let run = run_workload_as(&bin, &[("getppid", 200), ("ebadf", 100), ("sleep", 50)]);
    daemon.final_stats(run.child_pid);
    fine.final_stats(run.child_pid);
    // The workload's sleeps' bucket series, with more matchers if given.
    let sleeps_where = |instance: &str, more: &str| {
        format!(
            "syscall_profiler_syscall_duration_seconds_bucket{{{instance},{COMM},syscall=\"nanosleep\"{more}}}"
        )
    };
    let sleeps = |instance: &str| sleeps_where(instance, "");
    for instance in [&coarse, &fine_sel] {
        prom.wait_until(
            "the workload's series in Prometheus",
            Duration::from_secs(30),
            || prom.scalar(&sleeps_where(instance, ",le=\"+Inf\"")) == Some(50.0),
        );
    }

    // Errors by errno, exactly (the dynamic loader's own failures are ENOENT: none is EBADF).
    let by_syscall = prom.query(&format!(
        "sum by (syscall) (syscall_profiler_syscall_errors_total{{{coarse},{COMM},errno=\"EBADF\"}})"
    ));
    assert_eq!(by_syscall.len(), 1, "{by_syscall:?}");
    assert_eq!(by_syscall[0]["metric"]["syscall"], "close");
    assert_eq!(by_syscall[0]["value"][1], "100");
    assert_eq!(
        prom.scalar(&format!(
            "syscall_profiler_syscall_duration_seconds_count{{{coarse},{COMM},syscall=\"getppid\"}}"
        )),
        Some(200.0)
    );

    // The default bounds, as Prometheus stored them: 31 series, exact at the sleeps' band.
    let sleeps_at = |le: &str| prom.scalar(&sleeps_where(&coarse, &format!(",le=\"{le}\"")));
    assert_eq!(prom.query(&sleeps(&coarse)).len(), 31);
    assert_eq!(sleeps_at(BELOW_SLEEPS), Some(0.0));
    let above = power_of_two_le_above(run.sleep_max_ns).to_string();
    assert_eq!(sleeps_at(&above), Some(50.0), "le={above}");

    // The median 2 ms sleep, interpolated by Prometheus: inside the power-of-two band with
    // the default bounds, inside the kernel bucket with the fine ones.
    let p50 = |instance: &str| {
        prom.scalar(&format!("histogram_quantile(0.5, {})", sleeps(instance)))
            .expect("a quantile")
    };
    let below: f64 = BELOW_SLEEPS.parse().unwrap();
    let coarse_p50 = p50(&coarse);
    assert!(
        coarse_p50 > below && coarse_p50 <= power_of_two_le_above(run.sleep_max_ns),
        "{coarse_p50}"
    );
    let truth = run.sleep_median_ns as f64 / 1e9;
    let fine_p50 = p50(&fine_sel);
    assert!(
        (fine_p50 - truth).abs() / truth <= INTERPOLATION_ERROR,
        "histogram_quantile(0.5) = {fine_p50} s vs measured median {truth} s"
    );
    assert!(
        fine_p50 >= 0.002 * (1.0 - INTERPOLATION_ERROR),
        "{fine_p50}"
    );

    // Prometheus asked for gzip and read it.
    assert!(
        watch.gzipped.load(Ordering::Relaxed) > 0,
        "no gzipped answer reached Prometheus"
    );

    // Self-telemetry and the daemon's process are there.
    assert!(prom
        .scalar(&format!(
            "sum(syscall_profiler_bpf_program_runs_total{{{coarse},program=\"sys_exit\"}})"
        ))
        .is_some_and(|n| n > 0.0));
    assert_eq!(prom.query("syscall_profiler_build_info").len(), 2);
    assert!(prom
        .scalar(&format!("process_resident_memory_bytes{{{coarse}}}"))
        .is_some_and(|n| n > 1e6));

    // The dashboard's recording rules and its p99 panel evaluate on the real series
    // (--bpf-stats is on, so the overhead per run exists too), and a healthy daemon fires no
    // alert. A rate needs the series to grow after its first sample: a second run.
    let again = run_workload_as(&bin, &[("getppid", 10), ("ebadf", 10), ("sleep", 5)]);
    daemon.final_stats(again.child_pid);
    for rule in [
        "instance_comm_cgroup:syscall_profiler_syscall_duration_seconds_sum:rate5m{{COMM}}",
        "instance_comm_cgroup:syscall_profiler_syscall_duration_seconds_count:rate5m{{COMM}}",
        "instance_comm_cgroup_errno:syscall_profiler_syscall_errors:rate5m{{COMM},errno=\"EBADF\"}",
        "instance_program:syscall_profiler_bpf_program_run_duration_ns_per_run:rate5m{program=\"sys_exit\"}",
    ] {
        let rule = rule
            .replace("{COMM}", COMM)
            .replacen('{', &format!("{{{coarse},"), 1);
        prom.wait_until(&rule, Duration::from_secs(30), || {
            prom.scalar(&rule).is_some_and(|v| v > 0.0)
        });
    }
    // The dashboard's p99 panel (a sum by le, then the quantile): every sleep of this comm is
    // 2 ms, so it is in their power-of-two band.
    let top = power_of_two_le_above(run.sleep_max_ns.max(again.sleep_max_ns));
    let p99 = dashboard_quantile(&watch.addr, WORKLOAD, "nanosleep");
    prom.wait_until(&p99, Duration::from_secs(30), || {
        prom.query(&p99).first().is_some_and(|s| {
            let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            v > below && v <= top
        })
    });
    let occupancy = prom.query("instance_map:syscall_profiler_kernel_map_occupancy:ratio");
    assert_eq!(
        occupancy.len(),
        8,
        "one ratio per kernel map and daemon: {occupancy:?}"
    );
    assert_eq!(
        prom.query("ALERTS{alertstate=\"firing\"}"),
        Vec::<Value>::new()
    );
}
