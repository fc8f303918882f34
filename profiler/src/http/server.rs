//! The HTTP(S) accept loop: a bounded number of connections, deadlines on the TLS handshake and
//! on request headers (so idle or trickling clients cannot hold connections), and a graceful
//! stop that lets requests in flight finish.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::{body::Incoming, Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::{auth::Shared, limits::MAX_REQUEST_HEAD, stream::Guarded};

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
    pub header_timeout: Duration,
}

/// Longest wait for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the stop signal, how long requests in flight get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: Shared,
    tls: bool,
    opts: Options,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
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
        let (app, watcher) = (app.clone(), graceful.watcher());
        let header_timeout = opts.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, peer, acceptor, app, watcher, header_timeout).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still running {DRAIN_TIMEOUT:?} after the stop signal; closing them");
    }
}

/// Serves one connection (after the TLS handshake, with `acceptor`) until it closes or the
/// server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    watcher: Watcher,
    header_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Query strings are short; this caps the buffered request head.
        .max_buf_size(MAX_REQUEST_HEAD);
    let result = match acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
            watcher
                .watch(builder.serve_connection(TokioIo::new(Guarded::new(tls)), service))
                .await
        }
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(Guarded::new(stream)), service))
                .await
        }
    };
    if let Err(e) = result {
        debug!("connection from {peer}: {e}");
    }
}
