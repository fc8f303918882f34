//! One drain's gains summed by a key — per (group, syscall) for the /metrics groups, per
//! syscall for the system-wide totals and the history — so that each reaches its cumulative
//! totals once a drain. Dense: a drain adds every changed series here (10,000 a second on a
//! busy host), and a bucket is then an index, not a search through a sparse list; the arrays
//! stay allocated from drain to drain, 2.2 KiB per key, at most `max_keys` of them.

use std::{hash::Hash, ops::Range};

use profiler_common::BUCKETS;

use super::{
    histogram::{DeltaRef, TimeSplit},
    keys::FastMap,
};

#[derive(Debug)]
pub struct DrainSums<K> {
    /// Where each key of this drain is in `sums`; its length is the number in use.
    at: FastMap<K, usize>,
    sums: Vec<Sum>,
    /// Keys a drain sums at most: a further key is refused (`add` is false) and its gains
    /// go the sparse way.
    max_keys: usize,
    taken: TakenBuffers<K>,
}

#[derive(Debug)]
struct Sum {
    errors: u64,
    total_ns: u64,
    split: TimeSplit,
    buckets: Box<[u64; BUCKETS]>,
    /// The lowest and the highest bucket added to (`BUCKETS`, 0 when none): `take` reads
    /// those and what lies between, not the whole array.
    touched: (usize, usize),
    errnos: Vec<(u32, u64)>,
}

