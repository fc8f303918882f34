//! One drain's deltas, gathered from the slots and ERRNOS in the kernel's order and put in
//! the store's order, by process and syscall: the slots' by their ranks (ranking.rs), a slot's
//! failures by errno riding on its delta; ERRNOS' by a sort.

use super::ranking::{Order, Ranking};
use crate::host::prefetch::prefetch_lines;
use crate::store::{
    histogram::{DeltaRef, TimeSplit},
    Gain, ProcKey, SyscallKey,
};

/// One drain's deltas: their buckets share one buffer, their failures by errno another; the
/// buffers and the slots' ranking are kept from drain to drain.
#[derive(Default)]
pub(super) struct Deltas {
    /// As read (by slot), then in the store's order, one a (process, syscall).
    list: Vec<DeltaAt>,
    pub(super) buckets: Vec<(usize, u64)>,
    /// The slots' failures by errno, (errno, failures): each delta's a range.
    errnos: Vec<(u32, u64)>,
    /// Scratch for the ordering: `list`'s positions by rank, then the ordered list.
    order: Vec<u32>,
    ordered: Vec<DeltaAt>,
    /// Failures by errno from ERRNOS (or a checkpoint), in any order, until `sort_errnos`
    /// moves those of a pair with a delta onto it and the rest, sorted, to `other_keys` and
    /// `other_errnos` (side by side).
    pub(super) unsorted_errnos: Vec<Failure>,
    other_keys: Vec<(ProcKey, SyscallKey)>,
    other_errnos: Vec<(u32, u64)>,
    ranking: Ranking,
}

/// Failures of a (process, syscall) with one errno: (process, syscall, errno, failures).
pub(super) type Failure = (ProcKey, SyscallKey, u32, u64);

/// A delta of [`Deltas`]: its buckets `len` entries from `start` of the bucket buffer, its
/// failures by errno `errnos_len` from `errnos_start` of the errno buffer.
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
    errnos_start: u32,
    errnos_len: u32,
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
        self.errnos.clear();
        self.order.clear();
        self.unsorted_errnos.clear();
        self.other_keys.clear();
        self.other_errnos.clear();
    }

    /// Where the next delta's buckets and failures will start: give it to [`Deltas::push`]
    /// once they are appended (buckets to `buckets`, failures by `push_errno`).
    pub(super) fn mark(&self) -> (usize, usize) {
        (self.buckets.len(), self.errnos.len())
    }

    /// Failures with one errno of the delta about to be pushed.
    pub(super) fn push_errno(&mut self, errno: u32, failures: u64) {
        self.errnos.push((errno, failures));
    }

    /// A delta of `slot`, whose buckets and failures were appended from `from` (see
    /// [`Deltas::mark`]) on; nothing if it has none of either and no time.
    pub(super) fn push(
        &mut self,
        slot: u32,
        (proc, sc): (ProcKey, SyscallKey),
        (errors, total_ns, split): (u64, u64, TimeSplit),
        (from, errnos_from): (usize, usize),
    ) {
        let (len, errnos_len) = (self.buckets.len() - from, self.errnos.len() - errnos_from);
        if len == 0 && errnos_len == 0 && errors == 0 && total_ns == 0 {
            return;
        }
        self.list.push(DeltaAt {
            proc,
            sc,
            errors,
            total_ns,
            split,
            slot,
            start: from as u32,
            len: len as u32,
            errnos_start: errnos_from as u32,
            errnos_len: errnos_len as u32,
        });
    }

    fn buckets_of(&self, d: &DeltaAt) -> &[(usize, u64)] {
        &self.buckets[d.start as usize..][..d.len as usize]
    }

    fn errnos_of(&self, d: &DeltaAt) -> &[(u32, u64)] {
        &self.errnos[d.errnos_start as usize..][..d.errnos_len as usize]
    }

    /// Orders by process, then syscall: the store takes them grouped by process (see
    /// Store::add_batch), and sees the same order whatever the kernel's hash order. Each slot's
    /// delta goes to its slot's rank (a sort only if two claim one), and the deltas of one
    /// (process, syscall)'s shards become one, in the same pass.
    pub(super) fn sort_and_merge_shards(&mut self) {
        let by_slot = |d: &DeltaAt| (d.order(), d.slot);
        if !self.ranking.order(&self.list, by_slot, &mut self.order) {
            let list = &self.list;
            self.order.clear();
            self.order.extend(0..list.len() as u32);
            self.order
                .sort_unstable_by_key(|&at| by_slot(&list[at as usize]));
        }
        let (order, mut ordered) = (
            std::mem::take(&mut self.order),
            std::mem::take(&mut self.ordered),
        );
        ordered.clear();
        for &at in &order {
            let d = self.list[at as usize];
            match ordered.last_mut() {
                Some(into) if into.order() == d.order() => *into = self.merge(*into, d),
                _ => ordered.push(d),
            }
        }
        self.order = order;
        self.ordered = std::mem::replace(&mut self.list, ordered);
    }

    /// Two deltas of one (process, syscall) as one: their sums, their buckets merged and their
    /// failures side by side, appended to the buffers.
    fn merge(&mut self, into: DeltaAt, d: DeltaAt) -> DeltaAt {
        let (from, errnos_from) = self.mark();
        merge_sorted(&mut self.buckets, into, d);
        for e in [into, d] {
            let at = e.errnos_start as usize;
            self.errnos
                .extend_from_within(at..at + e.errnos_len as usize);
        }
        let mut split = into.split;
        split.add(d.split);
        DeltaAt {
            errors: into.errors + d.errors,
            total_ns: into.total_ns.wrapping_add(d.total_ns),
            split,
            start: from as u32,
            len: (self.buckets.len() - from) as u32,
            errnos_start: errnos_from as u32,
            errnos_len: (self.errnos.len() - errnos_from) as u32,
            ..into
        }
    }

    /// Sorts the failures from ERRNOS (or a checkpoint): those of a pair that has a delta join
    /// its failures, the others are laid out by pair for `gains`. Give it after
    /// [`Deltas::sort_and_merge_shards`].
    pub(super) fn sort_errnos(&mut self) {
        self.unsorted_errnos
            .sort_unstable_by_key(|&(p, sc, _, _)| order(p, sc));
        self.other_keys.clear();
        self.other_errnos.clear();
        // Both lists ascend, so each search starts where the previous one ended.
        let mut pos = 0;
        for &(p, sc, errno, n) in &self.unsorted_errnos {
            let key = order(p, sc);
            pos += gallop(&self.list[pos..], |d| d.order() < key);
            let Some(d) = self.list.get_mut(pos).filter(|d| d.order() == key) else {
                self.other_keys.push((p, sc));
                self.other_errnos.push((errno, n));
                continue;
            };
            // The delta's list moves to the end of the buffer (unless it is there already),
            // and this failure joins it.
            let end = (d.errnos_start + d.errnos_len) as usize;
            if end != self.errnos.len() {
                let from = self.errnos.len();
                self.errnos.extend_from_within(d.errnos_start as usize..end);
                d.errnos_start = from as u32;
            }
            self.errnos.push((errno, n));
            d.errnos_len += 1;
        }
    }

    /// Every (process, syscall) that gained calls or failures, by process then syscall.
    pub(super) fn gains(&self) -> impl Iterator<Item = Gain<'_>> {
        let (mut at, mut other_at) = (0, 0);
        std::iter::from_fn(move || {
            if let Some(ahead) = self.list.get(at + PREFETCH_AHEAD) {
                // The buckets lie in the order the slots were read, not this one.
                let from = self.buckets.as_ptr().wrapping_add(ahead.start as usize);
                prefetch_lines(from, ahead.len as usize);
            }
            match (self.list.get(at), self.other_keys.get(other_at)) {
                (Some(d), other) if other.is_none_or(|&(p, sc)| d.order() <= order(p, sc)) => {
                    at += 1;
                    Some(Gain {
                        proc: d.proc,
                        sc: d.sc,
                        delta: DeltaRef {
                            errors: d.errors,
                            total_ns: d.total_ns,
                            split: d.split,
                            buckets: self.buckets_of(d),
                        },
                        errnos: self.errnos_of(d),
                    })
                }
                (_, Some(&key)) => {
                    let from = other_at;
                    while self.other_keys.get(other_at) == Some(&key) {
                        other_at += 1;
                    }
                    let (proc, sc) = key;
                    Some(Gain {
                        proc,
                        sc,
                        delta: DeltaRef::default(),
                        errnos: &self.other_errnos[from..other_at],
                    })
                }
                // Both done (a delta with no other pair's failures went to the first arm).
                _ => None,
            }
        })
    }
}

