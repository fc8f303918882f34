//! Issue 17's goals, declared once: what every `cargo xtask bench` run is read against in its
//! report's "Against the goals" section. They are goals to measure against, not thresholds a
//! test enforces: the bench asserts nothing.
//!
//! A verdict takes the run's uncertainty into account: a ratio comes with the bootstrap
//! interval of its rounds (stats::ratio_interval), the daemon's CPU with its lowest and highest
//! window, and a goal is met (or missed) with confidence only when the whole interval is on one
//! side of it. Otherwise the run leaves it undecided, and says which side the median fell on.

/// What a configuration's overhead is compared with (see the report's ratios).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The empty tracepoint pair: what any syscall tracer costs.
    Floor,
    /// The floor plus a clock read a side: what any syscall timer costs.
    Limit,
}

impl Reference {
    pub fn name(self) -> &'static str {
        match self {
            Reference::Floor => "floor",
            Reference::Limit => "limit",
        }
    }
}

/// A configuration's overhead, at most `at_most` times its reference's, on every workload.
pub struct RatioGoal {
    /// The daemon configuration's name (attach::DAEMON_VARIANTS, SYSCALL_ONLY_VARIANTS).
    pub config: &'static str,
    pub reference: Reference,
    pub at_most: f64,
}

pub const RATIO_GOALS: &[RatioGoal] = &[
    RatioGoal {
        config: "profiler",
        reference: Reference::Limit,
        at_most: 1.15,
    },
    RatioGoal {
        config: "counts-only",
        reference: Reference::Floor,
        at_most: 1.1,
    },
    RatioGoal {
        config: "filtered-out",
        reference: Reference::Floor,
        at_most: 1.1,
    },
];

/// A daemon's CPU while it drains `series` live series once a second, at most this share of
/// one core.
pub struct CpuGoal {
    pub daemon: &'static str,
    pub series: u64,
    pub at_most_percent: f64,
}

pub const CPU_GOAL: CpuGoal = CpuGoal {
    daemon: "profiler",
    series: 10_000,
    at_most_percent: 0.5,
};

/// Where a measurement stands against an upper bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The median and the whole interval at or under the bound.
    Met,
    /// The median at or under it, the interval reaching over it (or no interval).
    MetAtMedian,
    /// The median over it, the interval reaching under it (or no interval).
    OverAtMedian,
    /// The median and the whole interval over it.
    NotMet,
}

impl Verdict {
    /// `value` (a median) with its interval, if the run has one, against at most `bound`.
    pub fn of(value: f64, interval: Option<(f64, f64)>, bound: f64) -> Verdict {
        let under = value <= bound;
        match interval {
            Some((_, hi)) if under && hi <= bound => Verdict::Met,
            Some((lo, _)) if !under && lo > bound => Verdict::NotMet,
            _ if under => Verdict::MetAtMedian,
            _ => Verdict::OverAtMedian,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::MetAtMedian => "met at the median",
            Verdict::OverAtMedian => "over at the median",
            Verdict::NotMet => "not met",
        }
    }

    /// Whether the run decided it (the whole interval on one side).
    pub fn decided(self) -> bool {
        matches!(self, Verdict::Met | Verdict::NotMet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_decided_only_by_the_whole_interval() {
        assert_eq!(Verdict::of(1.0, Some((0.9, 1.1)), 1.1), Verdict::Met);
        assert_eq!(
            Verdict::of(1.0, Some((0.9, 1.2)), 1.1),
            Verdict::MetAtMedian
        );
        assert_eq!(
            Verdict::of(1.2, Some((1.05, 1.3)), 1.1),
            Verdict::OverAtMedian
        );
        assert_eq!(Verdict::of(1.2, Some((1.15, 1.3)), 1.1), Verdict::NotMet);
        // Without an interval (fewer than 3 rounds) only the median speaks.
        assert_eq!(Verdict::of(1.0, None, 1.1), Verdict::MetAtMedian);
        assert_eq!(Verdict::of(1.2, None, 1.1), Verdict::OverAtMedian);
        // An unbounded interval (the reference added nothing measurable in some draws).
        assert_eq!(
            Verdict::of(1.0, Some((0.8, f64::INFINITY)), 1.1),
            Verdict::MetAtMedian
        );
        // A median outside its own bootstrap interval decides nothing.
        assert_eq!(
            Verdict::of(1.2, Some((0.9, 1.0)), 1.1),
            Verdict::OverAtMedian
        );
        assert!(Verdict::Met.decided() && Verdict::NotMet.decided());
        assert!(!Verdict::MetAtMedian.decided() && !Verdict::OverAtMedian.decided());
    }

    #[test]
    fn every_goal_names_a_configuration_the_bench_measures() {
        use crate::bench::attach::{DAEMON_VARIANTS, SYSCALL_ONLY_VARIANTS};
        let measured: Vec<&str> = DAEMON_VARIANTS
            .iter()
            .chain(SYSCALL_ONLY_VARIANTS)
            .map(|(name, _)| *name)
            .collect();
        for g in RATIO_GOALS {
            assert!(measured.contains(&g.config), "{} is not measured", g.config);
        }
        assert!(
            DAEMON_VARIANTS
                .iter()
                .any(|(name, _)| *name == CPU_GOAL.daemon),
            "the CPU goal's daemon has no series measurement"
        );
    }
}
