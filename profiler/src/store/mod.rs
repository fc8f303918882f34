//! Cumulative totals since the daemon started. Written only by the drain; read by every view.
//!
//! Counters here never go backwards: the drain adds what changed in the kernel maps, and
//! system-wide totals are kept apart from per-process ones so that retiring an exited process
//! does not shrink them.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

pub mod aggregates;
pub mod histogram;
pub mod history;

use crate::{
    store::aggregates::Aggregates,
    store::histogram::{Delta, DeltaRef, Histogram},
    store::history::{History, SliceEntry},
    syscalls::{self, Abi, Category},
};

/// For the maps the drain updates once per entry: foldhash is several times cheaper than the
/// standard SipHash, and seeded per map too.
pub type FastMap<K, V> = foldhash::HashMap<K, V>;
pub type FastSet<K> = foldhash::HashSet<K>;

/// One process incarnation: a recycled pid is a different process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    pub incarnation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    pub abi: Abi,
    pub nr: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallTotals {
    pub hist: Histogram,
    /// Failures per positive errno. Sums to `hist.errors` unless the kernel's ERRNOS map was
    /// full (see `drops.errnos_full`).
    pub errnos: BTreeMap<u32, u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CategoryTotals {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
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
    fn is_empty(&self) -> bool {
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
    /// When the drain saw the process exit; it leaves the store `retention` later.
    pub exited: Option<(Instant, SystemTime)>,
    pub syscalls: BTreeMap<SyscallKey, SyscallTotals>,
    pub categories: BTreeMap<Category, CategoryTotals>,
    pub total: CategoryTotals,
    pub in_flight: Vec<InFlight>,
    /// Syscall time completed during the last drain interval, over that interval's length:
    /// 1.0 is one thread inside syscalls all the time (threads add up, so it can exceed 1).
    pub syscall_time_share: f64,
    interval_ns: u64,
}

impl Process {
    fn new(key: ProcKey) -> Self {
        Self {
            key,
            comm: String::new(),
            cgroup_id: 0,
            first_seen: SystemTime::now(),
            exited: None,
            syscalls: BTreeMap::new(),
            categories: BTreeMap::new(),
            total: CategoryTotals::default(),
            in_flight: Vec::new(),
            syscall_time_share: 0.0,
            interval_ns: 0,
        }
    }

    /// The share of this process's syscall time (since the daemon started) spent in `cat`.
    pub fn category_share(&self, cat: Category) -> f64 {
        let t = self.categories.get(&cat).map_or(0, |c| c.total_ns);
        if self.total.total_ns == 0 {
            0.0
        } else {
            t as f64 / self.total.total_ns as f64
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
    pub hists_entries: u64,
    pub starts_entries: u64,
    pub procs_entries: u64,
    pub errnos_entries: u64,
}

#[derive(Debug)]
pub struct Store {
    pub started: (Instant, SystemTime),
    pub retention: Duration,
    /// At most this many exited processes are kept; beyond it the longest-exited go first,
    /// before their retention ends, and `evicted_early` counts them.
    pub max_exited: usize,
    pub evicted_early: u64,
    /// False in counts-only mode: histograms then hold call counts in bucket 0 and no times.
    pub latency: bool,
    pub processes: FastMap<ProcKey, Process>,
    /// Per syscall, over every process ever seen.
    pub system: BTreeMap<SyscallKey, SyscallTotals>,
    pub kernel: KernelCounters,
    pub drains: u64,
    pub last_drain: Option<(Instant, SystemTime)>,
    /// What /metrics exports: monotonic, bounded aggregates and self-telemetry.
    pub metrics: Aggregates,
    /// The last few minutes, system-wide, slice by slice (the dashboard and insights read it).
    pub history: History,
}

impl Store {
    pub fn new(retention: Duration, max_exited: usize) -> Self {
        Self {
            started: (Instant::now(), SystemTime::now()),
            retention,
            max_exited,
            evicted_early: 0,
            latency: true,
            processes: FastMap::default(),
            system: BTreeMap::new(),
            kernel: KernelCounters::default(),
            drains: 0,
            last_drain: None,
            metrics: Aggregates::default(),
            history: History::default(),
        }
    }

    fn process(&mut self, key: ProcKey) -> &mut Process {
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

    /// Adds what many (process, syscall) pairs gained since the last drain. Give them grouped
    /// by process (the drain sorts them): each process and its /metrics totals are then looked
    /// up once per group, not once per syscall, and a pair's calls and failures by errno are
    /// added in one visit. The system-wide totals and the history take each syscall's sum over
    /// the batch, once.
    pub fn add_batch<'a>(&mut self, gains: impl IntoIterator<Item = Gain<'a>>) {
        let mut gains = gains.into_iter().filter(|g| !g.is_empty()).peekable();
        let mut by_syscall: FastMap<SyscallKey, SliceEntry> = FastMap::default();
        while let Some(first) = gains.next() {
            let key = first.proc;
            let p = self
                .processes
                .entry(key)
                .or_insert_with(|| Process::new(key));
            let mut metrics = self.metrics.totals_of(p);
            let mut next = Some(first);
            while let Some(Gain {
                sc, delta, errnos, ..
            }) = next
            {
                metrics.add(sc, delta, errnos);
                let t = p.syscalls.entry(sc).or_default();
                let sum = by_syscall.entry(sc).or_default();
                if !delta.is_empty() {
                    t.hist.add_ref(delta);
                    let count = delta.count();
                    let cat = syscalls::category(sc.abi, sc.nr);
                    for t in [p.categories.entry(cat).or_default(), &mut p.total] {
                        t.count += count;
                        t.errors += delta.errors;
                        t.total_ns += delta.total_ns;
                    }
                    p.interval_ns += delta.total_ns;
                    sum.hist.add_ref(delta);
                }
                for &(errno, n) in errnos.iter().filter(|e| e.1 != 0) {
                    *t.errnos.entry(errno).or_default() += n;
                    *sum.errnos.entry(errno).or_default() += n;
                }
                next = gains.next_if(|g| g.proc == key);
            }
        }
        for (sc, sum) in by_syscall {
            let d = Delta {
                errors: sum.hist.errors,
                total_ns: sum.hist.total_ns,
                buckets: sum.hist.bucket_counts().collect(),
            };
            self.add_system(sc, &d);
            self.history.add(sc, &d);
            for (errno, n) in sum.errnos {
                self.add_system_errno(sc, errno, n);
                self.history.add_errno(sc, errno, n);
            }
        }
    }

    /// Adds to the system-wide totals alone: what a previous daemon retired (see pin.rs).
    pub fn add_system(&mut self, sc: SyscallKey, delta: &Delta) {
        if !delta.is_empty() {
            self.system.entry(sc).or_default().hist.add(delta);
        }
    }

    pub fn add_system_errno(&mut self, sc: SyscallKey, errno: u32, n: u64) {
        if n != 0 {
            *self
                .system
                .entry(sc)
                .or_default()
                .errnos
                .entry(errno)
                .or_default() += n;
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
        let p = self.process(key);
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
            self.process(key).in_flight = list;
        }
    }

    /// Closes a drain at `now`: per-interval figures and expiry of exited processes.
    pub fn finish_drain(&mut self, now: (Instant, SystemTime)) {
        let since = self.last_drain.map_or(self.started.0, |(at, _)| at);
        let elapsed_ns = now.0.saturating_duration_since(since).as_nanos().max(1) as f64;
        for p in self.processes.values_mut() {
            p.syscall_time_share = p.interval_ns as f64 / elapsed_ns;
            p.interval_ns = 0;
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
        self.metrics
            .finish_drain(&self.processes, now.0, self.retention);
        self.history
            .close_drain(self.last_drain.unwrap_or(self.started), now);
        self.drains += 1;
        self.last_drain = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: ProcKey = ProcKey {
        pid: 1,
        incarnation: 10,
    };
    const P2: ProcKey = ProcKey {
        pid: 2,
        incarnation: 20,
    };
    const GETPID: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 39,
    };

    fn delta(bucket: usize, n: u64, total: u64, errors: u64) -> Delta {
        Delta {
            errors,
            total_ns: total,
            buckets: vec![(bucket, n)],
        }
    }

    #[test]
    fn totals_accumulate_per_process_and_system_wide() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        s.add(P1, GETPID, &delta(100, 2, 500, 0));
        s.add(P1, GETPID, &delta(101, 3, 700, 1));
        s.add(P2, GETPID, &delta(100, 1, 100, 1));
        let p1 = &s.processes[&P1].syscalls[&GETPID].hist;
        assert_eq!((p1.count, p1.errors, p1.total_ns), (5, 1, 1200));
        let sys = &s.system[&GETPID].hist;
        assert_eq!((sys.count, sys.errors, sys.total_ns), (6, 2, 1300));
        let cat = s.processes[&P1].categories[&Category::Process];
        assert_eq!((cat.count, cat.errors, cat.total_ns), (5, 1, 1200));
        assert_eq!(s.processes[&P1].total, cat);
    }

    #[test]
    fn a_recycled_pid_is_a_different_process() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        let reborn = ProcKey {
            pid: 1,
            incarnation: 99,
        };
        s.add(P1, GETPID, &delta(1, 5, 5, 0));
        s.add(reborn, GETPID, &delta(1, 2, 2, 0));
        assert_eq!(s.processes[&P1].total.count, 5);
        assert_eq!(s.processes[&reborn].total.count, 2);
    }

    #[test]
    fn errnos_add_up_per_process_and_system_wide() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        s.add_errno(P1, GETPID, 2, 3);
        s.add_errno(P1, GETPID, 2, 4);
        s.add_errno(P2, GETPID, 9, 1);
        s.add_errno(P2, GETPID, 9, 0);
        assert_eq!(
            s.processes[&P1].syscalls[&GETPID].errnos,
            BTreeMap::from([(2, 7)])
        );
        assert_eq!(s.system[&GETPID].errnos, BTreeMap::from([(2, 7), (9, 1)]));
    }

    #[test]
    fn exited_processes_leave_after_retention_but_system_totals_stay() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        s.add(P1, GETPID, &delta(50, 4, 400, 0));
        s.add(P2, GETPID, &delta(50, 1, 100, 0));
        let t0 = Instant::now();
        let wall = SystemTime::now();
        s.mark_exited(P1, (t0, wall));
        // A second exit notice does not restart the clock.
        s.mark_exited(P1, (t0 + Duration::from_secs(30), wall));
        s.finish_drain((t0 + Duration::from_secs(59), wall));
        assert!(s.processes.contains_key(&P1));
        s.finish_drain((t0 + Duration::from_secs(60), wall));
        assert!(!s.processes.contains_key(&P1));
        assert!(
            s.processes.contains_key(&P2),
            "running processes never expire"
        );
        assert_eq!(s.system[&GETPID].hist.count, 5);
        assert_eq!(s.drains, 2);
    }

    #[test]
    fn exited_processes_beyond_the_cap_leave_oldest_first() {
        let mut s = Store::new(Duration::from_secs(3600), 2);
        let t0 = s.started.0;
        let wall = SystemTime::now();
        let keys: Vec<ProcKey> = (1..=4)
            .map(|pid| ProcKey {
                pid,
                incarnation: 1,
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            s.add(*k, GETPID, &delta(1, 1, 1, 0));
            s.mark_exited(*k, (t0 + Duration::from_secs(i as u64), wall));
        }
        s.add(P1, GETPID, &delta(1, 1, 1, 0));
        s.finish_drain((t0 + Duration::from_secs(10), wall));
        let mut left: Vec<u32> = s.processes.keys().map(|k| k.pid).collect();
        left.sort();
        // pid 1 here is P1, alive; the exited pids 1 and 2 left first.
        assert_eq!(left, vec![1, 3, 4]);
        assert!(s.processes.contains_key(&P1));
        assert_eq!(s.evicted_early, 2);
        assert_eq!(
            s.system[&GETPID].hist.count, 5,
            "system totals keep evicted processes' calls"
        );
    }

    #[test]
    fn time_share_covers_the_last_interval_only() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        let t0 = s.started.0;
        let wall = SystemTime::now();
        // 600 ms of syscall time in a 1 s interval.
        s.add(P1, GETPID, &delta(200, 1, 600_000_000, 0));
        s.finish_drain((t0 + Duration::from_secs(1), wall));
        assert!((s.processes[&P1].syscall_time_share - 0.6).abs() < 1e-9);
        s.finish_drain((t0 + Duration::from_secs(2), wall));
        assert_eq!(s.processes[&P1].syscall_time_share, 0.0);
    }

    #[test]
    fn category_share_of_syscall_time() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        let futex = SyscallKey {
            abi: Abi::Native,
            nr: syscalls_nr("futex"),
        };
        s.add(P1, futex, &delta(200, 1, 600, 0));
        s.add(P1, GETPID, &delta(200, 1, 400, 0));
        let p = &s.processes[&P1];
        assert!((p.category_share(Category::Sync) - 0.6).abs() < 1e-9);
        assert_eq!(p.category_share(Category::Network), 0.0);
    }

    fn syscalls_nr(name: &str) -> u32 {
        (0..1000)
            .find(|&nr| syscalls::name(Abi::Native, nr) == name)
            .unwrap()
    }

    #[test]
    fn in_flight_snapshot_replaces_the_previous_one() {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        s.add(P1, GETPID, &delta(1, 1, 1, 0));
        let read = SyscallKey {
            abi: Abi::Native,
            nr: 0,
        };
        let one = InFlight {
            syscall: read,
            count: 1,
            oldest_age_ns: 5,
        };
        s.set_in_flight(HashMap::from([(P1, vec![one]), (P2, vec![one])]));
        assert_eq!(s.processes[&P1].in_flight, vec![one]);
        assert_eq!(
            s.processes[&P2].in_flight,
            vec![one],
            "listed with no completed calls"
        );
        s.set_in_flight(HashMap::new());
        assert!(s.processes[&P1].in_flight.is_empty());
    }

    #[test]
    fn names_follow_execve() {
        let mut s = Store::new(Duration::ZERO, 1000);
        s.add(P1, GETPID, &delta(1, 1, 1, 0));
        s.identify(P1, "bash", 42);
        s.identify(P1, "ls", 0);
        assert_eq!(s.processes[&P1].comm, "ls");
        assert_eq!(
            s.processes[&P1].cgroup_id, 42,
            "an unknown id does not erase a known one"
        );
    }

    #[test]
    fn empty_deltas_create_nothing() {
        let mut s = Store::new(Duration::ZERO, 1000);
        s.add(P1, GETPID, &Delta::default());
        assert!(s.processes.is_empty());
        assert!(s.system.is_empty());
    }
}
