//! The user-space histogram: 64-bit cumulative totals over the kernel's bucket layout, and the
//! estimates every view reports (so no view derives its own).

use profiler_common::{bucket_lower_ns, bucket_upper_ns, OVERFLOW_BUCKET};
use serde::{Deserialize, Serialize};

use crate::host::prefetch::prefetch_lines;

/// Sparse: a syscall's latencies usually fill a handful of the 273 buckets, and the daemon keeps
/// one histogram per (process, syscall) for every live and recently exited process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// Where `total_ns` went besides a CPU (zero when the kernel side does not split it: see
    /// `Store::time_split`).
    pub split: TimeSplit,
    /// Sorted by index, no zero counts.
    buckets: Vec<Bucket>,
}

/// One non-empty bucket of a [`Histogram`]: its index and events, packed into 10 bytes where a
/// `(u16, u64)` pair pads to 16. A drain walks the buckets of every histogram that gained
/// calls, each from memory, and a long-lived series holds a dozen or more: packed, 15 of them
/// take 150 bytes, not 240 (docs/performance.md). Its fields are read and written by value (a
/// packed field cannot be borrowed). Encoded as the pair it packs, so checkpoints read the same
/// either way.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    index: u16,
    count: u64,
}

impl Bucket {
    fn new(index: u16, count: u64) -> Self {
        Self { index, count }
    }
}

impl Serialize for Bucket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.index, self.count).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, count) = <(u16, u64)>::deserialize(d)?;
        Ok(Self::new(index, count))
    }
}

/// The part of calls' latency spent off a CPU, summed over the calls like `total_ns`
/// (profiler_common::HistHead): runnable on a runqueue, and blocked; the rest was on a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSplit {
    pub runq_ns: u64,
    pub blocked_ns: u64,
    /// Calls that blocked at least once.
    pub blocked_calls: u64,
}

impl TimeSplit {
    pub fn add(&mut self, other: TimeSplit) {
        self.runq_ns += other.runq_ns;
        self.blocked_ns += other.blocked_ns;
        self.blocked_calls += other.blocked_calls;
    }

    /// The on-CPU rest of a latency sum `total_ns` these parts are of.
    pub fn on_cpu_ns(&self, total_ns: u64) -> u64 {
        total_ns.saturating_sub(self.runq_ns + self.blocked_ns)
    }

    pub fn is_zero(&self) -> bool {
        *self == TimeSplit::default()
    }
}

/// Buckets past which `Histogram::add_ref` binary searches rather than reads on: 5 cache lines.
const LINEAR_SEARCH: usize = 32;

/// Room a histogram that already has buckets gets when it gains more (see
/// `Histogram::insert_missing`): 40 bytes, within a cache line or two.
const SPARE_BUCKETS: usize = 4;

/// What changed in one kernel histogram since the previous drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub errors: u64,
    pub total_ns: u64,
    pub split: TimeSplit,
    /// (bucket index, events) for the buckets that changed.
    pub buckets: Vec<(usize, u64)>,
}

impl Delta {
    pub fn view(&self) -> DeltaRef<'_> {
        DeltaRef {
            errors: self.errors,
            total_ns: self.total_ns,
            split: self.split,
            buckets: &self.buckets,
        }
    }
}

/// A [`Delta`] whose buckets live elsewhere: the drain keeps the buckets of all of one drain's
/// deltas in one buffer instead of allocating a list per changed histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaRef<'a> {
    pub errors: u64,
    pub total_ns: u64,
    pub split: TimeSplit,
    /// (bucket index, events) for the buckets that changed, by index.
    pub buckets: &'a [(usize, u64)],
}

impl DeltaRef<'_> {
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.errors == 0 && self.total_ns == 0 && self.split.is_zero()
    }

    /// Calls: the kernel keeps no count, every call lands in exactly one bucket.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, n)| n).sum()
    }
}

impl Histogram {
    pub fn add(&mut self, d: &Delta) {
        self.add_ref(d.view());
    }

