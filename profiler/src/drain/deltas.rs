//! One drain's deltas, gathered from the slots and ERRNOS in the kernel's order and put in
//! the store's order, by process and syscall: the slots' by their ranks (ranking.rs), the rest
//! by a sort.

use super::ranking::{merge_by_key, Order, Ranking};
use crate::host::prefetch::prefetch;
use crate::store::{
    histogram::{DeltaRef, TimeSplit},
    Gain, ProcKey, SyscallKey,
};

/// One drain's deltas: their buckets share one buffer; the buffers and the slots' ranking are
/// kept from drain to drain.
#[derive(Default)]
pub(super) struct Deltas {
    list: Vec<DeltaAt>,
    pub(super) buckets: Vec<(usize, u64)>,
    /// A slot's failures by errno as read (the slot, then the failure), each slot's together.
    slot_errnos: Vec<(u32, Failure)>,
    /// Failures by errno from ERRNOS (or a checkpoint), in any order.
    pub(super) unsorted_errnos: Vec<Failure>,
    /// All failures by errno, in the order of `list` once ordered.
    errno_keys: Vec<(ProcKey, SyscallKey)>,
    errnos: Vec<(u32, u64)>,
    ranking: Ranking,
    /// Scratch for the ordering by rank: the deltas, then the slots' failures, in rank order.
    ordered: Vec<DeltaAt>,
    ordered_errnos: Vec<(u32, Failure)>,
}

/// Failures of a (process, syscall) with one errno: (process, syscall, errno, failures).
pub(super) type Failure = (ProcKey, SyscallKey, u32, u64);

/// A delta of [`Deltas`], its buckets `len` entries from `start` of the shared buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeltaAt {
    proc: ProcKey,
    sc: SyscallKey,
    errors: u64,
    total_ns: u64,
    split: TimeSplit,
    /// The slot it was read from (or, if several, the first).
    slot: u32,
    start: u32,
    len: u32,
}

/// How many deltas ahead of the one it yields `Deltas::gains` fetches the buckets of.
const PREFETCH_AHEAD: usize = 8;

/// (process, syscall) as two integers, cheap to compare in a sort.
fn order(proc: ProcKey, sc: SyscallKey) -> Order {
    (
        u64::from(proc.pid) << 32 | u64::from(proc.incarnation),
        (sc.abi as u64) << 32 | u64::from(sc.nr),
    )
}

impl DeltaAt {
    fn order(&self) -> Order {
        order(self.proc, self.sc)
    }
}

impl Deltas {
    /// Empties the lists for the next drain (the ranking stays).
    pub(super) fn clear(&mut self) {
        self.list.clear();
        self.buckets.clear();
        self.slot_errnos.clear();
        self.unsorted_errnos.clear();
        self.errno_keys.clear();
        self.errnos.clear();
    }

    /// Puts the failures by errno read so far in the order of `list` (see `gains`): the slots'
    /// by rank, ERRNOS' sorted, then the two merged.
    pub(super) fn sort_errnos(&mut self) {
        let by_slot = |&(slot, (p, sc, _, _)): &(u32, Failure)| (order(p, sc), slot);
        if !self
            .ranking
            .order_runs(&self.slot_errnos, by_slot, &mut self.ordered_errnos)
        {
            let slots = self.slot_errnos.iter().map(|&(_, f)| f);
            self.unsorted_errnos.extend(slots);
            self.ordered_errnos.clear();
        }
        self.unsorted_errnos
            .sort_unstable_by_key(|&(p, sc, _, _)| order(p, sc));
        self.errno_keys.clear();
        self.errnos.clear();
        let ranked = self.ordered_errnos.iter().map(|&(_, f)| f);
        let rest = self.unsorted_errnos.iter().copied();
        let key = |f: &Failure| order(f.0, f.1);
        for (p, sc, errno, n) in merge_by_key(ranked, rest, key) {
            self.errno_keys.push((p, sc));
            self.errnos.push((errno, n));
        }
    }

