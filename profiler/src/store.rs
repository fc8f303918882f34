//! Cumulative totals since the daemon started. Written only by the drain; read by every view.
//!
//! Counters here never go backwards: the drain adds what changed in the kernel maps, and
//! system-wide totals are kept apart from per-process ones so that retiring an exited process
//! does not shrink them.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use crate::histogram::{Delta, Histogram};

#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// When the drain saw the process exit; it leaves the store `retention` later.
    pub exited: Option<(Instant, SystemTime)>,
    /// Per syscall number.
    pub syscalls: BTreeMap<u32, Histogram>,
}

/// The kernel side's own health, as of the last drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub hists_full: u64,
    pub procs_full: u64,
    pub starts_full: u64,
    pub unmatched_exits: u64,
    pub hists_entries: u64,
}

#[derive(Debug)]
pub struct Store {
    pub started: (Instant, SystemTime),
    pub retention: Duration,
    pub processes: HashMap<u32, Process>,
    /// Per syscall number, over every process ever seen.
    pub system: BTreeMap<u32, Histogram>,
    pub kernel: KernelCounters,
    pub drains: u64,
    pub last_drain: Option<SystemTime>,
}

impl Store {
    pub fn new(retention: Duration) -> Self {
        Self {
            started: (Instant::now(), SystemTime::now()),
            retention,
            processes: HashMap::new(),
            system: BTreeMap::new(),
            kernel: KernelCounters::default(),
            drains: 0,
            last_drain: None,
        }
    }

    /// Adds what one kernel histogram gained since the last drain.
    pub fn add(&mut self, pid: u32, nr: u32, delta: &Delta) {
        if delta.is_empty() {
            return;
        }
        let process = self.processes.entry(pid).or_insert_with(|| Process {
            pid,
            comm: String::new(),
            exited: None,
            syscalls: BTreeMap::new(),
        });
        process.syscalls.entry(nr).or_default().add(delta);
        self.system.entry(nr).or_default().add(delta);
    }

    /// Records a process's name; a later name (after execve) replaces an earlier one.
    pub fn name(&mut self, pid: u32, comm: &str) {
        if let Some(p) = self.processes.get_mut(&pid) {
            if p.comm != comm {
                p.comm = comm.to_string();
            }
        }
    }

    pub fn mark_exited(&mut self, pid: u32, now: (Instant, SystemTime)) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.exited.get_or_insert(now);
        }
    }

    /// Forgets processes that exited more than `retention` before `now`.
    pub fn expire(&mut self, now: Instant) {
        let retention = self.retention;
        self.processes.retain(|_, p| match p.exited {
            Some((at, _)) => now.saturating_duration_since(at) < retention,
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(bucket: usize, n: u64, total: u64, errors: u64) -> Delta {
        Delta {
            errors,
            total_ns: total,
            buckets: vec![(bucket, n)],
        }
    }

    #[test]
    fn totals_accumulate_per_process_and_system_wide() {
        let mut s = Store::new(Duration::from_secs(60));
        s.add(1, 39, &delta(100, 2, 500, 0));
        s.add(1, 39, &delta(101, 3, 700, 1));
        s.add(2, 39, &delta(100, 1, 100, 1));
        let p1 = &s.processes[&1].syscalls[&39];
        assert_eq!((p1.count, p1.errors, p1.total_ns), (5, 1, 1200));
        let sys = &s.system[&39];
        assert_eq!((sys.count, sys.errors, sys.total_ns), (6, 2, 1300));
    }

    #[test]
    fn exited_processes_leave_after_retention_but_system_totals_stay() {
        let mut s = Store::new(Duration::from_secs(60));
        s.add(7, 0, &delta(50, 4, 400, 0));
        s.add(8, 0, &delta(50, 1, 100, 0));
        let t0 = Instant::now();
        s.mark_exited(7, (t0, SystemTime::now()));
        // A second exit notice does not restart the clock.
        s.mark_exited(7, (t0 + Duration::from_secs(30), SystemTime::now()));
        s.expire(t0 + Duration::from_secs(59));
        assert!(s.processes.contains_key(&7));
        s.expire(t0 + Duration::from_secs(60));
        assert!(!s.processes.contains_key(&7));
        assert!(
            s.processes.contains_key(&8),
            "running processes never expire"
        );
        assert_eq!(s.system[&0].count, 5);
    }

    #[test]
    fn names_follow_execve() {
        let mut s = Store::new(Duration::ZERO);
        s.add(3, 0, &delta(1, 1, 1, 0));
        s.name(3, "bash");
        s.name(3, "ls");
        assert_eq!(s.processes[&3].comm, "ls");
    }

    #[test]
    fn empty_deltas_create_nothing() {
        let mut s = Store::new(Duration::ZERO);
        s.add(3, 0, &Delta::default());
        assert!(s.processes.is_empty());
        assert!(s.system.is_empty());
    }
}
