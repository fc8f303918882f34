//! `/stats` as top's rows: by process, by syscall, or (filtered, by syscall) a process's
//! syscalls; and how they sort.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Group {
    Process,
    Syscall,
}

/// What ranks the rows. `Cpu`, the default, is time on a CPU inside syscalls: a process
/// burning the kernel ranks above one that sleeps in `nanosleep` or waits in `epoll_wait`,
/// whose time is blocked time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Cpu,
    Blocked,
    Time,
    Calls,
    Errors,
    P99,
}

impl SortBy {
    pub(super) fn next(self) -> SortBy {
        match self {
            SortBy::Cpu => SortBy::Blocked,
            SortBy::Blocked => SortBy::Time,
            SortBy::Time => SortBy::Calls,
            SortBy::Calls => SortBy::Errors,
            SortBy::Errors => SortBy::P99,
            SortBy::P99 => SortBy::Cpu,
        }
    }
    pub(super) fn label(self) -> &'static str {
        match self {
            SortBy::Cpu => "cpu",
            SortBy::Blocked => "blocked",
            SortBy::Time => "time",
            SortBy::Calls => "calls",
            SortBy::Errors => "errors",
            SortBy::P99 => "p99",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    Pid(u32),
    Comm(String),
}

impl Filter {
    /// Digits are a pid, anything else a process name; empty clears.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Filter::None);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Filter::Pid)
                .map_err(|_| format!("'{s}' is not a process id"));
        }
        if s.len() > 15 {
            return Err("process names (comm) are at most 15 bytes".into());
        }
        Ok(Filter::Comm(s.to_string()))
    }

    pub(super) fn query(&self) -> String {
        match self {
            Filter::None => String::new(),
            Filter::Pid(p) => format!("&pid={p}"),
            Filter::Comm(c) => format!(
                "&comm={}",
                form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
        }
    }

    pub(super) fn label(&self) -> String {
        match self {
            Filter::None => "none".into(),
            Filter::Pid(p) => format!("pid {p}"),
            Filter::Comm(c) => format!("comm {c}"),
        }
    }
}

/// One line of the table: a process, a syscall, or (filtered, by syscall) a process's syscall.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Identity across refreshes, for calls per second.
    pub id: String,
    pub pid: Option<u32>,
    pub comm: String,
    pub syscall: String,
    pub calls: u64,
    pub errors: u64,
    /// The most frequent errno (`ENOENT`), if any call failed.
    pub errno: Option<String>,
    pub total_ns: u64,
    /// On a CPU and blocked (asleep) parts of `total_ns`; None when the daemon does not split
    /// time (counts-only mode, a kernel without the fields).
    pub on_cpu_ns: Option<u64>,
    pub blocked_ns: Option<u64>,
    pub mean_ns: u64,
    pub p99_ns: Option<u64>,
    /// When the daemon first saw the process (its clock), for a first rate.
    pub first_seen_ms: Option<u64>,
    pub rate: Option<f64>,
}

pub(super) fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn syscall_label(s: &Value) -> String {
    let name = s["name"].as_str().unwrap_or("?");
    match s["abi"].as_str() {
        Some(abi) if abi != std::env::consts::ARCH => format!("{name} [{abi}]"),
        _ => name.to_string(),
    }
}

/// A syscall entry's time split; schema 1 and 2 call it `time_split`, `split` is accepted too.
fn split(s: &Value) -> Option<&Value> {
    [&s["time_split"], &s["split"]]
        .into_iter()
        .find(|v| v.is_object())
}

/// The errno with the most failures among `entries`' `errnos` maps (ties: the name first in
/// order, so the column does not flicker).
fn top_errno<'a>(entries: impl Iterator<Item = &'a Value>) -> Option<String> {
    let mut by_name: std::collections::BTreeMap<&str, u64> = Default::default();
    for s in entries {
        if let Some(m) = s["errnos"].as_object() {
            for (name, n) in m {
                *by_name.entry(name.as_str()).or_default() += u(n);
            }
        }
    }
    by_name
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .fold(None, |best: Option<(&str, u64)>, (name, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((name, n)),
        })
        .map(|(name, _)| name.to_string())
}

fn syscall_row(id: String, pid: Option<u32>, comm: &str, s: &Value) -> Row {
    let split = split(s);
    Row {
        id,
        pid,
        comm: comm.to_string(),
        syscall: syscall_label(s),
        calls: u(&s["count"]),
        errors: u(&s["errors"]),
        errno: top_errno(std::iter::once(s)),
        total_ns: u(&s["total_ns"]),
        on_cpu_ns: split.map(|x| u(&x["on_cpu_ns"])),
        blocked_ns: split.map(|x| u(&x["blocked_ns"])),
        mean_ns: u(&s["mean_ns"]),
        p99_ns: s["p99_ns"].as_u64(),
        first_seen_ms: None,
        rate: None,
    }
}