    /// A delta of `slot`, whose buckets were appended to `buckets` from `from` on.
    pub(super) fn push(
        &mut self,
        slot: u32,
        proc: ProcKey,
        sc: SyscallKey,
        (errors, total_ns, split): (u64, u64, TimeSplit),
        from: usize,
    ) {
        self.list.push(DeltaAt {
            proc,
            sc,
            errors,
            total_ns,
            split,
            slot,
            start: from as u32,
            len: (self.buckets.len() - from) as u32,
        });
    }

    /// Failures of `slot` with one errno (a slot's together, after its delta).
    pub(super) fn push_slot_errno(&mut self, slot: u32, failure: Failure) {
        self.slot_errnos.push((slot, failure));
    }

    /// Puts `list` in the ranking's order, each delta at its slot's rank; false (`list` as it
    /// was) if two deltas claim one rank (a slot read twice in a drain, which should not be).
    fn order_by_rank(&mut self) -> bool {
        let by_slot = |d: &DeltaAt| (d.order(), d.slot);
        if !self
            .ranking
            .order_runs(&self.list, by_slot, &mut self.ordered)
        {
            return false;
        }
        std::mem::swap(&mut self.list, &mut self.ordered);
        true
    }

    fn buckets_of(&self, d: &DeltaAt) -> &[(usize, u64)] {
        &self.buckets[d.start as usize..][..d.len as usize]
    }

    /// Orders by process, then syscall: the store takes them grouped by process (see
    /// Store::add_batch), and sees the same order whatever the kernel's hash order. The deltas
    /// of one (process, syscall)'s shards become one.
    pub(super) fn sort_and_merge_shards(&mut self) {
        if !self.order_by_rank() {
            self.list.sort_unstable_by_key(|d| (d.order(), d.slot));
        }
        let mut kept = 0;
        for at in 0..self.list.len() {
            let d = self.list[at];
            if kept > 0 && self.list[kept - 1].order() == d.order() {
                let into = self.list[kept - 1];
                let from = self.buckets.len();
                merge_sorted(&mut self.buckets, into, d);
                let mut split = into.split;
                split.add(d.split);
                self.list[kept - 1] = DeltaAt {
                    errors: into.errors + d.errors,
                    total_ns: into.total_ns.wrapping_add(d.total_ns),
                    split,
                    start: from as u32,
                    len: (self.buckets.len() - from) as u32,
                    ..into
                };
            } else {
                self.list[kept] = d;
                kept += 1;
            }
        }
        self.list.truncate(kept);
    }

    /// Every (process, syscall) that gained calls or failures, by process then syscall.
    pub(super) fn gains(&self) -> impl Iterator<Item = Gain<'_>> {
        let (mut at, mut errno_at) = (0, 0);
        std::iter::from_fn(move || {
            let calls = self.list.get(at);
            let fails = self.errno_keys.get(errno_at);
            let (proc, sc) = match (calls, fails) {
                (None, None) => return None,
                (Some(d), Some(&(p, sc))) if order(p, sc) < d.order() => (p, sc),
                (Some(d), _) => (d.proc, d.sc),
                (None, Some(&(p, sc))) => (p, sc),
            };
            let delta = match calls {
                Some(d) if (d.proc, d.sc) == (proc, sc) => {
                    // The buckets lie in the order the slots were read, not this one.
                    if let Some(ahead) = self.list.get(at + PREFETCH_AHEAD) {
                        prefetch(self.buckets.as_ptr().wrapping_add(ahead.start as usize));
                    }
                    at += 1;
                    DeltaRef {
                        errors: d.errors,
                        total_ns: d.total_ns,
                        split: d.split,
                        buckets: self.buckets_of(d),
                    }
                }
                _ => DeltaRef::default(),
            };
            let from = errno_at;
            while self.errno_keys.get(errno_at) == Some(&(proc, sc)) {
                errno_at += 1;
            }
            Some(Gain {
                proc,
                sc,
                delta,
                errnos: &self.errnos[from..errno_at],
            })
        })
    }
}

