//! What `/metrics` exports, kept by the store as the drain adds deltas, so every counter a
//! scraper sees is monotonic and bounded:
//!
//! - **Groups**: cumulative totals per (comm, cgroup label, syscall). Per-process totals leave the
//!   store when a process expires; these do not, so summing by comm never goes backwards when a
//!   process exits. At most `max_groups` (comm, cgroup) pairs: calls of further pairs are added
//!   to the group (`other`, `other`), which only ever grows. A group leaves `retention` after it
//!   last had calls or a running process (its series end, as an exited process's do).
//! - **Per process** (`--metrics-per-pid`): the top `top_pids` processes by syscall time have
//!   series of their own; calls of every other process are added to one `other` fold. A process
//!   counts into its own series from when it was promoted: a new process is promoted at once
//!   while there is room, and each drain re-ranks (a process that drops out of the top stops
//!   having a series; one that enters starts at zero). So each series only grows, and across
//!   `pid` series plus `other` every call is counted exactly once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cgroups,
    histogram::DeltaRef,
    store::{FastMap, ProcKey, Process, SyscallKey, SyscallTotals},
};

/// The label value of every fold.
pub const OTHER: &str = "other";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub per_pid: bool,
    pub top_pids: usize,
    pub max_groups: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            per_pid: false,
            top_pids: 20,
            max_groups: 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub comm: String,
    pub cgroup: Arc<str>,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub syscalls: BTreeMap<SyscallKey, SyscallTotals>,
    touched: bool,
    last_active: Option<Instant>,
}

/// One of the daemon's own BPF programs, as the kernel accounts it (`BPF_ENABLE_STATS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfProgram {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// The daemon's own cost, as of the last drain.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    pub drains_timed: u64,
    pub drain_seconds_total: f64,
    pub last_drain_seconds: f64,
    pub bpf_stats_enabled: bool,
    pub bpf_programs: Vec<BpfProgram>,
}

impl Telemetry {
    pub fn record_drain(&mut self, took: Duration) {
        self.drains_timed += 1;
        self.drain_seconds_total += took.as_secs_f64();
        self.last_drain_seconds = took.as_secs_f64();
    }
}

#[derive(Debug, Default)]
pub struct Aggregates {
    pub config: MetricsConfig,
    pub groups: HashMap<GroupKey, Group>,
    /// cgroup id → its label and pod, filled by the drain (cgroups.rs), pruned to the ids
    /// still in use.
    pub cgroup_labels: HashMap<u64, cgroups::Cgroup>,
    /// Per-pid mode: the promoted processes' totals since promotion.
    pub promoted: HashMap<ProcKey, BTreeMap<SyscallKey, SyscallTotals>>,
    /// Per-pid mode: every call of a process that was not promoted when it was drained.
    pub other: BTreeMap<SyscallKey, SyscallTotals>,
    pub telemetry: Telemetry,
}

/// One process's share of the aggregates (see [`Aggregates::totals_of`]).
pub struct Totals<'a> {
    group: &'a mut BTreeMap<SyscallKey, SyscallTotals>,
    pid: Option<&'a mut BTreeMap<SyscallKey, SyscallTotals>>,
}

impl Totals<'_> {
    pub fn add(&mut self, sc: SyscallKey, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
        let into = self.group.entry(sc).or_default();
        add_to(into, delta, errnos);
        if let Some(t) = &mut self.pid {
            add_to(t.entry(sc).or_default(), delta, errnos);
        }
    }
}

fn add_to(t: &mut SyscallTotals, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
    if !delta.is_empty() {
        t.hist.add_ref(delta);
    }
    for &(errno, n) in errnos.iter().filter(|e| e.1 != 0) {
        *t.errnos.entry(errno).or_default() += n;
    }
}

impl Aggregates {
    pub fn new(config: MetricsConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn cgroup_label(&self, cgroup_id: u64) -> Arc<str> {
        self.cgroup_labels
            .get(&cgroup_id)
            .map_or_else(|| Arc::from(cgroups::UNKNOWN), |c| c.label.clone())
    }

    /// Where one process's calls are added: its group's totals and, in per-pid mode, its own
    /// series or the `other` fold. Found once per process per drain, not once per syscall: the
    /// group lookup builds a key string.
    pub fn totals_of(&mut self, p: &Process) -> Totals<'_> {
        let group = {
            let mut key = GroupKey {
                comm: p.comm.clone(),
                cgroup: self.cgroup_label(p.cgroup_id),
            };
            if !self.groups.contains_key(&key) && self.groups.len() >= self.config.max_groups {
                key = GroupKey {
                    comm: OTHER.to_string(),
                    cgroup: Arc::from(OTHER),
                };
            }
            let g = self.groups.entry(key).or_default();
            g.touched = true;
            &mut g.syscalls
        };
        let pid = if self.config.per_pid {
            if !self.promoted.contains_key(&p.key) && self.promoted.len() < self.config.top_pids {
                self.promoted.insert(p.key, BTreeMap::new());
            }
            Some(match self.promoted.get_mut(&p.key) {
                Some(t) => t,
                None => &mut self.other,
            })
        } else {
            None
        };
        Totals { group, pid }
    }

