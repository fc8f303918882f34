//! What one /metrics render reads: the store under its read lock, what is not in the store (the
//! scrapes' own cost, the daemon's process), and the syscall sets both syscall families of a
//! scope walk, sorted and named once.

use std::{borrow::Cow, collections::HashMap};

use crate::{
    host::{cgroups, procself::ProcSelf},
    store::{aggregates::OTHER, compact::SortedMap, Store, SyscallKey, SyscallTotals},
    syscalls,
};

pub struct Snapshot<'a> {
    pub store: &'a Store,
    /// Scrapes answered before this render, their total seconds and the last one's.
    pub scrapes: (u64, f64, f64),
    /// None if /proc/self could not be read.
    pub process: Option<ProcSelf>,
    /// Per (comm, cgroup) group, by group.
    pub groups: Vec<SyscallSet<'a>>,
    /// Per promoted process, by process, then the `other` fold; empty without
    /// `metrics_per_pid`.
    pub per_pid: Vec<SyscallSet<'a>>,
    /// Every syscall's name, made once for every set it is in.
    pub names: HashMap<SyscallKey, String>,
}

/// Per-syscall totals and the values of the labels before `abi` and `syscall`.
pub struct SyscallSet<'a> {
    pub labels: Vec<Cow<'a, str>>,
    pub totals: &'a SortedMap<SyscallKey, SyscallTotals>,
}

impl<'a> Snapshot<'a> {
    pub fn new(store: &'a Store, scrapes: (u64, f64, f64), process: Option<ProcSelf>) -> Self {
        let m = store.metrics();
        let mut groups: Vec<_> = m.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        let groups: Vec<SyscallSet> = groups
            .into_iter()
            .map(|(k, g)| SyscallSet {
                labels: vec![Cow::Borrowed(k.comm.as_str()), Cow::Borrowed(&*k.cgroup)],
                totals: &g.syscalls,
            })
            .collect();
        let per_pid = if m.config.per_pid {
            per_pid_sets(store)
        } else {
            Vec::new()
        };
        let mut names = HashMap::new();
        for set in groups.iter().chain(&per_pid) {
            for &k in set.totals.keys() {
                names
                    .entry(k)
                    .or_insert_with(|| syscalls::name(k.abi, k.nr));
            }
        }
        Snapshot {
            store,
            scrapes,
            process,
            groups,
            per_pid,
            names,
        }
    }

    /// The processes the store holds: (running, exited).
    pub fn process_states(&self) -> (usize, usize) {
        let all = self.store.processes();
        let exited = all.values().filter(|p| p.exited.is_some()).count();
        (all.len() - exited, exited)
    }

    /// The pods of the cgroup labels in use: (label, pod UID, QoS class), one per label.
    pub fn pods(&self) -> Vec<(&'a str, &'a str, &'static str)> {
        let mut pods: Vec<_> = self
            .store
            .metrics()
            .cgroup_labels
            .values()
            .filter_map(|c| {
                let pod = c.pod.as_deref()?;
                Some((&*c.label, pod.uid.as_str(), pod.qos_class.name()))
            })
            .collect();
        pods.sort_unstable_by_key(|&(label, _, _)| label);
        pods.dedup_by_key(|&mut (label, _, _)| label);
        pods
    }
}

/// The promoted processes, by key, then the `other` fold.
fn per_pid_sets(store: &Store) -> Vec<SyscallSet<'_>> {
    let m = store.metrics();
    let mut promoted: Vec<_> = m
        .promoted
        .iter()
        .filter_map(|(key, t)| Some((store.processes().get(key)?, t)))
        .collect();
    promoted.sort_by_key(|(p, _)| p.key);
    let mut sets: Vec<SyscallSet> = promoted
        .into_iter()
        .map(|(p, totals)| {
            let cgroup = m
                .cgroup_labels
                .get(&p.cgroup_id)
                .map_or(cgroups::UNKNOWN, |c| &*c.label);
            SyscallSet {
                labels: vec![
                    Cow::Owned(p.key.pid.to_string()),
                    Cow::Borrowed(p.comm.as_str()),
                    Cow::Borrowed(cgroup),
                ],
                totals,
            }
        })
        .collect();
    sets.push(SyscallSet {
        labels: vec![Cow::Borrowed(OTHER); 3],
        totals: &m.other,
    });
    sets
}
