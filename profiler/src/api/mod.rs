//! HTTP views over the store. Each handler takes a read lock, renders, and lets go.
//!
//! Every request passes, outermost first: a deadline, a cap on requests in flight, basic auth
//! (when the web config names users), a request body limit, and a response size limit.

mod error;
mod stats;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{host::HostInfo, store::Store, webconfig};

pub struct AppState {
    pub store: Arc<RwLock<Store>>,
    pub host: HostInfo,
    pub interval: Duration,
}

/// Bounds on what one request may cost.
#[derive(Clone, Debug)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_response_bytes: usize,
}

/// Every endpoint is a GET: a body is never needed.
const MAX_REQUEST_BODY: usize = 1024;

pub fn router(state: Arc<AppState>, limits: &Limits, web: webconfig::Shared) -> Router {
    Router::new()
        .route("/stats", get(stats::handler))
        .route("/healthz", get(healthz))
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            limits.max_response_bytes,
            limit_response,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .layer(middleware::from_fn_with_state(web, authenticate))
        // Global, not per route: the cap is on the daemon's work, whichever endpoint it is.
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn authenticate(State(web): State<webconfig::Shared>, req: Request, next: Next) -> Response {
    let config = web.get();
    if config.requires_auth() {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        // bcrypt takes tens of milliseconds by design: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || config.authorized(header.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"syscall-profiler\"")],
                Json(json!({"error": "authentication required"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Refuses to send an answer larger than the limit; the client can narrow its query.
async fn limit_response(State(max): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = next.run(req).await.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!(
                    "the answer exceeds max_response_bytes ({max} bytes): narrow the query with \
                     top, pid, comm or syscall"
                ),
            })),
        )
            .into_response(),
    }
}
