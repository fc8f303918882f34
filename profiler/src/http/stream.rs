//! What every connection's bytes pass through on their way to hyper: hyper answers a request
//! it cannot parse by itself, before any routing, with no body and no hook to give it one; its
//! answer is given the JSON error body here, on its way to the socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::errors;

pub struct Guarded<S> {
    inner: S,
    /// Bytes still to send in place of what hyper wrote: an error answer given its body.
    replacement: Vec<u8>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Guarded {
            inner,
            replacement: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Sends what is left of the replacement answer.
    fn drain_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.replacement) {
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn hypers_bodiless_refusal_goes_out_with_a_json_body() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut w = Guarded::new(near);
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
