//! `GET /metrics`: the store's aggregates in the Prometheus text format (0.0.4), or OpenMetrics
//! 1.0 when the scraper's `Accept` prefers it (as Prometheus itself does). Encoding, escaping and
//! naming suffixes (`_seconds`, `_total`, `_info`) are prometheus-client's; this view only says
//! which families exist and reads their values from the store. Every metric is documented in
//! docs/metrics.md.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Instant, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use profiler_common::{
    ERRNOS_MAX_ENTRIES, HISTS_MAX_ENTRIES, PROCS_MAX_ENTRIES, STARTS_MAX_ENTRIES,
};
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};

use axum::body::Bytes;

use super::AppState;
use crate::{
    aggregates::OTHER,
    cgroups::Pod,
    store::{Store, SyscallKey, SyscallTotals},
    syscalls,
};

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The cost of rendering `/metrics`, reported by the next scrape (a scrape cannot time itself),
/// and the last rendered body of each format.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    scrapes: AtomicU64,
    inner: Mutex<(f64, f64)>,
    /// (drain it was rendered after, body) for the classic format and for OpenMetrics. The
    /// store only changes at a drain, so every scrape between two drains gets the same bytes:
    /// many scrapers (or one impatient dashboard) cost one render per drain interval.
    rendered: Mutex<[Option<(u64, Bytes)>; 2]>,
}

impl ScrapeStats {
    fn record(&self, seconds: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += seconds;
        g.1 = seconds;
        self.scrapes.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, f64, f64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (self.scrapes.load(Ordering::Relaxed), g.0, g.1)
    }
}

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

pub async fn handler(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let openmetrics = wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    let drains = state.store.read().unwrap_or_else(|e| e.into_inner()).drains;
    let slot = usize::from(openmetrics);
    let cached = state
        .scrape
        .rendered
        .lock()
        .unwrap_or_else(|e| e.into_inner())[slot]
        .as_ref()
        .filter(|(at, _)| *at == drains)
        .map(|(_, body)| body.clone());
    let body = match cached {
        Some(body) => body,
        None => match render(&state, openmetrics) {
            Some(body) => {
                let body = Bytes::from(body);
                state
                    .scrape
                    .rendered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())[slot] = Some((drains, body.clone()));
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
    state.scrape.record(started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn render(state: &Arc<AppState>, openmetrics: bool) -> Option<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector(state.clone())));
    let mut body = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut body, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)
    };
    encoded.ok().map(|()| body)
}

struct StoreCollector(Arc<AppState>);

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let store = self.0.store.read().unwrap_or_else(|e| e.into_inner());
        encode_store(&store, &self.0, &mut enc)
    }
}

fn counter<S: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(S, V)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge<S: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(S, V)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        family.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

