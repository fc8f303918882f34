//! Every /metrics family, declared once: [`FAMILIES`] is the table metrics.rs renders in one
//! loop and docs/metrics.md's table of every metric is generated from (a test keeps them
//! equal). Adding a family is adding a row: its name, type, unit, labels, help, and a function
//! that reads its series from the [`Snapshot`].

use std::{fmt, time::UNIX_EPOCH};

use profiler_common::{
    ERRNOS_MAX_ENTRIES, HISTS_MAX_ENTRIES, PROCS_MAX_ENTRIES, STARTS_MAX_ENTRIES,
};

use super::{
    exposition::{Family, Kind, Series, Shown, Unit, Value},
    snapshot::{Snapshot, SyscallSet},
};
use crate::{
    host::procself::ProcSelf,
    store::{telemetry::DrainPhase, SyscallTotals},
    syscalls,
};

/// Calls `f` with the label values (the set's, then `abi` and `syscall`) and the totals of
/// every (set, syscall): a per-syscall family's row is one call of this.
fn each_syscall(
    s: &Snapshot,
    sets: &[SyscallSet],
    mut f: impl FnMut(&[&str], &SyscallTotals) -> fmt::Result,
) -> fmt::Result {
    let mut labels: Vec<&str> = Vec::new();
    for set in sets {
        for (key, totals) in set.totals {
            labels.clear();
            labels.extend(set.labels.iter().map(|l| l.as_ref()));
            labels.extend([key.abi.name(), s.names[key].as_str()]);
            f(&labels, totals)?;
        }
    }
    Ok(())
}

/// The failures of every (set, syscall) by errno.
fn errors(s: &Snapshot, sets: &[SyscallSet], out: &mut Series) -> fmt::Result {
    each_syscall(s, sets, |labels, t| {
        for (&errno, &n) in &t.errnos {
            let errno = syscalls::errno_name(errno);
            out.value(&[labels, &[errno.as_str()]].concat(), n)?;
        }
        Ok(())
    })
}

/// One of a syscall's latency parts (the time split), in seconds, for every (set, syscall);
/// no series when the kernel side does not split (counts-only mode, a kernel without the
/// fields it reads), where every part would read 0.
fn split_part(
    s: &Snapshot,
    sets: &[SyscallSet],
    out: &mut Series,
    part: fn(&SyscallTotals) -> u64,
) -> fmt::Result {
    if !s.store.time_split() {
        return Ok(());
    }
    each_syscall(s, sets, |labels, t| out.value(labels, part(t) as f64 / 1e9))
}

struct MapState {
    full: u64,
    entries: u64,
    capacity: u32,
}

/// One series per kernel map.
fn maps(s: &Snapshot, out: &mut Series, pick: fn(&MapState) -> u64) -> fmt::Result {
    let k = s.store.kernel();
    let state = |full, entries, capacity| MapState {
        full,
        entries,
        capacity,
    };
    let maps = [
        (
            "hists",
            state(k.hists_full, k.hists_entries, HISTS_MAX_ENTRIES),
        ),
        (
            "starts",
            state(k.starts_full, k.starts_entries, STARTS_MAX_ENTRIES),
        ),
        (
            "procs",
            state(k.procs_full, k.procs_entries, PROCS_MAX_ENTRIES),
        ),
        (
            "errnos",
            state(k.errnos_full, k.errnos_entries, ERRNOS_MAX_ENTRIES),
        ),
    ];
    for (name, state) in &maps {
        out.value(&[name], pick(state))?;
    }
    Ok(())
}

/// The one series of a fact about the daemon's process, if /proc/self was read.
fn process(s: &Snapshot, out: &mut Series, pick: fn(&ProcSelf) -> Value) -> fmt::Result {
    match &s.process {
        Some(p) => out.value(&[], pick(p)),
        None => Ok(()),
    }
}

const GROUP: &[&str] = &["comm", "cgroup", "abi", "syscall"];
const GROUP_ERRNO: &[&str] = &["comm", "cgroup", "abi", "syscall", "errno"];
const PID: &[&str] = &["pid", "comm", "cgroup", "abi", "syscall"];
const PID_ERRNO: &[&str] = &["pid", "comm", "cgroup", "abi", "syscall", "errno"];

