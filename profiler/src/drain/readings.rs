//! A drain's reading of the kernel's counters, compared with the previous one: the histogram
//! slots (read in place through the arena) and ERRNOS' entries. What changed becomes deltas.

use std::{hash::Hash, mem::MaybeUninit};

use profiler_common::{HistHead, HistKey, ERRNO_SLOTS};

use super::{
    deltas::Deltas,
    keys::{proc_key, syscall_key},
};
use crate::store::{histogram::TimeSplit, FastMap};

/// An ERRNOS' entries as of the previous drain, in the order the kernel listed them (its
/// hash order). That order changes only where entries were added or deleted, so an entry's
/// previous value is nearly always right after the last one found: no hashing, and memory read
/// front to back. The index is built only in a drain that finds the order changed.
pub(super) struct Previous<K, V> {
    entries: Vec<(K, V)>,
    index: Option<FastMap<K, usize>>,
}

impl<K, V> Default for Previous<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: None,
        }
    }
}

/// Positions past the expected one checked before falling back to the index: a few entries
/// deleted since the previous drain are skipped without building it.
const LOOKAHEAD: usize = 4;

impl<K: Copy + Eq + Hash, V> Previous<K, V> {
    /// `key`'s previous value. `next` is where the previous call left off: pass the same one
    /// for every key of a reading, in the kernel's order.
    pub(super) fn find(&mut self, next: &mut usize, key: &K) -> Option<&V> {
        let ahead = self.entries.get(*next..).unwrap_or_default();
        if let Some(at) = ahead.iter().take(1 + LOOKAHEAD).position(|(k, _)| k == key) {
            *next += at + 1;
            return Some(&ahead[at].1);
        }
        let entries = &self.entries;
        let index = self.index.get_or_insert_with(|| {
            entries
                .iter()
                .enumerate()
                .map(|(at, (k, _))| (*k, at))
                .collect()
        });
        let &at = index.get(key)?;
        *next = at + 1;
        Some(&self.entries[at].1)
    }

    /// Sets back to the default (zero) the values of the keys `gone` says are gone from the
    /// kernel map, so that should the kernel create one again, all of it counts.
    pub(super) fn retire(&mut self, mut gone: impl FnMut(&K) -> bool)
    where
        V: Default,
    {
        for (k, v) in &mut self.entries {
            if gone(k) {
                *v = V::default();
            }
        }
    }

    /// The previous reading, in the kernel's order.
    pub(super) fn entries(&self) -> &[(K, V)] {
        &self.entries
    }

    /// Makes `now` the previous reading; `now` is left empty, with the old one's capacity.
    pub(super) fn replace(&mut self, now: &mut Vec<(K, V)>) {
        std::mem::swap(&mut self.entries, now);
        now.clear();
        self.index = None;
    }
}

/// The reading of one slot: its header (whose key tells whether the slot still holds the same
/// histogram) and its non-zero buckets (a series usually fills a handful of the 273): `len`
/// entries from `start` in its reading's bucket list, so comparing with it costs a few words
/// rather than another 1.1 KB.
///
/// `repr(C)` with the header first: the header is copied in as the 16-byte words it was copied
/// out with. Behind a 4-byte slot number (Rust's layout of `(u32, Reading)`), every 16-byte load
/// of that copy straddled two of the stores that had just made it, which the CPU cannot forward:
/// a tenth of `HistReadings::read`'s samples waited on it (perf, Intel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reading {
    head: HistHead,
    slot: u32,
    start: u32,
    len: u32,
}

#[derive(Default)]
pub(super) struct HistReadings {
    /// By slot, ascending.
    prev: Vec<Reading>,
    prev_buckets: Vec<(u16, u32)>,
    /// This drain's, until it is committed.
    now: Vec<Reading>,
    now_buckets: Vec<(u16, u32)>,
}

/// The previous reading of a slot not read before: all zero, so all of it counts.
// SAFETY: integers only; all-zero is a valid value of each.
static NOT_READ: Reading = unsafe { std::mem::zeroed() };

/// `slot`'s reading in `prev` (by slot, ascending), if it was of `key`. Slots are read in
/// ascending order, so `next`, where the previous call left off, only moves forward.
fn previous<'a>(
    prev: &'a [Reading],
    next: &mut usize,
    slot: u32,
    key: &HistKey,
) -> Option<&'a Reading> {
    while prev.get(*next).is_some_and(|r| r.slot < slot) {
        *next += 1;
    }
    prev.get(*next)
        .filter(|r| r.slot == slot && r.head.key == *key)
}

