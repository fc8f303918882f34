//! The daemon under load: its CPU and memory while draining many live series, and its HTTP
//! latency under concurrent clients.

use std::{
    io::Read,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// utime + stime, in clock ticks, from the text of /proc/PID/stat. The fields are counted after
/// the last ')' because the command name in parentheses may itself hold spaces and parentheses.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After "pid (comm)" come state (field 3) … utime (14) and stime (15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of /proc/PID/status, e.g. `VmRSS:     1234 kB`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}: {stat:?}"))
}

/// A `kB` figure of /proc/PID/status: VmRSS now, VmHWM the peak.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, key).with_context(|| format!("no {key} in {path}"))
}

pub fn clock_ticks_per_sec() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The CPU time `pid` has used so far, all its threads (exited ones included), in ns: its
/// process CPU-time clock. /proc/PID/stat counts clock ticks, 10 ms each, which measured a
/// daemon near 0.5% of a CPU over 10 s in steps of 0.1%.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the call writes one clockid_t, which `clock` is.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if rc != 0 {
        let e = std::io::Error::from_raw_os_error(rc);
        anyhow::bail!("the CPU clock of process {pid}: {e}");
    }
    clock_ns(clock).with_context(|| format!("reading the CPU clock of process {pid}"))
}

/// The time of `clock` (`clock_gettime`), in ns.
pub fn clock_ns(clock: libc::clockid_t) -> std::io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the call writes one timespec, which `ts` is.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CPU use of `pid` over `window`, in percent of one CPU.
pub fn cpu_percent(pid: u32, window: Duration) -> Result<f64> {
    let (t0, c0) = (Instant::now(), cpu_ns(pid)?);
    thread::sleep(window);
    let (t1, c1) = (Instant::now(), cpu_ns(pid)?);
    Ok(percent_of_cpu_ns(c1 - c0, t1 - t0))
}

/// `cpu_ns` of CPU time over `wall`, in percent of one CPU.
pub fn percent_of_cpu_ns(cpu_ns: u64, wall: Duration) -> f64 {
    cpu_ns as f64 / wall.as_nanos().max(1) as f64 * 100.0
}

pub fn percent_of_cpu(ticks: u64, hz: f64, secs: f64) -> f64 {
    ticks as f64 / hz / secs * 100.0
}

/// HTTP GET of `base + path`: status and body length. Transport failures are errors; any status
/// is an answer.
pub fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, u64), String> {
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let _ = std::io::copy(&mut r.into_reader(), &mut std::io::sink());
            return Ok((code, 0));
        }
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    // Read to the end whatever the size: ureq's into_string() stops at 10 MB.
    let n = std::io::copy(&mut resp.into_reader(), &mut std::io::sink())
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, n))
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// The daemon's view of its (process, syscall) map, from `/stats?top=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelMap {
    /// Series in the kernel map: every process on the host, not only the load's.
    pub entries: u64,
    pub capacity: Option<u64>,
    /// Events dropped because the map was full, since the daemon started.
    pub dropped: Option<u64>,
}

pub fn parse_kernel_map(stats: &serde_json::Value) -> Option<KernelMap> {
    let maps = stats.get("kernel_maps")?;
    Some(KernelMap {
        entries: maps.get("hists_entries")?.as_u64()?,
        capacity: maps.get("hists_capacity").and_then(|v| v.as_u64()),
        dropped: maps.pointer("/drops/hists_full").and_then(|v| v.as_u64()),
    })
}

/// A pinned daemon's checkpoints (`store.checkpoint` in /stats): how many it committed, and the
/// last one's size and cost (encoding and writing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub committed: u64,
    pub last_bytes: u64,
    pub last_duration_ns: u64,
}

pub fn parse_checkpoint(stats: &serde_json::Value) -> Option<Checkpoint> {
    let c = stats.pointer("/store/checkpoint")?;
    Some(Checkpoint {
        committed: c.get("committed")?.as_u64()?,
        last_bytes: c.get("last_bytes")?.as_u64()?,
        last_duration_ns: c.get("last_duration_ns")?.as_u64()?,
    })
}

/// `None` for a daemon that does not checkpoint. Asks about pid 1 alone: a small answer.
pub fn checkpoint(agent: &ureq::Agent, base: &str) -> Option<Checkpoint> {
    let resp = agent.get(&format!("{base}/stats?pid=1")).call().ok()?;
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).ok()?;
    parse_checkpoint(&serde_json::from_str(&body).ok()?)
}

