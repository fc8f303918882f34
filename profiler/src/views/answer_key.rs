//! When two requests get the same bytes: the views' side of the HTTP layer's cache of rendered
//! answers (http/cache.rs). An answer is a function of what the request asks for
//! ([`AnswerKey`]: the endpoint, its parsed query, the negotiated format and encoding) and of
//! the store's state (its version: store/shared.rs); the views say "now" as of the last drain
//! ([`super::as_of`]) so that nothing else enters it.

use axum::http::HeaderMap;

use super::{
    metrics::Format,
    page::{self, HistoryQuery, InsightsQuery},
    query::StatsQuery,
    scrape, Context,
};

/// What of a request decides its answer's bytes. Queries are compared parsed, so spellings of
/// one query (`top=5` and `limit=5`, a default given or left out, another order) share one
/// answer. Credentials are not part of it: whoever may ask gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AnswerKey {
    Stats(StatsQuery),
    Insights(InsightsQuery),
    History(HistoryQuery),
    Metrics { format: Format, gzip: bool },
}

impl AnswerKey {
    /// None for a route whose answers are not kept, and for a query its view refuses: a 400
    /// costs no render, and its text names the first bad parameter, which a parsed key would
    /// not tell apart.
    pub fn of(path: &str, query: Option<&str>, headers: &HeaderMap) -> Option<AnswerKey> {
        match path {
            "/stats" => StatsQuery::parse(query).ok().map(AnswerKey::Stats),
            "/insights" => page::parse_insights_query(query)
                .ok()
                .map(AnswerKey::Insights),
            "/history" => page::parse_history_query(query)
                .ok()
                .map(AnswerKey::History),
            // /metrics refuses any query (scrape.rs).
            "/metrics" if query.is_none_or(str::is_empty) => {
                let (format, gzip) = scrape::negotiate(headers);
                Some(AnswerKey::Metrics { format, gzip })
            }
            _ => None,
        }
    }

    /// Accounts for an answer sent without its view's handler (a cached one, or one rendered
    /// for another request): only a scrape counts itself, in /metrics.
    pub fn answered_from_cache(&self, ctx: &Context, seconds: f64) {
        if let AnswerKey::Metrics { .. } = self {
            scrape::record_cached(ctx, seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};

    use super::*;

    #[test]
    fn spellings_of_one_query_share_a_key() {
        let none = HeaderMap::new();
        let key = |path, query| AnswerKey::of(path, query, &none);
        let default = key("/stats", None).unwrap();
        assert_eq!(key("/stats", Some("")), Some(default.clone()));
        assert_eq!(key("/stats", Some("limit=50&sort=total")), Some(default));
        assert_eq!(
            key("/stats", Some("top=5&pid=3")),
            key("/stats", Some("pid=3&limit=5"))
        );
        assert_ne!(
            key("/stats", Some("limit=5")),
            key("/stats", Some("limit=6"))
        );
        assert_ne!(
            key("/insights", Some("top=5")),
            key("/history", Some("top=5"))
        );
        assert_eq!(
            key("/history", Some("top=12")),
            key("/history", None),
            "12 is the default"
        );
    }

    #[test]
    fn refusals_and_other_routes_have_no_key() {
        let none = HeaderMap::new();
        for (path, query) in [
            ("/stats", Some("limit=0")),
            ("/stats", Some("x=1")),
            ("/insights", Some("top=x")),
            ("/history", Some("seconds=0")),
            ("/metrics", Some("a=1")),
            ("/metrics", Some("&")),
            ("/healthz", None),
            ("/", None),
        ] {
            assert_eq!(AnswerKey::of(path, query, &none), None, "{path} {query:?}");
        }
    }

    #[test]
    fn metrics_keys_by_what_the_headers_negotiate() {
        let with = |accept: &'static str, encoding: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(accept));
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(encoding));
            AnswerKey::of("/metrics", None, &h).unwrap()
        };
        let prometheus = with("application/openmetrics-text;version=1.0.0", "gzip");
        assert_eq!(
            prometheus,
            AnswerKey::Metrics {
                format: Format::OpenMetrics,
                gzip: true
            }
        );
        assert_eq!(
            with("*/*", "identity"),
            AnswerKey::of("/metrics", Some(""), &HeaderMap::new()).unwrap(),
            "what no header negotiates"
        );
        assert_ne!(with("*/*", "gzip"), with("*/*", "identity"));
        assert_ne!(with("text/plain", "gzip"), prometheus);
    }
}
