//! The dashboard at `/` (its assets are compiled into the binary: no CDN, nothing fetched from
//! anywhere but this daemon) and `GET /history`, the recent per-second activity it plots.

use std::{cmp::Reverse, collections::BTreeMap, sync::Arc};

use axum::{
    extract::{RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use super::{error::BadParam, insights, unix_ms, Context};
use crate::{
    store::history::{Slice, SliceEntry, SLICE, SLICES},
    store::{Store, SyscallKey},
    syscalls::{self, Abi},
};

const INDEX: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Serialize)]
pub struct SliceTimes {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

#[derive(Serialize)]
pub struct SyscallHistory {
    pub name: String,
    pub nr: u32,
    pub abi: Abi,
    /// Over the whole window.
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub p99_ns: Option<u64>,
    /// `[slice index, floor(log2(latency ns)), calls]` for every non-empty cell.
    pub heat: Vec<[u64; 3]>,
    /// Per errno name, `[slice index, failures]` for slices with any.
    pub errnos: BTreeMap<String, Vec<[u64; 2]>>,
}

#[derive(Serialize)]
pub struct HistoryResponse {
    pub schema_version: u32,
    pub native_abi: &'static str,
    pub slice_seconds: u64,
    pub max_slices: usize,
    /// Oldest first; the last may still be filling.
    pub slices: Vec<SliceTimes>,
    /// The `top` syscalls with the most calls in the window, most first.
    pub syscalls: Vec<SyscallHistory>,
}

/// `top` for /history and /insights: 1 to 1000.
fn top_param(v: &str) -> Result<usize, BadParam> {
    v.parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| BadParam::new("top", format!("'{v}' is not from 1 to 1000")))
}

/// What /history lists: which syscalls, over how many of the last slices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryQuery {
    pub top: usize,
    /// Only the slices that ended in the last this many seconds.
    pub seconds: Option<u64>,
    /// Rank syscalls by failures rather than calls.
    pub by_errors: bool,
}

pub fn parse_history_query(raw: Option<&str>) -> Result<HistoryQuery, BadParam> {
    let mut q = HistoryQuery {
        top: 12,
        seconds: None,
        by_errors: false,
    };
    let mut seen = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if seen.contains(&k) {
            return Err(BadParam::new(&k, "given more than once"));
        }
        seen.push(k.clone());
        match k.as_ref() {
            "top" => q.top = top_param(&v)?,
            "seconds" => {
                let max = SLICES as u64 * SLICE.as_secs();
                q.seconds = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            BadParam::new("seconds", format!("'{v}' is not from 1 to {max}"))
                        })?,
                )
            }
            "sort" => {
                q.by_errors = match v.as_ref() {
                    "count" => false,
                    "errors" => true,
                    _ => {
                        return Err(BadParam::new(
                            "sort",
                            format!("'{v}' is not one of count, errors"),
                        ))
                    }
                }
            }
            other => {
                return Err(BadParam::new(
                    other,
                    "unknown parameter (known: top, seconds, sort)",
                ))
            }
        }
    }
    Ok(q)
}

