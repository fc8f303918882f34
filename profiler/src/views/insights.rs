//! Ranked findings a person should look at first, read from the store (per-process totals,
//! in-flight calls) and its history (per-second system-wide histograms). Every estimate comes
//! from `histogram.rs`; here are only rates, shares and thresholds.
//!
//! Per-process rates are averages over the process's observed life (first seen, or the daemon's
//! start, until its exit or now): the store keeps totals per process, not per-process history.

use std::{
    cmp::Ordering,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    config::insights::InsightArgs,
    store::{Process, Store, SyscallKey},
    syscalls,
};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Finding {
    /// `failing_calls`, `blocked`, `p99_regression`.
    pub kind: &'static str,
    /// How far past its threshold (1.0 = at it); findings are sorted by this, highest first.
    pub score: f64,
    pub summary: String,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub syscall: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Calls (or failures) per second, where the finding is about a rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    /// Syscall time the finding accounts for, in ns per second of wall time.
    pub cost_ns_per_sec: f64,
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

/// The wall time a process was observed for, never shorter than one drain interval (a process
/// that lived a millisecond is first seen and seen exiting by drains one interval apart).
fn observed(p: &Process, store: &Store, now: SystemTime, floor: Duration) -> Duration {
    let start = p.first_seen.max(store.started().1);
    let end = p.exited.map_or(now, |(_, wall)| wall);
    end.duration_since(start).unwrap_or_default().max(floor)
}

fn failing(p: &Process, life: Duration, args: &InsightArgs, out: &mut Vec<Finding>) {
    let secs = life.as_secs_f64();
    for (k, t) in &p.syscalls {
        let rate = t.hist.errors as f64 / secs;
        if t.hist.errors == 0 || rate < args.insight_failures_per_sec {
            continue;
        }
        let name = syscalls::name(k.abi, k.nr);
        let errno = t
            .errnos
            .iter()
            .max_by_key(|(_, &n)| n)
            .map(|(&e, _)| syscalls::errno_name(e));
        let cost = t.hist.total_ns as f64 / secs;
        out.push(Finding {
            kind: "failing_calls",
            score: rate / args.insight_failures_per_sec,
            summary: format!(
                "pid {} ({}) made {} failing {name}() calls/s{} — {}/s of syscall time",
                p.key.pid,
                p.comm,
                fmt_count(rate),
                errno.as_ref().map_or(String::new(), |e| format!(" ({e})")),
                fmt_ns(cost),
            ),
            evidence: format!(
                "{} of {} {name}() calls failed over {secs:.1} s observed",
                t.hist.errors, t.hist.count
            ),
            pid: Some(p.key.pid),
            comm: Some(p.comm.clone()),
            syscall: name,
            errno,
            rate_per_sec: Some(rate),
            cost_ns_per_sec: cost,
        });
    }
}

fn blocked(p: &Process, life: Duration, args: &InsightArgs, out: &mut Vec<Finding>) {
    let mut keys: Vec<SyscallKey> = p.syscalls.keys().copied().collect();
    keys.extend(p.in_flight.iter().map(|f| f.syscall));
    keys.sort();
    keys.dedup();
    for k in keys {
        let completed = p.syscalls.get(&k).map_or(0, |t| t.hist.total_ns);
        // A call still blocked counts for as long as it has been blocked so far.
        let waiting = p
            .in_flight
            .iter()
            .find(|f| f.syscall == k)
            .map_or(0, |f| f.oldest_age_ns);
        let blocked_ns = (completed + waiting) as f64;
        let wall = life.as_nanos().max(u128::from(waiting)) as f64;
        let share = blocked_ns / wall;
        if share < args.insight_blocked_share {
            continue;
        }
        let name = syscalls::name(k.abi, k.nr);
        let calls = p.syscalls.get(&k).map_or(0, |t| t.hist.count);
        let still = if waiting > 0 {
            format!(", one call blocked for {} so far", fmt_ns(waiting as f64))
        } else {
            String::new()
        };
        out.push(Finding {
            kind: "blocked",
            score: share / args.insight_blocked_share,
            summary: format!(
                "pid {} ({}) spends {:.0}% of wall time blocked in {name}",
                p.key.pid,
                p.comm,
                share * 100.0
            ),
            evidence: format!(
                "{} in {name} over {} observed ({calls} completed calls{still})",
                fmt_ns(blocked_ns),
                fmt_ns(wall)
            ),
            pid: Some(p.key.pid),
            comm: Some(p.comm.clone()),
            syscall: name,
            errno: None,
            rate_per_sec: None,
            cost_ns_per_sec: share * 1e9,
        });
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
        let name = syscalls::name(k.abi, k.nr);
        let label = if k.abi == syscalls::Abi::Native {
            name.clone()
        } else {
            format!("{name} [{}]", k.abi.name())
        };
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
            pid: None,
            comm: None,
            syscall: label,
            errno: None,
            rate_per_sec: Some(recent.hist.count as f64 / secs),
            cost_ns_per_sec: recent.hist.total_ns as f64 / secs,
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

/// Every finding, highest score first (ties: lower pid, then syscall name).
pub fn find(store: &Store, args: &InsightArgs, interval: Duration) -> Vec<Finding> {
    let now_wall = SystemTime::now();
    let mut out = Vec::new();
    for p in store.processes().values() {
        let life = observed(p, store, now_wall, interval);
        failing(p, life, args, &mut out);
        blocked(p, life, args, &mut out);
    }
    regressions(store, Instant::now(), args, &mut out);
    // Which file (or address): the top argument behind the failures (views/failing_args.rs).
    for f in out.iter_mut().filter(|f| f.kind == "failing_calls") {
        let errno = f.errno.as_deref();
        if let Some(arg) = super::failing_args::top_for(store, f.pid, &f.syscall, errno) {
            f.summary = f.summary.replacen(" — ", &format!(" on {arg} — "), 1);
        }
    }
    out.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.pid.cmp(&b.pid))
            .then(a.syscall.cmp(&b.syscall))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store::histogram::Delta, store::ProcKey, syscalls::Abi};
    use profiler_common::bucket_index;

    const P: ProcKey = ProcKey {
        pid: 42,
        incarnation: 1,
    };
    const OPENAT: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 257,
    };

    fn calls(n: u64, each_ns: u64, errors: u64) -> Delta {
        Delta {
            errors,
            total_ns: n * each_ns,
            split: Default::default(),
            buckets: vec![(bucket_index(each_ns), n)],
        }
    }

    #[test]
    fn failing_calls_above_the_threshold_only() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        s.add(P, OPENAT, &calls(1000, 500, 1000));
        s.add_errno(P, OPENAT, 2, 1000);
        s.identify(P, "myapp", 0);
        // Observed for at least a 1 s interval: 1000 failures/s.
        let args = InsightArgs::default();
        let f = find(&s, &args, Duration::from_secs(1));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "failing_calls");
        assert_eq!(f[0].errno.as_deref(), Some("ENOENT"));
        assert!(
            f[0].summary.starts_with("pid 42 (myapp) made "),
            "{}",
            f[0].summary
        );
        assert!(f[0].summary.contains("failing openat() calls/s (ENOENT)"));
        let strict = InsightArgs {
            insight_failures_per_sec: 5000.0,
            ..InsightArgs::default()
        };
        assert!(find(&s, &strict, Duration::from_secs(1)).is_empty());
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
        let f = find(&s, &InsightArgs::default(), Duration::from_millis(100));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].kind, f[0].syscall.as_str()), ("blocked", "read"));
        assert!(f[0].summary.contains("100% of wall time blocked in read"));
    }

    #[test]
    fn p99_regression_compares_two_windows() {
        let mut s = Store::for_test(Duration::from_secs(60), 10);
        let t0 = s.started();
        let at = |secs: u64| {
            let d = Duration::from_secs(secs);
            (t0.0 + d, t0.1 + d)
        };
        let args = InsightArgs {
            insight_window: Duration::from_secs(2),
            insight_min_calls: 10,
            ..InsightArgs::default()
        };
        let regress = |s: &mut Store, from: u64, each_ns: u64| {
            for i in from..from + 2 {
                s.add(P, OPENAT, &calls(50, each_ns, 0));
                s.finish_drain(at(i + 1));
            }
        };
        regress(&mut s, 0, 1_000);
        regress(&mut s, 2, 50_000);
        let now = at(4).0;
        let mut out = Vec::new();
        regressions(&s, now, &args, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].summary.starts_with("openat() p99 rose "),
            "{}",
            out[0].summary
        );
        let mut flat = Vec::new();
        regress(&mut s, 4, 50_000);
        regress(&mut s, 6, 50_000);
        regressions(&s, at(8).0, &args, &mut flat);
        assert!(flat.is_empty(), "{flat:?}");
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
