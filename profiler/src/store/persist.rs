//! What the store keeps across restarts (with `--pin-path`): everything cumulative that /stats'
//! system-wide totals and /metrics export — per-syscall totals, the (comm, cgroup) groups, the
//! per-pid series (with their processes, so a series outlives a restart as long as its process
//! would have stayed) and their `other` fold — as serde types the drain's checkpoint
//! serializes, and how a resumed store takes them back. Other processes' totals are not kept: a
//! resumed daemon seeds those of processes still in the kernel from the kernel's own counts
//! (`seed`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::host::cgroups::Cgroup;

use super::{
    aggregates::{Group, GroupKey},
    compact::SortedMap,
    histogram::Delta,
    keys::{FastSet, ProcKey, SyscallKey},
    totals::{Gain, Process, SyscallTotals},
    Store,
};

type Totals = SortedMap<SyscallKey, SyscallTotals>;
/// The system-wide totals, as the store keeps them.
type SystemTotals = BTreeMap<SyscallKey, SyscallTotals>;

/// The store's cumulative exported state, borrowed for serializing. Field for field the
/// serialized form of [`Exported`] (a round-trip test holds them together).
#[derive(Serialize)]
pub struct ExportedRef<'a> {
    system: &'a SystemTotals,
    groups: Vec<GroupRef<'a>>,
    promoted: Vec<PromotedRef<'a>>,
    other: &'a Totals,
}

/// A per-pid series, and its process (whose comm and cgroup label it).
#[derive(Serialize)]
struct PromotedRef<'a> {
    key: &'a ProcKey,
    series: &'a Totals,
    process: Option<ProcessRef<'a>>,
}

#[derive(Serialize)]
struct ProcessRef<'a> {
    comm: &'a str,
    cgroup_id: u64,
    cgroup: Option<&'a str>,
    first_seen_unix_ns: u64,
    /// (how long ago, Unix time), in ns.
    exited: Option<(u64, u64)>,
    syscalls: &'a SortedMap<SyscallKey, SyscallTotals>,
}

#[derive(Serialize)]
struct GroupRef<'a> {
    comm: &'a str,
    cgroup: &'a str,
    /// How long ago the group last had calls or a running process: it expires `retention`
    /// after that, also across a restart.
    idle_ns: Option<u64>,
    syscalls: &'a Totals,
}

