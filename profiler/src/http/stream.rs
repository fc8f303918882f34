//! What every connection's bytes pass through on their way to and from hyper: a deadline on
//! write progress (hyper has none: a client that stops reading would hold its answer, and the
//! memory and connection slot behind it, forever), a count of bytes written (the stop watches
//! it), and a JSON body for the errors hyper answers by itself before any routing.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::{conn::ConnState, errors};

pub struct Guarded<S> {
    inner: S,
    /// The longest a write may make no progress before the connection is given up.
    stall_limit: Duration,
    /// Armed while a write waits on a full socket; disarmed by any progress.
    stall: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
    /// Bytes still to send in place of what hyper wrote: an error answer given its body.
    replacement: Vec<u8>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, stall_limit: Duration, state: Arc<ConnState>) -> Self {
        Guarded {
            inner,
            stall_limit,
            stall: None,
            state,
            replacement: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Turns a write that waits into an error once it has waited `stall_limit`; any progress
    /// starts the clock again.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall = None;
            return polled;
        }
        let limit = self.stall_limit;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}: closing its connection"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.state.wrote(n);
        }
        self.deadline(cx, polled)
    }

    /// Sends what is left of the replacement answer.
    fn drain_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            let pending = std::mem::take(&mut self.replacement);
            let polled = self.write_inner(cx, &pending);
            self.replacement = pending;
            match polled {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.replacement.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain_replacement(cx))?;
        if let Some(answer) = errors::with_json_body(buf) {
            // hyper's own refusal, which has no body: ours goes out instead, and hyper is
            // told its bytes went.
            self.replacement = answer;
            let _ = self.drain_replacement(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        self.write_inner(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.deadline(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_longer_than_the_limit_fails() {
        // A pipe with a 64-byte buffer whose far end is never read.
        let (near, _far) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut w = Guarded::new(near, Duration::from_secs(3), state.clone());
        w.write_all(&[b'x'; 64]).await.unwrap();
        assert_eq!(state.written(), 64);
        let t0 = tokio::time::Instant::now();
        let err = w.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_clock() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut w = Guarded::new(near, Duration::from_secs(3), ConnState::new());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            // 16 bytes every 2 s: slow, but never 3 s without progress.
            while total < 256 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        w.write_all(&[b'y'; 256]).await.unwrap();
        assert!(reader.await.unwrap() >= 256 - 64);
    }

    #[tokio::test]
    async fn hypers_bodiless_refusal_goes_out_with_a_json_body() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut w = Guarded::new(near, Duration::from_secs(3), ConnState::new());
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(w.write(head).await.unwrap(), head.len());
        w.shutdown().await.unwrap();
        let mut got = String::new();
        far.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("content-type: application/json\r\n"), "{got}");
        let body = got.split("\r\n\r\n").nth(1).unwrap();
        let len: usize = got
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("malformed"), "{v}");
    }
}