    pub fn add_ref(&mut self, d: DeltaRef<'_>) {
        self.errors += d.errors;
        self.total_ns += d.total_ns;
        self.split.add(d.split);
        if d.buckets.windows(2).all(|w| w[0].0 < w[1].0) {
            return self.add_buckets(d.buckets);
        }
        // Out of order, or a bucket twice: no reading of the kernel's makes such a delta, but
        // the sum is the same once it is put in order.
        let mut sorted = d.buckets.to_vec();
        sorted.sort_unstable_by_key(|&(i, _)| i);
        sorted.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        self.add_buckets(&sorted);
    }

    /// Adds a delta's buckets, by index with no index twice: to the buckets it has in one walk
    /// through ours, front to back (a binary search per bucket made reads that each waited for
    /// the one before, and missed the cache: a drain adds to thousands of histograms, each
    /// touched once); then, if some were new, all of those at once.
    fn add_buckets(&mut self, delta: &[(usize, u64)]) {
        let mut from = 0;
        let mut missing = 0;
        for &(i, n) in delta {
            let i = i as u16;
            let ahead = &self.buckets[from..];
            let at = from
                + if ahead.len() <= LINEAR_SEARCH {
                    ahead.iter().take_while(|b| b.index < i).count()
                } else {
                    ahead.partition_point(|b| b.index < i)
                };
            match self.buckets.get_mut(at) {
                Some(b) if b.index == i => {
                    b.count += n;
                    from = at + 1;
                }
                _ => {
                    missing += 1;
                    from = at;
                }
            }
            self.count += n;
        }
        if missing > 0 {
            self.insert_missing(delta, missing);
        }
    }

    /// Puts in place the `missing` buckets of `delta` (by index) this histogram lacked, in one
    /// pass from the back: one reallocation however many are new (a reallocation per new
    /// bucket was 8% of the daemon's time while its histograms filled in). A histogram's first
    /// buckets get no spare room: the store holds one per (process, syscall), most of them
    /// short-lived. One that gains buckets later is still filling in its tail, a bucket at a
    /// time: it gets room for [`SPARE_BUCKETS`] more, a reallocation every few new buckets
    /// rather than every one (reallocations were 5% of the daemon's time at 10,000 young
    /// series, docs/performance.md).
    fn insert_missing(&mut self, delta: &[(usize, u64)], missing: usize) {
        let mut read = self.buckets.len();
        if read + missing > self.buckets.capacity() {
            let room = if read == 0 {
                missing
            } else {
                missing.max(SPARE_BUCKETS)
            };
            self.buckets.reserve_exact(room);
        }
        self.buckets.resize(read + missing, Bucket::new(0, 0));
        let mut write = self.buckets.len();
        for &(i, n) in delta.iter().rev() {
            if write == read {
                // Every new bucket is in place; the rest were added to where they are.
                break;
            }
            let i = i as u16;
            while read > 0 && self.buckets[read - 1].index > i {
                read -= 1;
                write -= 1;
                self.buckets[write] = self.buckets[read];
            }
            if read == 0 || self.buckets[read - 1].index != i {
                write -= 1;
                self.buckets[write] = Bucket::new(i, n);
            }
        }
        debug_assert_eq!(read, write, "as many new buckets as counted");
    }

    /// Asks the CPU to start loading the bucket list, which `add_ref` is about to read: the
    /// store adds to thousands of histograms a drain, each once, and this list is where it
    /// waited for memory.
    pub fn prefetch_buckets(&self) {
        // Every line `add_buckets`' walk may read, up to LINEAR_SEARCH buckets (six to a
        // line; a long-lived series holds a few dozen): fetching the first two lines only left
        // the store waiting 4% longer at 10,000 series (docs/performance.md).
        prefetch_lines(self.buckets.as_ptr(), self.buckets.len().min(LINEAR_SEARCH));
    }

    /// Adds another histogram's totals: the histogram of both sets of calls.
    pub fn merge(&mut self, other: &Histogram) {
        self.add(&Delta {
            errors: other.errors,
            total_ns: other.total_ns,
            split: other.split,
            buckets: other.bucket_counts().collect(),
        });
    }

