//! The user-space histogram: 64-bit cumulative totals over the kernel's bucket layout, and the
//! estimates every view reports (so no view derives its own).

use profiler_common::{bucket_lower_ns, bucket_upper_ns, OVERFLOW_BUCKET};

/// Sparse: a syscall's latencies usually fill a handful of the 273 buckets, and the daemon keeps
/// one histogram per (process, syscall) for every live and recently exited process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// Where `total_ns` went besides a CPU (zero when the kernel side does not split it: see
    /// `Store::time_split`).
    pub split: TimeSplit,
    /// (bucket index, events), sorted by index, no zero counts.
    buckets: Vec<(u16, u64)>,
}

/// The part of calls' latency spent off a CPU, summed over the calls like `total_ns`
/// (profiler_common::HistHead): runnable on a runqueue, and blocked; the rest was on a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    pub fn is_empty(&self) -> bool {
        self.view().is_empty()
    }

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
        for &(i, n) in d.buckets {
            match self.buckets.binary_search_by_key(&(i as u16), |&(b, _)| b) {
                Ok(at) => self.buckets[at].1 += n,
                Err(at) => self.buckets.insert(at, (i as u16, n)),
            }
            self.count += n;
        }
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
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_estimate(i as usize));
            }
        }
        None
    }

    /// The largest value seen, estimated like a quantile from the highest non-empty bucket.
    pub fn max_ns(&self) -> Option<u64> {
        self.buckets
            .last()
            .map(|&(i, _)| bucket_estimate(i as usize))
    }

    /// Non-empty buckets as (bucket index, count), by index.
    pub fn bucket_counts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buckets.iter().map(|&(i, n)| (i as usize, n))
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

/// The Prometheus `le` bound (seconds, inclusive) of bucket `i`. Kernel buckets are half-open
/// in integer ns, [lo, hi), so the bucket holds exactly the values <= hi - 1 ns: `le` is
/// (hi - 1) / 1e9 and every count under it is exact, not an estimate. `None` for the overflow
/// bucket, whose values only `+Inf` bounds.
pub fn le_seconds(i: usize) -> Option<f64> {
    (i < OVERFLOW_BUCKET).then(|| (bucket_upper_ns(i) - 1) as f64 / 1e9)
}

impl Histogram {
    /// The histogram as Prometheus buckets: (`le` in seconds, events in (previous le, le]),
    /// ascending; the cumulative sum at each `le` is exact. Only the edges of non-empty buckets
    /// are listed (the bound just below each and its own), so a histogram costs a few series,
    /// not 273, and interpolation never spans more than one kernel bucket. Once listed, an
    /// edge stays listed (counts never shrink), so each `le` series lives as long as the
    /// histogram. The last entry is always `+Inf` (with the overflow bucket's events), so the
    /// cumulative sum ends at `count` in every exposition format.
    pub fn le_buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = Vec::with_capacity(self.buckets.len() * 2);
        let mut last: Option<usize> = None;
        let mut overflow = 0;
        for &(i, n) in &self.buckets {
            let i = i as usize;
            if i > 0 && last != Some(i - 1) {
                if let Some(le) = le_seconds(i - 1) {
                    out.push((le, 0));
                }
            }
            match le_seconds(i) {
                Some(le) => out.push((le, n)),
                None => overflow += n,
            }
            last = Some(i);
        }
        out.push((f64::INFINITY, overflow));
        out
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
    use profiler_common::bucket_index;

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
    fn le_bounds_are_exact_at_bucket_edges() {
        // Bucket [1966080, 2097152): 2097151 ns is its last value, 2097152 ns the next one's
        // first.
        let i = bucket_index(2_097_151);
        assert_eq!(bucket_upper_ns(i), 2_097_152);
        assert_eq!(le_seconds(i), Some(0.002097151));
        assert_eq!(bucket_index(2_097_152), i + 1);
        // Single-value buckets: 0 ns and 7 ns.
        assert_eq!(le_seconds(0), Some(0.0));
        assert_eq!(le_seconds(7), Some(7e-9));
        // The last finite bucket ends one below 2^36 ns; the overflow bucket has no finite le.
        assert_eq!(
            le_seconds(OVERFLOW_BUCKET - 1),
            Some(((1u64 << 36) - 1) as f64 / 1e9)
        );
        assert_eq!(le_seconds(OVERFLOW_BUCKET), None);
        // Every value v ns lands under le iff v <= le, for values on and around each edge.
        for i in 0..OVERFLOW_BUCKET {
            let le = le_seconds(i).unwrap();
            let hi = bucket_upper_ns(i);
            assert!(
                (hi - 1) as f64 / 1e9 <= le && (hi as f64 / 1e9) > le,
                "bucket {i}"
            );
        }
    }

    #[test]
    fn le_buckets_add_up_to_exact_cumulative_counts() {
        // Values exactly on boundaries: 2097151 belongs under le=0.002097151, 2097152 does not.
        let values = [0, 7, 8, 100, 2_097_151, 2_097_152, 2_097_152, 1 << 40];
        let h = from_values(&values);
        let b = h.le_buckets();
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "ascending: {b:?}");
        let mut cumulative = 0;
        for &(le, n) in &b {
            cumulative += n;
            let truth = values.iter().filter(|&&v| v as f64 / 1e9 <= le).count() as u64;
            assert_eq!(cumulative, truth, "at le={le}");
        }
        // The 2^40 ns value is only under +Inf, where the sum reaches the count.
        assert_eq!(b.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(cumulative, 8);
        assert_eq!(h.count, 8);
        // Each non-empty bucket brings its lower edge (unless the previous bucket is listed)
        // and its own: [0] [6 7 8] [35 36] [i-1 i i+1] [the overflow's lower edge] [+Inf].
        let les: Vec<f64> = b.iter().map(|&(le, _)| le).collect();
        assert!(les.contains(&0.002097151));
        assert!(les.contains(&(2_359_295.0 / 1e9)));
        assert_eq!(b.len(), 1 + 3 + 2 + 3 + 1 + 1);
        assert_eq!(Histogram::default().le_buckets(), vec![(f64::INFINITY, 0)]);
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
