//! Cumulative totals since the daemon started. Written only by the drain, through the methods
//! below (and SIGHUP's `apply_reload`); read by every view through the accessors. Its fields are
//! private to the store: keys.rs and totals.rs are the vocabulary the other layers share.
//!
//! Counters here never go backwards: the drain adds what changed in the kernel maps, and
//! system-wide totals are kept apart from per-process ones so that retiring an exited process
//! does not shrink them.

pub mod aggregates;
pub mod compact;
pub mod failing_args;
pub mod histogram;
pub mod history;
pub mod keys;
mod memory;
pub mod persist;
pub mod recent;
pub mod shared;
mod sums;
pub mod telemetry;
pub mod totals;

#[cfg(test)]
mod tests;

pub use keys::{FastMap, FastSet, ProcKey, SyscallKey};
pub use totals::{Gain, InFlight, KernelCounters, Process, SyscallTotals};

use aggregates::{Aggregates, MetricsConfig};
#[cfg(test)]
use histogram::Delta;
use histogram::DeltaRef;
use history::History;
use recent::Epochs;
use telemetry::{BpfProgram, CheckpointCost, DrainCpu};

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use crate::host::cgroups::Cgroup;

/// How a store keeps its totals, set when it is made. SIGHUP can change retention and
/// max_exited (`apply_reload`).
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    pub retention: Duration,
    pub max_exited: usize,
    /// False in counts-only mode: histograms then hold call counts in bucket 0 and no times.
    pub latency: bool,
    /// Whether the kernel side splits each call's time (`Histogram::split`): not in
    /// counts-only mode, nor on a kernel without the fields it reads.
    pub time_split: bool,
    pub metrics: MetricsConfig,
    /// Whether the kernel times our BPF programs (BPF_ENABLE_STATS), as /metrics reports.
    pub bpf_stats_enabled: bool,
}

/// Its fields are the store's own: the drain changes them through the methods below, every
/// view reads them through the accessors.
#[derive(Debug)]
pub struct Store {
    started: (Instant, SystemTime),
    retention: Duration,
    /// At most this many exited processes are kept; beyond it the longest-exited go first,
    /// before their retention ends, and `evicted_early` counts them.
    max_exited: usize,
    evicted_early: u64,
    /// False in counts-only mode: histograms then hold call counts in bucket 0 and no times.
    latency: bool,
    time_split: bool,
    processes: FastMap<ProcKey, Process>,
    /// Per syscall, over every process ever seen.
    system: BTreeMap<SyscallKey, SyscallTotals>,
    kernel: KernelCounters,
    drains: u64,
    last_drain: Option<(Instant, SystemTime)>,
    /// What /metrics exports: monotonic, bounded aggregates and self-telemetry.
    metrics: Aggregates,
    /// The last few minutes, system-wide, slice by slice (the dashboard and insights read it).
    history: History,
    /// When live processes' sums were last snapshotted, for their current rates.
    epochs: Epochs,
    /// The arguments behind failing calls.
    failing_args: failing_args::FailingArgs,
    /// A drain's gains per syscall, before they reach `system` and `history`.
    syscall_sums: sums::DrainSums<SyscallKey>,
    /// A drain's gains per (/metrics group, syscall), before they reach the group's totals.
    group_sums: sums::DrainSums<(u32, SyscallKey)>,
}

/// (group, syscall) pairs a drain sums densely at most (2.2 KiB each, kept from drain to
/// drain: 2.2 MiB at most); the gains of further pairs are added to their groups one process
/// at a time, as all were before.
const MAX_GROUP_SUMS: usize = 1024;

