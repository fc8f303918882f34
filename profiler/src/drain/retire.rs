//! Retiring processes: their kernel entries are deleted one drain after their exit was seen,
//! and (with pinned maps) only once a checkpoint holding their last reading is committed.

use profiler_common::{ErrnoKey, HistKey, ProcInfo};

use super::{keys::proc_key, readings::Previous};
use crate::{
    host::procfs,
    kernel::Maps,
    store::{FastMap, FastSet, ProcKey},
};

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
    // A process's slots are mostly neighbours (it takes free ones as it makes new calls), so
    // a key is most often the one before: looked up once, not once per slot.
    let mut last = None;
    for key in with_data {
        if last != Some(key) && !procs.contains_key(&key) && !procfs::exists(key.pid) {
            exited.insert(key);
        }
        last = Some(key);
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
