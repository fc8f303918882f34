//! The profiler's own overhead, as the kernel measures it: with `BPF_ENABLE_STATS`
//! (`BPF_STATS_RUN_TIME`) the kernel times every run of every BPF program, and reports each
//! program's total run time and run count. Stats stay on while the returned fd is open and go
//! off when the last holder closes it, so a crash cannot leave them on — unlike the global
//! `kernel.bpf_stats_enabled` sysctl, which this deliberately does not touch.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use tracing::{info, warn};

use crate::aggregates::BpfProgram;

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

/// The BPF programs this process has attached, by id, each named by the raw tracepoint its link
/// attaches it to (the kernel keeps only 15 bytes of a program's own name, which makes
/// `sched_process_exit` and `sched_process_exec` the same). Read from /proc/self/fdinfo, so these
/// are exactly ours even when another profiler has loaded programs with the same names.
pub fn own_programs() -> Vec<(u32, String)> {
    let mut progs = Vec::new();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return progs;
    };
    for fd in fds.flatten() {
        let is_link = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let path = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(path) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if let (Some(id), Some(tp)) = (
            field("prog_id").and_then(|v| v.parse().ok()),
            field("tp_name"),
        ) {
            progs.push((id, tp.to_string()));
        }
    }
    progs.sort();
    progs.dedup();
    progs
}

/// Run time and count of these programs, by tracepoint.
pub fn read(programs: &[(u32, String)]) -> Vec<BpfProgram> {
    let mut by_name: BTreeMap<&str, BpfProgram> = BTreeMap::new();
    for info in loaded_programs().flatten() {
        let Some((_, tp)) = programs.iter().find(|(id, _)| *id == info.id()) else {
            continue;
        };
        let e = by_name.entry(tp).or_insert(BpfProgram {
            name: tp.clone(),
            run_time_ns: 0,
            run_count: 0,
        });
        e.run_time_ns += info.run_time().as_nanos() as u64;
        e.run_count += info.run_count();
    }
    by_name.into_values().collect()
}