/// Syscalls a drain sums densely at most (2.2 KiB each, kept: 2.2 MiB at most). A host calls a
/// few hundred; the rest of the 65,536 numbers per ABI the kernel side tells apart are
/// unallocated (ENOSYS), and a program calling thousands of them must not make the daemon keep
/// an array for each: their gains go to the system totals and the history one series at a time.
const MAX_SYSCALL_SUMS: usize = 1024;

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let mut metrics = Aggregates::new(config.metrics);
        metrics.telemetry.bpf_stats_enabled = config.bpf_stats_enabled;
        let started = (Instant::now(), SystemTime::now());
        Self {
            started,
            retention: config.retention,
            max_exited: config.max_exited,
            evicted_early: 0,
            latency: config.latency,
            time_split: config.time_split,
            processes: FastMap::default(),
            system: BTreeMap::new(),
            kernel: KernelCounters::default(),
            drains: 0,
            last_drain: None,
            metrics,
            history: History::default(),
            epochs: Epochs::new(started),
            failing_args: failing_args::FailingArgs::default(),
            syscall_sums: sums::DrainSums::new(MAX_SYSCALL_SUMS),
            group_sums: sums::DrainSums::new(MAX_GROUP_SUMS),
        }
    }

    /// This store with at most `groups` (group, syscall) pairs and `syscalls` syscalls summed
    /// densely a drain.
    #[cfg(test)]
    pub fn with_drain_sums(mut self, groups: usize, syscalls: usize) -> Self {
        self.group_sums = sums::DrainSums::new(groups);
        self.syscall_sums = sums::DrainSums::new(syscalls);
        self
    }

    /// A store with latency and the default /metrics settings.
    #[cfg(test)]
    pub fn for_test(retention: Duration, max_exited: usize) -> Self {
        Self::new(StoreConfig {
            retention,
            max_exited,
            latency: true,
            time_split: true,
            metrics: MetricsConfig::default(),
            bpf_stats_enabled: false,
        })
    }

    /// When the store was made: every total counts from then.
    pub fn started(&self) -> (Instant, SystemTime) {
        self.started
    }

    pub fn latency(&self) -> bool {
        self.latency
    }

    /// Whether histograms split their time into on-CPU, runnable and blocked (else their
    /// `split` stays zero and means nothing: views show no split).
    pub fn time_split(&self) -> bool {
        self.time_split
    }

    /// Every process held, running or exited.
    pub fn processes(&self) -> &FastMap<ProcKey, Process> {
        &self.processes
    }

    /// Per syscall, over every process ever seen.
    pub fn system(&self) -> &BTreeMap<SyscallKey, SyscallTotals> {
        &self.system
    }

    /// The kernel side's own counters, as of the last drain.
    pub fn kernel(&self) -> &KernelCounters {
        &self.kernel
    }

    pub fn drains(&self) -> u64 {
        self.drains
    }

    pub fn last_drain(&self) -> Option<(Instant, SystemTime)> {
        self.last_drain
    }

    pub fn max_exited(&self) -> usize {
        self.max_exited
    }

    /// Exited processes dropped before their retention ended, to stay within `max_exited`.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    /// What /metrics exports.
    pub fn metrics(&self) -> &Aggregates {
        &self.metrics
    }

    /// The last few minutes, system-wide, slice by slice.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The window of current per-process rates (`Process::activity_since` its start).
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }

    /// The arguments behind failing calls.
    pub fn failing_args(&self) -> &failing_args::FailingArgs {
        &self.failing_args
    }

    /// What the drain read of failing calls' arguments: each (process, syscall, errno,
    /// argument) with its count, and the kernel's capture counters.
    pub fn add_failing_args(
        &mut self,
        args: impl IntoIterator<Item = (ProcKey, SyscallKey, u32, failing_args::Arg, u64)>,
        kernel: failing_args::CaptureCounters,
    ) {
        for (p, sc, errno, arg, n) in args {
            self.failing_args.add(p, sc, errno, arg, n);
        }
        self.failing_args.kernel = kernel;
    }

    /// The settings SIGHUP applies without a restart.
    pub fn apply_reload(&mut self, retention: Duration, max_exited: usize) {
        self.retention = retention;
        self.max_exited = max_exited;
    }

    /// The kernel side's counters, as this drain read them.
    pub fn set_kernel_counters(&mut self, counters: KernelCounters) {
        self.kernel = counters;
    }

    /// Labels of cgroup ids the drain has resolved (see host/cgroups.rs).
    pub fn add_cgroup_labels(&mut self, labels: impl IntoIterator<Item = (u64, Cgroup)>) {
        self.metrics.cgroup_labels.extend(labels);
    }

    /// A drain's own time, and the kernel's accounting of our programs as of it.
    pub fn record_drain(&mut self, took: Duration, cpu: &DrainCpu, programs: Vec<BpfProgram>) {
        self.metrics.telemetry.bpf_programs = programs;
        self.metrics.telemetry.record_drain(took, cpu);
    }

    /// A drain's checkpoint: committed or skipped, its size and cost.
    pub fn record_checkpoint(&mut self, c: CheckpointCost) {
        self.metrics.telemetry.record_checkpoint(c);
    }

    fn process_entry(&mut self, key: ProcKey) -> &mut Process {
        self.processes
            .entry(key)
            .or_insert_with(|| Process::new(key))
    }

    /// Adds what one kernel histogram gained since the last drain.
    #[cfg(test)]
    pub fn add(&mut self, key: ProcKey, sc: SyscallKey, delta: &Delta) {
        self.add_batch([Gain {
            proc: key,
            sc,
            delta: delta.view(),
            errnos: &[],
        }]);
    }

    /// Adds what many (process, syscall) pairs gained since the last drain. Give them sorted by
    /// process, then syscall (the drain sorts them): each process and its /metrics totals are then looked
    /// up once per group, not once per syscall, and a pair's calls and failures by errno are
    /// added in one visit. The /metrics groups take each (group, syscall)'s sum over the
    /// batch, once, and the system-wide totals and the history each syscall's sum of those.
    pub fn add_batch<'a>(&mut self, gains: impl IntoIterator<Item = Gain<'a>>) {
        let mut gains = gains.into_iter().filter(|g| !g.is_empty()).peekable();
        while let Some(first) = gains.next() {
            let key = first.proc;
            let p = self
                .processes
                .entry(key)
                .or_insert_with(|| Process::new(key));
            let mut metrics = self.metrics.totals_of(p);
            let mut next = Some(first);
            // The gains of a process come by syscall, like its totals.
            let mut cursor = 0;
            while let Some(Gain {
                sc, delta, errnos, ..
            }) = next
            {
                // A number without a name is summed under its group's unnamed key (see
                // `SyscallKey::or_unnamed`); the system-wide totals keep its own, so it goes to
                // the syscall sums here and not from the group's sum below.
                let named = sc.is_named();
                let to_group = (metrics.group_id, sc.or_unnamed());
                let summed = self.group_sums.add(to_group, delta, errnos);
                if !summed {
                    metrics.add_to_group(sc, delta, errnos);
                }
                if (!summed || !named) && !self.syscall_sums.add(sc, delta, errnos) {
                    add_per_syscall(&mut self.system, &mut self.history, sc, delta, errnos);
                }
                metrics.add_to_pid(sc, delta, errnos);
                p.add_from(&mut cursor, sc, delta, errnos);
                p.interval_ns += delta.total_ns;
                next = gains.next_if(|g| g.proc == key);
            }
        }
        let group_sums = self.group_sums.take();
        for ((_, sc), d, errnos) in group_sums.iter().filter(|((_, sc), ..)| sc.is_named()) {
            if !self.syscall_sums.add(sc, d, errnos) {
                add_per_syscall(&mut self.system, &mut self.history, sc, d, errnos);
            }
        }
        self.metrics.add_group_sums(&group_sums);
        for (sc, d, errnos) in self.syscall_sums.take().iter() {
            add_per_syscall(&mut self.system, &mut self.history, sc, d, errnos);
        }
    }

    #[cfg(test)]
    pub fn add_errno(&mut self, key: ProcKey, sc: SyscallKey, errno: u32, n: u64) {
        self.add_batch([Gain {
            proc: key,
            sc,
            delta: DeltaRef::default(),
            errnos: &[(errno, n)],
        }]);
    }

    /// Records a process's name (a later name, after exec, replaces an earlier one) and, when
    /// known (non-zero), its cgroup id. The drain names processes before adding their calls, so
    /// a new process's first calls already count under its name in the /metrics aggregates.
    pub fn identify(&mut self, key: ProcKey, comm: &str, cgroup_id: u64) {
        let p = self.process_entry(key);
        if p.comm != comm {
            p.comm = comm.to_string();
        }
        if cgroup_id != 0 {
            p.cgroup_id = cgroup_id;
        }
    }

    pub fn mark_exited(&mut self, key: ProcKey, now: (Instant, SystemTime)) {
        if let Some(p) = self.processes.get_mut(&key) {
            p.exited.get_or_insert(now);
        }
    }

    /// Replaces every process's in-flight list with this drain's snapshot. A process with only
    /// in-flight calls (say, blocked since before the daemon started) is listed too.
    pub fn set_in_flight(&mut self, mut by_process: HashMap<ProcKey, Vec<InFlight>>) {
        for p in self.processes.values_mut() {
            p.in_flight = by_process.remove(&p.key).unwrap_or_default();
        }
        for (key, list) in by_process {
            self.process_entry(key).in_flight = list;
        }
    }

    /// Closes a drain at `now`: per-interval figures and expiry of exited processes.
    pub fn finish_drain(&mut self, now: (Instant, SystemTime)) {
        let since = self.last_drain.map_or(self.started.0, |(at, _)| at);
        let elapsed_ns = now.0.saturating_duration_since(since).as_nanos().max(1) as f64;
        for p in self.processes.values_mut() {
            p.syscall_time_share = p.interval_ns as f64 / elapsed_ns;
            p.cpu_time_share = p.interval_cpu_ns as f64 / elapsed_ns;
            p.interval_ns = 0;
            p.interval_cpu_ns = 0;
            if p.gained {
                // Not before it was first seen: a process new in this drain was created (and
                // stamped) after the drain took `now`.
                p.last_seen = now.1.max(p.first_seen);
                p.gained = false;
            }
        }
        let retention = self.retention;
        self.processes.retain(|_, p| match p.exited {
            Some((at, _)) => now.0.saturating_duration_since(at) < retention,
            None => true,
        });
        let mut exited: Vec<(Instant, ProcKey)> = self
            .processes
            .values()
            .filter_map(|p| Some((p.exited?.0, p.key)))
            .collect();
        if exited.len() > self.max_exited {
            let excess = exited.len() - self.max_exited;
            exited.select_nth_unstable(excess - 1);
            for (_, key) in &exited[..excess] {
                self.processes.remove(key);
            }
            self.evicted_early += excess as u64;
        }
        let processes = &self.processes;
        self.failing_args.retain(|p| processes.contains_key(p));
        self.metrics
            .finish_drain(&self.processes, now.0, self.retention);
        self.history
            .close_drain(self.last_drain.unwrap_or(self.started), now);
        if self.epochs.advance(now) {
            for p in self.processes.values_mut() {
                p.rotate_snapshots(now.0);
            }
        }
        self.drains += 1;
        self.last_drain = Some(now);
    }
}

/// Adds one syscall's gains to the system-wide totals and to the history. A free function so
/// that the batch's fallback can call it while it holds a process and its /metrics totals.
fn add_per_syscall(
    system: &mut BTreeMap<SyscallKey, SyscallTotals>,
    history: &mut History,
    sc: SyscallKey,
    delta: DeltaRef<'_>,
    errnos: &[(u32, u64)],
) {
    if !delta.is_empty() {
        system.entry(sc).or_default().hist.add_ref(delta);
    }
    history.add(sc, delta);
    for &(errno, n) in errnos.iter().filter(|e| e.1 != 0) {
        *system
            .entry(sc)
            .or_default()
            .errnos
            .entry(errno)
            .or_default() += n;
        history.add_errno(sc, errno, n);
    }
}
