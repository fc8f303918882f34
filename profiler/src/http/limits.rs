//! What one answer may cost: at most `max_concurrent_requests` answers rendered or being sent at
//! once, none larger than `max_response_bytes`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use futures_util::stream;
use serde_json::json;
use tokio::sync::Semaphore;

/// The request line and headers, buffered whole by hyper; a larger head gets 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Every endpoint is a GET: a body is never needed.
pub const MAX_REQUEST_BODY: usize = 1024;

/// Bounds on what one request may cost.
#[derive(Clone, Debug)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_response_bytes: usize,
}

/// Answers go out in pieces of this size, so a slow reader is fed as it reads.
const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct ResponseLimits {
    max_bytes: usize,
    /// Shared by every route: the cap is on the daemon's work, whichever endpoint it is.
    in_flight: Arc<Semaphore>,
}

impl ResponseLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_bytes: limits.max_response_bytes,
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        }
    }
}

/// At most `max_concurrent_requests` answers are rendered or being sent at once, and none is
/// larger than `max_response_bytes`, so memory for answers stays below their product. The
/// permit travels with the body: a /stats answer can be megabytes, and a hundred clients
/// reading theirs slowly would otherwise hold a hundred of them.
pub async fn limit_response(
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