pub fn render_history(store: &Store, q: &HistoryQuery) -> HistoryResponse {
    // "The last S seconds" as of the last drain: the slices end at drains, and an answer is
    // the same bytes until the next one (http/cache.rs keeps it that long).
    let now = super::as_of(store).0;
    let slices: Vec<&Slice> = store
        .history()
        .slices
        .iter()
        .filter(|s| {
            q.seconds.is_none_or(|secs| {
                now.saturating_duration_since(s.end.0) < std::time::Duration::from_secs(secs)
            })
        })
        .collect();
    let mut window: BTreeMap<SyscallKey, SliceEntry> = BTreeMap::new();
    for s in &slices {
        for (k, e) in &s.syscalls {
            let w = window.entry(*k).or_default();
            w.hist.merge(&e.hist);
        }
    }
    let mut keys: Vec<(SyscallKey, u64)> = window
        .iter()
        .map(|(k, e)| {
            (
                *k,
                if q.by_errors {
                    e.hist.errors
                } else {
                    e.hist.count
                },
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    keys.sort_by_key(|&(k, n)| (Reverse(n), k));
    keys.truncate(q.top);
    let syscalls = keys
        .into_iter()
        .map(|(k, _)| {
            let h = &window[&k].hist;
            let mut heat = Vec::new();
            let mut errnos: BTreeMap<String, Vec<[u64; 2]>> = BTreeMap::new();
            for (i, s) in slices.iter().enumerate() {
                let Some(e) = s.syscalls.get(&k) else {
                    continue;
                };
                for (row, n) in e.hist.log2_rows() {
                    heat.push([i as u64, u64::from(row), n]);
                }
                for (&errno, &n) in &e.errnos {
                    errnos
                        .entry(syscalls::errno_name(errno))
                        .or_default()
                        .push([i as u64, n]);
                }
            }
            SyscallHistory {
                name: syscalls::name(k.abi, k.nr),
                nr: k.nr,
                abi: k.abi,
                count: h.count,
                errors: h.errors,
                total_ns: h.total_ns,
                p99_ns: h.quantile_ns(0.99),
                heat,
                errnos,
            }
        })
        .collect();
    HistoryResponse {
        schema_version: 1,
        native_abi: Abi::Native.name(),
        slice_seconds: SLICE.as_secs(),
        max_slices: SLICES,
        slices: slices
            .iter()
            .map(|s| SliceTimes {
                start_unix_ms: unix_ms(s.start.1),
                end_unix_ms: unix_ms(s.end.1),
            })
            .collect(),
        syscalls,
    }
}

pub async fn history(State(ctx): State<Arc<Context>>, RawQuery(raw): RawQuery) -> Response {
    let q = match parse_history_query(raw.as_deref()) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    let body = {
        let store = ctx.store.read();
        render_history(&store, &q)
    };
    Json(body).into_response()
}

/// Bumped on any change that could break a client (docs/api.md says what changed).
pub const INSIGHTS_SCHEMA_VERSION: u32 = 2;

/// The most pids a finding lists (`processes` counts them all).
pub const PIDS_LISTED: usize = 100;

#[derive(Serialize)]
pub struct InsightsResponse {
    pub schema_version: u32,
    pub thresholds: Thresholds,
    /// Per-process rates and shares are over the last this many seconds (5 to 10; each
    /// finding says its own `window_seconds`).
    pub rate_window_seconds: f64,
    /// Highest score first.
    pub findings: Vec<insights::Finding>,
}

#[derive(Serialize)]
pub struct Thresholds {
    pub failures_per_sec: f64,
    pub blocked_share: f64,
    pub kernel_share: f64,
    pub runq_share: f64,
    pub p99_ratio: f64,
    pub wait_share: f64,
    pub window_seconds: u64,
    pub min_calls: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InsightsQuery {
    pid: Option<u32>,
    comm: Option<String>,
    top: Option<usize>,
}

pub fn parse_insights_query(raw: Option<&str>) -> Result<InsightsQuery, BadParam> {
    let mut q = InsightsQuery::default();
    let mut seen = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if seen.contains(&k) {
            return Err(BadParam::new(&k, "given more than once"));
        }
        seen.push(k.clone());
        match k.as_ref() {
            "pid" => {
                q.pid = Some(
                    v.parse()
                        .map_err(|_| BadParam::new("pid", format!("'{v}' is not a process id")))?,
                )
            }
            "comm" => {
                if v.is_empty() || v.len() > 15 {
                    return Err(BadParam::new(
                        "comm",
                        "process names (comm) are 1 to 15 bytes",
                    ));
                }
                q.comm = Some(v.into_owned())
            }
            "top" => q.top = Some(top_param(&v)?),
            other => {
                return Err(BadParam::new(
                    other,
                    "unknown parameter (known: pid, comm, top)",
                ))
            }
        }
    }
    Ok(q)
}

pub async fn insights(State(ctx): State<Arc<Context>>, RawQuery(raw): RawQuery) -> Response {
    let q = match parse_insights_query(raw.as_deref()) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    let (mut findings, rate_window_seconds) = {
        let store = ctx.store.read();
        insights::find(&store, &ctx.insights, ctx.interval)
    };
    findings.retain(|f| {
        q.pid.is_none_or(|p| f.pids.contains(&p))
            && q.comm.as_ref().is_none_or(|c| f.comm.as_ref() == Some(c))
    });
    findings.truncate(q.top.unwrap_or(50));
    for f in &mut findings {
        f.pids.truncate(PIDS_LISTED);
    }
    let a = &ctx.insights;
    Json(InsightsResponse {
        schema_version: INSIGHTS_SCHEMA_VERSION,
        thresholds: Thresholds {
            failures_per_sec: a.insight_failures_per_sec,
            blocked_share: a.insight_blocked_share,
            kernel_share: a.insight_kernel_share,
            runq_share: a.insight_runq_share,
            p99_ratio: a.insight_p99_ratio,
            wait_share: a.insight_wait_share,
            window_seconds: a.insight_window.as_secs(),
            min_calls: a.insight_min_calls,
        },
        rate_window_seconds,
        findings,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store::histogram::Delta, store::ProcKey};
    use std::time::{Duration, Instant};

    #[test]
    fn history_lists_busiest_syscalls_with_cells_and_errnos() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        let p = ProcKey {
            pid: 1,
            incarnation: 1,
        };
        let k = |nr| SyscallKey {
            abi: Abi::Native,
            nr,
        };
        let bucket = profiler_common::bucket_index(1000);
        s.add(
            p,
            k(2),
            &Delta {
                errors: 3,
                total_ns: 5000,
                split: Default::default(),
                buckets: vec![(bucket, 5)],
            },
        );
        s.add_errno(p, k(2), 2, 3);
        s.add(
            p,
            k(0),
            &Delta {
                errors: 0,
                total_ns: 100,
                split: Default::default(),
                buckets: vec![(bucket, 1)],
            },
        );
        s.finish_drain((Instant::now(), std::time::SystemTime::now()));
        let q = |top, by_errors| HistoryQuery {
            top,
            seconds: None,
            by_errors,
        };
        let h = render_history(&s, &q(1, false));
        assert_eq!(h.slices.len(), 1);
        assert_eq!(h.syscalls.len(), 1, "cut to top");
        let first = &h.syscalls[0];
        assert_eq!((first.nr, first.count, first.errors), (2, 5, 3));
        assert_eq!(first.heat, vec![[0, 9, 5]], "1000 ns is in [512, 1024)");
        assert_eq!(first.errnos["ENOENT"], vec![[0, 3]]);
        let failing = render_history(&s, &q(12, true));
        assert_eq!(failing.syscalls.len(), 1, "only syscalls with failures");
        let recent = HistoryQuery {
            seconds: Some(1),
            ..q(12, false)
        };
        assert_eq!(render_history(&s, &recent).slices.len(), 1);
    }

    #[test]
    fn bad_params_are_named() {
        let q = parse_history_query(Some("top=3&seconds=10&sort=errors")).unwrap();
        assert_eq!((q.top, q.seconds, q.by_errors), (3, Some(10), true));
        assert_eq!(parse_history_query(None).unwrap().top, 12);
        for (query, param) in [
            ("top=0", "top"),
            ("x=1", "x"),
            ("seconds=0", "seconds"),
            ("seconds=301", "seconds"),
            ("sort=p99", "sort"),
            ("top=1&top=2", "top"),
        ] {
            assert_eq!(
                parse_history_query(Some(query)).unwrap_err().param,
                param,
                "{query}"
            );
        }
        let q = parse_insights_query(Some("pid=3&comm=nginx&top=5")).unwrap();
        assert_eq!(
            (q.pid, q.comm.as_deref(), q.top),
            (Some(3), Some("nginx"), Some(5))
        );
        for (query, param) in [
            ("pid=x", "pid"),
            ("comm=0123456789abcdefg", "comm"),
            ("top=1001", "top"),
            ("kind=blocked", "kind"),
        ] {
            assert_eq!(
                parse_insights_query(Some(query)).unwrap_err().param,
                param,
                "{query}"
            );
        }
    }
}
