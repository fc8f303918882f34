//! HTTP views over the store. Each handler takes a read lock, renders, and lets go.

mod error;
mod page;
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
    /// Thresholds for `/insights`.
    pub insights: crate::insights::InsightArgs,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/stats", get(stats::handler))
        .route("/healthz", get(healthz))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/style.css", get(page::style))
        .route("/history", get(page::history))
        .route("/insights", get(page::insights))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