    /// After the store has expired its processes: expire idle groups, re-rank the promoted
    /// processes, forget cgroup labels nobody uses.
    pub fn finish_drain(
        &mut self,
        processes: &FastMap<ProcKey, Process>,
        now: Instant,
        retention: Duration,
    ) {
        let mut live_groups: HashSet<(&str, u64)> = HashSet::new();
        for p in processes.values().filter(|p| p.exited.is_none()) {
            live_groups.insert((p.comm.as_str(), p.cgroup_id));
        }
        let live: HashSet<GroupKey> = live_groups
            .into_iter()
            .map(|(comm, id)| GroupKey {
                comm: comm.to_string(),
                cgroup: self.cgroup_label(id),
            })
            .collect();
        self.groups.retain(|key, g| {
            // Checked apart from the clock so that even `--retention 0s` never restarts the
            // counters of a group still in use.
            let active = std::mem::take(&mut g.touched) || live.contains(key);
            if active {
                g.last_active = Some(now);
            }
            active
                || g.last_active
                    .is_some_and(|at| now.saturating_duration_since(at) < retention)
        });

        if self.config.per_pid {
            // Series are labelled by pid: of a recycled pid's incarnations only the newest may
            // have one, or two series would carry the same labels.
            let mut newest: HashMap<u32, &Process> = HashMap::new();
            for p in processes.values() {
                let e = newest.entry(p.key.pid).or_insert(p);
                if (p.first_seen, p.key) > (e.first_seen, e.key) {
                    *e = p;
                }
            }
            let mut ranked: Vec<(u64, ProcKey)> =
                newest.values().map(|p| (p.total.total_ns, p.key)).collect();
            let k = self.config.top_pids.min(ranked.len());
            if k < ranked.len() {
                ranked.select_nth_unstable_by_key(k, |&(t, key)| (std::cmp::Reverse(t), key));
            }
            let top: HashSet<ProcKey> = ranked[..k].iter().map(|&(_, key)| key).collect();
            self.promoted.retain(|key, _| top.contains(key));
            for key in top {
                self.promoted.entry(key).or_default();
            }
        }

        let in_use: HashSet<u64> = processes.values().map(|p| p.cgroup_id).collect();
        self.cgroup_labels.retain(|id, _| in_use.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{histogram::Delta, store::Store, syscalls::Abi};

    const GETPID: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 39,
    };

    fn key(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            incarnation: 1,
        }
    }

    fn delta(n: u64, total_ns: u64) -> Delta {
        Delta {
            errors: 0,
            total_ns,
            buckets: vec![(100, n)],
        }
    }

    fn store(config: MetricsConfig) -> Store {
        let mut s = Store::new(Duration::from_secs(60), 1000);
        s.metrics = Aggregates::new(config);
        s
    }

    fn group_count(s: &Store, comm: &str) -> u64 {
        s.metrics
            .groups
            .iter()
            .filter(|(k, _)| k.comm == comm)
            .map(|(_, g)| g.syscalls[&GETPID].hist.count)
            .sum()
    }

    #[test]
    fn groups_stay_monotonic_when_processes_expire() {
        let mut s = store(MetricsConfig::default());
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.identify(key(1), "nginx", 0);
        s.identify(key(2), "nginx", 0);
        s.add(key(1), GETPID, &delta(3, 30));
        s.add(key(2), GETPID, &delta(4, 40));
        s.add_errno(key(2), GETPID, 2, 1);
        s.mark_exited(key(1), (t0, wall));
        s.finish_drain((t0 + Duration::from_secs(61), wall));
        assert!(!s.processes.contains_key(&key(1)), "process expired");
        assert_eq!(group_count(&s, "nginx"), 7, "its calls stay in the group");
        let g = s.metrics.groups.values().next().unwrap();
        assert_eq!(g.syscalls[&GETPID].errnos[&2], 1);
        assert_eq!(g.syscalls[&GETPID].hist.total_ns, 70);
    }

