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

/// How uncertain [`overhead_ratio`] of the medians of `a`, `b` and `baseline` is, from the
/// spread of the rounds: a 90% interval by the bootstrap. The three are aligned by round (a
/// round measures every configuration), so rounds are drawn whole, with replacement,
/// `RESAMPLES` times, and the ratio of each draw's medians computed; the interval is their 5th
/// and 95th percentiles. A draw whose reference adds nothing measurable counts as an unbounded
/// ratio (`f64::INFINITY`): the reference's cost is then within the noise, and so is any ratio to
/// it. The draws are seeded, so the same samples give the same interval. None with fewer than
/// 3 rounds.
pub fn ratio_interval(a: &[f64], b: &[f64], baseline: &[f64]) -> Option<(f64, f64)> {
    const RESAMPLES: usize = 1000;
    let rounds = a.len().min(b.len()).min(baseline.len());
    if rounds < 3 {
        return None;
    }
    // splitmix64: a fixed, dependency-free sequence (the interval is a report, not a secret).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (mut xa, mut xb, mut xn) = (vec![0.0; rounds], vec![0.0; rounds], vec![0.0; rounds]);
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for i in 0..rounds {
                let r = (next() % rounds as u64) as usize;
                (xa[i], xb[i], xn[i]) = (a[r], b[r], baseline[r]);
            }
            match (median(&xa), median(&xb), median(&xn)) {
                (Some(x), Some(y), Some(n)) => overhead_ratio(x, y, n).unwrap_or(f64::INFINITY),
                _ => f64::INFINITY,
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    Some((
        ratios[RESAMPLES * 5 / 100],
        ratios[RESAMPLES * 95 / 100 - 1],
    ))
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
    fn a_ratio_interval_holds_the_ratio_and_widens_with_the_spread() {
        // Identical rounds: every draw is the same, so is the interval.
        let (a, b, n) = ([200.0; 5], [180.0; 5], [90.0; 5]);
        let (lo, hi) = ratio_interval(&a, &b, &n).unwrap();
        assert!(
            (lo - 110.0 / 90.0).abs() < 1e-9 && (hi - lo).abs() < 1e-9,
            "{lo} {hi}"
        );
        // Spread rounds: the interval holds the medians' ratio, is wider, and repeats.
        let a = [190.0, 200.0, 210.0, 260.0, 195.0, 205.0, 150.0];
        let b = [180.0, 170.0, 185.0, 175.0, 190.0, 180.0, 182.0];
        let n = [90.0, 95.0, 85.0, 90.0, 100.0, 88.0, 92.0];
        let r = overhead_ratio(
            median(&a).unwrap(),
            median(&b).unwrap(),
            median(&n).unwrap(),
        )
        .unwrap();
        let (lo, hi) = ratio_interval(&a, &b, &n).unwrap();
        assert!(lo <= r && r <= hi && hi - lo > 0.1, "{lo} {r} {hi}");
        assert_eq!(ratio_interval(&a, &b, &n), Some((lo, hi)));
        // A reference within the noise of the baseline: unbounded above.
        let b = [92.0, 88.0, 91.0, 89.0, 90.0, 93.0, 87.0];
        assert_eq!(ratio_interval(&a, &b, &n).unwrap().1, f64::INFINITY);
        assert_eq!(ratio_interval(&a[..2], &b[..2], &n[..2]), None);
    }

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
