//! What the store adds up: per (process, syscall) and system-wide totals, per-category totals,
//! a process and what it is doing, and the kernel side's own counters.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    compact::SortedMap,
    histogram::{DeltaRef, Histogram, TimeSplit},
    keys::{ProcKey, SyscallKey},
    recent::{Activity, Snapshot, Sums},
};
use crate::syscalls::{self, Category};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallTotals {
    pub hist: Histogram,
    /// Failures per positive errno. Sums to `hist.errors` unless the kernel's ERRNOS map was
    /// full (see `drops.errnos_full`). The first errno is kept in place (compact.rs).
    pub errnos: SortedMap<u32, u64, 1>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CategoryTotals {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// Where `total_ns` went besides a CPU (see `Histogram::split`).
    pub split: TimeSplit,
}

/// What one (process, syscall) gained between two drains: calls, and failures by errno.
#[derive(Clone, Copy, Debug)]
pub struct Gain<'a> {
    pub proc: ProcKey,
    pub sc: SyscallKey,
    pub delta: DeltaRef<'a>,
    pub errnos: &'a [(u32, u64)],
}

impl Gain<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.delta.is_empty() && self.errnos.iter().all(|&(_, n)| n == 0)
    }
}

/// Syscalls that have started and not yet returned, as of the last drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub syscall: SyscallKey,
    pub count: u32,
    pub oldest_age_ns: u64,
}

#[derive(Clone, Debug)]
pub struct Process {
    pub key: ProcKey,
    pub comm: String,
    /// cgroup v2 id (inode of its /sys/fs/cgroup directory) when the kernel first saw it; 0 if
    /// unknown.
    pub cgroup_id: u64,
    pub first_seen: SystemTime,
    /// The end of the last drain interval in which it made a call (`first_seen` until then).
    pub last_seen: SystemTime,
    /// When the drain saw the process exit; it leaves the store `retention` later.
    pub exited: Option<(Instant, SystemTime)>,
    pub syscalls: SortedMap<SyscallKey, SyscallTotals>,
    /// Over all its syscalls (its categories are summed when asked: [`Process::categories`]).
    pub total: CategoryTotals,
    pub in_flight: Vec<InFlight>,
    /// Syscall time completed during the last drain interval, over that interval's length:
    /// 1.0 is one thread inside syscalls all the time (threads add up, so it can exceed 1).
    pub syscall_time_share: f64,
    /// The same for the part of that time spent on a CPU: 1.0 is one CPU busy in the kernel
    /// for the process all the time (equal to `syscall_time_share` when there is no split).
    pub cpu_time_share: f64,
    pub(super) interval_ns: u64,
    pub(super) interval_cpu_ns: u64,
    /// Whether it gained calls or failures in this drain interval (`last_seen`).
    pub(super) gained: bool,
    /// How many times calls or failures were added to it: equal counts, equal sums, so an idle
    /// process's activity is known to be none without building a snapshot (recent.rs).
    pub(super) changes: u64,
    /// Its sums at the start of the current-rates window, and at the last snapshot (recent.rs);
    /// shared between the two while it is idle.
    pub(super) base: Option<Arc<Snapshot>>,
    pub(super) next_base: Option<Arc<Snapshot>>,
}

/// How many entries ahead of the one it adds to a walk prefetches (see [`prefetch_ahead`]).
const PREFETCH_AHEAD: usize = 4;

/// For a walk adding to `map`'s totals in ascending order, now at `cursor` (a process's own in
/// `Process::add_from`, its /metrics group's in aggregates.rs): the syscalls it adds to next
/// are most often the next entries, so the buckets (an allocation of their own) and the errno
/// table (one too, past its first errno) of the one PREFETCH_AHEAD on are fetched while this
/// one's are added to (memory answers in about the time of a few adds). Their addresses are in
/// that entry, itself fetched PREFETCH_AHEAD before: reading them from an entry still on its
/// way stalled the walk at every step.
pub(super) fn prefetch_ahead(map: &SortedMap<SyscallKey, SyscallTotals>, cursor: usize) {
    map.prefetch_entry(cursor + 2 * PREFETCH_AHEAD);
    if let Some(next) = map.value_at(cursor + PREFETCH_AHEAD) {
        next.hist.prefetch_buckets();
        next.errnos.prefetch();
    }
}

impl Process {
    pub(super) fn new(key: ProcKey) -> Self {
        let now = SystemTime::now();
        Self {
            key,
            comm: String::new(),
            cgroup_id: 0,
            first_seen: now,
            last_seen: now,
            exited: None,
            syscalls: SortedMap::default(),
            total: CategoryTotals::default(),
            in_flight: Vec::new(),
            syscall_time_share: 0.0,
            cpu_time_share: 0.0,
            interval_ns: 0,
            interval_cpu_ns: 0,
            gained: false,
            changes: 0,
            base: None,
            next_base: None,
        }
    }

    /// Adds calls and failures by errno of syscall `sc` to the process's totals.
    pub(super) fn add(&mut self, sc: SyscallKey, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
        self.add_from(&mut 0, sc, delta, errnos);
    }