    #[test]
    fn a_group_leaves_after_retention_once_no_process_of_it_runs() {
        let mut s = store(MetricsConfig::default());
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.identify(key(1), "cron", 0);
        s.add(key(1), GETPID, &delta(1, 1));
        s.finish_drain((t0, wall));
        // Alive and idle well past retention: kept, so its counters never restart.
        s.finish_drain((t0 + Duration::from_secs(600), wall));
        assert_eq!(group_count(&s, "cron"), 1);
        s.mark_exited(key(1), (t0 + Duration::from_secs(600), wall));
        s.finish_drain((t0 + Duration::from_secs(601), wall));
        assert_eq!(
            group_count(&s, "cron"),
            1,
            "exited, idle: still within retention"
        );
        s.finish_drain((t0 + Duration::from_secs(700), wall));
        assert!(s.metrics.groups.is_empty(), "exited and idle for retention");
    }

    #[test]
    fn groups_past_the_cap_fold_into_other() {
        let mut s = store(MetricsConfig {
            max_groups: 2,
            ..MetricsConfig::default()
        });
        for (pid, comm) in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "a")] {
            s.identify(key(pid), comm, 0);
            s.add(key(pid), GETPID, &delta(1, 1));
        }
        assert_eq!(group_count(&s, "a"), 2);
        assert_eq!(group_count(&s, "b"), 1);
        assert_eq!(group_count(&s, OTHER), 2, "c and d");
        assert_eq!(s.metrics.groups.len(), 3, "the cap plus the fold");
    }

    #[test]
    fn top_k_processes_get_series_the_rest_fold_into_other() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 2,
            max_groups: 1000,
        });
        let t0 = s.started.0;
        let wall = SystemTime::now();
        // While there is room, a new process is promoted at once: all its calls are its own.
        s.add(key(1), GETPID, &delta(1, 100));
        s.add(key(2), GETPID, &delta(1, 200));
        s.add(key(3), GETPID, &delta(5, 900));
        assert_eq!(s.metrics.promoted[&key(1)][&GETPID].hist.count, 1);
        assert_eq!(s.metrics.promoted[&key(2)][&GETPID].hist.count, 1);
        assert!(!s.metrics.promoted.contains_key(&key(3)));
        assert_eq!(s.metrics.other[&GETPID].hist.count, 5);
        // Re-ranked by syscall time: 3 (900) and 2 (200) are the top 2; 1 drops out.
        s.finish_drain((t0 + Duration::from_secs(1), wall));
        let mut top: Vec<u32> = s.metrics.promoted.keys().map(|k| k.pid).collect();
        top.sort();
        assert_eq!(top, vec![2, 3]);
        // 3 counts from its promotion; 1's new calls go to other. Other never shrinks.
        s.add(key(3), GETPID, &delta(2, 10));
        s.add(key(1), GETPID, &delta(4, 10));
        assert_eq!(s.metrics.promoted[&key(3)][&GETPID].hist.count, 2);
        assert_eq!(s.metrics.other[&GETPID].hist.count, 9);
        // Every call counted exactly once across pid series and other.
        let all: u64 = s
            .metrics
            .promoted
            .values()
            .map(|t| t[&GETPID].hist.count)
            .sum::<u64>()
            + s.metrics.other[&GETPID].hist.count;
        assert_eq!(all, 1 + 2 + 9);
        assert_eq!(
            all + 1,
            s.system[&GETPID].hist.count,
            "1's first call left with its series"
        );
    }

    #[test]
    fn a_recycled_pid_has_one_series() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 10,
            max_groups: 1000,
        });
        let wall = SystemTime::now();
        let reborn = ProcKey {
            pid: 1,
            incarnation: 2,
        };
        s.add(key(1), GETPID, &delta(1, 100));
        s.processes.get_mut(&key(1)).unwrap().first_seen = wall - Duration::from_secs(5);
        s.mark_exited(key(1), (s.started.0, wall));
        s.add(reborn, GETPID, &delta(1, 1));
        s.finish_drain((s.started.0, wall));
        let promoted: Vec<ProcKey> = s.metrics.promoted.keys().copied().collect();
        assert_eq!(promoted, vec![reborn]);
    }

    #[test]
    fn an_exited_process_series_expires_with_it() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 10,
            max_groups: 1000,
        });
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.add(key(1), GETPID, &delta(1, 100));
        s.add(key(2), GETPID, &delta(1, 100));
        s.mark_exited(key(1), (t0, wall));
        s.finish_drain((t0 + Duration::from_secs(59), wall));
        assert!(
            s.metrics.promoted.contains_key(&key(1)),
            "kept for retention"
        );
        s.finish_drain((t0 + Duration::from_secs(60), wall));
        assert!(
            !s.metrics.promoted.contains_key(&key(1)),
            "gone with the process"
        );
        assert!(s.metrics.promoted.contains_key(&key(2)));
    }
}
