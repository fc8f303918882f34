//! The thresholds of `/insights`: flags of `serve` only (not in the config file or the
//! environment).

use std::time::Duration;

use clap::Args;

use super::parse::parse_duration;

/// The window latency changes are judged over, at least one history slice long and at most half
/// the history, so two windows fit in it (the store keeps 300 slices of 1 s; a test in
/// views/insights.rs holds these bounds to it).
pub const WINDOW_MIN: Duration = Duration::from_secs(1);
pub const WINDOW_MAX: Duration = Duration::from_secs(150);

#[derive(Args, Clone, Debug)]
pub struct InsightArgs {
    /// Insights: report a process failing one syscall at least this many times per second.
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    pub insight_failures_per_sec: f64,

    /// Insights: report a process blocked in one syscall at least this share of its wall time
    /// (0.5 = 50%; threads add up, so more than 1 is possible).
    #[arg(long, default_value_t = 0.5, value_parser = positive)]
    pub insight_blocked_share: f64,

    /// Insights: report a syscall whose p99 over the last window is at least this many times
    /// its p99 over the window before.
    #[arg(long, default_value_t = 10.0, value_parser = above_one)]
    pub insight_p99_ratio: f64,

    /// Insights: the window latency changes are judged over (1s to 150s: two windows must fit in
    /// the daemon's 5-minute history).
    #[arg(long, default_value = "1m", value_parser = parse_window)]
    pub insight_window: Duration,

    /// Insights: calls a syscall needs in each window before its p99s are compared.
    #[arg(long, default_value_t = 100)]
    pub insight_min_calls: u64,
}

impl Default for InsightArgs {
    fn default() -> Self {
        Self {
            insight_failures_per_sec: 100.0,
            insight_blocked_share: 0.5,
            insight_p99_ratio: 10.0,
            insight_window: Duration::from_secs(60),
            insight_min_calls: 100,
        }
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

fn above_one(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 1.0 && x.is_finite() => Ok(x),
        _ => Err(format!("'{s}' is not a number above 1")),
    }
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(WINDOW_MIN..=WINDOW_MAX).contains(&d) {
        return Err(format!(
            "'{s}' is out of range: from {}s to {}s",
            WINDOW_MIN.as_secs(),
            WINDOW_MAX.as_secs()
        ));
    }
    Ok(d)
}
