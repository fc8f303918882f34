//! Retiring processes: what the store says they contributed goes to the ledger (with pinned
//! maps), and their kernel entries are deleted, one drain after their exit was seen.

use std::collections::HashMap;

use profiler_common::{
    ErrnoKey, HistKey, LedgerErrnoKey, LedgerKey, LedgerTotals, ProcInfo, BUCKETS,
};
use tracing::warn;

use super::{
    keys::{abi_byte, proc_key},
    readings::Previous,
};
use crate::{
    host::procfs,
    kernel::{Ledger, Maps},
    store::{FastMap, FastSet, ProcKey, Store, SyscallKey, SyscallTotals},
};

/// What the processes about to be retired contributed, per syscall, from the store's 64-bit
/// totals (exact even where the kernel's 32-bit counts wrapped).
pub(super) fn retired_totals(
    store: &Store,
    retiring: &FastSet<ProcKey>,
) -> HashMap<SyscallKey, SyscallTotals> {
    let mut sum: HashMap<SyscallKey, SyscallTotals> = HashMap::new();
    for p in retiring.iter().filter_map(|k| store.processes().get(k)) {
        for (sc, t) in &p.syscalls {
            let into = sum.entry(*sc).or_default();
            into.hist.merge(&t.hist);
            for (&e, &n) in &t.errnos {
                *into.errnos.entry(e).or_default() += n;
            }
        }
    }
    sum
}

/// Adds what retired processes contributed to the ledger, for the next daemon to start from.
pub(super) fn keep_in_ledger(ledger: &mut Ledger, retired: &HashMap<SyscallKey, SyscallTotals>) {
    for (sc, t) in retired {
        let key = LedgerKey {
            nr: sc.nr,
            abi: abi_byte(sc.abi),
            _pad: [0; 3],
        };
        let mut v = ledger.totals.get(&key, 0).unwrap_or(LedgerTotals {
            errors: 0,
            total_ns: 0,
            runq_ns: 0,
            blocked_ns: 0,
            blocked_calls: 0,
            buckets: [0; BUCKETS],
        });
        v.errors += t.hist.errors;
        v.total_ns += t.hist.total_ns;
        v.runq_ns += t.hist.split.runq_ns;
        v.blocked_ns += t.hist.split.blocked_ns;
        v.blocked_calls += t.hist.split.blocked_calls;
        for (i, n) in t.hist.bucket_counts() {
            v.buckets[i] += n;
        }
        if let Err(e) = ledger.totals.insert(key, v, 0) {
            warn!("ledger full, retired totals of {sc:?} not kept for the next start: {e}");
        }
        for (&errno, &n) in &t.errnos {
            let ekey = LedgerErrnoKey {
                syscall: key,
                errno,
            };
            let before = ledger.errnos.get(&ekey, 0).unwrap_or(0);
            if let Err(e) = ledger.errnos.insert(ekey, before + n, 0) {
                warn!("ledger full, retired errno {errno} of {sc:?} not kept: {e}");
            }
        }
    }
}

/// The process incarnations that have exited: every one the kernel stamped, and any with data
/// but no PROCS entry (full map) that /proc no longer has.
pub(super) fn exited_processes(
    procs: &FastMap<ProcKey, ProcInfo>,
    with_data: impl Iterator<Item = ProcKey>,
) -> FastSet<ProcKey> {
    let mut exited: FastSet<ProcKey> = procs
        .iter()
        .filter(|(_, info)| info.exit_ns != 0)
        .map(|(&key, _)| key)
        .collect();
    for key in with_data {
        if !procs.contains_key(&key) && !procfs::exists(key.pid) {
            exited.insert(key);
        }
    }
    exited
}

/// Deletes the retiring processes' kernel entries; returns the histogram slots freed
/// (ascending). A slot is unmapped first, so no new event can find it, and wiped and queued only
/// if its key was still mapped to it, so a slot is never queued twice.
pub(super) fn delete<'a>(
    maps: &mut Maps,
    retiring: &FastSet<ProcKey>,
    slots: impl Iterator<Item = (u32, &'a HistKey)>,
    errnos: &mut Previous<ErrnoKey, u32>,
) -> Vec<u32> {
    let mut freed = Vec::new();
    for (slot, key) in slots {
        if retiring.contains(&proc_key(key)) && maps.hist_slots.remove(key).is_ok() {
            maps.hists.clear(slot);
            let _ = maps.free_slots.push(slot, 0);
            freed.push(slot);
        }
    }
    errnos.retire(|key| {
        let gone = retiring.contains(&proc_key(&key.hist));
        if gone {
            let _ = maps.errnos.remove(key);
        }
        gone
    });
    for key in retiring {
        let _ = maps.procs.remove(&profiler_common::ProcKey {
            tgid: key.pid,
            incarnation: key.incarnation,
        });
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_detection() {
        let k = |pid, incarnation| ProcKey { pid, incarnation };
        let info = |exit_ns| ProcInfo {
            comm: [0; 16],
            cgroup_id: 0,
            exit_ns,
        };
        let procs = FastMap::from_iter([(k(1, 5), info(0)), (k(2, 6), info(123))]);
        let own = std::process::id();
        // 1: running; 2: stamped; our own pid without an entry: alive in /proc; 4_000_000 (past
        // any pid_max) without an entry: gone.
        let data = [k(1, 5), k(2, 6), k(own, 3), k(4_000_000, 4)];
        let exited = exited_processes(&procs, data.into_iter());
        assert_eq!(exited, FastSet::from_iter([k(2, 6), k(4_000_000, 4)]));
    }
}