/// Appends to `buckets` the sum of the bucket lists of `a` and `b` (both by bucket), by bucket.
fn merge_sorted(buckets: &mut Vec<(usize, u64)>, a: DeltaAt, b: DeltaAt) {
    let (mut i, mut j) = (a.start as usize, b.start as usize);
    let (a_end, b_end) = (i + a.len as usize, j + b.len as usize);
    while i < a_end || j < b_end {
        let next = match (i < a_end, j < b_end) {
            (true, true) if buckets[i].0 == buckets[j].0 => {
                i += 1;
                j += 1;
                (buckets[i - 1].0, buckets[i - 1].1 + buckets[j - 1].1)
            }
            (true, true) if buckets[i].0 < buckets[j].0 => {
                i += 1;
                buckets[i - 1]
            }
            (true, false) => {
                i += 1;
                buckets[i - 1]
            }
            _ => {
                j += 1;
                buckets[j - 1]
            }
        };
        buckets.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Abi;

    fn pk(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            incarnation: 1,
        }
    }

    fn sc(nr: u32) -> SyscallKey {
        SyscallKey {
            abi: Abi::from_kernel(0),
            nr,
        }
    }

    /// A delta of one call in bucket `bucket` read from `slot`.
    fn push(d: &mut Deltas, slot: u32, pid: u32, nr: u32, bucket: usize) {
        let from = d.buckets.len();
        d.buckets.push((bucket, 1));
        d.push(slot, pk(pid), sc(nr), (0, 1, TimeSplit::default()), from);
    }

    /// (pid, nr, calls, failures by errno) of a gain.
    type Seen = (u32, u32, u64, Vec<(u32, u64)>);

    /// Each gain, in order.
    fn gains(d: &Deltas) -> Vec<Seen> {
        d.gains()
            .map(|g| (g.proc.pid, g.sc.nr, g.delta.count(), g.errnos.to_vec()))
            .collect()
    }

    #[test]
    fn deltas_come_by_process_and_syscall_from_drain_to_drain_as_slots_come_and_go() {
        let mut d = Deltas::default();
        // Slots in the kernel's order; 5 and 8 are two shards of one pair.
        push(&mut d, 3, 2, 1, 4);
        push(&mut d, 5, 1, 9, 4);
        push(&mut d, 8, 2, 1, 6);
        d.push_slot_errno(3, (pk(2), sc(1), 2, 1));
        d.push_slot_errno(3, (pk(2), sc(1), 13, 2));
        d.push_slot_errno(5, (pk(1), sc(9), 2, 5));
        d.sort_and_merge_shards();
        // From ERRNOS: a pair with no calls this drain, and a shard's fifth errno.
        d.unsorted_errnos.push((pk(2), sc(1), 9, 1));
        d.unsorted_errnos.push((pk(1), sc(4), 2, 3));
        d.sort_errnos();
        let mut got = gains(&d);
        got[2].3.sort();
        assert_eq!(
            got,
            [
                (1, 4, 0, vec![(2, 3)]),
                (1, 9, 1, vec![(2, 5)]),
                (2, 1, 2, vec![(2, 1), (9, 1), (13, 2)]),
            ]
        );
        assert_eq!(d.buckets_of(&d.list[1]), [(4, 1), (6, 1)]);

        // The next drain: slot 5 idle, slot 3 handed out again to another pair, a new slot.
        d.clear();
        push(&mut d, 3, 0, 7, 1);
        push(&mut d, 8, 2, 1, 6);
        push(&mut d, 12, 1, 9, 2);
        d.push_slot_errno(12, (pk(1), sc(9), 4, 1));
        d.sort_and_merge_shards();
        d.sort_errnos();
        assert_eq!(
            gains(&d),
            [
                (0, 7, 1, vec![]),
                (1, 9, 1, vec![(4, 1)]),
                (2, 1, 1, vec![]),
            ]
        );
    }
}