impl Sum {
    fn new() -> Self {
        Sum {
            errors: 0,
            total_ns: 0,
            split: TimeSplit::default(),
            buckets: Box::new([0; BUCKETS]),
            touched: (BUCKETS, 0),
            errnos: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> DrainSums<K> {
    pub fn new(max_keys: usize) -> Self {
        Self {
            at: FastMap::default(),
            sums: Vec::new(),
            max_keys,
            taken: TakenBuffers::default(),
        }
    }

    /// Adds `key`'s gains; false (nothing added) when the drain has `max_keys` other keys.
    pub fn add(&mut self, key: K, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) -> bool {
        let next = self.at.len();
        let at = match self.at.get(&key) {
            Some(&at) => at,
            None if next >= self.max_keys => return false,
            None => {
                self.at.insert(key, next);
                next
            }
        };
        if at == self.sums.len() {
            self.sums.push(Sum::new());
        }
        let s = &mut self.sums[at];
        s.errors += delta.errors;
        s.total_ns += delta.total_ns;
        s.split.add(delta.split);
        for &(i, n) in delta.buckets {
            let i = i.min(BUCKETS - 1);
            s.buckets[i] += n;
            s.touched = (s.touched.0.min(i), s.touched.1.max(i));
        }
        for &(errno, n) in errnos.iter().filter(|e| e.1 != 0) {
            match s.errnos.iter_mut().find(|e| e.0 == errno) {
                Some(e) => e.1 += n,
                None => s.errnos.push((errno, n)),
            }
        }
        true
    }

    /// This drain's sums, each key's as a delta and its failures by errno, in no particular
    /// order. The arrays are zeroed for the next drain; the sums are laid out in buffers kept
    /// from drain to drain (a list per key, allocated and grown every drain, was 2.6% of the
    /// daemon's time at 10,000 series).
    pub fn take(&mut self) -> Taken<'_, K> {
        let t = &mut self.taken;
        t.sums.clear();
        t.buckets.clear();
        t.errnos.clear();
        for (key, at) in self.at.drain() {
            let s = &mut self.sums[at];
            let (lo, hi) = std::mem::replace(&mut s.touched, (BUCKETS, 0));
            let buckets = t.buckets.len();
            let counts = s.buckets.iter_mut().enumerate().take(hi + 1).skip(lo);
            t.buckets.extend(
                counts
                    .filter(|(_, n)| **n != 0)
                    .map(|(i, n)| (i, std::mem::take(n))),
            );
            let errnos = t.errnos.len();
            t.errnos.append(&mut s.errnos);
            t.sums.push(TakenSum {
                key,
                errors: std::mem::take(&mut s.errors),
                total_ns: std::mem::take(&mut s.total_ns),
                split: std::mem::take(&mut s.split),
                buckets: buckets..t.buckets.len(),
                errnos: errnos..t.errnos.len(),
            });
        }
        Taken(t)
    }
}

/// The buffers [`DrainSums::take`] lays a drain's sums out in.
#[derive(Debug)]
struct TakenBuffers<K> {
    sums: Vec<TakenSum<K>>,
    buckets: Vec<(usize, u64)>,
    errnos: Vec<(u32, u64)>,
}

impl<K> Default for TakenBuffers<K> {
    fn default() -> Self {
        Self {
            sums: Vec::new(),
            buckets: Vec::new(),
            errnos: Vec::new(),
        }
    }
}

/// One key's sum; its buckets and failures are ranges of the buffers' lists.
#[derive(Debug)]
struct TakenSum<K> {
    key: K,
    errors: u64,
    total_ns: u64,
    split: TimeSplit,
    buckets: Range<usize>,
    errnos: Range<usize>,
}

/// A drain's sums, as [`DrainSums::take`] returns them.
pub struct Taken<'a, K>(&'a TakenBuffers<K>);

impl<'a, K: Copy> Taken<'a, K> {
    /// Each key's sum: (key, delta, failures by errno).
    pub fn iter(&self) -> impl Iterator<Item = (K, DeltaRef<'a>, &'a [(u32, u64)])> + 'a {
        let t = self.0;
        t.sums.iter().map(move |s| {
            let delta = DeltaRef {
                errors: s.errors,
                total_ns: s.total_ns,
                split: s.split,
                buckets: &t.buckets[s.buckets.clone()],
            };
            (s.key, delta, &t.errnos[s.errnos.clone()])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::keys::SyscallKey;

    /// A key's sum as the tests compare it: (key, buckets, errors, total ns, failures).
    type Owned = (SyscallKey, Vec<(usize, u64)>, u64, u64, Vec<(u32, u64)>);

    fn take(s: &mut DrainSums<SyscallKey>) -> Vec<Owned> {
        let mut out: Vec<Owned> = s
            .take()
            .iter()
            .map(|(k, d, e)| (k, d.buckets.to_vec(), d.errors, d.total_ns, e.to_vec()))
            .collect();
        out.sort_by_key(|o| o.0);
        out
    }

    #[test]
    fn sums_per_syscall_and_starts_empty_again() {
        let (a, b) = (SyscallKey::from((0, 1)), SyscallKey::from((0, 2)));
        let mut s = DrainSums::new(usize::MAX);
        let d = |buckets: &'static [(usize, u64)]| DeltaRef {
            errors: 1,
            total_ns: 10,
            split: TimeSplit::default(),
            buckets,
        };
        s.add(a, d(&[(3, 2), (7, 1)]), &[(2, 1)]);
        s.add(b, d(&[(3, 5), (BUCKETS - 1, 1)]), &[]);
        s.add(a, d(&[(7, 4), (0, 1)]), &[(2, 2), (9, 1)]);
        let out = take(&mut s);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, a);
        assert_eq!(out[0].1, vec![(0, 1), (3, 2), (7, 5)]);
        assert_eq!((out[0].2, out[0].3), (2, 20));
        assert_eq!(out[0].4, vec![(2, 3), (9, 1)]);
        assert_eq!(out[1].1, vec![(3, 5), (BUCKETS - 1, 1)]);
        assert_eq!(out[1].4, vec![]);
        assert!(take(&mut s).is_empty(), "nothing carried over");
        s.add(b, d(&[(4, 1)]), &[]);
        s.add(a, d(&[(9, 1)]), &[(5, 1)]);
        let out = take(&mut s);
        assert_eq!(out[0].1, vec![(9, 1)], "the arrays were zeroed");
        assert_eq!(out[1].1, vec![(4, 1)], "the arrays were zeroed");
        assert_eq!(out[0].4, vec![(5, 1)], "the failures were emptied");
        assert_eq!(out[1].4, vec![]);
    }

    #[test]
    fn keys_past_the_limit_are_refused_for_the_drain_only() {
        let (a, b) = (SyscallKey::from((0, 1)), SyscallKey::from((0, 2)));
        let mut s = DrainSums::new(1);
        let d = DeltaRef {
            errors: 0,
            total_ns: 5,
            split: TimeSplit::default(),
            buckets: &[(3, 1)],
        };
        assert!(s.add(a, d, &[]));
        assert!(!s.add(b, d, &[(2, 1)]), "a second key is past the limit");
        assert!(s.add(a, d, &[]), "the first key still adds");
        let out = take(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].3), (a, 10));
        assert_eq!(out[0].1, vec![(3, 2)]);
        assert!(s.add(b, d, &[]), "the next drain starts with no keys");
        assert_eq!(take(&mut s)[0].0, b);
    }
}
