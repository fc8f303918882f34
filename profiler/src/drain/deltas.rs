//! One drain's deltas, gathered from the slots and ERRNOS in the kernel's order and sorted by
//! process and syscall, as the store takes them.

use crate::store::{
    histogram::{DeltaRef, TimeSplit},
    Gain, ProcKey, SyscallKey,
};

/// One drain's deltas: their buckets share one buffer, kept from drain to drain.
#[derive(Default)]
pub(super) struct Deltas {
    list: Vec<DeltaAt>,
    pub(super) buckets: Vec<(usize, u64)>,
    /// Failures by errno as read, from slots and ERRNOS, in any order, until sorted into:
    pub(super) unsorted_errnos: Vec<(ProcKey, SyscallKey, u32, u64)>,
    /// failures by errno, in the order of `list` once sorted.
    errno_keys: Vec<(ProcKey, SyscallKey)>,
    errnos: Vec<(u32, u64)>,
}

/// A delta of [`Deltas`], its buckets `len` entries from `start` of the shared buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeltaAt {
    proc: ProcKey,
    sc: SyscallKey,
    errors: u64,
    total_ns: u64,
    split: TimeSplit,
    start: u32,
    len: u32,
}

/// (process, syscall) as two integers, cheap to compare in a sort.
fn order(proc: ProcKey, sc: SyscallKey) -> (u64, u64) {
    (
        u64::from(proc.pid) << 32 | u64::from(proc.incarnation),
        (sc.abi as u64) << 32 | u64::from(sc.nr),
    )
}

impl DeltaAt {
    fn order(&self) -> (u64, u64) {
        order(self.proc, self.sc)
    }
}

impl Deltas {
    pub(super) fn clear(&mut self) {
        self.list.clear();
        self.buckets.clear();
        self.unsorted_errnos.clear();
        self.errno_keys.clear();
        self.errnos.clear();
    }

    /// Sorts the failures by errno read so far like `list` (see `gains`).
    pub(super) fn sort_errnos(&mut self) {
        self.unsorted_errnos
            .sort_unstable_by_key(|&(p, sc, _, _)| order(p, sc));
        self.errno_keys.clear();
        self.errnos.clear();
        for &(p, sc, errno, n) in &self.unsorted_errnos {
            self.errno_keys.push((p, sc));
            self.errnos.push((errno, n));
        }
    }

    pub(super) fn push(
        &mut self,
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
            start: from as u32,
            len: (self.buckets.len() - from) as u32,
        });
    }

    fn buckets_of(&self, d: &DeltaAt) -> &[(usize, u64)] {
        &self.buckets[d.start as usize..][..d.len as usize]
    }

    /// Sorts by process, then syscall: the store takes them grouped by process (see
    /// Store::add_batch), and sees the same order whatever the kernel's hash order. The deltas
    /// of one (process, syscall)'s shards become one.
    pub(super) fn sort_and_merge_shards(&mut self) {
        self.list.sort_unstable_by_key(DeltaAt::order);
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
