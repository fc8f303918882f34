//! `GET /metrics`: the Prometheus text format (0.0.4), or OpenMetrics 1.0 when the scraper's
//! `Accept` prefers it (as Prometheus itself does). The body is rendered at most once per drain
//! (metrics.rs renders it, ScrapeStats keeps it), and each answer's time is reported by the next
//! scrape.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::{metrics, Context};

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the `Accept` header prefers OpenMetrics to the classic text format: by `q`, ties to
/// OpenMetrics; no header (or only `*/*`) gets the classic format, which every scraper reads.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let (mut om, mut text) = (0.0f64, 0.0f64);
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

pub async fn handler(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let openmetrics = wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    let drains = ctx.store.read().unwrap_or_else(|e| e.into_inner()).drains();
    let slot = usize::from(openmetrics);
    let body = match ctx.scrape.rendered(slot, drains) {
        Some(body) => body,
        None => match metrics::render(&ctx.store, &ctx.scrape, openmetrics) {
            Some(body) => {
                let body = Bytes::from(body);
                ctx.scrape.keep(slot, drains, body.clone());
                body
            }
            None => {
                // Writing to a String cannot fail; an error here is an encoder bug, not bad input.
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding /metrics failed\n",
                )
                    .into_response();
            }
        },
    };
    ctx.scrape.record(started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
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
}