impl HistReadings {
    /// Compares `slot`'s header and buckets (`read_buckets` appends the non-zero ones, by
    /// bucket) with its previous reading, appends what changed to `deltas` and records this
    /// reading. Slots in ascending order; `next` as for [`previous`].
    pub(super) fn read(
        &mut self,
        next: &mut usize,
        slot: u32,
        head: &HistHead,
        read_buckets: impl FnOnce(&mut Vec<(u16, u32)>),
        deltas: &mut Deltas,
    ) {
        let start = self.now_buckets.len();
        let (old, old_buckets) = match previous(&self.prev, next, slot, &head.key) {
            Some(r) => {
                let at = r.start as usize;
                (r, &self.prev_buckets[at..at + r.len as usize])
            }
            None => (&NOT_READ, &[][..]),
        };
        // Every timed call adds at least 1 ns to the sum (the kernel side rounds 0 up), so an
        // unchanged header means an idle slot: its buckets are as they were, and stay unread.
        // Not so in counts-only mode, where the sum stays 0.
        if head.total_ns != 0 && old.head == *head {
            self.now_buckets.extend_from_slice(old_buckets);
            self.now.push(Reading {
                start: start as u32,
                ..*old
            });
            return;
        }
        read_buckets(&mut self.now_buckets);
        let now = &self.now_buckets[start..];
        let from = deltas.mark();
        bucket_deltas(old_buckets, now, &mut deltas.buckets);
        // An entry's errno, once claimed, stays until the slot is freed.
        for i in (0..ERRNO_SLOTS).filter(|&i| head.errnos[i] != 0) {
            let d = head.errno_counts[i].wrapping_sub(old.head.errno_counts[i]);
            if d != 0 {
                deltas.push_errno(u32::from(head.errnos[i]), u64::from(d));
            }
        }
        let errors = u64::from(head.errors.wrapping_sub(old.head.errors));
        let total_ns = head.total_ns.wrapping_sub(old.head.total_ns);
        let split = TimeSplit {
            runq_ns: head.runq_ns.wrapping_sub(old.head.runq_ns),
            blocked_ns: head.blocked_ns.wrapping_sub(old.head.blocked_ns),
            blocked_calls: u64::from(head.blocked_calls.wrapping_sub(old.head.blocked_calls)),
        };
        let keys = (
            proc_key(&head.key),
            syscall_key(head.key.abi, head.key.nr.into()),
        );
        deltas.push(slot, keys, (errors, total_ns, split), from);
        self.now.push(Reading {
            head: *head,
            slot,
            start: start as u32,
            len: now.len() as u32,
        });
    }

    /// Starts a drain's readings.
    pub(super) fn begin(&mut self) {
        self.now.clear();
        self.now_buckets.clear();
    }

    /// How many slots this drain read.
    pub(super) fn slots_read(&self) -> usize {
        self.now.len()
    }

    /// The keys of this drain's readings, by slot.
    pub(super) fn keys(&self) -> impl Iterator<Item = &HistKey> {
        self.now.iter().map(|r| &r.head.key)
    }

    /// The previous readings' slots and keys, ascending.
    pub(super) fn previous_keys(&self) -> impl Iterator<Item = (u32, &HistKey)> {
        self.prev.iter().map(|r| (r.slot, &r.head.key))
    }

    /// The previous readings, by slot: (slot, header, non-zero buckets by bucket).
    pub(super) fn committed(&self) -> impl Iterator<Item = (u32, &HistHead, &[(u16, u32)])> {
        self.prev.iter().map(|r| {
            let buckets = &self.prev_buckets[r.start as usize..][..r.len as usize];
            (r.slot, &r.head, buckets)
        })
    }

    /// Forgets the previous readings of the `freed` slots (ascending): their keys are gone.
    pub(super) fn forget(&mut self, freed: &[u32]) {
        self.prev.retain(|r| freed.binary_search(&r.slot).is_err());
    }

    /// Makes this drain's readings the previous ones: only once their deltas are in the store,
    /// so a drain that fails half-way loses nothing.
    pub(super) fn commit(&mut self) {
        std::mem::swap(&mut self.prev, &mut self.now);
        std::mem::swap(&mut self.prev_buckets, &mut self.now_buckets);
        self.now.clear();
        self.now_buckets.clear();
    }
}

