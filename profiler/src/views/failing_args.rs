//! The arguments behind failing calls, as `/stats` (per process and syscall: `failing_args`),
//! `/insights` (the failing_calls finding names the top one) and `record` show them.

use serde::Serialize;

use crate::{
    store::{
        failing_args::{Arg, ArgKind},
        Process, Store, SyscallKey, SyscallTotals,
    },
    syscalls,
};

/// Arguments per (process, syscall, errno) an insight sums over its processes.
pub const TOP: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct FailingArgStats {
    pub errno: String,
    /// `path` or `address`.
    pub kind: ArgKind,
    /// As the call gave it (a path), or as `127.0.0.1:9`, `[::1]:9`, `unix:/path`,
    /// `unix:@abstract` (an address); empty when `unreadable`.
    pub arg: String,
    /// A relative path resolved against the process's working directory (AT_FDCWD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// A relative path given against this directory fd (not resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirfd: Option<i32>,
    pub count: u64,
    pub truncated: bool,
    pub unreadable: bool,
    /// Failures of this errno past the kernel's capture budget, or folded past a bound, went
    /// uncaptured: the counts are a sample (`captured_share` of the errno's failures).
    pub sampled: bool,
    pub captured_share: f64,
    /// The failures whose arguments are not listed (past the store's bounds: 16 per process,
    /// syscall and errno; 256 per process; 20,000 in all; or given way to more frequent ones),
    /// folded into one entry with an empty `arg`.
    pub other: bool,
}

impl FailingArgStats {
    /// The argument as a person reads it: the resolved path when there is one, with the
    /// dirfd when relative to one.
    pub fn display(&self) -> String {
        if self.unreadable {
            return "<unreadable>".into();
        }
        if self.other {
            return "<other>".into();
        }
        let mut s = self.resolved.clone().unwrap_or_else(|| self.arg.clone());
        if let Some(fd) = self.dirfd {
            s = format!("{s} (relative to fd {fd})");
        }
        if self.truncated {
            s.push('…');
        }
        s
    }
}

/// The top arguments of `p`'s failing calls of `sc` (whose totals are `t`), most frequent
/// first, over every errno.
pub fn of(
    store: &Store,
    p: &Process,
    sc: SyscallKey,
    t: &SyscallTotals,
    n: usize,
) -> Vec<FailingArgStats> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (&errno, &failures) in &t.errnos {
        let Some(call) = store.failing_args().of(p.key, sc, errno) else {
            continue;
        };
        let captured = call.total();
        let share = if failures == 0 {
            1.0
        } else {
            (captured as f64 / failures as f64).min(1.0)
        };
        let sampled = captured < failures;
        for (arg, count) in call.top(n) {
            out.push(stats_of(errno, arg, count, sampled, share));
        }
        if call.other != 0 {
            out.push(FailingArgStats {
                other: true,
                ..stats_of(errno, &Arg::other(), call.other, sampled, share)
            });
        }
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.arg.cmp(&b.arg)));
    out.truncate(n);
    out
}

fn stats_of(errno: u32, arg: &Arg, count: u64, sampled: bool, share: f64) -> FailingArgStats {
    FailingArgStats {
        errno: syscalls::errno_name(errno),
        kind: arg.kind,
        arg: arg.text.clone(),
        resolved: arg.resolved.clone(),
        dirfd: arg.dirfd,
        count,
        truncated: arg.truncated,
        unreadable: arg.unreadable,
        sampled,
        captured_share: share,
        other: false,
    }
}

/// The argument most of `procs`' failures of `sc` with `errno` gave, summed over them (one
/// program's processes: an insight's finding), as a person reads it.
pub fn top_over(store: &Store, procs: &[&Process], sc: SyscallKey, errno: u32) -> Option<String> {
    let mut counts: std::collections::HashMap<&Arg, u64> = std::collections::HashMap::new();
    for p in procs {
        if let Some(call) = store.failing_args().of(p.key, sc, errno) {
            for (arg, count) in call.top(TOP) {
                *counts.entry(arg).or_default() += count;
            }
        }
    }
    let (arg, count) = counts
        .into_iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))?;
    Some(stats_of(errno, arg, count, false, 1.0).display())
}

/// `record`'s "top failing paths": the `n` most frequent arguments of `members`' failing
/// calls, one line each (count, errno, syscall, process, argument), most frequent first.
pub fn top_lines(store: &Store, members: &[&Process], n: usize) -> Vec<String> {
    let mut all: Vec<(u64, String)> = Vec::new();
    for p in members {
        for (&sc, t) in &p.syscalls {
            for &e in t.errnos.keys() {
                let Some(call) = store.failing_args().of(p.key, sc, e) else {
                    continue;
                };
                for (arg, count) in call.top(n) {
                    let shown = stats_of(e, arg, count, false, 1.0).display();
                    let line = format!(
                        "{count:>9} {:<12} {:<16} {:>7} ({}) {shown}",
                        syscalls::errno_name(e),
                        syscalls::name(sc.abi, sc.nr),
                        p.key.pid,
                        p.comm
                    );
                    all.push((count, line));
                }
            }
        }
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    all.into_iter().take(n).map(|(_, l)| l).collect()
}
