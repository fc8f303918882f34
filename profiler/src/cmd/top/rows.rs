//! `/stats` as top's rows: by process, by syscall, or (filtered, by syscall) a process's
//! syscalls; and how they sort.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Group {
    Process,
    Syscall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Time,
    Calls,
    Errors,
    P99,
}

impl SortBy {
    pub(super) fn next(self) -> SortBy {
        match self {
            SortBy::Time => SortBy::Calls,
            SortBy::Calls => SortBy::Errors,
            SortBy::Errors => SortBy::P99,
            SortBy::P99 => SortBy::Time,
        }
    }
    pub(super) fn label(self) -> &'static str {
        match self {
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
    pub total_ns: u64,
    pub mean_ns: u64,
    pub p99_ns: Option<u64>,
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

fn syscall_row(id: String, pid: Option<u32>, comm: &str, s: &Value) -> Row {
    Row {
        id,
        pid,
        comm: comm.to_string(),
        syscall: syscall_label(s),
        calls: u(&s["count"]),
        errors: u(&s["errors"]),
        total_ns: u(&s["total_ns"]),
        mean_ns: u(&s["mean_ns"]),
        p99_ns: s["p99_ns"].as_u64(),
        rate: None,
    }
}

/// Turns a `/stats` answer into rows for a grouping. Without a filter, "by syscall" is the
/// daemon's system-wide list; with one it lists each matching process's syscalls (the daemon
/// does not merge histograms across processes for us, and we do not re-derive p99).
pub fn rows(stats: &Value, group: Group, filter: &Filter) -> Vec<Row> {
    let empty = Vec::new();
    let procs = stats["processes"].as_array().unwrap_or(&empty);
    match (group, filter) {
        (Group::Process, _) => procs
            .iter()
            .map(|p| {
                let pid = u(&p["pid"]) as u32;
                let calls = p["syscalls"].as_array().unwrap_or(&empty);
                let top = calls
                    .iter()
                    .max_by_key(|s| u(&s["total_ns"]))
                    .map(syscall_label)
                    .unwrap_or_default();
                let count = u(&p["count"]);
                Row {
                    id: format!("p{pid}.{}", u(&p["first_seen_unix_ms"])),
                    pid: Some(pid),
                    comm: p["comm"].as_str().unwrap_or("").to_string(),
                    syscall: top,
                    calls: count,
                    errors: u(&p["errors"]),
                    total_ns: u(&p["total_ns"]),
                    mean_ns: u(&p["total_ns"]).checked_div(count).unwrap_or(0),
                    p99_ns: calls.iter().filter_map(|s| s["p99_ns"].as_u64()).max(),
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
                    .map(move |s| {
                        syscall_row(
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

pub fn sort(rows: &mut [Row], by: SortBy) {
    rows.sort_by(|a, b| {
        let key = |r: &Row| match by {
            SortBy::Time => r.total_ns,
            SortBy::Calls => r.calls,
            SortBy::Errors => r.errors,
            SortBy::P99 => r.p99_ns.unwrap_or(0),
        };
        key(b)
            .cmp(&key(a))
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
        let mut r = rows(&stats(), Group::Process, &Filter::None);
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
        let mut r = rows(&stats(), Group::Syscall, &Filter::None);
        sort(&mut r, SortBy::Errors);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].syscall, "openat");
        assert!(r.iter().any(|x| x.syscall == "getppid [i386]"));
        let r = rows(&stats(), Group::Syscall, &Filter::Pid(9));
        assert_eq!(r.len(), 2 + 1, "every listed process's syscalls");
        assert!(r.iter().all(|x| x.pid.is_some()));
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
