//! The routes, and what every request passes, outermost first: a deadline, basic auth (when the
//! web config names users; auth.rs), a request body limit, and a cap on answers in flight
//! together with their size (limits.rs).

use std::sync::Arc;

use axum::{http::StatusCode, middleware, routing::get, Router};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use super::{
    auth::{authenticate, Shared},
    limits::{limit_response, Limits, ResponseLimits},
};
use crate::views::{page, scrape, stats, Context};

/// Every endpoint is a GET: a body is never needed.
const MAX_REQUEST_BODY: usize = 1024;

pub fn router(ctx: Arc<Context>, limits: &Limits, web: Shared) -> Router {
    Router::new()
        .route("/stats", get(stats::handler))
        .route("/metrics", get(scrape::handler))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/style.css", get(page::style))
        .route("/history", get(page::history))
        .route("/insights", get(page::insights))
        .with_state(ctx)
        .layer(middleware::from_fn_with_state(
            ResponseLimits::new(limits),
            limit_response,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .layer(middleware::from_fn_with_state(web, authenticate))
        // After the authentication layer, so outside it: liveness probes (kubelet's) and load
        // balancers carry no credentials, and "ok" tells nothing.
        .route("/healthz", get(healthz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
}

async fn healthz() -> &'static str {
    "ok\n"
}