/// One series' labels, in order: the given leading ones, then `abi` and `syscall`.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The latency histogram and errno counters of a set of (labels, per-syscall totals).
fn syscall_families<'a>(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    scope: &str,
    sets: &[(
        Labels<'a>,
        &'a std::collections::BTreeMap<SyscallKey, SyscallTotals>,
    )],
) -> fmt::Result {
    let names: Vec<Vec<(SyscallKey, String)>> = sets
        .iter()
        .map(|(_, m)| {
            m.keys()
                .map(|&k| (k, syscalls::name(k.abi, k.nr)))
                .collect()
        })
        .collect();
    let (duration, errors) = (format!("{prefix}_duration"), format!("{prefix}_errors"));
    {
        let mut family = enc.encode_descriptor(
            &duration,
            &format!(
                "Time from syscall entry to return, {scope}. Bucket bounds are the kernel \
                 histogram's (exact cumulative counts)"
            ),
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for ((labels, totals), names) in sets.iter().zip(&names) {
            for (key, name) in names {
                let h = &totals[key].hist;
                let mut l = labels.clone();
                l.push(("abi", key.abi.name()));
                l.push(("syscall", name));
                family.encode_family(&l)?.encode_histogram::<NoLabelSet>(
                    h.total_ns as f64 / 1e9,
                    h.count,
                    &h.le_buckets(),
                    None,
                )?;
            }
        }
    }
    let mut family = enc.encode_descriptor(
        &errors,
        &format!("Syscalls that returned an error, by errno, {scope}"),
        None,
        MetricType::Counter,
    )?;
    for ((labels, totals), names) in sets.iter().zip(&names) {
        for (key, name) in names {
            for (&errno, &n) in &totals[key].errnos {
                let errno = syscalls::errno_name(errno);
                let mut l = labels.clone();
                l.push(("abi", key.abi.name()));
                l.push(("syscall", name));
                l.push(("errno", &errno));
                family
                    .encode_family(&l)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
    }
    Ok(())
}

fn encode_store(store: &Store, state: &AppState, enc: &mut DescriptorEncoder) -> fmt::Result {
    let m = &store.metrics;

    let mut groups: Vec<_> = m.groups.iter().collect();
    groups.sort_by(|a, b| a.0.cmp(b.0));
    let sets: Vec<(Labels, _)> = groups
        .iter()
        .map(|(k, g)| {
            (
                vec![("comm", k.comm.as_str()), ("cgroup", &*k.cgroup)],
                &g.syscalls,
            )
        })
        .collect();
    syscall_families(
        enc,
        "syscall_profiler_syscall",
        "per process name (comm) and cgroup",
        &sets,
    )?;

    if m.config.per_pid {
        let mut promoted: Vec<_> = m
            .promoted
            .iter()
            .filter_map(|(key, t)| Some((key.pid.to_string(), store.processes.get(key)?, t)))
            .collect();
        promoted.sort_by_key(|(_, p, _)| p.key);
        let mut sets: Vec<(Labels, _)> = promoted
            .iter()
            .map(|(pid, p, t)| {
                (
                    vec![
                        ("pid", pid.as_str()),
                        ("comm", p.comm.as_str()),
                        (
                            "cgroup",
                            m.cgroup_labels
                                .get(&p.cgroup_id)
                                .map_or(crate::cgroups::UNKNOWN, |c| &*c.label),
                        ),
                    ],
                    *t,
                )
            })
            .collect();
        sets.push((
            vec![("pid", OTHER), ("comm", OTHER), ("cgroup", OTHER)],
            &m.other,
        ));
        syscall_families(
            enc,
            "syscall_profiler_process_syscall",
            "per process for the top processes by syscall time (counting from when each was \
             promoted), all others under pid=\"other\"",
            &sets,
        )?;
    }

    // The pod is fixed by the cgroup, so pod labels on the syscall series would add no series
    // but lengthen every one of them and every query: it is an info family to join on
    // `cgroup` instead, one series per pod's container.
    let mut pods: Vec<(&str, &Pod)> = m
        .cgroup_labels
        .values()
        .filter_map(|c| Some((&*c.label, c.pod.as_deref()?)))
        .collect();
    pods.sort_unstable_by_key(|&(label, _)| label);
    pods.dedup_by_key(|&mut (label, _)| label);
    let mut family = enc.encode_descriptor(
        "syscall_profiler_cgroup",
        "The Kubernetes pod of a cgroup label: its UID (kube_pod_info's uid) and QoS class",
        None,
        MetricType::Info,
    )?;
    for (label, pod) in pods {
        family.encode_info(&[
            ("cgroup", label),
            ("pod_uid", pod.uid.as_str()),
            ("qos_class", pod.qos_class.name()),
        ])?;
    }

    let k = &store.kernel;
    let maps = [
        ("hists", k.hists_full, k.hists_entries, HISTS_MAX_ENTRIES),
        (
            "starts",
            k.starts_full,
            k.starts_entries,
            STARTS_MAX_ENTRIES,
        ),
        ("procs", k.procs_full, k.procs_entries, PROCS_MAX_ENTRIES),
        (
            "errnos",
            k.errnos_full,
            k.errnos_entries,
            ERRNOS_MAX_ENTRIES,
        ),
    ];
    counter(
        enc,
        "syscall_profiler_kernel_map_full",
        "What a full kernel map lost: hists = syscall events dropped, starts = syscalls not \
         timed, procs = processes not recorded or not named, errnos = failures not broken down \
         by errno",
        None,
        &maps
            .iter()
            .map(|m| ([("map", m.0)], m.1))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "syscall_profiler_kernel_map_entries",
        "Entries in each kernel map at the last drain",
        None,
        &maps
            .iter()
            .map(|m| ([("map", m.0)], m.2))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "syscall_profiler_kernel_map_capacity",
        "Maximum entries of each kernel map",
        None,
        &maps
            .iter()
            .map(|m| ([("map", m.0)], u64::from(m.3)))
            .collect::<Vec<_>>(),
    )?;
    counter(
        enc,
        "syscall_profiler_unmatched_exits",
        "Syscall exits with no recorded entry (a new thread's first return from clone/fork, \
         in flight at attach, or the start was dropped)",
        None,
        &[(NoLabels, k.unmatched_exits)],
    )?;

    let t = &m.telemetry;
    counter(
        enc,
        "syscall_profiler_drains",
        "Completed drains of the kernel maps",
        None,
        &[(NoLabels, t.drains_timed)],
    )?;
    counter(
        enc,
        "syscall_profiler_drain_duration",
        "Time spent draining the kernel maps into the store",
        Some(&Unit::Seconds),
        &[(NoLabels, t.drain_seconds_total)],
    )?;
    gauge(
        enc,
        "syscall_profiler_last_drain_duration",
        "Duration of the last drain",
        Some(&Unit::Seconds),
        &[(NoLabels, t.last_drain_seconds)],
    )?;
    let (scrapes, scrape_total, scrape_last) = state.scrape.read();
    counter(
        enc,
        "syscall_profiler_scrapes",
        "/metrics requests answered before this body was rendered (bodies are rendered at most once per drain)",
        None,
        &[(NoLabels, scrapes)],
    )?;
    counter(
        enc,
        "syscall_profiler_scrape_duration",
        "Time spent answering earlier /metrics requests",
        Some(&Unit::Seconds),
        &[(NoLabels, scrape_total)],
    )?;
    gauge(
        enc,
        "syscall_profiler_last_scrape_duration",
        "Time the previous /metrics request took to answer",
        Some(&Unit::Seconds),
        &[(NoLabels, scrape_last)],
    )?;
    gauge(
        enc,
        "syscall_profiler_latency_enabled",
        "0 in counts-only mode: durations are not measured, every call is in the 0 bucket",
        None,
        &[(NoLabels, u64::from(store.latency))],
    )?;
    gauge(
        enc,
        "syscall_profiler_bpf_stats_enabled",
        "1 when the kernel times the profiler's BPF programs (BPF_ENABLE_STATS)",
        None,
        &[(NoLabels, u64::from(t.bpf_stats_enabled))],
    )?;
    let progs: Vec<([(&str, &str); 1], f64)> = t
        .bpf_programs
        .iter()
        .map(|p| ([("program", p.name.as_str())], p.run_time_ns as f64 / 1e9))
        .collect();
    counter(
        enc,
        "syscall_profiler_bpf_program_run_duration",
        "Time the profiler's own BPF programs ran, as the kernel measures it; divided by \
         syscall_profiler_bpf_program_runs_total it is the overhead per event",
        Some(&Unit::Seconds),
        &progs,
    )?;
    let runs: Vec<([(&str, &str); 1], u64)> = t
        .bpf_programs
        .iter()
        .map(|p| ([("program", p.name.as_str())], p.run_count))
        .collect();
    counter(
        enc,
        "syscall_profiler_bpf_program_runs",
        "Runs of the profiler's own BPF programs",
        None,
        &runs,
    )?;

    let exited = store
        .processes
        .values()
        .filter(|p| p.exited.is_some())
        .count();
    gauge(
        enc,
        "syscall_profiler_processes",
        "Processes the store holds, by state",
        None,
        &[
            ([("state", "running")], store.processes.len() - exited),
            ([("state", "exited")], exited),
        ],
    )?;
    counter(
        enc,
        "syscall_profiler_processes_evicted_early",
        "Exited processes dropped before their retention ended, to stay within --max-exited",
        None,
        &[(NoLabels, store.evicted_early)],
    )?;
    gauge(
        enc,
        "syscall_profiler_metric_groups",
        "(comm, cgroup) groups exported, and the limit (--metrics-max-groups) past which \
         new groups count under comm=\"other\", cgroup=\"other\"",
        None,
        &[
            ([("kind", "current")], m.groups.len()),
            ([("kind", "limit")], m.config.max_groups),
        ],
    )?;
    gauge(
        enc,
        "syscall_profiler_start_time",
        "When the daemon started (all counters count from then), Unix time",
        Some(&Unit::Seconds),
        &[(
            NoLabels,
            store
                .started
                .1
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        )],
    )?;
    enc.encode_descriptor(
        "syscall_profiler_build",
        "The running daemon's version and target",
        None,
        MetricType::Info,
    )?
    .encode_info(&[
        ("version", env!("CARGO_PKG_VERSION")),
        ("arch", std::env::consts::ARCH),
    ])?;
    Ok(())
}

/// An empty label set for single-series families.
#[derive(Clone, Copy)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _: &mut prometheus_client::encoding::LabelSetEncoder) -> fmt::Result {
        Ok(())
    }
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
