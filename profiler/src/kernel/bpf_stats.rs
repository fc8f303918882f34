//! The profiler's own overhead, as the kernel measures it: with `BPF_ENABLE_STATS`
//! (`BPF_STATS_RUN_TIME`) the kernel times every run of every BPF program, and reports each
//! program's total run time and run count. Stats stay on while the returned fd is open and go
//! off when the last holder closes it, so a crash cannot leave them on — unlike the global
//! `kernel.bpf_stats_enabled` sysctl, which this deliberately does not touch.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use aya::sys::{enable_stats, Stats};
use tracing::{info, warn};

/// One of the daemon's own BPF programs, as the kernel accounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    /// The tracepoint it is attached to.
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// Turns run-time stats on; keep the fd for as long as they should stay on. `None` (with a
/// warning) when the kernel refuses: profiling goes on without the overhead figures.
pub fn enable() -> Option<OwnedFd> {
    match enable_stats(Stats::RunTime) {
        Ok(fd) => {
            info!("BPF run-time stats enabled (BPF_ENABLE_STATS)");
            Some(fd)
        }
        Err(e) => {
            warn!("BPF run-time stats unavailable, /metrics will not show program overhead: {e}");
            None
        }
    }
}

/// This process's fds of one kind (`anon_inode:bpf-prog`, `anon_inode:bpf_link`): the fdinfo
/// text of each.
fn own_fdinfo(kind: &str) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == kind))
        .filter_map(|fd| {
            let name = fd.file_name();
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy())).ok()
        })
        .collect()
}

fn field<'a>(fdinfo: &'a str, name: &str) -> Option<&'a str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Run time and count of the BPF programs this process has attached, each named by the raw
/// tracepoint its link attaches it to (the kernel keeps only 15 bytes of a program's own name,
/// which makes `sched_process_exit` and `sched_process_exec` the same). Read from the kernel's
/// fdinfo of our own program and link fds: exactly ours, even when another profiler has loaded
/// programs with the same names, and readable without the CAP_SYS_ADMIN that looking programs
/// up by id needs.
pub fn read_own() -> Vec<ProgramRuns> {
    let tracepoints: BTreeMap<u32, String> = own_fdinfo("anon_inode:bpf_link")
        .iter()
        .filter_map(|info| {
            let id = field(info, "prog_id")?.parse().ok()?;
            Some((id, field(info, "tp_name")?.to_string()))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut by_name: BTreeMap<String, ProgramRuns> = BTreeMap::new();
    for info in own_fdinfo("anon_inode:bpf-prog") {
        let Some(id) = field(&info, "prog_id").and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        // Only attached programs (the loader also holds the refused fallbacks), each once.
        let Some(tp) = tracepoints.get(&id) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let num = |name| {
            field(&info, name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let e = by_name.entry(tp.clone()).or_insert(ProgramRuns {
            name: tp.clone(),
            run_time_ns: 0,
            run_count: 0,
        });
        e.run_time_ns += num("run_time_ns");
        e.run_count += num("run_cnt");
    }
    by_name.into_values().collect()
}
