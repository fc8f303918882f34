//! `GET /stats`: the store as versioned JSON (schema documented in docs/api.md).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    Json,
};
use profiler_common::{
    ERRNOS_MAX_ENTRIES, HISTS_MAX_ENTRIES, PROCS_MAX_ENTRIES, STARTS_MAX_ENTRIES,
};
use serde::Serialize;

use super::{
    query::{SortKey, StatsQuery},
    select::{self, Matcher, Ranked, Sums},
    unix_ms, Context,
};
use crate::{
    host::cgroups,
    store::{histogram::Histogram, InFlight, Store, SyscallKey, SyscallTotals},
    syscalls::{self, Abi, Category},
};

/// Bumped on any change that could break a client: removed or renamed fields, changed meaning.
/// 2: the answer is a page of processes (`limit`, default 50; `offset`), each with its first
/// `syscalls` syscalls (default 10), and buckets only with `buckets=true` (docs/api.md).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
pub struct Bucket {
    pub lower_ns: u64,
    /// Exclusive; absent for the overflow bucket (2^36 ns and more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_ns: Option<u64>,
    pub count: u64,
}

#[derive(Serialize)]
pub struct SyscallStats {
    pub name: String,
    pub nr: u32,
    pub abi: Abi,
    pub category: Category,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub mean_ns: Option<u64>,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// Where `total_ns` went; null when the kernel side does not split it (counts-only mode,
    /// a kernel without the fields it reads).
    pub time_split: Option<TimeSplitStats>,
    /// Failures by errno name (`ENOENT`).
    pub errnos: BTreeMap<String, u64>,
    /// Only with `buckets=true` (empty in counts-only mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
    /// The paths and addresses behind the failures (views/failing_args.rs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing_args: Vec<super::failing_args::FailingArgStats>,
}

/// A syscall's `total_ns` in parts that add up to it: on a CPU, runnable on a runqueue
/// (preempted or waiting for a CPU), blocked (asleep); each part's share of `total_ns`, and
/// the calls that blocked at least once.
#[derive(Serialize)]
pub struct TimeSplitStats {
    pub on_cpu_ns: u64,
    pub runq_ns: u64,
    pub blocked_ns: u64,
    pub on_cpu_share: f64,
    pub runq_share: f64,
    pub blocked_share: f64,
    pub blocked_calls: u64,
}

