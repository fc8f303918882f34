//! One drain's gains per syscall, summed over every process, before they reach the system-wide
//! totals and the history once per syscall. Dense: a drain adds every changed series here
//! (10,000 a second on a busy host), and a bucket is then an index, not a search through a
//! sparse list; the arrays stay allocated from drain to drain (2.2 KiB per syscall seen).

use profiler_common::BUCKETS;

use super::{
    histogram::{Delta, DeltaRef, TimeSplit},
    keys::{FastMap, SyscallKey},
};

/// One syscall's sum over a drain: its delta and its failures by errno.
pub type SyscallSum = (SyscallKey, Delta, Vec<(u32, u64)>);

#[derive(Debug, Default)]
pub struct DrainSums {
    /// Where each syscall of this drain is in `sums`; its length is the number in use.
    at: FastMap<SyscallKey, usize>,
    sums: Vec<Sum>,
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

impl DrainSums {
    pub fn add(&mut self, sc: SyscallKey, delta: DeltaRef<'_>, errnos: &[(u32, u64)]) {
        let next = self.at.len();
        let at = *self.at.entry(sc).or_insert(next);
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
    }

    /// This drain's sums, each syscall's as a delta and its failures by errno; the arrays are
    /// zeroed for the next drain and kept.
    pub fn take(&mut self) -> Vec<SyscallSum> {
        let mut out = Vec::with_capacity(self.at.len());
        for (sc, at) in self.at.drain() {
            let s = &mut self.sums[at];
            let (lo, hi) = std::mem::replace(&mut s.touched, (BUCKETS, 0));
            let buckets = s
                .buckets
                .iter_mut()
                .enumerate()
                .take(hi + 1)
                .skip(lo)
                .filter(|(_, n)| **n != 0)
                .map(|(i, n)| (i, std::mem::take(n)))
                .collect();
            let d = Delta {
                errors: std::mem::take(&mut s.errors),
                total_ns: std::mem::take(&mut s.total_ns),
                split: std::mem::take(&mut s.split),
                buckets,
            };
            out.push((sc, d, std::mem::take(&mut s.errnos)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_syscall_and_starts_empty_again() {
        let (a, b) = (SyscallKey::from((0, 1)), SyscallKey::from((0, 2)));
        let mut s = DrainSums::default();
        let d = |buckets: &'static [(usize, u64)]| DeltaRef {
            errors: 1,
            total_ns: 10,
            split: TimeSplit::default(),
            buckets,
        };
        s.add(a, d(&[(3, 2), (7, 1)]), &[(2, 1)]);
        s.add(b, d(&[(3, 5), (BUCKETS - 1, 1)]), &[]);
        s.add(a, d(&[(7, 4), (0, 1)]), &[(2, 2), (9, 1)]);
        let mut out = s.take();
        out.sort_by_key(|(sc, _, _)| *sc);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, a);
        assert_eq!(out[0].1.buckets, vec![(0, 1), (3, 2), (7, 5)]);
        assert_eq!((out[0].1.errors, out[0].1.total_ns), (2, 20));
        assert_eq!(out[0].2, vec![(2, 3), (9, 1)]);
        assert_eq!(out[1].1.buckets, vec![(3, 5), (BUCKETS - 1, 1)]);
        assert!(s.take().is_empty(), "nothing carried over");
        s.add(b, d(&[(4, 1)]), &[]);
        s.add(a, d(&[(9, 1)]), &[]);
        let mut out = s.take();
        out.sort_by_key(|(sc, _, _)| *sc);
        assert_eq!(out[0].1.buckets, vec![(9, 1)], "the arrays were zeroed");
        assert_eq!(out[1].1.buckets, vec![(4, 1)], "the arrays were zeroed");
    }
}
