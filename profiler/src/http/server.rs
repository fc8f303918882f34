//! The HTTP(S) accept loop: a bounded number of connections (conn.rs: a newcomer at the bound
//! takes the slot of the connection that has waited longest for a request head), deadlines on
//! the TLS handshake, on request heads and on write progress (stream.rs: so idle, trickling or
//! non-reading clients cannot hold connections or answers), and a graceful stop that lets
//! requests in flight finish but not those that have stalled.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::{body::Incoming, Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::{
    auth::Shared,
    conn::{ConnState, GuardedBody, Slots},
    limits::MAX_REQUEST_HEAD,
    stream::Guarded,
};

/// Why the daemon cannot serve HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("configuring the listener")]
    Configure(#[source] io::Error),
    #[error("reading the listen address")]
    LocalAddr(#[source] io::Error),
}

/// Binds `addr` for [`serve`]; returns the address bound (port 0 picks one).
pub fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::Listen { addr, source })?;
    listener.set_nonblocking(true).map_err(Error::Configure)?;
    let bound = listener.local_addr().map_err(Error::LocalAddr)?;
    Ok((listener, bound))
}

pub struct Options {
    pub max_connections: usize,
    /// The deadline for a request head, and for any write to make progress.
    pub request_timeout: Duration,
}

/// Longest wait for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the stop signal, how long requests in flight get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the stop signal, a connection that has written nothing for this long is closed: its
/// client is not reading, or its request still waits for a slot.
const STOP_STALL: Duration = Duration::from_secs(1);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: Shared,
    tls: bool,
    opts: Options,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Slots::new(opts.max_connections);
    let (stopping, stop_seen) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of fds or the like: back off instead of spinning.
                    warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let conn = ConnState::new();
        let slot = tokio::select! {
            slot = slots.admit(&conn) => slot,
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // The config at accept time: a reloaded certificate applies to new connections.
        let acceptor = if tls {
            match &web.get().config.tls {
                Some(config) => Some(TlsAcceptor::from(config.clone())),
                None => {
                    warn!("TLS configuration vanished; refusing {peer}");
                    continue;
                }
            }
        } else {
            None
        };
        let serving = Serving {
            app: app.clone(),
            watcher: graceful.watcher(),
            conn: conn.clone(),
            slots: slots.clone(),
            request_timeout: opts.request_timeout,
        };
        let stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = serving.run(stream, peer, acceptor) => {}
                () = conn.evicted() => {
                    debug!("closed {peer}: every connection slot was taken and it had waited \
                            longest for a request head");
                }
                () = stalled_after_stop(stop_seen, &conn) => {
                    debug!("closed {peer} at the stop: its answer made no progress");
                }
            }
        });
    }
    let _ = stopping.send(true);
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still running {DRAIN_TIMEOUT:?} after the stop signal; closing them");
    }
}

/// Resolves once the server is stopping and `conn` has written nothing for [`STOP_STALL`].
async fn stalled_after_stop(mut stopping: watch::Receiver<bool>, conn: &ConnState) {
    // An error: the sender is gone, so the server has stopped too.
    let _ = stopping.wait_for(|stopping| *stopping).await;
    let poll = STOP_STALL / 10;
    let (mut last, mut still) = (conn.written(), Duration::ZERO);
    while still < STOP_STALL {
        tokio::time::sleep(poll).await;
        let now = conn.written();
        if now == last {
            still += poll;
        } else {
            (last, still) = (now, Duration::ZERO);
        }
    }
}

/// What serving one connection needs.
struct Serving {
    app: Router,
    watcher: Watcher,
    conn: Arc<ConnState>,
    slots: Arc<Slots>,
    request_timeout: Duration,
}

impl Serving {
    /// Serves one connection (after the TLS handshake, with `acceptor`) until it closes or the
    /// server stops.
    async fn run(self, stream: TcpStream, peer: SocketAddr, acceptor: Option<TlsAcceptor>) {
        let (app, conn, slots) = (self.app, self.conn.clone(), self.slots);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            // Until its answer is sent, this connection is not evicted.
            let answering = conn.answering(&slots);
            let answer = app.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| GuardedBody::wrap(body, answering)))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.request_timeout)
            .max_buf_size(MAX_REQUEST_HEAD);
        let result = match acceptor {
            Some(acceptor) => {
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            debug!("TLS handshake with {peer}: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                let io = TokioIo::new(Guarded::new(tls, self.request_timeout, self.conn));
                self.watcher
                    .watch(builder.serve_connection(io, service))
                    .await
            }
            None => {
                let io = TokioIo::new(Guarded::new(stream, self.request_timeout, self.conn));
                self.watcher
                    .watch(builder.serve_connection(io, service))
                    .await
            }
        };
        if let Err(e) = result {
            debug!("connection from {peer}: {e}");
        }
    }
}