    /// [`Process::add`] for a caller adding syscalls in ascending order, `cursor` (0 at first)
    /// carried from one call to the next: the entries are then visited front to back (see
    /// `SortedMap::entry_from`).
    pub(super) fn add_from(
        &mut self,
        cursor: &mut usize,
        sc: SyscallKey,
        delta: DeltaRef<'_>,
        errnos: &[(u32, u64)],
    ) {
        self.gained = true;
        self.changes += 1;
        prefetch_ahead(&self.syscalls, *cursor);
        let t = self.syscalls.entry_from(cursor, sc).or_default();
        if !delta.is_empty() {
            t.hist.add_ref(delta);
            let t = &mut self.total;
            t.count += delta.count();
            t.errors += delta.errors;
            t.total_ns += delta.total_ns;
            t.split.add(delta.split);
            self.interval_cpu_ns += delta.split.on_cpu_ns(delta.total_ns);
        }
        for &(errno, n) in errnos.iter().filter(|e| e.1 != 0) {
            *t.errnos.entry(errno).or_default() += n;
        }
    }

    /// Its sums now, for the current-rates window (recent.rs).
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            changes: self.changes,
            ..Snapshot::default()
        };
        for (&k, t) in &self.syscalls {
            let h = &t.hist;
            s.sums.push((
                k,
                Sums {
                    count: h.count,
                    errors: h.errors,
                    total_ns: h.total_ns,
                    split: h.split,
                },
            ));
            s.errnos.extend(t.errnos.iter().map(|(&e, &n)| ((k, e), n)));
        }
        s
    }

    /// What it did since the window's start (`Epochs::start`, recent.rs): its sums now less
    /// its snapshot then, or all of them if it was first seen since. None when that is not
    /// known: it exited before the window, or was held from before it without a snapshot (a
    /// restart's checkpoint).
    pub fn activity_since(&self, start: SystemTime) -> Option<Activity> {
        match &self.base {
            Some(base) if base.changes == self.changes => Some(Activity::default()),
            Some(base) => Some(self.snapshot().since(base)),
            None if self.first_seen >= start => Some(self.snapshot().since(&Snapshot::default())),
            None => None,
        }
    }

    /// How much of the window's time in `k` (its sums since the window's `start`, `span_ns`
    /// long as of the last drain) lies before the window: a call in flight at the start that
    /// has returned since added its whole latency. The oldest such call's time before the
    /// start: exact when one thread makes the syscall, less than the truth with several, never
    /// more (but for a process killed inside the call, whose latency was never added). 0 while
    /// a call from before the start is still in flight: the views count those by their age
    /// inside the window.
    pub fn window_overhang(&self, k: SyscallKey, start: Instant, span_ns: u64) -> u64 {
        let Some(base) = &self.base else {
            return 0;
        };
        let Some(&(_, began)) = base.in_flight.iter().find(|f| f.0 == k) else {
            return 0;
        };
        let still = self
            .in_flight
            .iter()
            .any(|f| f.syscall == k && f.oldest_age_ns >= span_ns);
        if still {
            0
        } else {
            start.saturating_duration_since(began).as_nanos() as u64
        }
    }

    /// At a snapshot's instant `now`: the older snapshot becomes the base, and a live process
    /// takes a new one (with when each syscall's oldest call in flight began).
    pub(super) fn rotate_snapshots(&mut self, now: Instant) {
        self.base = self.next_base.take();
        if self.exited.is_some() {
            return;
        }
        self.next_base = Some(match &self.base {
            Some(base) if base.changes == self.changes => base.clone(),
            _ => {
                let mut s = self.snapshot();
                s.in_flight = self
                    .in_flight
                    .iter()
                    .filter_map(|f| {
                        Some((
                            f.syscall,
                            now.checked_sub(Duration::from_nanos(f.oldest_age_ns))?,
                        ))
                    })
                    .collect();
                Arc::new(s)
            }
        });
    }

    /// Its totals by category (those with calls), summed from its syscalls' when a view asks:
    /// a page shows a few processes, while a drain adds 10,000 gains, each of which paid a
    /// category lookup and a tree search when they were kept as the calls came.
    pub fn categories(&self) -> BTreeMap<Category, CategoryTotals> {
        let mut out = BTreeMap::<Category, CategoryTotals>::new();
        for (sc, t) in &self.syscalls {
            let h = &t.hist;
            if h.count == 0 && h.errors == 0 && h.total_ns == 0 {
                continue;
            }
            let c = out.entry(syscalls::category(sc.abi, sc.nr)).or_default();
            c.count += h.count;
            c.errors += h.errors;
            c.total_ns += h.total_ns;
            c.split.add(h.split);
        }
        out
    }

    /// The share of this process's syscall time (since the daemon started) that `t` (one of
    /// its [`Process::categories`]) took.
    pub fn share_of_time(&self, t: &CategoryTotals) -> f64 {
        if self.total.total_ns == 0 {
            0.0
        } else {
            t.total_ns as f64 / self.total.total_ns as f64
        }
    }
}

/// The kernel side's own health, as of the last drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub hists_full: u64,
    pub procs_full: u64,
    pub starts_full: u64,
    pub errnos_full: u64,
    pub unmatched_exits: u64,
    /// Threads whose TIDS entry another live thread held, kept in task storage instead.
    pub tids_shared: u64,
    pub hists_entries: u64,
    pub starts_entries: u64,
    pub procs_entries: u64,
    pub errnos_entries: u64,
}