/// Every family, in the order of the body.
pub static FAMILIES: &[Family] = &[
    // What the profiled processes did.
    Family {
        name: "syscall_profiler_syscall_duration",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: GROUP,
        help: "Time from syscall entry to return, per process name (comm) and cgroup: _count is the calls, _sum the time in them. Every le bound is a kernel bucket edge, so every cumulative count is exact",
        shown: Shown::Always,
        series: |s, out| each_syscall(s, &s.groups, |l, t| out.histogram(l, &t.hist)),
    },
    Family {
        name: "syscall_profiler_syscall_errors",
        kind: Kind::Counter,
        unit: None,
        labels: GROUP_ERRNO,
        help: "Syscalls that returned an error, by errno (ENOENT), per process name (comm) and cgroup; sums to the failures unless kernel_map_full_total{map=\"errnos\"} grew",
        shown: Shown::Always,
        series: |s, out| errors(s, &s.groups, out),
    },
    // The parts of syscall_duration's _sum: they add up to it (docs/design.md, "Where the time
    // went"). Counters beside the histogram rather than labels on it: one series each, not
    // three times its buckets.
    Family {
        name: "syscall_profiler_syscall_cpu",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: GROUP,
        help: "The part of syscall_duration_seconds_sum spent on a CPU, per process name (comm) and cgroup; with runqueue and blocked it adds up to the sum (absent in counts-only mode and on kernels without the time split)",
        shown: Shown::Always,
        series: |s, out| split_part(s, &s.groups, out, |t| t.hist.on_cpu_ns()),
    },
    Family {
        name: "syscall_profiler_syscall_runqueue",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: GROUP,
        help: "The part of syscall_duration_seconds_sum spent runnable on a runqueue, waiting for a CPU (preempted or woken), per process name (comm) and cgroup",
        shown: Shown::Always,
        series: |s, out| split_part(s, &s.groups, out, |t| t.hist.split.runq_ns),
    },
    Family {
        name: "syscall_profiler_syscall_blocked",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: GROUP,
        help: "The part of syscall_duration_seconds_sum spent blocked (asleep: waiting for I/O, a lock, a timer), per process name (comm) and cgroup",
        shown: Shown::Always,
        series: |s, out| split_part(s, &s.groups, out, |t| t.hist.split.blocked_ns),
    },
    Family {
        name: "syscall_profiler_process_syscall_duration",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: PID,
        help: "Time from syscall entry to return, per process for the top processes by syscall time (counting from when each was promoted), all others under pid=\"other\"",
        shown: Shown::PerPid,
        series: |s, out| each_syscall(s, &s.per_pid, |l, t| out.histogram(l, &t.hist)),
    },
    Family {
        name: "syscall_profiler_process_syscall_errors",
        kind: Kind::Counter,
        unit: None,
        labels: PID_ERRNO,
        help: "Syscalls that returned an error, by errno, per process for the top processes by syscall time (counting from when each was promoted), all others under pid=\"other\"",
        shown: Shown::PerPid,
        series: |s, out| errors(s, &s.per_pid, out),
    },
    Family {
        name: "syscall_profiler_process_syscall_cpu",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: PID,
        help: "The part of process_syscall_duration_seconds_sum spent on a CPU, per process for the top processes by syscall time, all others under pid=\"other\"",
        shown: Shown::PerPid,
        series: |s, out| split_part(s, &s.per_pid, out, |t| t.hist.on_cpu_ns()),
    },
    Family {
        name: "syscall_profiler_process_syscall_runqueue",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: PID,
        help: "The part of process_syscall_duration_seconds_sum spent runnable on a runqueue, per process for the top processes by syscall time, all others under pid=\"other\"",
        shown: Shown::PerPid,
        series: |s, out| split_part(s, &s.per_pid, out, |t| t.hist.split.runq_ns),
    },
    Family {
        name: "syscall_profiler_process_syscall_blocked",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: PID,
        help: "The part of process_syscall_duration_seconds_sum spent blocked, per process for the top processes by syscall time, all others under pid=\"other\"",
        shown: Shown::PerPid,
        series: |s, out| split_part(s, &s.per_pid, out, |t| t.hist.split.blocked_ns),
    },
    // The pod is fixed by the cgroup, so pod labels on the syscall series would add no series
    // but lengthen every one of them and every query: an info family to join on `cgroup`.
    Family {
        name: "syscall_profiler_cgroup",
        kind: Kind::Info,
        unit: None,
        labels: &["cgroup", "pod_uid", "qos_class"],
        help: "The Kubernetes pod of a cgroup label in use: its UID (kube_pod_info's uid) and QoS class",
        shown: Shown::Always,
        series: |s, out| {
            for (cgroup, uid, qos) in s.pods() {
                out.info(&[cgroup, uid, qos])?;
            }
            Ok(())
        },
    },
    // The kernel side.
    Family {
        name: "syscall_profiler_kernel_map_full",
        kind: Kind::Counter,
        unit: None,
        labels: &["map"],
        help: "What a full kernel map lost: hists = syscall events dropped, starts = syscalls not timed, procs = processes not recorded or not named, errnos = failures not broken down by errno",
        shown: Shown::Always,
        series: |s, out| maps(s, out, |m| m.full),
    },
    Family {
        name: "syscall_profiler_kernel_map_entries",
        kind: Kind::Gauge,
        unit: None,
        labels: &["map"],
        help: "Entries in each kernel map at the last drain",
        shown: Shown::Always,
        series: |s, out| maps(s, out, |m| m.entries),
    },
    Family {
        name: "syscall_profiler_kernel_map_capacity",
        kind: Kind::Gauge,
        unit: None,
        labels: &["map"],
        help: "Maximum entries of each kernel map",
        shown: Shown::Always,
        series: |s, out| maps(s, out, |m| u64::from(m.capacity)),
    },
    Family {
        name: "syscall_profiler_unmatched_exits",
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Syscall exits with no recorded entry (a new thread's first return from clone/fork, in flight at attach, or the start was dropped)",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.kernel().unmatched_exits),
    },
    Family {
        name: "syscall_profiler_tids_shared",
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Threads whose entry in the tid-indexed array another live thread held, their syscalls timed through task storage instead",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.kernel().tids_shared),
    },
    // The daemon's own work.
    Family {
        name: "syscall_profiler_drains",
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Completed drains of the kernel maps",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.metrics().telemetry.drains_timed),
    },
    Family {
        name: "syscall_profiler_drain_duration",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time spent draining the kernel maps into the store (its rate over the rate of drains_total is the mean drain time)",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.metrics().telemetry.drain_seconds_total),
    },
    Family {
        name: "syscall_profiler_drain_cpu",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &["phase"],
        help: "The drain thread's own CPU time, by phase: `slots` (reading and comparing the histogram slots, ordering the deltas), `maps` (failures by errno, process names, calls in flight, exits, arguments), `store` (adding the deltas), `finish` (checkpoint, deletes, the kernel's log, our programs' run times); unlike the duration, not charged for the time the host's other threads ran",
        shown: Shown::Always,
        series: |s, out| {
            let totals = &s.store.metrics().telemetry.drain_cpu_seconds_total;
            for (phase, seconds) in DrainPhase::ALL.iter().zip(totals) {
                out.value(&[phase.name()], *seconds)?;
            }
            Ok(())
        },
    },
    Family {
        name: "syscall_profiler_last_drain_duration",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Duration of the last drain",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.metrics().telemetry.last_drain_seconds),
    },
    Family {
        name: "syscall_profiler_scrapes",
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "/metrics requests answered before this body was rendered (bodies are rendered at most once per drain)",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.scrapes.0),
    },
    Family {
        name: "syscall_profiler_scrape_duration",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time spent answering earlier /metrics requests",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.scrapes.1),
    },
    Family {
        name: "syscall_profiler_last_scrape_duration",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time the previous /metrics request took to answer (a scrape cannot time itself)",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.scrapes.2),
    },
    // Only with pin_path: the checkpoint a restarted daemon resumes from (drain/checkpoint.rs).
    Family {
        name: "syscall_profiler_checkpoints",
        kind: Kind::Counter,
        unit: None,
        labels: &["outcome"],
        help: "Checkpoints for a restarted daemon to resume from (pin_path only): committed, or skipped (too large or a failed write; a restart then resumes from the last committed one)",
        shown: Shown::Always,
        series: |s, out| match &s.store.metrics().telemetry.checkpoint {
            Some(c) => {
                out.value(&["committed"], c.committed as f64)?;
                out.value(&["skipped"], c.skipped as f64)
            }
            None => Ok(()),
        },
    },
    Family {
        name: "syscall_profiler_last_checkpoint",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Size of the last checkpoint (pin_path only)",
        shown: Shown::Always,
        series: |s, out| match &s.store.metrics().telemetry.checkpoint {
            Some(c) => out.value(&[], c.last_bytes as f64),
            None => Ok(()),
        },
    },
    Family {
        name: "syscall_profiler_last_checkpoint_duration",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time the last checkpoint took to encode and write (pin_path only)",
        shown: Shown::Always,
        series: |s, out| match &s.store.metrics().telemetry.checkpoint {
            Some(c) => out.value(&[], c.last_seconds),
            None => Ok(()),
        },
    },
    Family {
        name: "syscall_profiler_checkpoint_duration",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time spent encoding and writing checkpoints (pin_path only)",
        shown: Shown::Always,
        series: |s, out| match &s.store.metrics().telemetry.checkpoint {
            Some(c) => out.value(&[], c.seconds_total),
            None => Ok(()),
        },
    },
    Family {
        name: "syscall_profiler_latency_enabled",
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "0 in counts-only mode: durations are not measured, every call is in the lowest bucket",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.latency()),
    },
    Family {
        name: "syscall_profiler_bpf_stats_enabled",
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 when the kernel times the profiler's BPF programs (BPF_ENABLE_STATS, bpf_stats = true)",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.metrics().telemetry.bpf_stats_enabled),
    },
    Family {
        name: "syscall_profiler_bpf_program_run_duration",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &["program"],
        help: "Time the profiler's own BPF programs ran, as the kernel measures it, each named by its tracepoint (sys_enter, sys_exit, sched_switch, ...); only grows while bpf_stats_enabled is 1. Divided by bpf_program_runs_total it is the cost per event",
        shown: Shown::Always,
        series: |s, out| {
            for p in &s.store.metrics().telemetry.bpf_programs {
                out.value(&[&p.name], p.run_time_ns as f64 / 1e9)?;
            }
            Ok(())
        },
    },
    Family {
        name: "syscall_profiler_bpf_program_runs",
        kind: Kind::Counter,
        unit: None,
        labels: &["program"],
        help: "Runs of the profiler's own BPF programs",
        shown: Shown::Always,
        series: |s, out| {
            for p in &s.store.metrics().telemetry.bpf_programs {
                out.value(&[&p.name], p.run_count)?;
            }
            Ok(())
        },
    },
    Family {
        name: "syscall_profiler_processes",
        kind: Kind::Gauge,
        unit: None,
        labels: &["state"],
        help: "Processes the store holds, by state (running, exited)",
        shown: Shown::Always,
        series: |s, out| {
            let (running, exited) = s.process_states();
            out.value(&["running"], running)?;
            out.value(&["exited"], exited)
        },
    },
    Family {
        name: "syscall_profiler_processes_evicted_early",
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Exited processes dropped before their retention ended, to stay within max_exited",
        shown: Shown::Always,
        series: |s, out| out.value(&[], s.store.evicted_early()),
    },
    Family {
        name: "syscall_profiler_metric_groups",
        kind: Kind::Gauge,
        unit: None,
        labels: &["kind"],
        help: "(comm, cgroup) groups exported (kind=\"current\"), and the limit (kind=\"limit\", metrics_max_groups) past which new groups count under comm=\"other\", cgroup=\"other\"",
        shown: Shown::Always,
        series: |s, out| {
            let m = s.store.metrics();
            out.value(&["current"], m.groups.len())?;
            out.value(&["limit"], m.config.max_groups)
        },
    },
    Family {
        name: "syscall_profiler_start_time",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "When the daemon started, Unix time: every counter counts from then",
        shown: Shown::Always,
        series: |s, out| {
            let started = s.store.started().1.duration_since(UNIX_EPOCH);
            out.value(&[], started.map_or(0.0, |d| d.as_secs_f64()))
        },
    },
    Family {
        name: "syscall_profiler_build",
        kind: Kind::Info,
        unit: None,
        labels: &["version", "arch"],
        help: "The running daemon's version and target architecture",
        shown: Shown::Always,
        series: |_, out| out.info(&[env!("CARGO_PKG_VERSION"), std::env::consts::ARCH]),
    },
    // The daemon's process, under the names every Prometheus client library uses.
    Family {
        name: "process_cpu",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "User and system CPU time the daemon's process has used",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.cpu_seconds.into()),
    },
    Family {
        name: "process_resident_memory",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Resident memory of the daemon's process",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.resident_bytes.into()),
    },
    Family {
        name: "process_virtual_memory",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Virtual memory size of the daemon's process",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.virtual_bytes.into()),
    },
    Family {
        name: "process_open_fds",
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Open file descriptors of the daemon's process",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.open_fds.into()),
    },
    Family {
        name: "process_max_fds",
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "The daemon's limit on open file descriptors (the soft RLIMIT_NOFILE)",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.max_fds.into()),
    },
    Family {
        name: "process_start_time",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "When the daemon's process started, Unix time",
        shown: Shown::Always,
        series: |s, out| process(s, out, |p| p.start_time_seconds.into()),
    },
];
