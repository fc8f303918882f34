//! Every refusal has the body a bad query parameter gets: JSON whose `error` says what was wrong.
//! Routing's and the tower layers' refusals (404, 405, 413, the deadline's 503) are given it on
//! their way out of the router; hyper's own (400, 414, 431 for a request it cannot parse, sent
//! before any routing, without a body and with no hook to give it one) are rewritten on their
//! way to the socket (stream.rs).

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::limits::{MAX_REQUEST_BODY, MAX_REQUEST_HEAD};

/// An answer with the JSON error body.
pub fn json_error(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error.into() }))).into_response()
}

/// What the refusals of routing name.
#[derive(Clone)]
pub struct Refusals {
    pub endpoints: &'static [&'static str],
    pub request_timeout: Duration,
}

/// Error text quoted back is cut to this many characters: a 16 KiB path helps nobody.
const QUOTED: usize = 120;

fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Gives any error answer that is not JSON the JSON error body, keeping its status and headers
/// (405's `Allow`, 401's `WWW-Authenticate`).
pub async fn json_error_bodies(
    State(refusals): State<Refusals>,
    req: Request,
    next: Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let error = match status {
        StatusCode::NOT_FOUND => format!(
            "no such endpoint: {} (the endpoints are {})",
            quoted(&path),
            refusals.endpoints.join(", ")
        ),
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "method {} is not allowed on {}: every endpoint answers GET and HEAD",
            quoted(method.as_str()),
            quoted(&path)
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body over {MAX_REQUEST_BODY} bytes: no endpoint takes a body")
        }
        StatusCode::SERVICE_UNAVAILABLE => format!(
            "no answer within request_timeout ({:?}): the daemon is busy, try again",
            refusals.request_timeout
        ),
        _ => {
            // Whatever text it had, else the status's name.
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            match text.is_empty() {
                true => status.canonical_reason().unwrap_or("error").to_string(),
                false => quoted(&text),
            }
        }
    };
    let body = serde_json::to_vec(&json!({ "error": error })).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// If `written` is hyper's own answer to a request it could not parse (an error status line
/// and `content-length: 0`, written alone, never by a route: their errors all have bodies),
/// the same answer with the JSON error body.
pub fn with_json_body(written: &[u8]) -> Option<Vec<u8>> {
    // Every write passes here: most are answers' bodies, refused at the first bytes. hyper's
    // refusal is a status line and two short headers.
    if written.len() > 256 || !written.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != written.len() {
        return None;
    }
    let head = std::str::from_utf8(&written[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.1 ")?;
    let error = match rest.get(..3)? {
        "400" => "malformed request: its request line or a header is not valid HTTP/1.1",
        "414" => "request target too long",
        "431" => &format!(
            "request head too large: the request line and headers may take {} KiB at most",
            MAX_REQUEST_HEAD / 1024
        ),
        _ => return None,
    };
    let headers: Vec<&str> = lines.collect();
    if !headers.contains(&"content-length: 0") {
        return None;
    }
    let body = serde_json::to_vec(&json!({ "error": error })).ok()?;
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for h in headers.iter().filter(|h| **h != "content-length: 0") {
        answer.push_str(h);
        answer.push_str("\r\n");
    }
    answer.push_str("connection: close\r\n\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_heads_are_rewritten() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: d\r\n\r\n";
        let out = String::from_utf8(with_json_body(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.contains("\r\ndate: d\r\n"), "{out}");
        assert!(out.ends_with("\"}"), "{out}");
        assert!(out.contains("16 KiB"), "{out}");

        // A route's answers, a body after the head, a success: untouched.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400\"}",
            b"",
        ] {
            assert_eq!(
                with_json_body(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn long_quotes_are_cut() {
        assert_eq!(quoted("abc"), "abc");
        let long = "é".repeat(500);
        assert_eq!(quoted(&long).chars().count(), QUOTED + 1);
    }
}
