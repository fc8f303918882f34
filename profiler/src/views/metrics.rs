//! The body of `GET /metrics` (scrape.rs answers it): the store's aggregates in the Prometheus
//! text format (0.0.4), or OpenMetrics 1.0. Encoding, escaping and naming suffixes (`_seconds`,
//! `_total`, `_info`) are prometheus-client's; this view only says which families exist and reads
//! their values from the store. Every metric is documented in docs/metrics.md.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::UNIX_EPOCH,
};

use axum::body::Bytes;
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

use crate::{
    host::cgroups::{self, Pod},
    store::{aggregates::OTHER, Store, SyscallKey, SyscallTotals},
    syscalls,
};

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
    pub fn record(&self, seconds: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += seconds;
        g.1 = seconds;
        self.scrapes.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, f64, f64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (self.scrapes.load(Ordering::Relaxed), g.0, g.1)
    }

    /// The body rendered after drain `drains` in format `slot`, if it is the last one rendered.
    pub fn rendered(&self, slot: usize, drains: u64) -> Option<Bytes> {
        self.rendered.lock().unwrap_or_else(|e| e.into_inner())[slot]
            .as_ref()
            .filter(|(at, _)| *at == drains)
            .map(|(_, body)| body.clone())
    }

    pub fn keep(&self, slot: usize, drains: u64, body: Bytes) {
        self.rendered.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some((drains, body));
    }
}

/// The body in the classic text format, or in OpenMetrics. None only on an encoder bug: writing to
/// a String cannot fail.
pub fn render(
    store: &Arc<RwLock<Store>>,
    scrape: &ScrapeStats,
    openmetrics: bool,
) -> Option<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector {
        store: store.clone(),
        scrapes: scrape.read(),
    }));
    let mut body = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut body, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)
    };
    encoded.ok().map(|()| body)
}

struct StoreCollector {
    store: Arc<RwLock<Store>>,
    /// Scrapes answered, their total and the last one's seconds, as of this render.
    scrapes: (u64, f64, f64),
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let enc = &mut enc;
        encode_groups(&store, enc)?;
        if store.metrics().config.per_pid {
            encode_per_pid(&store, enc)?;
        }
        encode_pods(&store, enc)?;
        encode_kernel(&store, enc)?;
        encode_own_cost(&store, self.scrapes, enc)?;
        encode_modes(&store, enc)?;
        encode_store_state(&store, enc)
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
    sets: &[(Labels<'a>, &'a BTreeMap<SyscallKey, SyscallTotals>)],
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

/// Per (comm, cgroup) group.
fn encode_groups(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let m = store.metrics();

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
    )
}

/// Per promoted process, and the `other` fold (`--metrics-per-pid`).
fn encode_per_pid(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let m = store.metrics();
    let mut promoted: Vec<_> = m
        .promoted
        .iter()
        .filter_map(|(key, t)| Some((key.pid.to_string(), store.processes().get(key)?, t)))
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
                            .map_or(cgroups::UNKNOWN, |c| &*c.label),
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
    )
}

/// The pod is fixed by the cgroup, so pod labels on the syscall series would add no series but
/// lengthen every one of them and every query: it is an info family to join on `cgroup`
/// instead, one series per pod's container.
fn encode_pods(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let mut pods: Vec<(&str, &Pod)> = store
        .metrics()
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
    Ok(())
}

/// The kernel maps: fill, size, what a full one lost; exits with no recorded entry.
fn encode_kernel(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let k = store.kernel();
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
    )
}

/// The drains' and the scrapes' own time.
fn encode_own_cost(
    store: &Store,
    (scrapes, scrape_total, scrape_last): (u64, f64, f64),
    enc: &mut DescriptorEncoder,
) -> fmt::Result {
    let t = &store.metrics().telemetry;
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
    )
}

/// Whether latency is measured and BPF programs timed, and the programs' own run time.
fn encode_modes(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let t = &store.metrics().telemetry;
    gauge(
        enc,
        "syscall_profiler_latency_enabled",
        "0 in counts-only mode: durations are not measured, every call is in the 0 bucket",
        None,
        &[(NoLabels, u64::from(store.latency()))],
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
    )
}

/// The store's processes and groups, the daemon's start and build.
fn encode_store_state(store: &Store, enc: &mut DescriptorEncoder) -> fmt::Result {
    let m = store.metrics();
    let exited = store
        .processes()
        .values()
        .filter(|p| p.exited.is_some())
        .count();
    gauge(
        enc,
        "syscall_profiler_processes",
        "Processes the store holds, by state",
        None,
        &[
            ([("state", "running")], store.processes().len() - exited),
            ([("state", "exited")], exited),
        ],
    )?;
    counter(
        enc,
        "syscall_profiler_processes_evicted_early",
        "Exited processes dropped before their retention ended, to stay within --max-exited",
        None,
        &[(NoLabels, store.evicted_early())],
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
                .started()
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