    /// The calls' time on a CPU: their latency less the split's off-CPU parts.
    pub fn on_cpu_ns(&self) -> u64 {
        self.split.on_cpu_ns(self.total_ns)
    }

    pub fn mean_ns(&self) -> Option<u64> {
        (self.count > 0).then(|| self.total_ns / self.count)
    }

    /// The `q` quantile (0 < q ≤ 1) as the midpoint of the bucket holding it: within 6.25% of
    /// the true value below the overflow bucket; at or above 2^36 ns it reads the bucket's
    /// lower bound.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.bucket_counts() {
            seen += n;
            if seen >= rank {
                return Some(bucket_estimate(i));
            }
        }
        None
    }

    /// The largest value seen, estimated like a quantile from the highest non-empty bucket.
    pub fn max_ns(&self) -> Option<u64> {
        self.buckets.last().map(|b| bucket_estimate(b.index.into()))
    }

    /// Non-empty buckets as (bucket index, count), by index.
    pub fn bucket_counts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buckets.iter().map(|b| (b.index.into(), b.count))
    }

    /// Counts per power of two: (floor(log2(ns)), events), ascending; values below 2 ns are row
    /// 0. Every bucket lies within one power of two, so this regrouping is exact.
    pub fn log2_rows(&self) -> Vec<(u32, u64)> {
        let mut rows: Vec<(u32, u64)> = Vec::new();
        for (lower, _, n) in self.nonempty_buckets() {
            let row = lower.max(1).ilog2();
            match rows.last_mut() {
                Some((r, c)) if *r == row => *c += n,
                _ => rows.push((row, n)),
            }
        }
        rows
    }

    /// Non-empty buckets as (lower bound ns, upper bound ns exclusive, count); the overflow
    /// bucket's upper bound is `None` (unbounded).
    pub fn nonempty_buckets(&self) -> impl Iterator<Item = (u64, Option<u64>, u64)> + '_ {
        self.bucket_counts().map(|(i, n)| {
            let upper = (i < OVERFLOW_BUCKET).then(|| bucket_upper_ns(i));
            (bucket_lower_ns(i), upper, n)
        })
    }
}

