//! What the daemon answers, read from the store: `/stats` (stats.rs; its query in query.rs, what it shows in select.rs),
//! `/metrics` (scrape.rs answers, metrics.rs renders families.rs's table), the dashboard and `/history` (page.rs),
//! `/insights` (insights.rs). Each handler takes a read lock, renders, and lets go; a bad query
//! is a 400 naming the parameter (error.rs). An answer depends on the store and the request
//! alone ("now" is the last drain: [`as_of`]), so the HTTP layer keeps it until the next drain
//! (answer_key.rs says which requests share one).

pub mod answer_key;
pub mod buckets;
pub mod error;
pub mod exposition;
pub mod failing_args;
pub mod families;
pub mod insights;
pub mod metrics;
pub mod page;
pub mod query;
pub mod scrape;
pub mod select;
pub mod snapshot;
pub mod stats;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use metrics::ScrapeStats;

use crate::{
    config::insights::InsightArgs,
    host::info::HostInfo,
    store::{shared::SharedStore, Store},
};

/// What every view reads: the store, and what the answers quote besides it.
pub struct Context {
    pub store: Arc<SharedStore>,
    pub host: HostInfo,
    pub interval: Duration,
    /// /metrics' own cost, reported by the next scrape.
    pub scrape: ScrapeStats,
    /// Thresholds for `/insights`.
    pub insights: InsightArgs,
}

/// The instant the store's figures are as of: its last drain (its start before the first).
/// Views say "now" with it, so an answer depends on the store alone and is the same bytes
/// until the next drain.
pub fn as_of(store: &Store) -> (Instant, SystemTime) {
    store.last_drain().unwrap_or(store.started())
}

/// Wall-clock time as Unix milliseconds, as every JSON view reports it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
