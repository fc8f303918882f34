//! The thresholds of `/insights`, as the views read them. They are settings like any other
//! (table.rs declares them: flag, environment variable, file key); this is their parsers and the
//! struct `Settings::insights` hands to the views.

use std::time::Duration;

use super::parse::{parse_duration, quote};

/// The window latency changes are judged over, at least one history slice long and at most half
/// the history, so two windows fit in it (the store keeps 300 slices of 1 s; a test in
/// views/insights.rs holds these bounds to it).
pub const WINDOW_MIN: Duration = Duration::from_secs(1);
pub const WINDOW_MAX: Duration = Duration::from_secs(150);

/// What makes a finding (the `insight_*` settings; `Default` is their declared defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct InsightArgs {
    pub insight_failures_per_sec: f64,
    pub insight_blocked_share: f64,
    pub insight_kernel_share: f64,
    pub insight_runq_share: f64,
    pub insight_p99_ratio: f64,
    pub insight_wait_share: f64,
    pub insight_window: Duration,
    pub insight_min_calls: u64,
}

pub fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{} is not a positive number", quote(s))),
    }
}

pub fn above_one(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 1.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{} is not a number above 1", quote(s))),
    }
}

pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(WINDOW_MIN..=WINDOW_MAX).contains(&d) {
        return Err(format!(
            "{} is out of range: from {}s to {}s",
            quote(s),
            WINDOW_MIN.as_secs(),
            WINDOW_MAX.as_secs()
        ));
    }
    Ok(d)
}
