//! What one request may cost: a head of at most 16 KiB, a body of at most 1 KiB (no endpoint
//! takes one), at most `max_concurrent_requests` answers rendered at once, none larger than
//! `max_response_bytes`, and rendered answers not yet sent holding at most
//! `max_concurrent_requests × max_response_bytes` between them.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::cache::{Answer, AnswerCache, Lookup};
use crate::views::{answer_key::AnswerKey, Context};

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
    /// Answers kept until the store changes (cache.rs), and the views whose store they read.
    answers: Arc<AnswerCache<AnswerKey, u64>>,
    ctx: Arc<Context>,
}

impl ResponseLimits {
    pub fn new(limits: &Limits, ctx: Arc<Context>) -> Self {
        let budget = limits
            .max_concurrent_requests
            .saturating_mul(kib(limits.max_response_bytes) as usize)
            .min(Semaphore::MAX_PERMITS);
        Self {
            max_bytes: limits.max_response_bytes,
            rendering: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            unsent_kib: Arc::new(Semaphore::new(budget)),
            answers: Arc::new(AnswerCache::new(limits.max_response_bytes)),
            ctx,
        }
    }

    /// The store's version: an atomic the drain moves when it takes the write lock, read
    /// without waiting for the lock.
    fn store_version(&self) -> u64 {
        self.ctx.store.version()
    }
}

/// Bytes in KiB, rounded up.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// At most `max_concurrent_requests` answers are rendered at once, none larger than
/// `max_response_bytes`; a rendered answer then holds its size of the unsent budget until its
/// last byte is handed to the connection (or the connection dies). Memory for answers stays
/// below twice `max_concurrent_requests × max_response_bytes`, the renders and the budget,
/// plus the kept answers' `max_response_bytes` (cache.rs).
///
/// The answers of /stats, /insights, /history and /metrics are kept until the store changes
/// (views/answer_key.rs says which requests share one): a request whose answer is kept takes
/// no render slot, and one whose answer is being rendered for another request waits for it.
pub async fn limit_response(
    State(limits): State<ResponseLimits>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let key = AnswerKey::of(req.uri().path(), req.uri().query(), req.headers());
    let Some(key) = key else {
        return match render(&limits, req, next).await {
            Ok((answer, share)) => send(&answer, share),
            Err(refused) => refused,
        };
    };
    let flight = match limits.answers.lookup(&key, limits.store_version()) {
        Lookup::Hit(answer) => {
            key.answered_from_cache(&limits.ctx, started.elapsed().as_secs_f64());
            return send_shared(&limits, &answer).await;
        }
        Lookup::Join(flight) => flight,
    };
    // Whether this request rendered (its handler then accounted for it), and its share of
    // the unsent budget, taken before its render slot was let go.
    let rendered_here = AtomicBool::new(false);
    let share = Mutex::new(None);
    let (limits_, key_, flight_) = (&limits, &key, &flight);
    let (rendered_here_, share_) = (&rendered_here, &share);
    let answer = flight
        .get_or_init(|| async move {
            rendered_here_.store(true, Ordering::Relaxed);
            let answer = match render(limits_, req, next).await {
                Ok((answer, unsent)) => {
                    *share_.lock().unwrap_or_else(|e| e.into_inner()) = Some(unsent);
                    answer
                }
                Err(refused) => Answer::of(refused).await,
            };
            let answer = Arc::new(answer);
            limits_.answers.settle(key_, flight_, &answer);
            answer
        })
        .await
        .clone();
    if !rendered_here.load(Ordering::Relaxed) {
        key.answered_from_cache(&limits.ctx, started.elapsed().as_secs_f64());
    }
    let share = share.into_inner().unwrap_or_else(|e| e.into_inner());
    match share {
        Some(unsent) => send(&answer, unsent),
        None => send_shared(&limits, &answer).await,
    }
}

/// Renders the answer to `req` in a render slot, and takes its share of the unsent budget
/// before letting the slot go; Err: a refusal.
async fn render(
    limits: &ResponseLimits,
    req: Request,
    next: Next,
) -> Result<(Answer, OwnedSemaphorePermit), Response> {
    let Ok(rendering) = limits.rendering.clone().acquire_owned().await else {
        return Err(closed());
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
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "rendering the answer failed (a bug: see the daemon's log)"})),
        )
            .into_response());
    };
    let Ok(body) = bytes else {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!(
                    "the answer exceeds max_response_bytes ({max} bytes): narrow the query with \
                     top, pid, comm or syscall"
                ),
            })),
        )
            .into_response());
    };
    // Waits, still rendering, while unsent answers fill the budget: the deadline bounds it.
    let Ok(unsent) = limits
        .unsent_kib
        .clone()
        .acquire_many_owned(kib(body.len()))
        .await
    else {
        return Err(closed());
    };
    drop(rendering);
    let answer = Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    };
    Ok((answer, unsent))
}

/// Sends an answer that another request rendered (or one kept): it takes its share of the
/// unsent budget like any other, though its bytes are shared, so that the budget still bounds
/// what clients that do not read can hold.
async fn send_shared(limits: &ResponseLimits, answer: &Answer) -> Response {
    let Ok(unsent) = limits
        .unsent_kib
        .clone()
        .acquire_many_owned(kib(answer.body.len()))
        .await
    else {
        return closed();
    };
    send(answer, unsent)
}

/// The response of `answer`, in pieces, holding `unsent` until its last byte is taken.
fn send(answer: &Answer, unsent: OwnedSemaphorePermit) -> Response {
    let bytes = &answer.body;
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
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    response
}

impl Answer {
    /// A refusal made whole, to hand to the requests waiting for the render it replaces.
    async fn of(refused: Response) -> Answer {
        let (parts, body) = refused.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            // A refusal's body is a short JSON object, already in memory.
            body: axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default(),
        }
    }
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

    use crate::{
        config::insights::InsightArgs,
        host::info::HostInfo,
        store::{shared::SharedStore, Store},
        views::metrics::ScrapeStats,
    };

    fn ctx() -> Arc<Context> {
        Arc::new(Context {
            store: Arc::new(SharedStore::new(Store::for_test(
                Duration::from_secs(60),
                10,
            ))),
            host: HostInfo::read(),
            interval: Duration::from_secs(1),
            scrape: ScrapeStats::default(),
            insights: InsightArgs::default(),
        })
    }

    #[test]
    fn the_unsent_budget_is_the_product_in_kib() {
        let l = ResponseLimits::new(
            &Limits {
                request_timeout: Duration::from_secs(1),
                max_concurrent_requests: 4,
                max_response_bytes: 64 << 20,
            },
            ctx(),
        );
        assert_eq!(l.unsent_kib.available_permits(), 4 * 65536);
        assert_eq!(l.rendering.available_permits(), 4);
        assert_eq!((kib(0), kib(1), kib(1024), kib(1025)), (0, 1, 1, 2));
    }
}