/// A process's sum of one split part: schema 2 gives it per process; schema 1 only per
/// syscall, so it is summed over the syscalls listed (all of them unless the list was cut).
fn process_part(p: &Value, calls: &[Value], key: &str) -> Option<u64> {
    if let Some(n) = p[key].as_u64() {
        return Some(n);
    }
    let parts: Vec<u64> = calls
        .iter()
        .filter_map(|s| split(s).map(|x| u(&x[key])))
        .collect();
    (!parts.is_empty()).then(|| parts.iter().sum())
}

/// Turns a `/stats` answer into rows for a grouping. Without a filter, "by syscall" is the
/// daemon's system-wide list; with one it lists each matching process's syscalls (the daemon
/// does not merge histograms across processes for us, and we do not re-derive p99).
pub fn rows(stats: &Value, group: Group, filter: &Filter, by: SortBy) -> Vec<Row> {
    let empty = Vec::new();
    let procs = stats["processes"].as_array().unwrap_or(&empty);
    match (group, filter) {
        (Group::Process, _) => procs
            .iter()
            .map(|p| {
                let pid = u(&p["pid"]) as u32;
                let calls = p["syscalls"].as_array().unwrap_or(&empty);
                // The process's top syscall by the key it is ranked by.
                let top = calls
                    .iter()
                    .map(|s| syscall_row(String::new(), None, "", s))
                    .max_by(|a, b| key(a, by).cmp(&key(b, by)).then(b.syscall.cmp(&a.syscall)))
                    .map(|r| r.syscall)
                    .unwrap_or_default();
                let count = u(&p["count"]);
                let seen = u(&p["first_seen_unix_ms"]);
                Row {
                    id: format!("p{pid}.{seen}"),
                    pid: Some(pid),
                    comm: p["comm"].as_str().unwrap_or("").to_string(),
                    syscall: top,
                    calls: count,
                    errors: u(&p["errors"]),
                    errno: top_errno(calls.iter()),
                    total_ns: u(&p["total_ns"]),
                    on_cpu_ns: process_part(p, calls, "on_cpu_ns"),
                    blocked_ns: process_part(p, calls, "blocked_ns"),
                    mean_ns: u(&p["total_ns"]).checked_div(count).unwrap_or(0),
                    p99_ns: calls.iter().filter_map(|s| s["p99_ns"].as_u64()).max(),
                    first_seen_ms: Some(seen),
                    rate: None,
                }
            })
            .collect(),
        (Group::Syscall, Filter::None) => stats["syscalls"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|s| syscall_row(format!("s{}", syscall_label(s)), None, "", s))
            .collect(),
        (Group::Syscall, _) => procs
            .iter()
            .flat_map(|p| {
                let pid = u(&p["pid"]) as u32;
                let comm = p["comm"].as_str().unwrap_or("");
                let seen = u(&p["first_seen_unix_ms"]);
                p["syscalls"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(move |s| Row {
                        first_seen_ms: Some(seen),
                        ..syscall_row(
                            format!("p{pid}.{seen}.{}", syscall_label(s)),
                            Some(pid),
                            comm,
                            s,
                        )
                    })
            })
            .collect(),
    }
}

/// The value `by` ranks a row by (the daemon ranks by the same; see query.rs).
fn key(r: &Row, by: SortBy) -> u64 {
    match by {
        SortBy::Cpu => r.on_cpu_ns.unwrap_or(0),
        SortBy::Blocked => r.blocked_ns.unwrap_or(0),
        SortBy::Time => r.total_ns,
        SortBy::Calls => r.calls,
        SortBy::Errors => r.errors,
        SortBy::P99 => r.p99_ns.unwrap_or(0),
    }
}

pub fn sort(rows: &mut [Row], by: SortBy) {
    rows.sort_by(|a, b| {
        key(b, by)
            .cmp(&key(a, by))
            .then(a.pid.cmp(&b.pid))
            .then(a.syscall.cmp(&b.syscall))
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stats() -> Value {
        json!({
            "syscalls": [
                {"name": "getppid", "abi": std::env::consts::ARCH, "count": 10, "errors": 0,
                 "total_ns": 500, "mean_ns": 50, "p99_ns": 60},
                {"name": "openat", "abi": std::env::consts::ARCH, "count": 4, "errors": 4,
                 "total_ns": 2000, "mean_ns": 500, "p99_ns": 900},
                {"name": "getppid", "abi": "i386", "count": 1, "errors": 0,
                 "total_ns": 70, "mean_ns": 70, "p99_ns": 70}
            ],
            "processes": [
                {"pid": 7, "comm": "a", "first_seen_unix_ms": 1, "count": 10, "errors": 0,
                 "total_ns": 500, "syscalls": [
                    {"name": "getppid", "abi": std::env::consts::ARCH, "count": 10, "errors": 0,
                     "total_ns": 500, "mean_ns": 50, "p99_ns": 60}]},
                {"pid": 9, "comm": "b", "first_seen_unix_ms": 2, "count": 5, "errors": 4,
                 "total_ns": 2070, "syscalls": [
                    {"name": "openat", "abi": std::env::consts::ARCH, "count": 4, "errors": 4,
                     "total_ns": 2000, "mean_ns": 500, "p99_ns": 900},
                    {"name": "getppid", "abi": "i386", "count": 1, "errors": 0,
                     "total_ns": 70, "mean_ns": 70, "p99_ns": 70}]}
            ]
        })
    }

    #[test]
    fn by_process_rows_use_the_daemons_numbers() {
        let mut r = rows(&stats(), Group::Process, &Filter::None, SortBy::Time);
        sort(&mut r, SortBy::Time);
        assert_eq!(r[0].pid, Some(9));
        assert_eq!((r[0].calls, r[0].errors, r[0].total_ns), (5, 4, 2070));
        assert_eq!(r[0].p99_ns, Some(900), "the highest per-syscall p99");
        assert_eq!(r[0].syscall, "openat");
        sort(&mut r, SortBy::Calls);
        assert_eq!(r[0].pid, Some(7));
    }

    #[test]
    fn by_syscall_is_system_wide_unless_filtered() {
        let mut r = rows(&stats(), Group::Syscall, &Filter::None, SortBy::Time);
        sort(&mut r, SortBy::Errors);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].syscall, "openat");
        assert!(r.iter().any(|x| x.syscall == "getppid [i386]"));
        let r = rows(&stats(), Group::Syscall, &Filter::Pid(9), SortBy::Time);
        assert_eq!(r.len(), 2 + 1, "every listed process's syscalls");
        assert!(r.iter().all(|x| x.pid.is_some()));
    }

    #[test]
    fn cpu_ranks_a_burner_above_a_sleeper_and_the_errno_column_is_the_top_one() {
        let stats = json!({"processes": [
            {"pid": 1, "comm": "sleeper", "first_seen_unix_ms": 5, "count": 100, "errors": 0,
             "total_ns": 9_000_000_000u64, "syscalls": [
                {"name": "nanosleep", "count": 100, "errors": 0, "total_ns": 9_000_000_000u64,
                 "time_split": {"on_cpu_ns": 1_000_000, "blocked_ns": 8_999_000_000u64}}]},
            {"pid": 2, "comm": "burner", "first_seen_unix_ms": 5, "count": 30, "errors": 7,
             "total_ns": 2_000_000_000u64, "syscalls": [
                {"name": "getrandom", "count": 20, "errors": 0, "total_ns": 1_900_000_000u64,
                 "time_split": {"on_cpu_ns": 1_900_000_000u64, "blocked_ns": 0}},
                {"name": "openat", "count": 10, "errors": 7, "total_ns": 100_000_000,
                 "errnos": {"EACCES": 2, "ENOENT": 5},
                 "time_split": {"on_cpu_ns": 90_000_000, "blocked_ns": 10_000_000}}]}
        ]});
        let mut r = rows(&stats, Group::Process, &Filter::None, SortBy::Cpu);
        sort(&mut r, SortBy::Cpu);
        assert_eq!(r[0].comm, "burner");
        assert_eq!(
            r[0].on_cpu_ns,
            Some(1_990_000_000),
            "summed over its syscalls"
        );
        assert_eq!(r[0].blocked_ns, Some(10_000_000));
        assert_eq!(r[0].errno.as_deref(), Some("ENOENT"));
        assert_eq!(r[0].syscall, "getrandom");
        assert_eq!(r[1].errno, None);
        sort(&mut r, SortBy::Time);
        assert_eq!(r[0].comm, "sleeper", "by wall time the sleeper wins");
        // Schema 2's per-process sums win over the (possibly cut) syscall list.
        let mut v2 = stats.clone();
        v2["processes"][1]["on_cpu_ns"] = json!(5_000_000_000u64);
        let r = rows(&v2, Group::Process, &Filter::None, SortBy::Cpu);
        assert_eq!(r[1].on_cpu_ns, Some(5_000_000_000));
    }

    #[test]
    fn filters_parse() {
        assert_eq!(Filter::parse(" 42 "), Ok(Filter::Pid(42)));
        assert_eq!(Filter::parse("nginx"), Ok(Filter::Comm("nginx".into())));
        assert_eq!(Filter::parse(""), Ok(Filter::None));
        assert!(Filter::parse("99999999999").is_err());
        assert!(Filter::parse("a-very-long-process-name").is_err());
        assert_eq!(Filter::Comm("a b".into()).query(), "&comm=a+b");
    }
}
