//! The connection slots (at most `max_connections` open) and what each connection is doing:
//! waiting for a request head, or answering. When every slot is taken, a new connection takes
//! the slot of the one that has waited longest for its request head (slowloris, or a keep-alive
//! client gone quiet) instead of waiting for it: a connection that is answering is never
//! evicted, and a waiting one has cost nothing to cut.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::body::{Body, Bytes, HttpBody};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One connection, as the slots, its stream and its requests see it.
pub struct ConnState {
    /// Since when it has waited for a request head (or for the TLS handshake); None while a
    /// request is being answered.
    waiting_since: Mutex<Waiting>,
    written: AtomicU64,
    evict: Notify,
}

struct Waiting {
    since: Option<Instant>,
    answering: usize,
}

impl ConnState {
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            waiting_since: Mutex::new(Waiting {
                since: Some(Instant::now()),
                answering: 0,
            }),
            written: AtomicU64::new(0),
            evict: Notify::new(),
        })
    }

    pub fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to the client so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting_since(&self) -> Option<Instant> {
        self.waiting().since
    }

    /// Resolves when the slots take this connection's slot for a newcomer.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// A request head has arrived: until its answer is done the connection cannot be evicted.
    /// The answer's body carries the returned guard.
    pub fn answering(self: &Arc<Self>, slots: &Arc<Slots>) -> Answering {
        let mut w = self.waiting();
        w.answering += 1;
        w.since = None;
        Answering {
            conn: self.clone(),
            slots: slots.clone(),
        }
    }
}

/// Held by an answer's body until it is sent or dropped.
pub struct Answering {
    conn: Arc<ConnState>,
    slots: Arc<Slots>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut w = self.conn.waiting();
        w.answering -= 1;
        if w.answering == 0 {
            w.since = Some(Instant::now());
            drop(w);
            self.slots.evictable.notify_waiters();
        }
    }
}

/// An answer's body that holds its [`Answering`] guard.
pub struct GuardedBody {
    inner: Body,
    _answering: Answering,
}

impl GuardedBody {
    pub fn wrap(inner: Body, answering: Answering) -> Body {
        Body::new(GuardedBody {
            inner,
            _answering: answering,
        })
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection slots.
pub struct Slots {
    free: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Told when a connection starts waiting for a request head, so it may be evicted.
    evictable: Notify,
}

/// A connection's slot: given back when dropped.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table().remove(&self.id);
    }
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Arc::new(Semaphore::new(max_connections)),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            evictable: Notify::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection: a free one, else the slot of the connection that has waited
    /// longest for a request head, else the first to come free or to start waiting.
    pub async fn admit(self: &Arc<Self>, conn: &Arc<ConnState>) -> Slot {
        let permit = loop {
            let became_evictable = self.evictable.notified();
            tokio::pin!(became_evictable);
            became_evictable.as_mut().enable();
            if let Ok(p) = self.free.clone().try_acquire_owned() {
                break p;
            }
            if self.evict_longest_waiting() {
                // Its task ends at once and gives the permit back.
                match self.free.clone().acquire_owned().await {
                    Ok(p) => break p,
                    Err(_) => unreachable!("the semaphore is never closed"),
                }
            }
            tokio::select! {
                p = self.free.clone().acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => unreachable!("the semaphore is never closed"),
                },
                _ = became_evictable => {}
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.table().insert(id, conn.clone());
        Slot {
            id,
            slots: self.clone(),
            _permit: permit,
        }
    }

    /// Tells the connection that has waited longest for its request head to close, and forgets
    /// it. False if every connection is answering.
    fn evict_longest_waiting(&self) -> bool {
        let mut table = self.table();
        let victim = table
            .iter()
            .filter_map(|(id, c)| Some((c.waiting_since()?, *id)))
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| table.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_full_house_evicts_the_longest_waiting_never_one_answering() {
        let slots = Slots::new(2);
        let (old, answering) = (ConnState::new(), ConnState::new());
        let _old_slot = slots.admit(&old).await;
        let _busy = answering.answering(&slots);
        let _answering_slot = slots.admit(&answering).await;

        let newcomer = ConnState::new();
        let admitting = tokio::spawn({
            let (slots, newcomer) = (slots.clone(), newcomer.clone());
            async move { slots.admit(&newcomer).await }
        });
        // The longest waiting (the only one waiting) is told to go; its slot comes back when
        // its task ends, here when its Slot is dropped.
        tokio::time::timeout(Duration::from_secs(5), old.evicted())
            .await
            .expect("evicted");
        drop(_old_slot);
        let slot = tokio::time::timeout(Duration::from_secs(5), admitting)
            .await
            .expect("admitted")
            .unwrap();
        assert!(slots.table().contains_key(&slot.id));
        assert_eq!(slots.table().len(), 2, "the answering one and the newcomer");
    }

    #[tokio::test]
    async fn when_all_are_answering_a_newcomer_waits_for_one_to_finish_its_answer() {
        let slots = Slots::new(1);
        let busy = ConnState::new();
        let answer = busy.answering(&slots);
        let _slot = slots.admit(&busy).await;
        let admitting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.admit(&ConnState::new()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!admitting.is_finished(), "nobody to evict yet");
        // The answer is sent: the connection waits for its next request head, and may go.
        drop(answer);
        tokio::time::timeout(Duration::from_secs(5), busy.evicted())
            .await
            .expect("evicted once waiting");
        drop(_slot);
        tokio::time::timeout(Duration::from_secs(5), admitting)
            .await
            .expect("admitted")
            .unwrap();
    }
}