/// Appends to `out` what each bucket gained from the `old` to the `new` non-zero counts (both
/// by bucket). The kernel's 32-bit counts wrap; the wrapping difference is exact as long as
/// fewer than 2^32 events land in one bucket between two drains. A bucket only `old` has
/// wrapped to exactly 0: it gained 2^32 - old.
fn bucket_deltas(old: &[(u16, u32)], new: &[(u16, u32)], out: &mut Vec<(usize, u64)>) {
    // Mostly a series' calls land in buckets it had already: the same buckets, and only which
    // of them gained differs. Then no merge (its branches, taken as the indices happen to
    // compare, were a third of `HistReadings::read`'s samples): one pass without a branch, each
    // difference written where the next goes and kept by moving on only if non-zero, and
    // kept at all only if every index matched.
    if old.len() == new.len() {
        let kept = out.len();
        out.reserve(new.len());
        let spare = out.spare_capacity_mut();
        let (mut written, mut same) = (0, true);
        for (&(i, n), &(j, o)) in new.iter().zip(old) {
            let d = n.wrapping_sub(o);
            spare[written] = MaybeUninit::new((usize::from(i), u64::from(d)));
            written += usize::from(d != 0);
            same &= i == j;
        }
        if same {
            // SAFETY: the first `written` entries past `kept` were written just now, and
            // `reserve` made room for them.
            unsafe { out.set_len(kept + written) };
            return;
        }
    }
    let (mut new_at, mut old_at) = (0, 0);
    loop {
        let (i, n, o) = match (new.get(new_at), old.get(old_at)) {
            (None, None) => return,
            (Some(&(i, n)), Some(&(j, o))) if i == j => {
                new_at += 1;
                old_at += 1;
                (i, n, o)
            }
            (Some(&(i, n)), Some(&(j, _))) if i < j => {
                new_at += 1;
                (i, n, 0)
            }
            (Some(&(i, n)), None) => {
                new_at += 1;
                (i, n, 0)
            }
            (_, Some(&(j, o))) => {
                old_at += 1;
                (j, 0, o)
            }
        };
        let d = n.wrapping_sub(o);
        if d != 0 {
            out.push((usize::from(i), u64::from(d)));
        }
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::{ErrnoKey, Hist, ABI_NATIVE, BUCKETS, TOUCH_BLOCK};

    use super::*;
    use crate::{
        kernel::arena::HistArena,
        store::{histogram::Delta, ProcKey, SyscallKey},
    };

    /// A slot's content as the kernel leaves it: `touched` marks the blocks of its non-zero
    /// buckets.
    fn hist(total: u64, errors: u32, buckets: &[(usize, u32)]) -> Hist {
        let mut h = Hist {
            head: HistHead {
                errors,
                total_ns: total,
                ..HistHead::default()
            },
            buckets: [0; BUCKETS],
        };
        for &(i, n) in buckets {
            h.buckets[i] = n;
            h.head.touched |= 1 << (i / TOUCH_BLOCK);
        }
        h
    }

    fn key(tgid: u32, nr: u16, shard: u8) -> HistKey {
        HistKey {
            tgid,
            incarnation: 1,
            nr,
            abi: ABI_NATIVE,
            shard,
        }
    }

    type Got = (ProcKey, SyscallKey, Delta);
    /// A failure count as read: (pid, syscall number, errno, failures).
    type GotErrno = (u32, u32, u32, u64);

    /// Slots `read` (slot, key, content) laid out in an arena of their own.
    fn arena(read: &[(u32, HistKey, Hist)]) -> HistArena {
        let len = read.iter().map(|r| r.0 + 1).max().unwrap_or(0);
        let mut slots = vec![hist(0, 0, &[]); len as usize];
        for &(slot, key, mut h) in read {
            h.head.key = key;
            slots[slot as usize] = h;
        }
        HistArena::of(Box::leak(slots.into_boxed_slice()))
    }

    /// One drain's reading of the slots `read`, as `Drain::read_slots` takes it (ascending slots, read
    /// through an arena): the deltas, sorted and merged, and the failures by errno. Committed
    /// unless `fail` (a drain that failed before reaching the store).
    fn drain_errnos(
        readings: &mut HistReadings,
        read: &[(u32, HistKey, Hist)],
        fail: bool,
    ) -> (Vec<Got>, Vec<GotErrno>) {
        let arena = arena(read);
        let mut deltas = Deltas::default();
        let mut next = 0;
        let mut slots: Vec<u32> = read.iter().map(|r| r.0).collect();
        slots.sort_unstable();
        for slot in slots {
            let head = arena.head(slot).unwrap();
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            readings.read(&mut next, slot, &head, read_buckets, &mut deltas);
        }
        deltas.sort_and_merge_shards();
        deltas.sort_errnos();
        let got = deltas
            .gains()
            .filter(|g| !g.delta.is_empty())
            .map(|g| {
                let d = Delta {
                    errors: g.delta.errors,
                    total_ns: g.delta.total_ns,
                    split: Default::default(),
                    buckets: g.delta.buckets.to_vec(),
                };
                (g.proc, g.sc, d)
            })
            .collect();
        let errnos = deltas
            .gains()
            .flat_map(|g| {
                g.errnos
                    .iter()
                    .map(move |&(e, n)| (g.proc.pid, g.sc.nr, e, n))
            })
            .collect();
        if fail {
            readings.now.clear();
            readings.now_buckets.clear();
        } else {
            readings.commit();
        }
        (got, errnos)
    }

    fn drain(readings: &mut HistReadings, read: &[(u32, HistKey, Hist)], fail: bool) -> Vec<Got> {
        drain_errnos(readings, read, fail).0
    }

    fn one(got: &[Got]) -> &Delta {
        assert_eq!(got.len(), 1, "{got:?}");
        &got[0].2
    }

    #[test]
    fn first_read_is_the_whole_value() {
        let mut r = HistReadings::default();
        let got = drain(
            &mut r,
            &[(4, key(1, 0, 0), hist(900, 2, &[(10, 3)]))],
            false,
        );
        let d = one(&got);
        assert_eq!(d.buckets, vec![(10, 3)]);
        assert_eq!((d.errors, d.total_ns), (2, 900));
        assert_eq!(
            (got[0].0, got[0].1),
            (
                ProcKey {
                    pid: 1,
                    incarnation: 1
                },
                syscall_key(ABI_NATIVE, 0)
            )
        );
    }

    #[test]
    fn only_changed_buckets_appear() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(900, 2, &[(10, 3), (20, 1)]))], false);
        let new = hist(1500, 2, &[(10, 3), (20, 4), (272, 1)]);
        let got = drain(&mut r, &[(0, k, new)], false);
        let d = one(&got);
        assert_eq!(d.buckets, vec![(20, 3), (272, 1)]);
        assert_eq!((d.errors, d.total_ns), (0, 600));
        assert!(drain(&mut r, &[(0, k, new)], false).is_empty(), "unchanged");
    }

    #[test]
    fn wrapped_32_bit_counts_give_the_true_difference() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        let before = hist(0, u32::MAX - 1, &[(5, u32::MAX - 2), (6, u32::MAX)]);
        drain(&mut r, &[(0, k, before)], false);
        // Bucket 6 gained exactly one event and wrapped to 0: no longer non-zero, still counted.
        let got = drain(&mut r, &[(0, k, hist(0, 3, &[(5, 4)]))], false);
        let d = one(&got);
        assert_eq!(d.buckets, vec![(5, 7), (6, 1)]);
        assert_eq!(d.errors, 5);
        // And from 0 it counts on.
        let got = drain(&mut r, &[(0, k, hist(0, 3, &[(5, 4), (6, 2)]))], false);
        assert_eq!(one(&got).buckets, vec![(6, 2)]);
    }

    #[test]
    fn every_bucket_is_seen() {
        // Block edges and the tail past the last whole block.
        let all: Vec<(usize, u32)> = (0..BUCKETS).map(|i| (i, i as u32 + 1)).collect();
        let mut r = HistReadings::default();
        let got = drain(&mut r, &[(0, key(1, 0, 0), hist(1, 0, &all))], false);
        let want: Vec<(usize, u64)> = (0..BUCKETS).map(|i| (i, i as u64 + 1)).collect();
        assert_eq!(one(&got).buckets, want);
        let edges = [0, TOUCH_BLOCK - 1, TOUCH_BLOCK, 2 * TOUCH_BLOCK - 1];
        for i in edges.into_iter().chain([BUCKETS - 2, BUCKETS - 1]) {
            let mut r = HistReadings::default();
            let got = drain(&mut r, &[(0, key(1, 0, 0), hist(1, 0, &[(i, 9)]))], false);
            assert_eq!(one(&got).buckets, vec![(i, 9)], "bucket {i}");
        }
    }

    #[test]
    fn bucket_deltas_are_the_differences_of_the_dense_counts() {
        // Dense reference: every bucket's count, wrapping.
        let dense = |list: &[(u16, u32)]| {
            let mut d = [0u32; 8];
            for &(i, n) in list {
                d[usize::from(i)] = n;
            }
            d
        };
        let lists: [&[(u16, u32)]; 7] = [
            &[],
            &[(1, 4)],
            &[(1, 5)],
            &[(1, 5), (3, 2)],
            &[(1, 9), (3, 2), (6, u32::MAX)],
            &[(1, 9), (3, 7), (6, 1)],
            &[(0, 1), (3, 7), (7, 1)],
        ];
        for old in lists {
            for new in lists {
                let (o, n) = (dense(old), dense(new));
                let want: Vec<(usize, u64)> = (0..8)
                    .map(|i| (i, u64::from(n[i].wrapping_sub(o[i]))))
                    .filter(|&(_, d)| d != 0)
                    .collect();
                let mut out = vec![(99, 99)];
                bucket_deltas(old, new, &mut out);
                assert_eq!(out[0], (99, 99), "what was there stays");
                assert_eq!(out[1..], want, "{old:?} -> {new:?}");
            }
        }
    }

    #[test]
    fn an_idle_slot_is_not_read_again_unless_counts_only() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        // A header as it was: the buckets are not read (a change there alone would be a call
        // that added nothing to the sum, which the kernel side never makes).
        let got = drain(&mut r, &[(0, k, hist(10, 0, &[(3, 5)]))], false);
        assert!(got.is_empty(), "{got:?}");
        let got = drain(&mut r, &[(0, k, hist(20, 0, &[(3, 6)]))], false);
        assert_eq!(one(&got).buckets, vec![(3, 5)]);
        // Counts-only: the sum stays 0, the buckets are always read.
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(0, 0, &[(0, 1)]))], false);
        let got = drain(&mut r, &[(0, k, hist(0, 0, &[(0, 4)]))], false);
        assert_eq!(one(&got).buckets, vec![(0, 3)]);
    }

    #[test]
    fn a_count_not_yet_marked_touched_is_read_once_it_is() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        // The kernel has counted in bucket 40 but not yet set its block's bit.
        let mut h = hist(20, 0, &[(3, 1), (40, 1)]);
        h.head.touched &= !(1 << (40 / TOUCH_BLOCK));
        let got = drain(&mut r, &[(0, k, h)], false);
        assert_eq!(one(&got).buckets, vec![]);
        let got = drain(&mut r, &[(0, k, hist(20, 0, &[(3, 1), (40, 1)]))], false);
        assert_eq!(one(&got).buckets, vec![(40, 1)]);
    }

    #[test]
    fn readings_follow_their_slot_and_key() {
        let reading = |n: u32| -> Vec<(u32, HistKey, Hist)> {
            (0..20)
                .map(|i| {
                    (
                        3 * i,
                        key(i, 7, 0),
                        hist(u64::from(n), 0, &[(i as usize, n)]),
                    )
                })
                .collect()
        };
        let mut r = HistReadings::default();
        drain(&mut r, &reading(1), false);
        let got = drain(&mut r, &reading(3), false);
        assert_eq!(got.len(), 20);
        assert!(got
            .iter()
            .all(|g| g.2.buckets == vec![(g.0.pid as usize, 2)]));
        // Slots gone, one new, and one handed to another key: that one starts from zero.
        let mut next: Vec<(u32, HistKey, Hist)> = reading(6).into_iter().skip(3).collect();
        next.push((1, key(99, 7, 0), hist(5, 0, &[(1, 5)])));
        next[4].1 = key(98, 7, 0);
        let got = drain(&mut r, &next, false);
        assert_eq!(got.len(), 18);
        for (p, _, d) in &got {
            let want = match p.pid {
                99 => (1, 5),
                98 => (7, 6),
                pid => (pid as usize, 3),
            };
            assert_eq!(d.buckets, vec![want], "pid {}", p.pid);
        }
    }

    #[test]
    fn a_failed_drain_loses_nothing() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        drain(&mut r, &[(0, k, hist(30, 0, &[(3, 4)]))], true);
        let got = drain(&mut r, &[(0, k, hist(40, 0, &[(3, 5)]))], false);
        let d = one(&got);
        assert_eq!((d.buckets.clone(), d.total_ns), (vec![(3, 4)], 30));
    }

    #[test]
    fn shards_of_one_pair_become_one_delta() {
        let mut r = HistReadings::default();
        let got = drain(
            &mut r,
            &[
                (0, key(2, 5, 1), hist(10, 1, &[(3, 1), (9, 2)])),
                (1, key(1, 5, 0), hist(7, 0, &[(3, 1)])),
                (2, key(2, 5, 0), hist(20, 0, &[(3, 4), (4, 1)])),
                (3, key(2, 6, 0), hist(1, 0, &[(1, 1)])),
                (4, key(2, 5, 2), hist(5, 2, &[(9, 1)])),
            ],
            false,
        );
        type Summary = (u32, u32, Vec<(usize, u64)>, u64, u64);
        let summary: Vec<Summary> = got
            .iter()
            .map(|(p, sc, d)| (p.pid, sc.nr, d.buckets.clone(), d.errors, d.total_ns))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 5, vec![(3, 1)], 0, 7),
                (2, 5, vec![(3, 5), (4, 1), (9, 3)], 3, 35),
                (2, 6, vec![(1, 1)], 0, 1),
            ]
        );
    }

    #[test]
    fn errnos_counted_in_a_slot_give_deltas_by_errno() {
        let k = key(1, 2, 0);
        let with_errnos = |counts: [u32; ERRNO_SLOTS], errnos: [u16; ERRNO_SLOTS]| {
            let mut h = hist(10, counts.iter().sum(), &[(3, 1)]);
            (h.head.errno_counts, h.head.errnos) = (counts, errnos);
            h
        };
        let mut r = HistReadings::default();
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 1, 0, 0], [2, 13, 0, 0]))],
            false,
        );
        assert_eq!(errnos, vec![(1, 2, 2, 4), (1, 2, 13, 1)]);
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 3, 1, 0], [2, 13, 11, 0]))],
            false,
        );
        assert_eq!(errnos, vec![(1, 2, 13, 2), (1, 2, 11, 1)]);
        // A count claimed but not yet added to: nothing yet.
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 3, 1, 0], [2, 13, 11, 4]))],
            false,
        );
        assert_eq!(errnos, vec![]);
    }

    #[test]
    fn calls_and_failures_of_a_pair_come_together() {
        let mut r = HistReadings::default();
        let mut deltas = Deltas::default();
        let arena = arena(&[
            (0, key(1, 5, 0), hist(7, 0, &[(3, 1)])),
            (1, key(3, 5, 0), hist(10, 1, &[(3, 1)])),
        ]);
        let mut next = 0;
        for slot in [0, 1] {
            let head = arena.head(slot).unwrap();
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            r.read(&mut next, slot, &head, read_buckets, &mut deltas);
        }
        deltas.sort_and_merge_shards();
        let pk = |pid| ProcKey {
            pid,
            incarnation: 1,
        };
        let sc = |nr| syscall_key(ABI_NATIVE, nr);
        // Failures of pairs with no new calls (read after their calls), in any order.
        deltas.unsorted_errnos.extend([
            (pk(3), sc(5), 2, 1),
            (pk(2), sc(9), 13, 4),
            (pk(3), sc(5), 11, 6),
            (pk(9), sc(1), 2, 1),
        ]);
        deltas.sort_errnos();
        type Seen = (u32, u32, u64, Vec<(u32, u64)>);
        let got: Vec<Seen> = deltas
            .gains()
            .map(|g| (g.proc.pid, g.sc.nr, g.delta.count(), g.errnos.to_vec()))
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], (1, 5, 1, vec![]));
        assert_eq!(got[1], (2, 9, 0, vec![(13, 4)]));
        assert_eq!((got[2].0, got[2].1, got[2].2), (3, 5, 1));
        let mut errnos = got[2].3.clone();
        errnos.sort();
        assert_eq!(errnos, vec![(2, 1), (11, 6)]);
        assert_eq!(got[3], (9, 1, 0, vec![(2, 1)]));
    }

    #[test]
    fn errno_counts_are_found_by_position_or_index() {
        let k = |errno| ErrnoKey {
            hist: key(1, 2, 0),
            errno,
        };
        let mut p: Previous<ErrnoKey, u32> = Previous::default();
        let mut now = vec![(k(2), 5), (k(13), 1)];
        p.replace(&mut now);
        assert!(now.is_empty());
        let mut next = 0;
        assert_eq!(p.find(&mut next, &k(2)), Some(&5));
        assert_eq!(p.find(&mut next, &k(13)), Some(&1));
        assert!(p.index.is_none());
        let mut next = 0;
        assert_eq!(p.find(&mut next, &k(22)), None);
        assert_eq!(p.find(&mut next, &k(2)), Some(&5));
    }
}
