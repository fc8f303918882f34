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

/// This process's fds of one kind (`anon_inode:bpf-prog`, `anon_inode:bpf_link`): the path
/// of each one's fdinfo, and its text.
fn own_fdinfo(kind: &str) -> Vec<(String, String)> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == kind))
        .filter_map(|fd| {
            let name = fd.file_name();
            let path = format!("/proc/self/fdinfo/{}", name.to_string_lossy());
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, text))
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
///
/// Which fds those are is found once, by listing /proc/self/fd (a readlink per fd: most of
/// this read's cost when it was done on every drain); then only the programs' fdinfo is read.
/// The daemon attaches its programs when it starts and keeps them attached, so the list stays
/// right; should an fd no longer hold the program it did, the fds are listed again.
#[derive(Default)]
pub struct OwnPrograms {
    attached: Vec<Attached>,
}

/// One attached program's fd.
struct Attached {
    /// `/proc/self/fdinfo/<fd>`.
    fdinfo: String,
    prog_id: u32,
    tracepoint: String,
}

impl OwnPrograms {
    pub fn read(&mut self) -> Vec<ProgramRuns> {
        if let Some(runs) = runs_of(&self.attached) {
            return runs;
        }
        self.attached = find_attached();
        runs_of(&self.attached).unwrap_or_default()
    }
}

/// Each program's fd that a link attaches (the loader also holds the refused fallbacks), each
/// program once.
fn find_attached() -> Vec<Attached> {
    let tracepoints: BTreeMap<u32, String> = own_fdinfo("anon_inode:bpf_link")
        .iter()
        .filter_map(|(_, info)| {
            let id = field(info, "prog_id")?.parse().ok()?;
            Some((id, field(info, "tp_name")?.to_string()))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    own_fdinfo("anon_inode:bpf-prog")
        .into_iter()
        .filter_map(|(fdinfo, info)| {
            let prog_id = prog_id(&info)?;
            let tracepoint = tracepoints.get(&prog_id)?.clone();
            seen.insert(prog_id).then_some(Attached {
                fdinfo,
                prog_id,
                tracepoint,
            })
        })
        .collect()
}

fn prog_id(fdinfo: &str) -> Option<u32> {
    field(fdinfo, "prog_id").and_then(|v| v.parse().ok())
}

/// The programs' counts summed per tracepoint; `None` if there are none, or an fd no longer
/// holds its program.
fn runs_of(attached: &[Attached]) -> Option<Vec<ProgramRuns>> {
    if attached.is_empty() {
        return None;
    }
    let mut by_name: BTreeMap<&str, ProgramRuns> = BTreeMap::new();
    for a in attached {
        let info = std::fs::read_to_string(&a.fdinfo).ok()?;
        if prog_id(&info) != Some(a.prog_id) {
            return None;
        }
        let num = |name| {
            field(&info, name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let e = by_name.entry(&a.tracepoint).or_insert(ProgramRuns {
            name: a.tracepoint.clone(),
            run_time_ns: 0,
            run_count: 0,
        });
        e.run_time_ns += num("run_time_ns");
        e.run_count += num("run_cnt");
    }
    Some(by_name.into_values().collect())
}
