//! HTTP views over the store. Each handler takes a read lock, renders, and lets go.

mod error;
mod metrics;
mod stats;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{routing::get, Router};

use crate::{host::HostInfo, store::Store};

pub struct AppState {
    pub store: Arc<RwLock<Store>>,
    pub host: HostInfo,
    pub interval: Duration,
    /// /metrics' own cost, reported by the next scrape.
    pub scrape: metrics::ScrapeStats,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/stats", get(stats::handler))
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
