//! HTTP views over the store. Each handler takes a read lock, renders, and lets go.
//!
//! Every request passes, outermost first: a deadline, basic auth (when the web config names
//! users), a request body limit, and a cap on answers in flight together with their size.

mod error;
mod metrics;
mod page;
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
use futures_util::stream;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{host::HostInfo, store::Store, webconfig};

pub struct AppState {
    pub store: Arc<RwLock<Store>>,
    pub host: HostInfo,
    pub interval: Duration,
    /// /metrics' own cost, reported by the next scrape.
    pub scrape: metrics::ScrapeStats,
    /// Thresholds for `/insights`.
    pub insights: crate::insights::InsightArgs,
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

/// Wall-clock time as Unix milliseconds, as every JSON view reports it.
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn router(state: Arc<AppState>, limits: &Limits, web: webconfig::Shared) -> Router {
    Router::new()
        .route("/stats", get(stats::handler))
        .route("/metrics", get(metrics::handler))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/style.css", get(page::style))
        .route("/history", get(page::history))
        .route("/insights", get(page::insights))
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            ResponseLimits {
                max_bytes: limits.max_response_bytes,
                in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            },
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

/// Answers go out in pieces of this size, so a slow reader is fed as it reads.
const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
struct ResponseLimits {
    max_bytes: usize,
    /// Shared by every route: the cap is on the daemon's work, whichever endpoint it is.
    in_flight: Arc<Semaphore>,
}

/// At most `max_concurrent_requests` answers are rendered or being sent at once, and none is
/// larger than `max_response_bytes`, so memory for answers stays below their product. The
/// permit travels with the body: a /stats answer can be megabytes, and a hundred clients
/// reading theirs slowly would otherwise hold a hundred of them.
async fn limit_response(
    State(limits): State<ResponseLimits>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(permit) = limits.in_flight.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let max = limits.max_bytes;
    let (parts, body) = next.run(req).await.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => {
            // The permit lives in the stream, which hyper drops once the last chunk is written
            // (or the client goes away).
            let chunks: Vec<_> = (0..bytes.len())
                .step_by(CHUNK)
                .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
                .collect();
            let body = stream::StreamExt::map(stream::iter(chunks), move |chunk| {
                let _held_until_sent = &permit;
                Ok::<_, std::convert::Infallible>(chunk)
            });
            Response::from_parts(parts, Body::from_stream(body))
        }
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