/// See [`ExportedRef`].
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Exported {
    system: SystemTotals,
    groups: Vec<GroupState>,
    promoted: Vec<Promoted>,
    other: Totals,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct Promoted {
    key: ProcKey,
    series: Totals,
    process: Option<ProcessState>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct ProcessState {
    comm: String,
    cgroup_id: u64,
    cgroup: Option<String>,
    first_seen_unix_ns: u64,
    exited: Option<(u64, u64)>,
    syscalls: SortedMap<SyscallKey, SyscallTotals>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct GroupState {
    comm: String,
    cgroup: String,
    idle_ns: Option<u64>,
    syscalls: Totals,
}

impl Store {
    /// The cumulative exported state as of `now`, to serialize. Groups and series in key order,
    /// so the same state always serializes to the same bytes.
    pub fn exported(&self, now: Instant) -> ExportedRef<'_> {
        let m = &self.metrics;
        let mut groups: Vec<GroupRef> = m
            .groups
            .iter()
            .map(|(k, g)| GroupRef {
                comm: &k.comm,
                cgroup: &k.cgroup,
                idle_ns: g
                    .last_active
                    .map(|at| now.saturating_duration_since(at).as_nanos() as u64),
                syscalls: &g.syscalls,
            })
            .collect();
        groups.sort_unstable_by_key(|g| (g.comm, g.cgroup));
        let mut promoted: Vec<PromotedRef> = m
            .promoted
            .iter()
            .map(|(key, series)| PromotedRef {
                key,
                series,
                process: self.processes.get(key).map(|p| ProcessRef {
                    comm: &p.comm,
                    cgroup_id: p.cgroup_id,
                    cgroup: m.cgroup_labels.get(&p.cgroup_id).map(|c| &*c.label),
                    first_seen_unix_ns: unix_ns(p.first_seen),
                    exited: p.exited.map(|(at, wall)| {
                        let ago = now.saturating_duration_since(at).as_nanos() as u64;
                        (ago, unix_ns(wall))
                    }),
                    syscalls: &p.syscalls,
                }),
            })
            .collect();
        promoted.sort_unstable_by_key(|p| *p.key);
        ExportedRef {
            system: &self.system,
            groups,
            promoted,
            other: &m.other,
        }
    }

    /// Takes back what a previous daemon exported, before the first drain: the totals continue
    /// from there. Every group is restored, even past a lowered `max_groups` (its series
    /// continue; only new groups fold into `other`).
    pub fn restore(&mut self, e: Exported, now: Instant) {
        self.system = e.system;
        let m = &mut self.metrics;
        m.groups = e
            .groups
            .into_iter()
            .map(|g| {
                let key = GroupKey {
                    comm: g.comm,
                    cgroup: Arc::from(g.cgroup),
                };
                let last_active = g
                    .idle_ns
                    .map(|ns| now.checked_sub(Duration::from_nanos(ns)).unwrap_or(now));
                let group = Group {
                    syscalls: g.syscalls,
                    last_active,
                    ..Group::default()
                };
                (key, group)
            })
            .collect();
        m.other = e.other;
        for promoted in e.promoted {
            m.promoted.insert(promoted.key, promoted.series);
            let Some(state) = promoted.process else {
                continue;
            };
            if let Some(label) = state.cgroup {
                // The pod, if any, comes back when the drain resolves the id again.
                let cgroup = Cgroup {
                    label: Arc::from(label),
                    pod: None,
                };
                m.cgroup_labels.insert(state.cgroup_id, cgroup);
            }
            let mut p = Process::new(promoted.key);
            p.comm = state.comm;
            p.cgroup_id = state.cgroup_id;
            p.first_seen = from_unix_ns(state.first_seen_unix_ns);
            p.exited = state.exited.map(|(ago, wall)| {
                let at = now.checked_sub(Duration::from_nanos(ago)).unwrap_or(now);
                (at, from_unix_ns(wall))
            });
            // Not checkpointed: what a restart knows of it is its exit, or its start.
            p.last_seen = p.exited.map_or(p.first_seen, |(_, wall)| wall);
            for (sc, t) in &state.syscalls {
                let delta = Delta {
                    errors: t.hist.errors,
                    total_ns: t.hist.total_ns,
                    split: t.hist.split,
                    buckets: t.hist.bucket_counts().collect(),
                };
                let errnos: Vec<(u32, u64)> = t.errnos.iter().map(|(&e, &n)| (e, n)).collect();
                p.add(*sc, delta.view(), &errnos);
            }
            self.processes.insert(promoted.key, p);
        }
    }

    /// Per-process totals alone (not system-wide, /metrics or history, which `restore` brought
    /// back): what the kernel held for processes still there when a previous daemon stopped, so
    /// a resumed daemon shows their whole history. Not for the processes `restore` brought back
    /// whole.
    pub fn seed<'a>(&mut self, gains: impl IntoIterator<Item = Gain<'a>>) {
        let restored: FastSet<ProcKey> = self.processes.keys().copied().collect();
        for g in gains.into_iter().filter(|g| !restored.contains(&g.proc)) {
            let p = self
                .processes
                .entry(g.proc)
                .or_insert_with(|| Process::new(g.proc));
            p.add(g.sc, g.delta, g.errnos);
        }
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn from_unix_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{store::histogram::Delta, syscalls::Abi};

    fn sc(nr: u32) -> SyscallKey {
        SyscallKey {
            abi: Abi::Native,
            nr,
        }
    }

    fn pk(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            incarnation: 7,
        }
    }

    /// A store with system totals, two groups (one idle), a promoted process and the fold.
    fn busy_store() -> Store {
        let mut config = crate::store::StoreConfig {
            retention: Duration::from_secs(300),
            max_exited: 100,
            latency: true,
            metrics: Default::default(),
            bpf_stats_enabled: false,
            time_split: true,
        };
        config.metrics.per_pid = true;
        config.metrics.top_pids = 1;
        let mut s = Store::new(config);
        let delta = |n: u64| Delta {
            errors: 1,
            total_ns: 100 * n,
            split: Default::default(),
            buckets: vec![(3, n), (40, 1)],
        };
        s.identify(pk(1), "nginx", 0);
        s.identify(pk(2), "bash", 0);
        s.add(pk(1), sc(0), &delta(5));
        s.add(pk(2), sc(1), &delta(2));
        s.add_errno(pk(2), sc(1), 2, 3);
        s.finish_drain((Instant::now(), std::time::SystemTime::now()));
        s.add(pk(1), sc(0), &delta(1));
        s.mark_exited(pk(1), (Instant::now(), std::time::SystemTime::now()));
        s
    }

    #[test]
    fn exported_state_round_trips() {
        let s = busy_store();
        let now = Instant::now();
        let bytes = postcard::to_allocvec(&s.exported(now)).unwrap();
        let back: Exported = postcard::from_bytes(&bytes).unwrap();
        let mut t = Store::for_test(Duration::from_secs(300), 100);
        t.restore(back, now);
        assert_eq!(t.system(), s.system());
        let (a, b) = (t.metrics(), s.metrics());
        assert_eq!(a.groups.len(), 2);
        for (k, g) in &b.groups {
            assert_eq!(a.groups[k].syscalls, g.syscalls, "{k:?}");
            assert_eq!(a.groups[k].last_active.is_some(), g.last_active.is_some());
        }
        assert_eq!(a.promoted, b.promoted);
        assert_eq!(a.other, b.other);
        assert!(!b.other.is_empty() && !b.promoted.is_empty());
        // The promoted process comes back whole, so its series keeps its labels.
        for key in b.promoted.keys() {
            let (was, is) = (&s.processes()[key], &t.processes()[key]);
            assert_eq!(
                (&is.comm, &is.syscalls, is.total),
                (&was.comm, &was.syscalls, was.total)
            );
            assert_eq!(is.exited.is_some(), was.exited.is_some());
        }
        // The same state, the same bytes.
        assert_eq!(bytes, postcard::to_allocvec(&t.exported(now)).unwrap());
    }

    #[test]
    fn seeding_adds_to_processes_alone() {
        let mut s = Store::for_test(Duration::from_secs(300), 100);
        let buckets = [(3, 4)];
        s.seed([Gain {
            proc: pk(9),
            sc: sc(0),
            delta: crate::store::histogram::DeltaRef {
                errors: 1,
                total_ns: 50,
                split: Default::default(),
                buckets: &buckets,
            },
            errnos: &[(2, 1)],
        }]);
        let p = &s.processes()[&pk(9)];
        assert_eq!(p.total.count, 4);
        assert_eq!(p.syscalls[&sc(0)].errnos[&2], 1);
        assert!(s.system().is_empty());
        assert!(s.metrics().groups.is_empty());
        // Only processes not in the store yet (not restored whole) are seeded.
        s.seed([Gain {
            proc: pk(9),
            sc: sc(0),
            delta: crate::store::histogram::DeltaRef {
                errors: 0,
                total_ns: 5,
                split: Default::default(),
                buckets: &buckets,
            },
            errnos: &[],
        }]);
        assert_eq!(s.processes()[&pk(9)].total.count, 4);
    }
}
