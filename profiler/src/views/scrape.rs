//! `GET /metrics`: the Prometheus text format (0.0.4), or OpenMetrics 1.0 when the scraper's
//! `Accept` prefers it (as Prometheus itself does), gzipped when its `Accept-Encoding` allows
//! (Prometheus's does). The body is rendered and compressed at most once per drain (metrics.rs
//! renders and keeps it), and each answer's time is reported by the next scrape.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::{error::BadParam, metrics::Format, Context};

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `q` of each media range or coding in an `Accept`-style header: (lower-cased name, q).
fn weights(header: Option<&str>) -> impl Iterator<Item = (String, f64)> + '_ {
    header.unwrap_or("").split(',').map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        (name, q)
    })
}

/// Whether the `Accept` header prefers OpenMetrics to the classic text format: by `q`, ties to
/// OpenMetrics; no header (or only `*/*`) gets the classic format, which every scraper reads.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let (mut om, mut text) = (0.0f64, 0.0f64);
    for (media, q) in weights(accept) {
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// Whether `Accept-Encoding` allows gzip: named (or `*`) with a q above 0. Without the header
/// the body goes as is: a client that never asked may not decompress.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let (mut gzip, mut any) = (None, None);
    for (coding, q) in weights(accept_encoding) {
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// The format and the encoding a scrape's headers ask for: all of a request, besides its
/// query, that changes the bytes of the answer.
pub fn negotiate(headers: &HeaderMap) -> (Format, bool) {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let format = if wants_openmetrics(get(header::ACCEPT)) {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    (format, accepts_gzip(get(header::ACCEPT_ENCODING)))
}

/// Counts an answer the HTTP layer sent from its cache (http/cache.rs) without asking
/// [`handler`]: it is a scrape like any other, which took `seconds`.
pub fn record_cached(ctx: &Context, seconds: f64) {
    ctx.scrape.record(seconds);
}

pub async fn handler(
    State(ctx): State<Arc<Context>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    // /metrics takes no parameters: a scrape config's `params` would otherwise be silently
    // ignored.
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let param = form_urlencoded::parse(query.as_bytes())
            .next()
            .map_or(String::new(), |(k, _)| k.into_owned());
        return BadParam::new(&param, "/metrics takes no query parameters").into_response();
    }
    let (format, gzip) = negotiate(&headers);
    // Rendering walks every series under the store's read lock. The HTTP layer already runs
    // every rendered answer on one of its bounded blocking threads (http/limits.rs), so this
    // renders in place: a second spawn_blocking from there would wait for a thread of the same
    // pool, which the renders waiting on it hold.
    let Some(body) = ctx.scrape.body(&ctx.store, format, gzip) else {
        // Writing to memory cannot fail; an error here is an encoder bug, not bad input.
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding /metrics failed\n",
        )
            .into_response();
    };
    ctx.scrape.record(started.elapsed().as_secs_f64());
    let content_type = match format {
        Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::VARY, "Accept, Accept-Encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        // Prometheus 2.x's scrape Accept header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prom)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text;q=0.2, text/plain"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn encoding_negotiation() {
        // Prometheus's scrape header, curl --compressed's, and a browser's.
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip")));
        assert!(accepts_gzip(Some("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(None));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=0, *")), "gzip refused by name");
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(!accepts_gzip(Some("br")));
    }
}