/// A share (0.25 = 25%) to four decimals: 0.01% is finer than any reader needs, and a full
/// `f64` takes 20 characters where this takes 6, in an answer that has thousands of them.
fn share(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

impl TimeSplitStats {
    fn of(h: &Histogram) -> Self {
        let share = |ns: u64| {
            if h.total_ns == 0 {
                0.0
            } else {
                share(ns as f64 / h.total_ns as f64)
            }
        };
        let on_cpu_ns = h.on_cpu_ns();
        Self {
            on_cpu_ns,
            runq_ns: h.split.runq_ns,
            blocked_ns: h.split.blocked_ns,
            on_cpu_share: share(on_cpu_ns),
            runq_share: share(h.split.runq_ns),
            blocked_share: share(h.split.blocked_ns),
            blocked_calls: h.split.blocked_calls,
        }
    }
}

/// What the store's histograms hold besides counts: latency (not in counts-only mode), and
/// its split.
#[derive(Clone, Copy)]
struct Timing {
    latency: bool,
    split: bool,
}

impl Timing {
    fn of(store: &Store) -> Self {
        Self {
            latency: store.latency(),
            split: store.time_split(),
        }
    }
}

impl SyscallStats {
    /// Without latency (counts-only mode) the time-based fields are absent.
    fn new(key: SyscallKey, t: &SyscallTotals, timing: Timing, buckets: bool) -> Self {
        let name = syscalls::name(key.abi, key.nr);
        let h = &t.hist;
        let latency = timing.latency;
        let timed = |v: Option<u64>| v.filter(|_| latency);
        Self {
            category: Category::of(&name),
            name,
            nr: key.nr,
            abi: key.abi,
            count: h.count,
            errors: h.errors,
            total_ns: h.total_ns,
            mean_ns: timed(h.mean_ns()),
            p50_ns: timed(h.quantile_ns(0.50)),
            p90_ns: timed(h.quantile_ns(0.90)),
            p99_ns: timed(h.quantile_ns(0.99)),
            max_ns: timed(h.max_ns()),
            time_split: timing.split.then(|| TimeSplitStats::of(h)),
            errnos: t
                .errnos
                .iter()
                .map(|(&e, &n)| (syscalls::errno_name(e), n))
                .collect(),
            buckets: buckets.then(|| {
                h.nonempty_buckets()
                    .filter(|_| latency)
                    .map(|(lower_ns, upper_ns, count)| Bucket {
                        lower_ns,
                        upper_ns,
                        count,
                    })
                    .collect()
            }),
            failing_args: Vec::new(),
        }
    }
}

#[derive(Serialize)]
pub struct CategoryStats {
    pub category: Category,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// This category's part of the process's syscall time since the daemon started.
    pub share_of_syscall_time: f64,
}

#[derive(Serialize)]
pub struct InFlightStats {
    pub name: String,
    pub nr: u32,
    pub abi: Abi,
    pub count: u32,
    pub oldest_age_ns: u64,
}

#[derive(Serialize)]
pub struct ProcessStats {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 id (inode of the cgroup's directory under /sys/fs/cgroup); 0 if unknown.
    pub cgroup_id: u64,
    /// The `cgroup` label of /metrics: `container:<12 hex>`, a systemd unit, the path, or
    /// `unknown`.
    pub cgroup: String,
    /// The Kubernetes pod (UID and QoS class) whose cgroup the process is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<cgroups::Pod>,
    pub first_seen_unix_ms: u64,
    /// The end of the last drain interval in which it made a call.
    pub last_seen_unix_ms: u64,
    pub exited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_unix_ms: Option<u64>,
    /// Sums over every syscall the query matches, listed or not.
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// `total_ns` in parts: on a CPU, runnable, blocked; null without a split (like
    /// `time_split`).
    pub on_cpu_ns: Option<u64>,
    pub runq_ns: Option<u64>,
    pub blocked_ns: Option<u64>,
    /// Syscall time completed in the last drain interval over the interval's length (1.0 = one
    /// thread in syscalls the whole time; threads add up).
    pub syscall_time_share: f64,
    /// The part of that on a CPU (1.0 = one CPU busy in the kernel for it).
    pub cpu_time_share: f64,
    pub categories: Vec<CategoryStats>,
    pub in_flight: Vec<InFlightStats>,
    /// Syscalls the query matches; `syscalls` lists the first `syscalls=` of them.
    pub syscalls_total: usize,
    pub syscalls: Vec<SyscallStats>,
}

#[derive(Serialize)]
pub struct HostStats {
    /// `latency` (the default) or `counts_only` (no times: latency fields are absent).
    pub mode: &'static str,
    pub hostname: String,
    pub kernel: String,
    pub arch: &'static str,
    pub uptime_seconds: Option<f64>,
    pub daemon_uptime_seconds: f64,
    pub interval_ms: u64,
    pub drains: u64,
    pub last_drain_unix_ms: Option<u64>,
}

#[derive(Serialize)]
pub struct MapStats {
    pub hists_entries: u64,
    pub hists_capacity: u32,
    pub starts_entries: u64,
    pub starts_capacity: u32,
    pub procs_entries: u64,
    pub procs_capacity: u32,
    pub errnos_entries: u64,
    pub errnos_capacity: u32,
    /// What was lost because a map was full, per map.
    pub drops: Drops,
    /// Exits with no recorded enter: a new thread's first return from clone/fork, a syscall in
    /// flight at attach, or one whose start was dropped.
    pub unmatched_exits: u64,
    /// Threads whose entry in the tid-indexed array (TIDS) another live thread held (their
    /// tids equal modulo its length): their calls kept in task storage, timed as well.
    pub tids_shared: u64,
}

#[derive(Serialize)]
pub struct Drops {
    pub hists_full: u64,
    pub procs_full: u64,
    pub starts_full: u64,
    pub errnos_full: u64,
}

#[derive(Serialize)]
pub struct StoreStats {
    /// Processes held, running and exited.
    pub processes: usize,
    pub exited_processes: usize,
    pub max_exited: usize,
    /// Exited processes dropped before their retention ended, to stay within `max_exited`.
    pub evicted_early: u64,
    /// With `pin_path`: the checkpoints committed for the next daemon to resume from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStats>,
}

#[derive(Serialize)]
pub struct CheckpointStats {
    pub committed: u64,
    /// Not committed (too large, or a failed write): a restart resumes from the last committed.
    pub skipped: u64,
    pub last_bytes: u64,
    pub last_duration_ns: u64,
}

/// Where `processes` lies in the sorted list of every process the query matches.
#[derive(Serialize)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    /// Processes the query matches, on every page.
    pub total: usize,
    /// The next page's offset; null on the last page.
    pub next_offset: Option<usize>,
}

#[derive(Serialize)]
pub struct StatsResponse {
    pub schema_version: u32,
    pub host: HostStats,
    pub kernel_maps: MapStats,
    pub store: StoreStats,
    pub sort: SortKey,
    pub page: Page,
    /// System-wide syscalls the query matches; `syscalls` lists the first `syscalls=`.
    pub syscalls_total: usize,
    /// System-wide per-syscall totals over all processes ever seen (pid, comm and exited
    /// filters do not apply; syscall, sort and syscalls do).
    pub syscalls: Vec<SyscallStats>,
    pub processes: Vec<ProcessStats>,
}

fn process_stats(r: &Ranked, q: &StatsQuery, m: &Matcher, store: &Store) -> ProcessStats {
    let timing = Timing::of(store);
    let p = r.process;
    let (calls, syscalls_total) =
        select::top_syscalls(p.syscalls.iter(), m, q.sort, timing.latency, q.syscalls);
    let calls = calls
        .into_iter()
        .map(|(k, t)| SyscallStats {
            failing_args: super::failing_args::of(store, p, k, t, q.failing_args),
            ..SyscallStats::new(k, t, timing, q.buckets)
        })
        .collect();
    let in_flight: Vec<InFlightStats> = p
        .in_flight
        .iter()
        .filter(|f: &&InFlight| m.wants(&f.syscall))
        .map(|f| InFlightStats {
            name: syscalls::name(f.syscall.abi, f.syscall.nr),
            nr: f.syscall.nr,
            abi: f.syscall.abi,
            count: f.count,
            oldest_age_ns: f.oldest_age_ns,
        })
        .collect();
    let categories = p
        .categories()
        .into_iter()
        .map(|(c, t)| CategoryStats {
            category: c,
            count: t.count,
            errors: t.errors,
            total_ns: t.total_ns,
            share_of_syscall_time: share(p.share_of_time(&t)),
        })
        .collect();
    let s: Sums = r.sums;
    let split = |v: u64| timing.split.then_some(v);
    ProcessStats {
        pid: p.key.pid,
        comm: p.comm.clone(),
        cgroup_id: p.cgroup_id,
        cgroup: store.metrics().cgroup_label(p.cgroup_id).to_string(),
        pod: store
            .metrics()
            .cgroup_labels
            .get(&p.cgroup_id)
            .and_then(|c| c.pod.as_deref().cloned()),
        first_seen_unix_ms: unix_ms(p.first_seen),
        last_seen_unix_ms: unix_ms(p.last_seen),
        exited: p.exited.is_some(),
        exited_unix_ms: p.exited.map(|(_, wall)| unix_ms(wall)),
        count: s.count,
        errors: s.errors,
        total_ns: s.total_ns,
        on_cpu_ns: split(s.on_cpu_ns()),
        runq_ns: split(s.runq_ns),
        blocked_ns: split(s.blocked_ns),
        syscall_time_share: share(p.syscall_time_share),
        cpu_time_share: share(p.cpu_time_share),
        categories,
        in_flight,
        syscalls_total,
        syscalls: calls,
    }
}

pub fn render(store: &Store, ctx: &Context, q: &StatsQuery) -> StatsResponse {
    let timing = Timing::of(store);
    let latency = timing.latency;
    let m = Matcher::of(q);
    let (system, syscalls_total) =
        select::top_syscalls(store.system().iter(), &m, q.sort, latency, q.syscalls);
    let syscalls = system
        .into_iter()
        .map(|(k, t)| SyscallStats::new(k, t, timing, q.buckets))
        .collect();

    let (mut ranked, exited_processes) =
        select::candidates(store.processes().values(), q, &m, latency);
    let total = ranked.len();
    let processes = select::window(&mut ranked, q.offset, q.limit, |r| r.order)
        .iter()
        .map(|r| process_stats(r, q, &m, store))
        .collect();
    let next = q.offset.saturating_add(q.limit);

    let k = store.kernel();
    let as_of = super::as_of(store);
    StatsResponse {
        schema_version: SCHEMA_VERSION,
        host: HostStats {
            mode: if latency { "latency" } else { "counts_only" },
            hostname: ctx.host.hostname.clone(),
            kernel: ctx.host.kernel.clone(),
            arch: ctx.host.arch,
            // Both as of the last drain, like every figure of the answer (docs/api.md).
            uptime_seconds: ctx.host.uptime_seconds_at(as_of.0),
            daemon_uptime_seconds: as_of
                .0
                .saturating_duration_since(store.started().0)
                .as_secs_f64(),
            interval_ms: ctx.interval.as_millis() as u64,
            drains: store.drains(),
            last_drain_unix_ms: store.last_drain().map(|(_, wall)| unix_ms(wall)),
        },
        kernel_maps: MapStats {
            hists_entries: k.hists_entries,
            hists_capacity: HISTS_MAX_ENTRIES,
            starts_entries: k.starts_entries,
            starts_capacity: STARTS_MAX_ENTRIES,
            procs_entries: k.procs_entries,
            procs_capacity: PROCS_MAX_ENTRIES,
            errnos_entries: k.errnos_entries,
            errnos_capacity: ERRNOS_MAX_ENTRIES,
            drops: Drops {
                hists_full: k.hists_full,
                procs_full: k.procs_full,
                starts_full: k.starts_full,
                errnos_full: k.errnos_full,
            },
            unmatched_exits: k.unmatched_exits,
            tids_shared: k.tids_shared,
        },
        store: StoreStats {
            processes: store.processes().len(),
            exited_processes,
            max_exited: store.max_exited(),
            evicted_early: store.evicted_early(),
            checkpoint: store
                .metrics()
                .telemetry
                .checkpoint
                .as_ref()
                .map(|c| CheckpointStats {
                    committed: c.committed,
                    skipped: c.skipped,
                    last_bytes: c.last_bytes,
                    last_duration_ns: (c.last_seconds * 1e9) as u64,
                }),
        },
        sort: q.sort,
        page: Page {
            offset: q.offset,
            limit: q.limit,
            total,
            next_offset: (next < total).then_some(next),
        },
        syscalls_total,
        syscalls,
        processes,
    }
}

pub async fn handler(State(ctx): State<Arc<Context>>, RawQuery(raw): RawQuery) -> Response {
    let q = match StatsQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    let body = {
        let store = ctx.store.read();
        render(&store, &ctx, &q)
    };
    Json(body).into_response()
}
