//! The daemon under hostile clients (issue 11): `/healthz` while 100 connections pipeline
//! requests and never read, and while 300 slowloris connections trickle request heads; an
//! authorised `/metrics` scrape, and the daemon's CPU and threads, while wrk floods it with wrong
//! passwords on 100 connections (one password, then distinct ones). A fresh daemon for each.
//! `cargo xtask bench-hostile` runs this alone (about a minute) and puts its table in this CPU
//! kind's section of docs/benchmarks.md; `cargo xtask bench` runs it last. Measures; asserts
//! nothing.

use std::{
    fmt::Write as _,
    io::{self, Write},
    net::TcpStream,
    os::fd::FromRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Args;

use super::{
    attach::{find_on_path, Daemon},
    load, machine, stats,
};

#[derive(Args, Debug)]
pub struct HostileArgs {
    /// Seconds each scenario is measured [default: 10].
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub secs: u64,
    /// The daemon binary [default: target/release/syscall-profiler, built first].
    #[arg(long, value_name = "PATH")]
    pub daemon_bin: Option<PathBuf>,
    /// Where to put the table [default: docs/benchmarks.md in the workspace, in this CPU kind's
    /// section].
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// One scenario's figures.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub probe: String,
    pub latencies_ms: Vec<f64>,
    /// Probes that got no 200 within [`PROBE_TIMEOUT`].
    pub failures: u64,
    pub daemon_cpu_percent: f64,
    /// The share of it on the password-checking thread; None without one.
    pub bcrypt_cpu_percent: Option<f64>,
    pub most_threads: u64,
    /// What else was seen: the flood's answers, the stop.
    pub notes: String,
}

/// A probe that takes longer failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes a second.
const PROBE_RATE: u32 = 10;
const PASSWORD: &str = "bench-password";

pub fn run(root: &Path, args: HostileArgs) -> Result<()> {
    let wrk = wrk()?;
    let bin = match &args.daemon_bin {
        Some(b) => b.clone(),
        None => super::build_daemon(root)?,
    };
    let load_before = machine::loadavg();
    let rows = measure(&bin, &wrk, Duration::from_secs(args.secs))?;
    let mut md = render(&rows, args.secs);
    let _ = writeln!(
        md,
        "\nLoad average (1 min) at start / end: {load_before} / {}; `cargo xtask bench-hostile \
         --secs {}`, tree {}.",
        machine::loadavg(),
        args.secs,
        machine::tree(root, &["docs/benchmarks.md"])
    );
    println!("\n{md}");
    let out = args
        .output
        .unwrap_or_else(|| root.join("docs/benchmarks.md"));
    let doc = std::fs::read_to_string(&out).unwrap_or_default();
    let key = machine::machine(root).cpu.key();
    std::fs::write(&out, splice(&doc, &key, &md))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The flood scenarios' load generator, looked up before anything is measured: a run that
/// found it missing at the end lost every figure taken before.
pub fn wrk() -> Result<PathBuf> {
    find_on_path("wrk").context("wrk is not installed (Debian: apt-get install wrk)")
}

pub fn measure(bin: &Path, wrk: &Path, secs: Duration) -> Result<Vec<Row>> {
    let mut rows = stalled_readers_scenario(bin, secs)?;
    rows.push(slowloris_scenario(bin, secs)?);
    let dir = std::env::temp_dir().join(format!("bench-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for distinct in [false, true] {
        rows.push(flood_scenario(bin, wrk, &dir, distinct, secs)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// Idle, then 100 clients that never read; then SIGTERM a second after 100 more stall.
fn stalled_readers_scenario(bin: &Path, secs: Duration) -> Result<Vec<Row>> {
    let daemon = Daemon::start(bin, &[])?;
    let mut rows = vec![probed(&daemon, "idle", "/healthz", None, secs / 2)];
    let what = "100 clients never read";
    let stalled = stalled_readers(&daemon.base, 100)?;
    thread::sleep(Duration::from_secs(1));
    rows.push(probed(&daemon, what, "/healthz", None, secs));
    rows.push(probed(&daemon, what, "/metrics", None, secs));
    // The first ones are closed by now (request_timeout): stop with newly stalled ones.
    drop(stalled);
    let stalled = stalled_readers(&daemon.base, 100)?;
    // Long enough for their socket buffers to fill: stalled, not still being answered.
    thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    daemon.stop()?;
    rows.last_mut().unwrap().notes = format!(
        "exit {:.1} s after SIGTERM, {} clients stalled",
        t0.elapsed().as_secs_f64(),
        stalled.len()
    );
    Ok(rows)
}

fn slowloris_scenario(bin: &Path, secs: Duration) -> Result<Row> {
    let daemon = Daemon::start(bin, &[])?;
    let loris = Slowloris::start(addr_of(&daemon.base), 300);
    thread::sleep(Duration::from_secs(3));
    let row = probed(&daemon, "300 slowloris", "/healthz", None, secs);
    drop(loris);
    daemon.stop()?;
    Ok(row)
}

/// An authorised scraper during wrk's flood of wrong passwords (alice's, at bcrypt cost 10).
fn flood_scenario(
    bin: &Path,
    wrk: &Path,
    dir: &Path,
    distinct: bool,
    secs: Duration,
) -> Result<Row> {
    let web = dir.join("web.toml");
    let hash = bcrypt::hash(PASSWORD, 10)?;
    std::fs::write(&web, format!("[basic_auth_users]\nalice = \"{hash}\"\n"))?;
    let daemon = Daemon::start(bin, &["--web-config".into(), web.display().to_string()])?;
    let alice = basic("alice", PASSWORD);
    // The scraper's first request pays bcrypt once, as in life.
    let first = probe_agent()
        .get(&format!("{}/metrics", daemon.base))
        .set("Authorization", &alice)
        .call();
    anyhow::ensure!(
        first.as_ref().is_ok_and(|r| r.status() == 200),
        "an authorised /metrics failed before the flood: {first:?}"
    );
    let flood = Flood::start(
        wrk,
        dir,
        &daemon.base,
        distinct,
        secs + Duration::from_secs(2),
    )?;
    thread::sleep(Duration::from_secs(1));
    let scenario = match distinct {
        false => "wrk -c100, one wrong password",
        true => "wrk -c100, distinct wrong passwords",
    };
    let mut row = probed(&daemon, scenario, "/metrics", Some(&alice), secs);
    row.notes = flood.finish()?;
    daemon.stop()?;
    Ok(row)
}

/// Probes `path` at [`PROBE_RATE`] for `secs` while sampling the daemon's CPU and threads:
/// `/healthz` on a fresh connection each time (what a new client meets), anything else on one
/// kept alive (a scraper's).
fn probed(daemon: &Daemon, scenario: &str, path: &str, auth: Option<&str>, secs: Duration) -> Row {
    let pid = daemon.pid();
    let url = format!("{}{path}", daemon.base);
    let fresh = path == "/healthz";
    let ticks0 = load::cpu_ticks(pid).unwrap_or(0);
    let bcrypt0 = bcrypt_ticks(pid);
    let t0 = Instant::now();
    let mut row = Row {
        scenario: scenario.into(),
        probe: match auth {
            Some(_) => format!("{path} (authorised)"),
            None => path.into(),
        },
        ..Default::default()
    };
    let kept = probe_agent();
    while t0.elapsed() < secs {
        let started = Instant::now();
        let agent = if fresh { probe_agent() } else { kept.clone() };
        let mut req = agent.get(&url);
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        match req.call() {
            Ok(r) if r.status() == 200 => {
                let _ = io::copy(&mut r.into_reader(), &mut io::sink());
                row.latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
            _ => row.failures += 1,
        }
        row.most_threads = row.most_threads.max(threads(pid));
        let period = Duration::from_secs(1) / PROBE_RATE;
        thread::sleep(period.saturating_sub(started.elapsed()));
    }
    let (hz, took) = (load::clock_ticks_per_sec(), t0.elapsed().as_secs_f64());
    let ticks = load::cpu_ticks(pid).unwrap_or(ticks0) - ticks0;
    row.daemon_cpu_percent = load::percent_of_cpu(ticks, hz, took);
    row.bcrypt_cpu_percent = bcrypt0
        .zip(bcrypt_ticks(pid))
        .map(|(a, b)| load::percent_of_cpu(b.saturating_sub(a), hz, took));
    println!(
        "{scenario}: {} p99 {:.1} ms, {} failed; daemon {:.0}% CPU, {} threads",
        row.probe,
        stats::percentile(&row.latencies_ms, 99.0).unwrap_or(f64::NAN),
        row.failures,
        row.daemon_cpu_percent,
        row.most_threads
    );
    row
}

fn probe_agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(PROBE_TIMEOUT).build()
}

/// CPU ticks of the daemon's password-checking threads, if it has any.
fn bcrypt_ticks(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let ticks: Vec<u64> = tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("password-check"))
        })
        .filter_map(|t| {
            load::parse_stat_cpu_ticks(&std::fs::read_to_string(t.path().join("stat")).ok()?)
        })
        .collect();
    (!ticks.is_empty()).then(|| ticks.iter().sum())
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn basic(user: &str, password: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {creds}")
}

fn addr_of(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// A connection whose receive buffer is as small as the kernel allows, so an answer it never
/// reads stalls the server's writes after a few kilobytes. (The tests use it too.)
pub fn small_window_connection(addr: &str) -> io::Result<TcpStream> {
    let target: std::net::SocketAddrV4 = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Owned from here on: closed on every error path.
        let stream = TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: target.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*target.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// `n` connections that send a /stats and 60 /metrics requests at once and never read.
fn stalled_readers(base: &str, n: usize) -> Result<Vec<TcpStream>> {
    let pipelined = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n".to_string()
        + &"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(60);
    (0..n)
        .map(|_| {
            let mut c = small_window_connection(addr_of(base))?;
            c.write_all(pipelined.as_bytes())?;
            Ok(c)
        })
        .collect()
}

/// Slowloris: `n` connections sending a request head a byte a second, reopened as the daemon
/// closes them, until dropped (or two minutes pass).
struct Slowloris {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Slowloris {
    fn start(addr: &str, n: usize) -> Slowloris {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, flag) = (addr.parse().expect("an address"), stop.clone());
        let open = move || -> Option<TcpStream> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            c.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(c)
        };
        let thread = thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
            let end = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                for c in conns.iter_mut() {
                    let alive = c.as_mut().is_some_and(|s| s.write_all(b"X").is_ok());
                    if !alive {
                        *c = open();
                    }
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
        Slowloris {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// wrk on 100 connections sending /metrics with alice's wrong password: the same one, or one
/// of 20,000 distinct ones picked at random per request (a Lua script).
struct Flood {
    child: std::process::Child,
}

impl Flood {
    fn start(wrk: &Path, dir: &Path, base: &str, distinct: bool, secs: Duration) -> Result<Flood> {
        let mut cmd = Command::new(wrk);
        cmd.args(["-t2", "-c100", &format!("-d{}s", secs.as_secs())]);
        if distinct {
            let script = dir.join("distinct.lua");
            let mut lua = String::from("local h = {\n");
            for i in 0..20_000 {
                let _ = writeln!(lua, "\"{}\",", basic("alice", &format!("wrong-{i}")));
            }
            lua.push_str(
                "}\nrequest = function()\n  return wrk.format(nil, nil, \
                 {[\"Authorization\"] = h[math.random(#h)]})\nend\n",
            );
            std::fs::write(&script, lua)?;
            cmd.arg("-s").arg(script);
        } else {
            cmd.args(["-H", &format!("Authorization: {}", basic("alice", "wrong"))]);
        }
        let child = cmd
            .arg(format!("{base}/metrics"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting wrk")?;
        Ok(Flood { child })
    }

    /// wrk's requests a second and refusals, from its report.
    fn finish(self) -> Result<String> {
        let out = self.child.wait_with_output()?;
        if !out.status.success() {
            bail!("wrk failed ({})", out.status);
        }
        Ok(summarize_wrk(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// "N req/s, M of them refused (non-2xx)" from wrk's report.
pub fn summarize_wrk(report: &str) -> String {
    let field = |prefix: &str| {
        report.lines().find_map(|l| {
            let v = l.trim().strip_prefix(prefix)?;
            Some(v.trim().to_string())
        })
    };
    let rate = field("Requests/sec:").unwrap_or_else(|| "?".into());
    let refused = field("Non-2xx or 3xx responses:").unwrap_or_else(|| "0".into());
    let requests = report
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(" requests in ")?;
            rest.contains(',').then(|| n.to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("flood: {requests} requests ({rate}/s), {refused} refused")
}

/// The table, a `### Hostile clients` subsection.
pub fn render(rows: &[Row], secs: u64) -> String {
    let mut md = String::from("### Hostile clients\n\n");
    let _ = writeln!(
        md,
        "A fresh release daemon per scenario (defaults: max_connections 256, \
         max_concurrent_requests 4, request_timeout 10 s; basic auth at bcrypt cost 10 for the \
         floods). A probe every {} ms for {secs} s (the idle row: half that): `/healthz` on a \
         fresh connection each time, `/metrics` on one kept alive, as a scraper does; a probe \
         without a 200 within {} s failed. Latency is request to last byte; percentiles are \
         nearest-rank. Daemon CPU is over the probing window, in % of one core, with the share \
         of its password-checking thread (none before issue 11's fix); threads is the most \
         seen.\n",
        1000 / PROBE_RATE,
        PROBE_TIMEOUT.as_secs()
    );
    md.push_str(
        "| scenario | probe | probes | failed | p50 ms | p99 ms | max ms | daemon CPU % | \
         of it bcrypt % | threads | notes |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | \
         ---: | ---: | ---: | --- |\n",
    );
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            r.scenario,
            r.probe,
            r.latencies_ms.len() as u64 + r.failures,
            r.failures,
            ms(stats::percentile(&r.latencies_ms, 50.0)),
            ms(stats::percentile(&r.latencies_ms, 99.0)),
            ms(stats::min_max(&r.latencies_ms).map(|m| m.1)),
            r.daemon_cpu_percent,
            r.bcrypt_cpu_percent
                .map_or("–".into(), |p| format!("{p:.0}")),
            r.most_threads,
            r.notes
        );
    }
    md
}

/// `doc` with `md` as the hostile clients subsection of CPU kind `key`'s section: replacing
/// the one there, or added at the section's end (a new section if there is none).
pub fn splice(doc: &str, key: &str, md: &str) -> String {
    let marker = machine::section_marker(key);
    let Some(start) = doc.find(&marker) else {
        let section = format!(
            "{marker}\n## {key}\n\n{}\n{}\n",
            md.trim_end(),
            machine::SECTION_END
        );
        return machine::merge_section(doc, key, &section);
    };
    let end = doc[start..]
        .find(machine::SECTION_END)
        .map_or(doc.len(), |e| start + e);
    let section = &doc[start..end];
    let (before, after) = match section.find("### Hostile clients") {
        Some(h) => {
            let rest = &section[h + 3..];
            let next = rest.find("\n### ").map_or(section.len(), |n| h + 3 + n + 1);
            (&section[..h], &section[next..])
        }
        None => (section, ""),
    };
    format!(
        "{}{}\n\n{}\n\n{after}{}",
        &doc[..start],
        before.trim_end(),
        md.trim_end(),
        &doc[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_summarize() {
        let report = "Running 10s test @ http://127.0.0.1:1/metrics\n  2 threads and 100 \
                      connections\n  31234 requests in 10.01s, 5.1MB read\n  Non-2xx or 3xx \
                      responses: 31234\nRequests/sec:   3120.45\nTransfer/sec:    520KB\n";
        assert_eq!(
            summarize_wrk(report),
            "flood: 31234 requests (3120.45/s), 31234 refused"
        );
        assert_eq!(summarize_wrk(""), "flood: ? requests (?/s), 0 refused");
    }

    #[test]
    fn the_subsection_replaces_its_old_self_inside_its_cpu_section() {
        let key = "K";
        let marker = machine::section_marker(key);
        let end = machine::SECTION_END;
        let doc = format!("# B\n\n{marker}\n## K\n\n### A\n\na\n\n{end}\n");
        let once = splice(&doc, key, "### Hostile clients\n\nv1\n");
        assert!(
            once.contains("a\n\n### Hostile clients\n\nv1\n\n<!--"),
            "{once}"
        );
        let twice = splice(&once, key, "### Hostile clients\n\nv2\n");
        assert!(twice.contains("v2") && !twice.contains("v1"), "{twice}");
        assert_eq!(twice.matches("### Hostile clients").count(), 1);
        // A later subsection is kept.
        let with_later = once.replace("v1\n", "v1\n\n### Z\n\nz\n");
        let replaced = splice(&with_later, key, "### Hostile clients\n\nv3\n");
        assert!(
            replaced.contains("v3") && replaced.contains("### Z\n\nz"),
            "{replaced}"
        );
        // No section for this CPU kind yet: one is made.
        let fresh = splice("# B\n", key, "### Hostile clients\n\nv\n");
        assert!(fresh.contains(&marker) && fresh.contains("v\n"), "{fresh}");
    }
}