/// How many of `sorted`'s first items `before` holds for (a prefix): by galloping, so that a
/// prefix of k items costs about 2·log2(k) tests however long the list.
fn gallop<T>(sorted: &[T], before: impl Fn(&T) -> bool) -> usize {
    let mut end = 1;
    while end <= sorted.len() && before(&sorted[end - 1]) {
        end *= 2;
    }
    let lo = end / 2;
    let hi = end.min(sorted.len());
    lo + sorted[lo..hi].partition_point(before)
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

    /// A delta of one call in bucket `bucket` read from `slot`, with failures by errno.
    fn push(
        d: &mut Deltas,
        slot: u32,
        (pid, nr): (u32, u32),
        bucket: usize,
        errnos: &[(u32, u64)],
    ) {
        let from = d.mark();
        d.buckets.push((bucket, 1));
        for &(errno, n) in errnos {
            d.push_errno(errno, n);
        }
        d.push(slot, (pk(pid), sc(nr)), (0, 1, TimeSplit::default()), from);
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
        // Slots in the kernel's order; 3 and 8 are two shards of one pair.
        push(&mut d, 3, (2, 1), 4, &[(2, 1), (13, 2)]);
        push(&mut d, 5, (1, 9), 4, &[(2, 5)]);
        push(&mut d, 8, (2, 1), 6, &[]);
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
        push(&mut d, 3, (0, 7), 1, &[]);
        push(&mut d, 8, (2, 1), 6, &[]);
        push(&mut d, 12, (1, 9), 2, &[(4, 1)]);
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

    #[test]
    fn a_slot_whose_only_news_is_failures_still_gains() {
        let mut d = Deltas::default();
        let from = d.mark();
        d.push_errno(2, 3);
        d.push(4, (pk(1), sc(2)), (0, 0, TimeSplit::default()), from);
        let from = d.mark();
        d.push(5, (pk(1), sc(3)), (0, 0, TimeSplit::default()), from);
        d.sort_and_merge_shards();
        d.sort_errnos();
        assert_eq!(gains(&d), [(1, 2, 0, vec![(2, 3)])], "slot 5 had nothing");
    }

    #[test]
    fn galloping_finds_the_end_of_every_prefix() {
        let sorted: Vec<u32> = (0..100).map(|i| i * 2).collect();
        for key in 0..210 {
            for from in [0, 1, 37, 99, 100] {
                let rest = &sorted[from..];
                assert_eq!(
                    gallop(rest, |&v| v < key),
                    rest.partition_point(|&v| v < key),
                    "key {key} from {from}"
                );
            }
        }
    }
}
