//! Raw HTTP over TCP, for the tests that send what no client library would: garbage, requests
//! whose answers are never read, heads trickled a byte at a time.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

/// An answer as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (the first of that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// `http://127.0.0.1:PORT` → `127.0.0.1:PORT`.
pub fn addr_of(base: &str) -> &str {
    base.trim_start_matches("http://")
        .trim_start_matches("https://")
}

/// Splits the first answer in `bytes` into status, head and body (the body as far as
/// Content-Length says, or all that follows; chunked bodies are decoded). None if `bytes`
/// holds no complete head.
pub fn parse_response(bytes: &[u8]) -> Option<RawResponse> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &bytes[end + 4..];
    let mut r = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    r.body = match (r.header("content-length"), r.header("transfer-encoding")) {
        (Some(n), _) => rest[..n.parse::<usize>().ok()?.min(rest.len())].to_vec(),
        (None, Some(te)) if te.eq_ignore_ascii_case("chunked") => dechunk(rest),
        _ => rest.to_vec(),
    };
    Some(r)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|&s| s > 0) else {
            break;
        };
        let data = &rest[eol + 2..];
        body.extend_from_slice(&data[..size.min(data.len())]);
        rest = data.get(size + 2..).unwrap_or_default();
    }
    body
}

/// Whether `bytes` hold a whole answer: its head, and as much body as its framing says (none
/// for an answer to HEAD). An answer framed by the close is whole only at the close.
fn whole_answer(bytes: &[u8], to_head: bool) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let Some(r) = parse_response(bytes) else {
        return false;
    };
    let rest = &bytes[end + 4..];
    match (r.header("content-length"), r.header("transfer-encoding")) {
        _ if to_head => true,
        (Some(n), _) => n.parse::<usize>().is_ok_and(|n| rest.len() >= n),
        (None, Some(_)) => rest.starts_with(b"0\r\n\r\n") || rest.ends_with(b"\r\n0\r\n\r\n"),
        (None, None) => false,
    }
}

/// Whether a server must answer `request`: it holds a whole request head (empty lines before
/// one are skipped). HTTP/2's preface is no HTTP/1 request.
pub fn expects_answer(request: &[u8]) -> bool {
    let start = request
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(request.len());
    let rest = &request[start..];
    rest.windows(4).any(|w| w == b"\r\n\r\n") && !rest.starts_with(b"PRI * HTTP/2.0")
}

/// Sends `request` on a fresh connection and reads the first answer. `Ok(None)`: the server
/// closed without answering. Errors if the server neither answers nor closes within `timeout`
/// (a hang). A request that expects no answer is followed by a half-close, so the server sees
/// its end; one that does is not (hyper drops the answer to a request whose client
/// half-closed).
pub fn exchange(addr: &str, request: &[u8], timeout: Duration) -> io::Result<Option<RawResponse>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    // The server may answer (and close) before reading all of a request it refuses: what it
    // answered is still there to read.
    let _ = conn.write_all(request);
    if !expects_answer(request) {
        let _ = conn.shutdown(Shutdown::Write);
    }
    let to_head = request.starts_with(b"HEAD ");
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !whole_answer(&got, to_head) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // Closed with part of our request unread: the kernel resets instead of closing.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no end of answer"));
        }
    }
    Ok(parse_response(&got))
}

/// A connection whose receive buffer is as small as the kernel allows (the bench's).
pub use xtask::bench::hostile::small_window_connection;

/// A field of /proc/PID/status, as a number (`Threads`, …).
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// How many sockets `pid` has open.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert_eq!(r.header("TRANSFER-ENCODING"), Some("chunked"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(expects_answer(b"\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!expects_answer(b"\r\n\r\n"));
        assert!(!expects_answer(b"GET / HTTP/1.1\r\n"));
        assert!(!expects_answer(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(whole_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nab",
            false
        ));
        assert!(!whole_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\na",
            false
        ));
        assert!(whole_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            true
        ));
        assert!(whole_answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            false
        ));
    }
}
