//! The routes, and what every request passes, outermost first: the JSON body for refusals
//! (errors.rs), a deadline, basic auth (when the web config names users; auth.rs), a request
//! body limit, and, for the answers that are rendered, the caps on rendering and on unsent
//! answers, and the answers kept until the store changes (limits.rs, cache.rs). /healthz and the static assets cost nothing and take no render slot;
//! /healthz also needs no credentials.

use std::sync::Arc;

use axum::{http::StatusCode, middleware, routing::get, Router};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use super::{
    auth::{authenticate, Shared},
    errors::{json_error_bodies, Refusals},
    limits::{limit_response, Limits, ResponseLimits, MAX_REQUEST_BODY},
};
use crate::views::{page, scrape, stats, Context};

/// What a 404 lists.
const ENDPOINTS: &[&str] = &[
    "/stats",
    "/metrics",
    "/history",
    "/insights",
    "/healthz",
    "/",
];

pub fn router(ctx: Arc<Context>, limits: &Limits, web: Shared) -> Router {
    let rendered = Router::new()
        .route("/stats", get(stats::handler))
        .route("/metrics", get(scrape::handler))
        .route("/history", get(page::history))
        .route("/insights", get(page::insights))
        .with_state(ctx.clone())
        .layer(middleware::from_fn_with_state(
            ResponseLimits::new(limits, ctx),
            limit_response,
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/style.css", get(page::style))
        .merge(rendered)
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .layer(middleware::from_fn_with_state(web, authenticate))
        // After the authentication layer, so outside it: liveness probes (kubelet's) and load
        // balancers carry no credentials, and "ok" tells nothing.
        .route("/healthz", get(healthz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            Refusals {
                endpoints: ENDPOINTS,
                request_timeout: limits.request_timeout,
            },
            json_error_bodies,
        ))
}

async fn healthz() -> &'static str {
    "ok\n"
}
