//! What one request may cost: a head of at most 16 KiB, a body of at most 1 KiB (no endpoint
//! takes one), at most `max_concurrent_requests` answers rendered at once, none larger than
//! `max_response_bytes`, and rendered answers not yet sent holding at most
//! `max_concurrent_requests × max_response_bytes` between them.

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
    /// Shared by every route that renders: the cap is on the daemon's work, whichever
    /// endpoint it is.
    rendering: Arc<Semaphore>,
    /// KiB of rendered answers not yet sent. A client that does not read holds its answer's
    /// share (until the write deadline closes its connection), not a rendering slot.
    unsent_kib: Arc<Semaphore>,
}

impl ResponseLimits {
    pub fn new(limits: &Limits) -> Self {
        let budget = limits
            .max_concurrent_requests
            .saturating_mul(kib(limits.max_response_bytes) as usize)
            .min(Semaphore::MAX_PERMITS);
        Self {
            max_bytes: limits.max_response_bytes,
            rendering: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            unsent_kib: Arc::new(Semaphore::new(budget)),
        }
    }
}

/// Bytes in KiB, rounded up.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// At most `max_concurrent_requests` answers are rendered at once, none larger than
/// `max_response_bytes`; a rendered answer then holds its size of the unsent budget until its
/// last byte is handed to the connection (or the connection dies). Memory for answers stays
/// below twice `max_concurrent_requests × max_response_bytes`: the renders, and the budget.
pub async fn limit_response(
    State(limits): State<ResponseLimits>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(rendering) = limits.rendering.clone().acquire_owned().await else {
        return closed();
    };
    let max = limits.max_bytes;
    // Rendering is CPU work of up to tens of milliseconds per answer. On the async workers it
    // would hold up every other connection, /healthz and the accept loop included (tokio polls
    // for I/O and timers only between tasks), so it runs on a blocking thread: at most
    // `max_concurrent_requests` of them, as many as there are render slots.
    let runtime = tokio::runtime::Handle::current();
    let rendered = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let (parts, body) = next.run(req).await.into_parts();
            let bytes = axum::body::to_bytes(body, max).await;
            (parts, bytes, rendering)
        })
    })
    .await;
    let Ok((parts, bytes, rendering)) = rendered else {
        // A view panicked: a bug, which the log shows.
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "rendering the answer failed (a bug: see the daemon's log)"})),
        )
            .into_response();
    };
    let Ok(bytes) = bytes else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!(
                    "the answer exceeds max_response_bytes ({max} bytes): narrow the query with \
                     top, pid, comm or syscall"
                ),
            })),
        )
            .into_response();
    };
    // Waits, still rendering, while unsent answers fill the budget: the deadline bounds it.
    let Ok(unsent) = limits
        .unsent_kib
        .clone()
        .acquire_many_owned(kib(bytes.len()))
        .await
    else {
        return closed();
    };
    drop(rendering);
    let chunks: Vec<_> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
        .collect();
    // The share lives in the stream, which hyper drops once the last chunk is taken (or the
    // client goes away).
    let body = stream::StreamExt::map(stream::iter(chunks), move |chunk| {
        let _held_until_sent = &unsent;
        Ok::<_, std::convert::Infallible>(chunk)
    });
    Response::from_parts(parts, Body::from_stream(body))
}

fn closed() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "the daemon is stopping"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsent_budget_is_the_product_in_kib() {
        let l = ResponseLimits::new(&Limits {
            request_timeout: Duration::from_secs(1),
            max_concurrent_requests: 4,
            max_response_bytes: 64 << 20,
        });
        assert_eq!(l.unsent_kib.available_permits(), 4 * 65536);
        assert_eq!(l.rendering.available_permits(), 4);
        assert_eq!((kib(0), kib(1), kib(1024), kib(1025)), (0, 1, 1, 2));
    }
}
