//! The `le` bounds of the /metrics histograms. Every bound is a kernel bucket edge, so every
//! cumulative count Prometheus sees is exact, never an estimate:
//!
//! - **Powers of two** (the default): the kernel splits each power of two [2^k, 2^(k+1)) ns
//!   into 8 buckets, so no bucket straddles a power of two and the count at le = 2^k − 1 ns is
//!   exact. Every histogram has the same 30 bounds, k = 7 … 36 (127 ns … 68.72 s) and `+Inf`:
//!   sums across series (`sum by (le)`, which every dashboard quantile does) add like with like.
//! - **Fine** (`metrics_fine_buckets`): those, plus the kernel's own edges around each non-empty
//!   bucket (the bound just below it and its own), so a single series' quantile is
//!   interpolated inside one kernel bucket (12.5% of its lower bound at most). The extra edges
//!   differ between series; the powers of two every series has keep sums exact at those.

use profiler_common::{bucket_upper_ns, MAX_POW, OVERFLOW_BUCKET};

use crate::store::histogram::Histogram;

/// The smallest power of two with a bound of its own: faster calls count under le = 127 ns.
pub const MIN_POW: u32 = 7;

/// Which `le` bounds the histograms carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BucketSet {
    #[default]
    PowersOfTwo,
    Fine,
}

/// The default bounds in integer ns, inclusive: 2^k − 1 for k = MIN_POW ..= MAX_POW.
pub fn power_of_two_bounds() -> impl Iterator<Item = u64> {
    (MIN_POW..=MAX_POW).map(|k| (1u64 << k) - 1)
}

/// The inclusive bound of kernel bucket `i` in ns: it holds exactly the values ≤ hi − 1. None
/// for the overflow bucket, which only `+Inf` bounds.
fn bucket_bound_ns(i: usize) -> Option<u64> {
    (i < OVERFLOW_BUCKET).then(|| bucket_upper_ns(i) - 1)
}

/// The histogram as Prometheus buckets: (`le` in seconds, events in (previous le, le]),
/// ascending, ending with `+Inf` (the events above every bound), so the cumulative sum ends at
/// the count in every exposition format.
pub fn le_buckets(h: &Histogram, set: BucketSet) -> Vec<(f64, u64)> {
    let mut bounds: Vec<u64> = power_of_two_bounds().collect();
    if set == BucketSet::Fine {
        for (i, _) in h.bucket_counts() {
            bounds.extend(i.checked_sub(1).and_then(bucket_bound_ns));
            bounds.extend(bucket_bound_ns(i));
        }
        bounds.sort_unstable();
        bounds.dedup();
    }
    let mut counts = vec![0u64; bounds.len() + 1];
    for (i, n) in h.bucket_counts() {
        // Every bound is a bucket edge, so a bucket lies wholly under the first bound at or
        // above its last value; the overflow bucket is under `+Inf` only.
        let at =
            bucket_bound_ns(i).map_or(bounds.len(), |last| bounds.partition_point(|&b| b < last));
        counts[at] += n;
    }
    bounds
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .chain([f64::INFINITY])
        .zip(counts)
        .collect()
}

#[cfg(test)]
mod tests {
    use profiler_common::{bucket_index, bucket_lower_ns, BUCKETS};

    use super::*;
    use crate::store::histogram::Delta;

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

    /// (le, cumulative count) pairs, checked against the values themselves.
    fn assert_exact(values: &[u64], set: BucketSet) -> Vec<(f64, u64)> {
        let h = from_values(values);
        let b = le_buckets(&h, set);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "ascending: {b:?}");
        let mut cumulative = 0;
        let mut out = Vec::new();
        for &(le, n) in &b {
            cumulative += n;
            let truth = values.iter().filter(|&&v| v as f64 / 1e9 <= le).count() as u64;
            assert_eq!(cumulative, truth, "{set:?} at le={le}");
            out.push((le, cumulative));
        }
        assert_eq!(cumulative, values.len() as u64);
        out
    }

    #[test]
    fn no_kernel_bucket_straddles_a_power_of_two() {
        // What makes the default bounds exact.
        for i in 1..OVERFLOW_BUCKET {
            let (lo, last) = (bucket_lower_ns(i), bucket_upper_ns(i) - 1);
            assert_eq!(lo.ilog2(), last.ilog2(), "bucket {i}: [{lo}, {last}]");
        }
        assert_eq!(bucket_lower_ns(OVERFLOW_BUCKET), 1 << MAX_POW);
        assert_eq!(BUCKETS, OVERFLOW_BUCKET + 1);
    }

    #[test]
    fn the_default_bounds_are_the_same_thirty_for_every_histogram() {
        let want: Vec<f64> = (7..=36)
            .map(|k| ((1u64 << k) - 1) as f64 / 1e9)
            .chain([f64::INFINITY])
            .collect();
        for values in [&[][..], &[5][..], &[2_000_000; 3][..], &[1 << 40][..]] {
            let les: Vec<f64> = le_buckets(&from_values(values), BucketSet::PowersOfTwo)
                .iter()
                .map(|&(le, _)| le)
                .collect();
            assert_eq!(les, want, "{values:?}");
        }
        assert_eq!(want[0], 1.27e-7);
        assert_eq!(want[29], 68.719476735);
    }

    #[test]
    fn counts_are_exact_on_and_around_every_power_of_two() {
        let mut values = vec![0, 1, 7, 8, 100, 127, 128];
        for k in MIN_POW..=MAX_POW + 1 {
            let p = 1u64 << k;
            values.extend([p - 1, p, p + 1]);
        }
        values.push(1 << 40);
        let exact = assert_exact(&values, BucketSet::PowersOfTwo);
        assert_eq!(exact.len(), 31);
        // 2 ms sleeps: none under 2^20 − 1 ns, all under 2^21 − 1 ns.
        let sleeps = assert_exact(&[2_000_000, 2_050_000, 2_097_151], BucketSet::PowersOfTwo);
        let at = |le: f64| sleeps.iter().find(|&&(b, _)| b == le).unwrap().1;
        assert_eq!(at(0.001048575), 0);
        assert_eq!(at(0.002097151), 3);
    }

    #[test]
    fn the_fine_set_adds_the_edges_of_non_empty_buckets() {
        let values = [0, 7, 8, 100, 2_097_151, 2_097_152, 2_097_152, 1 << 40];
        let exact = assert_exact(&values, BucketSet::Fine);
        let les: Vec<f64> = exact.iter().map(|&(le, _)| le).collect();
        // Bucket [1966080, 2097152) and the one below it; its neighbour above, which holds
        // 2^21 ns, and that one's own bound.
        for le in [0.001966079, 0.002097151, 2_359_295.0 / 1e9] {
            assert!(les.contains(&le), "{le} in {les:?}");
        }
        // Every power of two is there too, so sums across series stay exact at those.
        for ns in power_of_two_bounds() {
            assert!(les.contains(&(ns as f64 / 1e9)), "{ns}");
        }
        // Values below 16 ns have single-value buckets; 100 ns is in [96, 104).
        for le in [0.0, 7e-9, 8e-9, 95e-9, 103e-9] {
            assert!(les.contains(&le), "{le} in {les:?}");
        }
        assert_eq!(
            le_buckets(&Histogram::default(), BucketSet::Fine).len(),
            31,
            "an empty histogram has the default bounds"
        );
    }
}
