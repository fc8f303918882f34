//! The arithmetic of the benchmark, kept free of I/O so it can be tested exactly.

/// Median of `xs` (mean of the middle two for an even count); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Nearest-rank percentile (`p` in 0..=100) of `xs`: the smallest value with at least p% of the
/// samples at or below it. Nearest-rank, not interpolated, so a reported p99 is a latency some
/// request really had.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Smallest and largest value.
pub fn min_max(xs: &[f64]) -> Option<(f64, f64)> {
    let mut it = xs.iter().copied().filter(|x| !x.is_nan());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

/// How many times the overhead of `a` the overhead of `b` is, both over `baseline`:
/// `(a - baseline) / (b - baseline)`. `None` when `b` adds nothing measurable, since a ratio to
/// noise is noise.
pub fn overhead_ratio(a: f64, b: f64, baseline: f64) -> Option<f64> {
    let denom = b - baseline;
    if denom <= 0.0 || !denom.is_finite() {
        return None;
    }
    let r = (a - baseline) / denom;
    r.is_finite().then_some(r)
}

/// The order in which round `round` (0-based) visits `n` configurations: forward on even rounds,
/// backward on odd ones (A B C, C B A, A B C …). Every configuration then sits on average in the
/// middle of the run, so a steady drift of the machine (thermal, a neighbour's build starting)
/// weighs on all of them alike, and no configuration always follows the same other one.
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), Some(50.0));
        assert_eq!(percentile(&xs, 99.0), Some(99.0));
        assert_eq!(percentile(&xs, 100.0), Some(100.0));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&[10.0, 20.0, 30.0], 50.0), Some(20.0));
        assert_eq!(percentile(&[10.0, 20.0, 30.0], 99.0), Some(30.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }

    #[test]
    fn min_max_ignores_nan() {
        assert_eq!(min_max(&[3.0, f64::NAN, -1.0, 2.0]), Some((-1.0, 3.0)));
        assert_eq!(min_max(&[]), None);
    }

    #[test]
    fn overhead_ratios() {
        // profiler 200, limit 180, none 90: (200-90)/(180-90)
        assert_eq!(overhead_ratio(200.0, 180.0, 90.0), Some(110.0 / 90.0));
        assert_eq!(overhead_ratio(90.0, 130.0, 90.0), Some(0.0));
        // A reference that adds nothing (or measured below baseline) gives no ratio.
        assert_eq!(overhead_ratio(200.0, 90.0, 90.0), None);
        assert_eq!(overhead_ratio(200.0, 80.0, 90.0), None);
    }

    #[test]
    fn rounds_alternate_direction() {
        assert_eq!(round_order(3, 0), vec![0, 1, 2]);
        assert_eq!(round_order(3, 1), vec![2, 1, 0]);
        assert_eq!(round_order(3, 2), vec![0, 1, 2]);
        assert_eq!(round_order(0, 1), Vec::<usize>::new());
        // Over an even number of rounds every configuration's mean position is the middle.
        let n = 5;
        for c in 0..n {
            let mean: f64 = (0..4)
                .map(|r| round_order(n, r).iter().position(|&x| x == c).unwrap() as f64)
                .sum::<f64>()
                / 4.0;
            assert_eq!(mean, 2.0);
        }
    }
}