fn bucket_estimate(i: usize) -> u64 {
    let lo = bucket_lower_ns(i);
    if i >= OVERFLOW_BUCKET {
        return lo;
    }
    // Buckets below 8 ns hold a single value each: (lo + lo + 1) / 2 == lo.
    lo + (bucket_upper_ns(i) - lo) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::{bucket_index, BUCKETS};

    fn from_values(values: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for &v in values {
            h.add(&Delta {
                errors: 0,
                total_ns: v,
                split: Default::default(),
                buckets: vec![(bucket_index(v), 1)],
            });
        }
        h
    }

    fn assert_within(estimate: u64, truth: u64, rel: f64) {
        let err = (estimate as f64 - truth as f64).abs() / truth as f64;
        assert!(
            err <= rel,
            "estimate {estimate} vs true {truth}: error {err:.4} > {rel}"
        );
    }

    fn delta(buckets: &[usize]) -> Delta {
        Delta {
            buckets: buckets.iter().map(|&i| (i, 1)).collect(),
            ..Delta::default()
        }
    }

    #[test]
    fn first_buckets_get_no_room_and_later_ones_room_for_a_few_more() {
        let mut h = Histogram::default();
        h.add(&delta(&[10, 20, 30]));
        assert_eq!(
            h.buckets.capacity(),
            3,
            "a histogram's first buckets, exactly"
        );
        // A tail filling in a bucket at a time: one reallocation for every SPARE_BUCKETS.
        let mut grew = 0;
        for i in 40..40 + 4 * SPARE_BUCKETS {
            let before = h.buckets.capacity();
            h.add(&delta(&[i]));
            grew += usize::from(h.buckets.capacity() != before);
        }
        assert_eq!(grew, 4);
        assert_eq!(h.buckets.len(), 3 + 4 * SPARE_BUCKETS);
        assert!(h.buckets.capacity() < h.buckets.len() + SPARE_BUCKETS);
        // Many at once get room for themselves alone, and land in order.
        h.add(&delta(&[0, 1, 2, 15, 25, 35, 100, 101, 102]));
        assert!(h.buckets.capacity() <= h.buckets.len() + SPARE_BUCKETS);
        let got: Vec<usize> = h.bucket_counts().map(|(i, _)| i).collect();
        let mut want: Vec<usize> = [0, 1, 2, 10, 15, 20, 25, 30, 35, 100, 101, 102].into();
        want.extend(40..40 + 4 * SPARE_BUCKETS);
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(h.count, want.len() as u64);
    }

    #[test]
    fn empty_histogram_has_no_estimates() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ns(0.5), None);
        assert_eq!(h.max_ns(), None);
        assert_eq!(h.mean_ns(), None);
    }

    #[test]
    fn constant_distribution() {
        let h = from_values(&[2_000_000; 1000]);
        for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
            assert_within(h.quantile_ns(q).unwrap(), 2_000_000, 0.0625);
        }
        assert_eq!(h.mean_ns(), Some(2_000_000));
        assert_eq!(h.count, 1000);
    }

    #[test]
    fn uniform_distribution_quantiles_within_stated_error() {
        // 1..=100_000 µs in ns: the true q-quantile is q * 100_000 µs.
        let values: Vec<u64> = (1..=100_000u64).map(|v| v * 1000).collect();
        let h = from_values(&values);
        for q in [0.1f64, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
            let truth = (q * 100_000.0).ceil() as u64 * 1000;
            assert_within(h.quantile_ns(q).unwrap(), truth, 0.0625);
        }
        assert_within(h.max_ns().unwrap(), 100_000_000, 0.0625);
    }

    #[test]
    fn log_uniform_distribution_quantiles_within_stated_error() {
        // Spans 100 ns to ~10 s, like real syscall latencies.
        let mut values: Vec<u64> = (0..20_000)
            .map(|i| (100.0 * 10f64.powf(i as f64 * 8.0 / 20_000.0)) as u64)
            .collect();
        values.sort_unstable();
        let h = from_values(&values);
        for q in [0.01, 0.5, 0.9, 0.99] {
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            assert_within(h.quantile_ns(q).unwrap(), values[rank - 1], 0.0625);
        }
    }

    #[test]
    fn bimodal_distribution_picks_the_right_mode() {
        let mut values = vec![500; 900];
        values.extend(vec![10_000_000; 100]);
        let h = from_values(&values);
        assert_within(h.quantile_ns(0.5).unwrap(), 500, 0.0625);
        assert_within(h.quantile_ns(0.9).unwrap(), 500, 0.0625);
        assert_within(h.quantile_ns(0.91).unwrap(), 10_000_000, 0.0625);
        assert_within(h.quantile_ns(0.99).unwrap(), 10_000_000, 0.0625);
    }

    #[test]
    fn deltas_in_any_order_add_up_by_bucket() {
        let delta = |buckets: &[(usize, u64)]| Delta {
            buckets: buckets.to_vec(),
            ..Delta::default()
        };
        let mut h = Histogram::default();
        h.add(&delta(&[(40, 1), (3, 2), (3, 1), (200, 4)]));
        // Past LINEAR_SEARCH buckets, found by a binary search.
        let many: Vec<(usize, u64)> = (0..100).map(|i| (i * 2 + 1, 1)).collect();
        h.add(&delta(&many));
        h.add(&delta(&[(0, 1), (41, 1), (199, 1), (272, 1), (5, 1)]));
        let mut want: Vec<(usize, u64)> = many.clone();
        for (i, n) in [
            (40, 1),
            (3, 3),
            (200, 4),
            (0, 1),
            (41, 1),
            (199, 1),
            (272, 1),
            (5, 1),
        ] {
            match want.iter_mut().find(|(b, _)| *b == i) {
                Some(e) => e.1 += n,
                None => want.push((i, n)),
            }
        }
        want.sort_unstable();
        assert_eq!(h.bucket_counts().collect::<Vec<_>>(), want);
        assert_eq!(h.count, want.iter().map(|e| e.1).sum::<u64>());
    }

    proptest::proptest! {
        /// However many buckets each delta adds or brings new, in order or not: the counts by
        /// bucket are the sums, in order.
        #[test]
        fn buckets_are_the_sums_of_the_deltas(
            deltas in proptest::collection::vec(
                proptest::collection::vec((0usize..BUCKETS, 1u64..1000), 0..40),
                1..8,
            ),
            sorted in proptest::bool::ANY,
        ) {
            let mut h = Histogram::default();
            let mut want = std::collections::BTreeMap::new();
            for mut buckets in deltas {
                if sorted {
                    buckets.sort_unstable();
                    buckets.dedup_by_key(|e| e.0);
                }
                for &(i, n) in &buckets {
                    *want.entry(i).or_insert(0) += n;
                }
                h.add(&Delta { buckets, ..Delta::default() });
            }
            proptest::prop_assert_eq!(h.bucket_counts().collect::<Vec<_>>(), want.iter().map(|(&i, &n)| (i, n)).collect::<Vec<_>>());
            proptest::prop_assert_eq!(h.count, want.values().sum::<u64>());
        }
    }

    #[test]
    fn a_bucket_packs_into_ten_bytes_and_encodes_as_the_pair() {
        assert_eq!(size_of::<Bucket>(), 10);
        // What a histogram's buckets were before they were packed: checkpoints written then
        // must read now, and the other way round.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Pairs {
            count: u64,
            errors: u64,
            total_ns: u64,
            split: TimeSplit,
            buckets: Vec<(u16, u64)>,
        }
        let h = from_values(&[3, 3, 900, 1 << 40]);
        let pairs = Pairs {
            count: h.count,
            errors: h.errors,
            total_ns: h.total_ns,
            split: h.split,
            buckets: h.bucket_counts().map(|(i, n)| (i as u16, n)).collect(),
        };
        assert_eq!(pairs.buckets.len(), 3);
        let bytes = postcard::to_stdvec(&h).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&pairs).unwrap());
        assert_eq!(postcard::from_bytes::<Histogram>(&bytes).unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, serde_json::to_string(&pairs).unwrap());
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), h);
    }

    #[test]
    fn sparse_buckets_stay_sorted_and_merge() {
        let h = from_values(&[5000, 100, 5000, 100_000, 100, 7]);
        let b: Vec<_> = h.nonempty_buckets().map(|(lo, _, n)| (lo, n)).collect();
        let mut sorted = b.clone();
        sorted.sort();
        assert_eq!(b, sorted);
        assert_eq!(b.iter().map(|&(_, n)| n).sum::<u64>(), 6);
        assert_eq!(b[0], (7, 1));
        assert_eq!(b[1].1, 2);
    }

    #[test]
    fn log2_rows_regroup_exactly() {
        let h = from_values(&[0, 1, 3, 5, 100, 127, 128, 1 << 20]);
        assert_eq!(
            h.log2_rows(),
            vec![(0, 2), (1, 1), (2, 1), (6, 2), (7, 1), (20, 1)]
        );
    }

    #[test]
    fn merging_equals_recording_both() {
        let a = from_values(&[100, 5000, 5000]);
        let b = from_values(&[7, 5000, 1 << 20]);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, from_values(&[100, 5000, 5000, 7, 5000, 1 << 20]));
    }

    #[test]
    fn overflow_reads_its_lower_bound() {
        let h = from_values(&[1 << 40]);
        assert_eq!(h.quantile_ns(0.5), Some(1 << 36));
        let buckets: Vec<_> = h.nonempty_buckets().collect();
        assert_eq!(buckets, vec![(1 << 36, None, 1)]);
    }
}
