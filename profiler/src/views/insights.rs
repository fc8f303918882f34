//! Ranked findings a person should look at first, read from the store: what each process did in
//! the last few seconds (its totals less its snapshot then: store/recent.rs), the calls in
//! flight now, and the per-second system-wide histograms. Every estimate comes from
//! `histogram.rs`; here are only rates, shares and thresholds.
//!
//! Findings are about programs: one per (comm, syscall) — and errno, for failures — listing the
//! processes it covers, so eight runs of one program are one finding of eight pids. Rates and
//! shares are current: over the last 5 to 10 seconds, never a lifetime average, so a process
//! that exited minutes ago has no rate and no finding; one that exited within the window is
//! marked `exited` (what it did before it exited).

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use super::{failing_args, unix_ms};
use crate::{
    config::insights::InsightArgs,
    store::{recent::Sums, ProcKey, Process, Store, SyscallKey},
    syscalls,
};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Finding {
    /// `failing_calls`, `kernel_bound`, `cpu_starved`, `blocked`, `p99_regression`.
    pub kind: &'static str,
    /// How far past its threshold (1.0 = at it); findings are sorted by this, highest first.
    pub score: f64,
    pub summary: String,
    pub evidence: String,
    /// The program; absent for system-wide findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The processes the finding covers, lowest first (cut by the view: `processes` counts
    /// them all); empty for system-wide findings.
    pub pids: Vec<u32>,
    pub processes: usize,
    /// Every one of them has exited: the rates are what they did in the window before that.
    pub exited: bool,
    /// The earliest first sighting and the latest call of those processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_unix_ms: Option<u64>,
    pub syscall: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// failing_calls: the path or address most of the failures gave (captured in the kernel,
    /// see /stats' failing_args), as a person reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_arg: Option<String>,
    /// Failures (failing_calls) or calls (p99_regression) per second over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    /// The part of the processes' wall time in the window the finding is about (kernel_bound,
    /// cpu_starved, blocked): 1.0 = one thread all the time; threads add up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// Syscall time the finding accounts for, in ns per second of wall time.
    pub cost_ns_per_sec: f64,
    /// The wall time the rate or share is over, in seconds.
    pub window_seconds: f64,
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// 9800 → "9,800".
fn fmt_count(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn label(k: SyscallKey) -> String {
    let name = syscalls::name(k.abi, k.nr);
    if k.abi == syscalls::Abi::Native {
        name
    } else {
        format!("{name} [{}]", k.abi.name())
    }
}

/// The wall time the current rates are over: from the store's older snapshot (recent.rs: 5 to
/// 10 s ago, or the daemon's start) until now, at least one interval.
struct Window {
    now: SystemTime,
    start: SystemTime,
    span: Duration,
    interval: Duration,
}

impl Window {
    fn secs(&self) -> f64 {
        self.span.as_secs_f64()
    }

    /// A process's wall time inside the window: from its first sighting (the drain that first
    /// saw it; its calls began up to an interval before) to its exit or now, at least one
    /// interval (a process that lived a millisecond is seen by drains one interval apart), at
    /// most the window.
    fn life(&self, p: &Process) -> Duration {
        let born = p
            .first_seen
            .checked_sub(self.interval)
            .unwrap_or(p.first_seen);
        let end = p.exited.map_or(self.now, |(_, wall)| wall);
        end.duration_since(born.max(self.start))
            .unwrap_or_default()
            .clamp(self.interval, self.span)
    }
}

/// One program's calls of one syscall in the window.
#[derive(Default)]
struct Group<'a> {
    members: Vec<Member<'a>>,
    /// Over all members.
    sums: Sums,
    /// Failures by errno, and the processes that had them.
    errnos: BTreeMap<u32, (u64, Vec<&'a Process>)>,
}

/// One process's calls of the group's syscall in the window.
struct Member<'a> {
    p: &'a Process,
    sums: Sums,
    /// Its wall time in the window.
    life_ns: f64,
    /// How long its call still in flight has waited inside the window (0: none).
    waiting_ns: u64,
}

/// Where a member's time in the syscall went, in ns: on a CPU, runnable, blocked.
fn parts(m: &Member, split: bool) -> [f64; 3] {
    if split {
        [
            m.sums.on_cpu_ns() as f64,
            m.sums.split.runq_ns as f64,
            (m.sums.split.blocked_ns + m.waiting_ns) as f64,
        ]
    } else {
        // Without the split, all of a call's time counts as waiting: the time in the syscall.
        [0.0, 0.0, (m.sums.total_ns + m.waiting_ns) as f64]
    }
}

/// What one process did in the window, per syscall: sums, failures, calls in flight.
#[derive(Default)]
struct Recent {
    sums: BTreeMap<SyscallKey, Sums>,
    errnos: BTreeMap<(SyscallKey, u32), u64>,
    waiting: BTreeMap<SyscallKey, u64>,
}

/// Who a finding is about: `pid 42 (myapp)`, or `8 myapp processes`.
fn who(comm: &str, procs: &[&Process]) -> String {
    match procs {
        [p] => format!("pid {} ({comm})", p.key.pid),
        _ => format!("{} {comm} processes", procs.len()),
    }
}

fn pids_note(procs: &[&Process]) -> String {
    let mut pids: Vec<u32> = procs.iter().map(|p| p.key.pid).collect();
    pids.sort_unstable();
    let shown: Vec<String> = pids.iter().take(8).map(u32::to_string).collect();
    let more = if pids.len() > 8 { ", …" } else { "" };
    format!(
        "pid{} {}{more}",
        if pids.len() > 1 { "s" } else { "" },
        shown.join(", ")
    )
}

fn exited_note(procs: &[&Process], w: &Window) -> Option<String> {
    let last = procs
        .iter()
        .map(|p| p.exited.map(|(_, wall)| wall))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()?;
    let ago = w.now.duration_since(last).unwrap_or_default();
    Some(format!("exited {:.0} s ago", ago.as_secs_f64()))
}

/// A finding about some processes of one program.
fn about(kind: &'static str, comm: &str, k: SyscallKey, procs: &[&Process], w: &Window) -> Finding {
    let mut pids: Vec<u32> = procs.iter().map(|p| p.key.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    Finding {
        kind,
        score: 0.0,
        summary: String::new(),
        evidence: String::new(),
        comm: Some(comm.to_string()),
        processes: pids.len(),
        pids,
        exited: procs.iter().all(|p| p.exited.is_some()),
        first_seen_unix_ms: procs.iter().map(|p| p.first_seen).min().map(unix_ms),
        last_seen_unix_ms: procs.iter().map(|p| p.last_seen).max().map(unix_ms),
        syscall: label(k),
        errno: None,
        failing_arg: None,
        rate_per_sec: None,
        share: None,
        cost_ns_per_sec: 0.0,
        window_seconds: w.secs(),
    }
}

fn failing(
    store: &Store,
    comm: &str,
    k: SyscallKey,
    g: &Group,
    w: &Window,
    args: &InsightArgs,
    out: &mut Vec<Finding>,
) {
    let name = label(k);
    for (&errno, (n, procs)) in &g.errnos {
        let rate = *n as f64 / w.secs();
        if rate < args.insight_failures_per_sec {
            continue;
        }
        // Which file (or address): the top argument behind these failures.
        let arg = failing_args::top_over(store, procs, k, errno);
        let errno = syscalls::errno_name(errno);
        let cost = g.sums.total_ns as f64 / w.secs();
        let exited = exited_note(procs, w);
        let mut f = about("failing_calls", comm, k, procs, w);
        f.score = rate / args.insight_failures_per_sec;
        f.summary = format!(
            "{} made {} failing {name}() calls/s ({errno}){} — {}/s of syscall time{}",
            who(comm, procs),
            fmt_count(rate),
            arg.as_ref().map_or(String::new(), |a| format!(" on {a}")),
            fmt_ns(cost),
            exited.as_ref().map_or(String::new(), |e| format!(" ({e})")),
        );
        f.evidence = format!(
            "{} of {} {name}() calls failed with {errno} in the last {:.1} s ({})",
            fmt_count(*n as f64),
            fmt_count(g.sums.count as f64),
            w.secs(),
            pids_note(procs),
        );
        f.errno = Some(errno);
        f.failing_arg = arg;
        f.rate_per_sec = Some(rate);
        f.cost_ns_per_sec = cost;
        out.push(f);
    }
}

/// Where the program's time in the syscall went, as shares of its processes' wall time. A
/// finding covers the processes past the threshold (a parent that waits while its child burns
/// CPU does not dilute the child's share): their parts summed over their wall time summed.
fn shares(
    comm: &str,
    k: SyscallKey,
    g: &Group,
    w: &Window,
    args: &InsightArgs,
    split: bool,
    out: &mut Vec<Finding>,
) {
    let name = label(k);
    let mut kinds = vec![(
        "blocked",
        2,
        args.insight_blocked_share,
        format!("blocked in {name}"),
    )];
    if split {
        kinds.push((
            "kernel_bound",
            0,
            args.insight_kernel_share,
            format!("on a CPU inside {name} (kernel-bound)"),
        ));
        kinds.push((
            "cpu_starved",
            1,
            args.insight_runq_share,
            format!("waiting for a CPU inside {name} (starved for CPU)"),
        ));
    }
    for (kind, part, threshold, doing) in kinds {
        let covered: Vec<&Member> = g
            .members
            .iter()
            .filter(|m| parts(m, split)[part] / m.life_ns.max(1.0) >= threshold)
            .collect();
        if covered.is_empty() {
            continue;
        }
        let life: f64 = covered.iter().map(|m| m.life_ns).sum::<f64>().max(1.0);
        let mut sum = [0.0; 3];
        for m in &covered {
            for (s, x) in sum.iter_mut().zip(parts(m, split)) {
                *s += x;
            }
        }
        let share = sum[part] / life;
        let procs: Vec<&Process> = covered.iter().map(|m| m.p).collect();
        let calls: u64 = covered.iter().map(|m| m.sums.count).sum();
        let oldest = covered.iter().map(|m| m.waiting_ns).max().unwrap_or(0);
        let still = if oldest > 0 {
            format!(", one call blocked for {} so far", fmt_ns(oldest as f64))
        } else {
            String::new()
        };
        let split_note = if split {
            format!(
                "{} on a CPU, {} runnable, {} blocked",
                fmt_ns(sum[0]),
                fmt_ns(sum[1]),
                fmt_ns(sum[2])
            )
        } else {
            fmt_ns(sum[2])
        };
        let exited = exited_note(&procs, w).map_or(String::new(), |e| format!(" ({e})"));
        // Threads add up: say so where a share passes what one thread can spend.
        let threads = match (share > 1.0, procs.len()) {
            (false, _) => "",
            (true, 1) => " (its threads' time added up)",
            (true, _) => " (their threads' time added up)",
        };
        let mut f = about(kind, comm, k, &procs, w);
        f.score = share / threshold;
        f.summary = format!(
            "{} {} {:.0}% of wall time {doing}{threads}{exited}",
            who(comm, &procs),
            if procs.len() == 1 { "spends" } else { "spend" },
            share * 100.0
        );
        f.evidence = format!(
            "{split_note} in {name} over {} of process wall time in the last {:.1} s \
             ({} completed calls{still}; {})",
            fmt_ns(life),
            w.secs(),
            fmt_count(calls as f64),
            pids_note(&procs),
        );
        f.share = Some(share);
        f.cost_ns_per_sec = share * 1e9;
        out.push(f);
    }
}

fn regressions(store: &Store, now: Instant, args: &InsightArgs, out: &mut Vec<Finding>) {
    let w = args.insight_window;
    for &k in store.system().keys() {
        let recent = store.history().window(k, now, Duration::ZERO, w);
        let before = store.history().window(k, now, w, w * 2);
        if recent.hist.count < args.insight_min_calls || before.hist.count < args.insight_min_calls
        {
            continue;
        }
        let (Some(new), Some(old)) = (recent.hist.quantile_ns(0.99), before.hist.quantile_ns(0.99))
        else {
            continue;
        };
        let ratio = new as f64 / old.max(1) as f64;
        if ratio < args.insight_p99_ratio {
            continue;
        }
        // A wait that got longer (a futex, a poll, a pipe's read: mostly asleep) is the
        // program waiting for something else, not the syscall getting slower.
        let h = &recent.hist;
        if store.time_split()
            && h.total_ns > 0
            && h.split.blocked_ns as f64 / h.total_ns as f64 >= args.insight_wait_share
        {
            continue;
        }
        let label = label(k);
        let secs = w.as_secs_f64();
        out.push(Finding {
            kind: "p99_regression",
            score: ratio / args.insight_p99_ratio,
            summary: format!(
                "{label}() p99 rose {ratio:.0}× in the last {}: {} → {}",
                fmt_window(w),
                fmt_ns(old as f64),
                fmt_ns(new as f64)
            ),
            evidence: format!(
                "system-wide, {} calls in the last {} vs {} in the {} before",
                recent.hist.count,
                fmt_window(w),
                before.hist.count,
                fmt_window(w)
            ),
            comm: None,
            pids: Vec::new(),
            processes: 0,
            exited: false,
            first_seen_unix_ms: None,
            last_seen_unix_ms: None,
            syscall: label,
            errno: None,
            failing_arg: None,
            rate_per_sec: Some(recent.hist.count as f64 / secs),
            share: None,
            cost_ns_per_sec: recent.hist.total_ns as f64 / secs,
            window_seconds: secs,
        });
    }
}

fn fmt_window(w: Duration) -> String {
    match w.as_secs() {
        60 => "minute".into(),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Every finding, highest score first (ties: program, syscall, errno), and the seconds the
/// current rates are over. "Now" is the last drain: the store's counts run up to it, so a rate
/// over the time until then is exact, and the answer is the same until the next drain (so
/// http/cache.rs can keep it).
pub fn find(store: &Store, args: &InsightArgs, interval: Duration) -> (Vec<Finding>, f64) {
    let now = super::as_of(store);
    let span = now
        .1
        .duration_since(store.epochs().start.1)
        .unwrap_or_default()
        .max(interval);
    (find_at(store, args, interval, now), span.as_secs_f64())
}

fn find_at(
    store: &Store,
    args: &InsightArgs,
    interval: Duration,
    now: (Instant, SystemTime),
) -> Vec<Finding> {
    let start = store.epochs().start.1;
    let span = now
        .1
        .duration_since(start)
        .unwrap_or_default()
        .max(interval);
    let w = Window {
        now: now.1,
        start,
        span,
        interval,
    };

    let span_ns = span.as_nanos() as u64;
    let window_start = store.epochs().start.0;
    let mut recent: BTreeMap<ProcKey, Recent> = BTreeMap::new();
    for p in store.processes().values() {
        let Some(a) = p.activity_since(start) else {
            continue;
        };
        let waiting: BTreeMap<SyscallKey, u64> = p
            .in_flight
            .iter()
            .filter(|_| p.exited.is_none())
            .map(|f| (f.syscall, f.oldest_age_ns.min(span_ns)))
            .collect();
        if a.sums.is_empty() && a.errnos.is_empty() && waiting.is_empty() {
            continue;
        }
        // Only the window's part of calls that began before it (a 16 s sleep that returned
        // inside a 9 s window is 9 s of it, not 16).
        let sums = a.sums.into_iter().map(|(k, mut sums)| {
            let before = p
                .window_overhang(k, window_start, span_ns)
                .min(sums.total_ns);
            sums.total_ns -= before;
            sums.split.blocked_ns -= before.min(sums.split.blocked_ns);
            (k, sums)
        });
        recent.insert(
            p.key,
            Recent {
                sums: sums.collect(),
                errnos: a.errnos.into_iter().collect(),
                waiting,
            },
        );
    }

    let mut groups: BTreeMap<(&str, SyscallKey), Group> = BTreeMap::new();
    for (key, r) in &recent {
        let Some(p) = store.processes().get(key) else {
            continue;
        };
        let mut keys: Vec<SyscallKey> = r.sums.keys().chain(r.waiting.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            let waiting = r.waiting.get(&k).copied().unwrap_or(0);
            let life = w.life(p).max(Duration::from_nanos(waiting));
            let g = groups.entry((p.comm.as_str(), k)).or_default();
            let sums = r.sums.get(&k).copied().unwrap_or_default();
            g.sums.add(&sums);
            g.members.push(Member {
                p,
                sums,
                life_ns: life.as_nanos() as f64,
                waiting_ns: waiting,
            });
        }
        for (&(k, errno), &n) in &r.errnos {
            let g = groups.entry((p.comm.as_str(), k)).or_default();
            let e = g.errnos.entry(errno).or_default();
            e.0 += n;
            e.1.push(p);
        }
    }

    let mut out = Vec::new();
    let latency = store.latency();
    for ((comm, k), g) in &groups {
        failing(store, comm, *k, g, &w, args, &mut out);
        if latency && !g.members.is_empty() {
            shares(comm, *k, g, &w, args, store.time_split(), &mut out);
        }
    }
    regressions(store, now.0, args, &mut out);
    out.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.comm.cmp(&b.comm))
            .then_with(|| a.syscall.cmp(&b.syscall))
            .then_with(|| a.errno.cmp(&b.errno))
            .then_with(|| a.kind.cmp(b.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::histogram::{Delta, TimeSplit},
        syscalls::Abi,
    };
    use profiler_common::bucket_index;

    const P: ProcKey = ProcKey {
        pid: 42,
        incarnation: 1,
    };
    const OPENAT: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 257,
    };
    const SEC: Duration = Duration::from_secs(1);

    fn calls(n: u64, each_ns: u64, errors: u64) -> Delta {
        Delta {
            errors,
            total_ns: n * each_ns,
            split: Default::default(),
            buckets: vec![(bucket_index(each_ns), n)],
        }
    }

    fn at(s: &Store, ms: u64) -> (Instant, SystemTime) {
        let d = Duration::from_millis(ms);
        let t0 = s.started();
        (t0.0 + d, t0.1 + d)
    }

    fn pid(n: u32) -> ProcKey {
        ProcKey {
            pid: n,
            incarnation: 1,
        }
    }

    /// `n` failing openat calls of process `p`, named `comm`, in the drain ending at `ms`.
    fn fail(s: &mut Store, p: ProcKey, comm: &str, n: u64, ms: u64) {
        s.identify(p, comm, 0);
        s.add(p, OPENAT, &calls(n, 500, n));
        s.add_errno(p, OPENAT, 2, n);
        s.finish_drain(at(s, ms));
    }

    #[test]
    fn failing_calls_above_the_threshold_only() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        fail(&mut s, P, "myapp", 1000, 1000);
        // 1000 failures in the 1 s since the daemon started.
        let args = InsightArgs::default();
        let f = find_at(&s, &args, SEC, at(&s, 1000));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "failing_calls");
        assert_eq!(f[0].errno.as_deref(), Some("ENOENT"));
        assert_eq!((f[0].pids.as_slice(), f[0].exited), (&[42][..], false));
        assert_eq!(f[0].rate_per_sec, Some(1000.0));
        assert!(
            f[0].summary
                .starts_with("pid 42 (myapp) made 1,000 failing openat() calls/s (ENOENT)"),
            "{}",
            f[0].summary
        );
        let strict = InsightArgs {
            insight_failures_per_sec: 5000.0,
            ..InsightArgs::default()
        };
        assert!(find_at(&s, &strict, SEC, at(&s, 1000)).is_empty());
    }

    #[test]
    fn runs_of_one_program_are_one_finding_listing_their_pids() {
        let mut s = Store::for_test(Duration::from_secs(60), 100);
        for i in 0..8 {
            fail(&mut s, pid(100 + i), "myapp", 500, 500 * (u64::from(i) + 1));
            s.mark_exited(pid(100 + i), at(&s, 500 * (u64::from(i) + 1)));
        }
        fail(&mut s, pid(7), "other", 2000, 4500);
        let f = find_at(&s, &InsightArgs::default(), SEC, at(&s, 4500));
        assert_eq!(f.len(), 2, "{f:#?}");
        let mine = f
            .iter()
            .find(|f| f.comm.as_deref() == Some("myapp"))
            .unwrap();
        assert_eq!(mine.pids, (100..108).collect::<Vec<_>>());
        assert_eq!(mine.processes, 8);
        assert!(mine.exited);
        assert_eq!(mine.rate_per_sec, Some(4000.0 / 4.5));
        assert!(
            mine.summary
                .starts_with("8 myapp processes made 889 failing openat() calls/s"),
            "{}",
            mine.summary
        );
        assert!(mine.summary.contains("(exited "), "{}", mine.summary);
    }

    #[test]
    fn a_process_that_exited_before_the_window_has_no_rate() {
        let mut s = Store::for_test(Duration::from_secs(600), 100);
        fail(&mut s, P, "myapp", 100_000, 1000);
        s.mark_exited(P, at(&s, 1000));
        let args = InsightArgs::default();
        assert_eq!(find_at(&s, &args, SEC, at(&s, 1000)).len(), 1);
        for secs in 2..=12 {
            s.finish_drain(at(&s, secs * 1000));
        }
        let f = find_at(&s, &args, SEC, at(&s, 12_000));
        assert!(f.is_empty(), "{f:#?}");
        assert_eq!(s.processes().len(), 1, "still held, with no current rate");
    }

    #[test]
    fn blocked_counts_calls_still_in_flight() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        let read = SyscallKey {
            abi: Abi::Native,
            nr: 0,
        };
        s.set_in_flight(
            [(
                P,
                vec![crate::store::InFlight {
                    syscall: read,
                    count: 1,
                    oldest_age_ns: 3_000_000_000,
                }],
            )]
            .into(),
        );
        let (f, _) = find(&s, &InsightArgs::default(), Duration::from_millis(100));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].kind, f[0].syscall.as_str()), ("blocked", "read"));
        assert!(f[0].summary.contains("100% of wall time blocked in read"));
    }

    /// A call that began 9 s before the window and returned inside it counts for its part in
    /// the window only: 13 s blocked, 4 of them in a 5 s window, is 80%, not 260%. The process
    /// was idle (no call returned) across two snapshots, so its base is the older one, reused.
    #[test]
    fn a_call_from_before_the_window_counts_for_its_part_inside() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        let read = SyscallKey {
            abi: Abi::Native,
            nr: 0,
        };
        s.identify(P, "sleeper", 0);
        s.add(P, OPENAT, &calls(1, 1000, 0));
        s.finish_drain(at(&s, 1000));
        let in_flight = |age_ns| crate::store::InFlight {
            syscall: read,
            count: 1,
            oldest_age_ns: age_ns,
        };
        for ms in (2..=14).map(|s| s * 1000) {
            s.set_in_flight([(P, vec![in_flight((ms - 1000) * 1_000_000)])].into());
            s.finish_drain(at(&s, ms));
        }
        let mut slept = calls(1, 13_000_000_000, 0);
        slept.split.blocked_ns = 13_000_000_000;
        slept.split.blocked_calls = 1;
        s.add(P, read, &slept);
        s.set_in_flight(Default::default());
        s.finish_drain(at(&s, 15_000));
        let window = (s.epochs().start.0, s.epochs().last.0);
        assert_eq!(window, (at(&s, 10_000).0, at(&s, 15_000).0));
        let f = find_at(&s, &InsightArgs::default(), SEC, at(&s, 15_000));
        let blocked: Vec<&Finding> = f.iter().filter(|f| f.kind == "blocked").collect();
        assert_eq!(blocked.len(), 1, "{f:#?}");
        assert_eq!(blocked[0].share, Some(0.8), "{:#?}", blocked[0]);
        assert!(
            blocked[0]
                .summary
                .contains("80% of wall time blocked in read"),
            "{}",
            blocked[0].summary
        );
    }

    /// 800 ms of calls in one second, split as given.
    fn split_run(runq_ns: u64, blocked_ns: u64) -> Vec<Finding> {
        calls_run(8_000_000, runq_ns, blocked_ns)
    }

    /// 100 calls of `each_ns` in one second, split as given.
    fn calls_run(each_ns: u64, runq_ns: u64, blocked_ns: u64) -> Vec<Finding> {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        s.identify(P, "burner", 0);
        let mut d = calls(100, each_ns, 0);
        d.split = TimeSplit {
            runq_ns,
            blocked_ns,
            blocked_calls: u64::from(blocked_ns > 0) * 100,
        };
        s.add(P, OPENAT, &d);
        s.finish_drain(at(&s, 1000));
        find_at(&s, &InsightArgs::default(), SEC, at(&s, 1000))
    }

    #[test]
    fn where_the_time_went_names_the_kind() {
        let kinds = |f: &[Finding]| f.iter().map(|f| f.kind).collect::<Vec<_>>();
        let on_cpu = split_run(0, 0);
        assert_eq!(kinds(&on_cpu), ["kernel_bound"], "{on_cpu:#?}");
        assert!(
            on_cpu[0]
                .summary
                .starts_with("pid 42 (burner) spends 80% of wall time on a CPU inside openat"),
            "{}",
            on_cpu[0].summary
        );
        assert_eq!(on_cpu[0].share, Some(0.8));
        assert_eq!(kinds(&split_run(400_000_000, 0)), ["cpu_starved"]);
        assert_eq!(kinds(&split_run(0, 700_000_000)), ["blocked"]);
    }

    /// Three seconds blocked in one: several threads' time, which the sentence says it is.
    #[test]
    fn a_share_past_one_thread_says_threads_add_up() {
        let f = calls_run(30_000_000, 0, 2_900_000_000);
        let blocked: Vec<&Finding> = f.iter().filter(|f| f.kind == "blocked").collect();
        assert_eq!(blocked.len(), 1, "{f:#?}");
        assert_eq!(
            blocked[0].summary,
            "pid 42 (burner) spends 290% of wall time blocked in openat \
             (its threads' time added up)"
        );
        let one = split_run(0, 700_000_000);
        assert!(!one[0].summary.contains("added up"), "{}", one[0].summary);
    }

    /// Two windows of 2 s: fast calls, then `each_ns` ones that spent `blocked` of their time
    /// asleep; the regressions found.
    fn regression(each_ns: u64, blocked: f64) -> Vec<Finding> {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        let args = InsightArgs {
            insight_window: Duration::from_secs(2),
            insight_min_calls: 10,
            ..InsightArgs::default()
        };
        for (from, each_ns) in [(0, 1_000), (2, each_ns)] {
            for i in from..from + 2 {
                let mut d = calls(50, each_ns, 0);
                d.split.blocked_ns = (d.total_ns as f64 * blocked) as u64;
                s.add(P, OPENAT, &d);
                s.finish_drain(at(&s, (i + 1) * 1000));
            }
        }
        let mut out = Vec::new();
        regressions(&s, at(&s, 4000).0, &args, &mut out);
        out
    }

    #[test]
    fn p99_regression_compares_two_windows() {
        let out = regression(50_000, 0.0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].summary.starts_with("openat() p99 rose "),
            "{}",
            out[0].summary
        );
        assert!(regression(1_000, 0.0).is_empty());
    }

    #[test]
    fn a_longer_wait_is_not_a_regression() {
        assert!(regression(50_000, 0.9).is_empty());
        assert_eq!(regression(50_000, 0.3).len(), 1);
    }

    /// The window's bounds are the history's: one slice, and half of it (two windows are compared).
    #[test]
    fn insight_windows_fit_the_history() {
        use crate::{
            config::insights::{WINDOW_MAX, WINDOW_MIN},
            store::history::{SLICE, SLICES},
        };
        assert_eq!(WINDOW_MIN, SLICE);
        assert_eq!(WINDOW_MAX, SLICE * (SLICES as u32) / 2);
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(fmt_count(9800.2), "9,800");
        assert_eq!(fmt_count(1234567.0), "1,234,567");
        assert_eq!(fmt_count(12.0), "12");
    }
}