/// Exited processes the daemon's store holds (`store.exited_processes`), asking about pid 1
/// alone; `None` if the daemon does not say.
pub fn exited_processes(agent: &ureq::Agent, base: &str) -> Option<u64> {
    let resp = agent.get(&format!("{base}/stats?pid=1")).call().ok()?;
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).ok()?;
    let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
    stats.pointer("/store/exited_processes")?.as_u64()
}

/// `None` if the daemon's schema has no such fields.
pub fn kernel_map(agent: &ureq::Agent, base: &str) -> Option<KernelMap> {
    let resp = agent.get(&format!("{base}/stats?top=1")).call().ok()?;
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).ok()?;
    parse_kernel_map(&serde_json::from_str(&body).ok()?)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpResult {
    pub path: String,
    pub clients: usize,
    pub latencies_ms: Vec<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub bytes: u64,
    pub secs: f64,
}

/// `clients` threads, each with its own keep-alive connection, GET `path` back to back until
/// `duration` passes or each has made `max_per_client` requests.
pub fn http_load(
    base: &str,
    path: &str,
    clients: usize,
    duration: Duration,
    max_per_client: u64,
) -> HttpResult {
    let url = format!("{base}{path}");
    let errors = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + duration;
    let per_client: Vec<(Vec<f64>, Option<String>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (url, errors, bytes) = (&url, &errors, &bytes);
                s.spawn(move || {
                    let agent = agent();
                    let mut lat = Vec::new();
                    let mut first_error = None;
                    let mut n = 0;
                    while n < max_per_client && Instant::now() < deadline {
                        n += 1;
                        let t0 = Instant::now();
                        match get(&agent, url) {
                            Ok((200, len)) => {
                                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                                bytes.fetch_add(len, Ordering::Relaxed);
                            }
                            other => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first_error.get_or_insert_with(|| match other {
                                    Ok((code, _)) => format!("HTTP {code}"),
                                    Err(e) => e,
                                });
                            }
                        }
                    }
                    (lat, first_error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut result = HttpResult {
        path: path.to_string(),
        clients,
        errors: errors.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        secs,
        ..Default::default()
    };
    for (lat, err) in per_client {
        result.latencies_ms.extend(lat);
        if result.first_error.is_none() {
            result.first_error = err;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 4 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_kib_lines() {
        let status = "Name:\tsyscall-profil\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(18432));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_status_kib("VmRSSX:\t1 kB", "VmRSS"), None);
    }

    #[test]
    fn kernel_map_fields() {
        let v = serde_json::json!({"kernel_maps": {"hists_entries": 12, "hists_capacity": 16384,
            "drops": {"hists_full": 3}}});
        assert_eq!(
            parse_kernel_map(&v),
            Some(KernelMap {
                entries: 12,
                capacity: Some(16384),
                dropped: Some(3)
            })
        );
        let v = serde_json::json!({"kernel_maps": {"hists_entries": 12}});
        assert_eq!(parse_kernel_map(&v).map(|m| m.capacity), Some(None));
        assert_eq!(parse_kernel_map(&serde_json::json!({})), None);
    }

    #[test]
    fn cpu_percent_arithmetic() {
        // 50 ticks at 100 Hz over 10 s: 0.5 s of CPU in 10 s.
        assert_eq!(percent_of_cpu(50, 100.0, 10.0), 5.0);
        assert_eq!(percent_of_cpu(0, 100.0, 10.0), 0.0);
    }

    #[test]
    fn cpu_percent_arithmetic_in_ns() {
        // 50 ms of CPU over 10 s.
        let ten_s = Duration::from_secs(10);
        assert_eq!(percent_of_cpu_ns(50_000_000, ten_s), 0.5);
        assert_eq!(percent_of_cpu_ns(0, ten_s), 0.0);
    }

    #[test]
    fn a_process_cpu_clock_counts_its_work_and_a_reaped_one_has_none() {
        let me = std::process::id();
        let before = cpu_ns(me).unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        let used = cpu_ns(me).unwrap() - before;
        assert!(used >= 15_000_000, "{used} ns for a 20 ms spin");
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        assert!(cpu_ns(gone.id()).is_err(), "a process reaped");
    }

    #[test]
    fn ownprocess_is_readable() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_ok());
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
    }
}
