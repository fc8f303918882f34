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
//! - **Syscalls**: each number the table names has its own series; every other number
//!   (unallocated: ENOSYS) is counted under its ABI's `syscall="unnamed"`
//!   (`SyscallKey::or_unnamed`), so a program calling thousands of them cannot give each group
//!   thousands of series.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    compact::SortedMap,
    histogram::DeltaRef,
    keys::{FastMap, ProcKey, SyscallKey},
    sums::Taken,
    telemetry::Telemetry,
    totals::{prefetch_ahead, Process, SyscallTotals},
};
use crate::host::cgroups;

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
    pub syscalls: SortedMap<SyscallKey, SyscallTotals>,
    pub(super) touched: bool,
    pub(super) last_active: Option<Instant>,
    /// Its number in the batch being added, with that batch's (see [`Aggregates::totals_of`]).
    pub(super) batch_id: Option<(u64, u32)>,
}

#[derive(Debug, Default)]
pub struct Aggregates {
    pub config: MetricsConfig,
    pub groups: HashMap<GroupKey, Group>,
    /// cgroup id → its label and pod, filled by the drain (host/cgroups.rs), pruned to the ids
    /// still in use.
    pub cgroup_labels: HashMap<u64, cgroups::Cgroup>,
    /// Per-pid mode: the promoted processes' totals since promotion.
    pub promoted: HashMap<ProcKey, SortedMap<SyscallKey, SyscallTotals>>,
    /// Per-pid mode: every call of a process that was not promoted when it was drained.
    pub other: SortedMap<SyscallKey, SyscallTotals>,
    pub telemetry: Telemetry,
    /// The batch of gains being added (one a drain) and how many groups it has numbered.
    batch: u64,
    batch_groups: u32,
}

/// One process's share of the aggregates (see [`Aggregates::totals_of`]), for one walk over
/// its gains by syscall: each map is walked front to back from a cursor (as the process's own
/// totals are), not searched once per syscall.
pub struct Totals<'a> {
    /// The group's number in this batch: the key its gains are summed by (see
    /// [`Aggregates::add_group_sums`]).
    pub group_id: u32,
    group: (&'a mut SortedMap<SyscallKey, SyscallTotals>, usize),
    pid: Option<(&'a mut SortedMap<SyscallKey, SyscallTotals>, usize)>,
}

impl Totals<'_> {
    /// Adds one syscall's gains to the group's totals directly, when the batch's sums had no
    /// room for them or the syscall has no name; give the syscalls in ascending order.
    pub fn add_to_group(&mut self, sc: SyscallKey, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
        let (group, cursor) = &mut self.group;
        add_to(entry_of(group, cursor, sc), delta, errnos);
    }

    /// Adds one syscall's gains to the process's own series or the `other` fold, in per-pid
    /// mode; give the syscalls in ascending order.
    pub fn add_to_pid(&mut self, sc: SyscallKey, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
        if let Some((t, cursor)) = &mut self.pid {
            add_to(entry_of(t, cursor, sc), delta, errnos);
        }
    }
}

/// `sc`'s totals in `map`, walked by `cursor` (see `SortedMap::entry_from`); a number without
/// a name is searched for under its ABI's unnamed key instead. That key is the highest of its
/// ABI, so every key before the cursor is still below it, and inserting it leaves the cursor
/// valid.
fn entry_of<'m>(
    map: &'m mut SortedMap<SyscallKey, SyscallTotals>,
    cursor: &mut usize,
    sc: SyscallKey,
) -> &'m mut SyscallTotals {
    if sc.is_named() {
        prefetch_ahead(map, *cursor);
        map.entry_from(cursor, sc).or_default()
    } else {
        map.entry(sc.or_unnamed()).or_default()
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
            let id = match g.batch_id {
                Some((batch, id)) if batch == self.batch => id,
                _ => {
                    let id = self.batch_groups;
                    self.batch_groups += 1;
                    g.batch_id = Some((self.batch, id));
                    id
                }
            };
            (id, &mut g.syscalls)
        };
        let pid = if self.config.per_pid {
            if !self.promoted.contains_key(&p.key) && self.promoted.len() < self.config.top_pids {
                self.promoted.insert(p.key, SortedMap::default());
            }
            Some(match self.promoted.get_mut(&p.key) {
                Some(t) => t,
                None => &mut self.other,
            })
        } else {
            None
        };
        Totals {
            group_id: group.0,
            group: (group.1, 0),
            pid: pid.map(|t| (t, 0)),
        }
    }

    /// Adds a batch's gains summed by (group number, syscall), as [`Totals::group_id`] numbered
    /// the groups, to the groups' totals: once per (group, syscall) a batch rather than once
    /// per process (a tenth of the drain's time at 10,000 series of 100 processes of one
    /// group). Ends the batch: its numbers are not valid after.
    pub fn add_group_sums(&mut self, sums: &Taken<'_, (u32, SyscallKey)>) {
        let mut by_id: Vec<Option<&mut SortedMap<SyscallKey, SyscallTotals>>> =
            (0..self.batch_groups).map(|_| None).collect();
        for g in self.groups.values_mut() {
            if let Some((_, id)) = g.batch_id.filter(|&(batch, _)| batch == self.batch) {
                by_id[id as usize] = Some(&mut g.syscalls);
            }
        }
        // Every numbered group is found: nothing removes a group during a batch.
        for ((id, sc), delta, errnos) in sums.iter() {
            if let Some(Some(t)) = by_id.get_mut(id as usize) {
                add_to(t.entry(sc).or_default(), delta, errnos);
            }
        }
        self.batch_groups = 0;
        self.batch += 1;
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
