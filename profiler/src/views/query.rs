//! The query of `GET /stats`: which processes and syscalls, how many, in which order.

use serde::Serialize;

use super::error::BadParam;
use crate::{
    store::SyscallKey,
    syscalls::{self, Abi},
};

/// The most processes one page may hold (`limit`, or its alias `top`).
pub const MAX_LIMIT: usize = 10_000;
/// Processes per page when the query does not say: the answer stays small (≈ 100 KiB) however
/// many processes the host ran.
pub const DEFAULT_LIMIT: usize = 50;
/// The most syscalls listed per process and system-wide (`syscalls`).
pub const MAX_SYSCALLS: usize = 1_000;
/// 10, not 20: the default answer (50 processes) must stay within 256 KiB, and a syscall
/// entry weighs about 300 bytes without its buckets (docs/performance.md).
pub const DEFAULT_SYSCALLS: usize = 10;
/// The most failing arguments listed per syscall (`failing_args`).
pub const MAX_FAILING_ARGS: usize = 100;
/// 3: the paths behind a syscall's failures are the longest strings of an entry, and a
/// short-lived shell fails a few syscalls on several paths each; the default answer must stay
/// within 256 KiB.
pub const DEFAULT_FAILING_ARGS: usize = 3;

/// Which syscalls a query asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SyscallFilter {
    /// By name, in whichever ABI has it (`openat` matches native 257 and i386 295).
    Name(String),
    /// By number in the host ABI (`257` or `syscall_257`).
    Nr(u32),
}

impl SyscallFilter {
    /// None when the name is in neither table.
    pub fn parse(s: &str) -> Option<SyscallFilter> {
        let nr = s
            .parse()
            .ok()
            .or_else(|| s.strip_prefix("syscall_")?.parse().ok());
        if let Some(nr) = nr {
            return Some(SyscallFilter::Nr(nr));
        }
        let known = !syscalls::numbers_of(s).is_empty();
        known.then(|| SyscallFilter::Name(s.to_string()))
    }

    /// The (ABI, number) pairs it matches: one or two. Matching keys rather than names spares
    /// a name lookup (and a String) per syscall of every process a query scans.
    pub fn keys(&self) -> Vec<SyscallKey> {
        match self {
            SyscallFilter::Name(n) => syscalls::numbers_of(n)
                .into_iter()
                .map(|(abi, nr)| SyscallKey { abi, nr })
                .collect(),
            SyscallFilter::Nr(nr) => vec![SyscallKey {
                abi: Abi::Native,
                nr: *nr,
            }],
        }
    }
}

/// What processes and syscalls are ranked by, descending. `cpu` and `blocked` are the parts of
/// `total` spent on a CPU and blocked (the time split).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    Count,
    #[default]
    Total,
    P99,
    Errors,
    Cpu,
    Blocked,
}

/// Whether a query wants running processes, exited ones, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExitedFilter {
    #[default]
    All,
    /// `exited=true`: exited processes only.
    Only,
    /// `exited=false`: running processes only.
    Not,
}

impl ExitedFilter {
    pub fn admits(self, exited: bool) -> bool {
        match self {
            ExitedFilter::All => true,
            ExitedFilter::Only => exited,
            ExitedFilter::Not => !exited,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatsQuery {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub syscall: Option<SyscallFilter>,
    pub sort: SortKey,
    /// Processes per page (`limit`, or `top`).
    pub limit: usize,
    /// Processes of the sorted list skipped before the page.
    pub offset: usize,
    /// Syscalls listed per process and system-wide.
    pub syscalls: usize,
    /// Whether syscall entries carry their histogram buckets.
    pub buckets: bool,
    /// Failing arguments listed per syscall entry.
    pub failing_args: usize,
    pub exited: ExitedFilter,
}

impl Default for StatsQuery {
    fn default() -> Self {
        Self {
            pid: None,
            comm: None,
            syscall: None,
            sort: SortKey::default(),
            limit: DEFAULT_LIMIT,
            offset: 0,
            syscalls: DEFAULT_SYSCALLS,
            buckets: false,
            failing_args: DEFAULT_FAILING_ARGS,
            exited: ExitedFilter::default(),
        }
    }
}

const KNOWN: &str =
    "pid, comm, syscall, sort, limit, top, offset, syscalls, buckets, failing_args, exited";

fn whole(param: &str, value: &str) -> Result<usize, BadParam> {
    value
        .parse()
        .map_err(|_| BadParam::new(param, format!("'{value}' is not a whole number")))
}

fn within(param: &str, n: usize, min: usize, max: usize) -> Result<usize, BadParam> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(BadParam::new(param, format!("must be from {min} to {max}")))
    }
}

impl StatsQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, BadParam> {
        let mut q = StatsQuery::default();
        let mut seen = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.contains(&key) {
                return Err(BadParam::new(&key, "given more than once"));
            }
            // `top` is `limit` under its schema 1 name: both at once would be two limits.
            let alias = if key == "top" { "limit" } else { "top" };
            if matches!(key.as_ref(), "top" | "limit") && seen.iter().any(|k| k == alias) {
                return Err(BadParam::new(
                    &key,
                    "`top` is an alias of `limit`: give one, not both",
                ));
            }
            seen.push(key.clone());
            let value = value.trim();
            if value.is_empty() {
                return Err(BadParam::new(&key, "is empty"));
            }
            match key.as_ref() {
                "pid" => {
                    q.pid = Some(value.parse().map_err(|_| {
                        BadParam::new("pid", format!("'{value}' is not a process id"))
                    })?)
                }
                "comm" => {
                    if value.len() > 15 {
                        return Err(BadParam::new(
                            "comm",
                            "process names (comm) are at most 15 bytes",
                        ));
                    }
                    q.comm = Some(value.to_string())
                }
                "syscall" => {
                    q.syscall = Some(SyscallFilter::parse(value).ok_or_else(|| {
                        BadParam::new(
                            "syscall",
                            format!("'{value}' is not a syscall name or number on this host"),
                        )
                    })?)
                }
                param @ ("top" | "limit") => {
                    q.limit = within(param, whole(param, value)?, 1, MAX_LIMIT)?;
                }
                "offset" => q.offset = whole("offset", value)?,
                "syscalls" => {
                    q.syscalls = within("syscalls", whole("syscalls", value)?, 0, MAX_SYSCALLS)?;
                }
                "failing_args" => {
                    q.failing_args = within(
                        "failing_args",
                        whole("failing_args", value)?,
                        0,
                        MAX_FAILING_ARGS,
                    )?;
                }
                "buckets" => {
                    q.buckets = match value {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(BadParam::new(
                                "buckets",
                                format!("'{value}' is not true or false"),
                            ))
                        }
                    }
                }
                "exited" => {
                    q.exited = match value {
                        "true" => ExitedFilter::Only,
                        "false" => ExitedFilter::Not,
                        "all" => ExitedFilter::All,
                        _ => {
                            return Err(BadParam::new(
                                "exited",
                                format!("'{value}' is not one of true, false, all"),
                            ))
                        }
                    }
                }
                "sort" => {
                    q.sort = match value {
                        "count" => SortKey::Count,
                        "total" => SortKey::Total,
                        "p99" => SortKey::P99,
                        "errors" => SortKey::Errors,
                        "cpu" => SortKey::Cpu,
                        "blocked" => SortKey::Blocked,
                        _ => {
                            return Err(BadParam::new(
                                "sort",
                                format!(
                                    "'{value}' is not one of count, total, p99, errors, cpu, \
                                     blocked"
                                ),
                            ))
                        }
                    }
                }
                other => {
                    return Err(BadParam::new(
                        other,
                        format!("unknown parameter (known: {KNOWN})"),
                    ))
                }
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_query_is_the_default() {
        assert_eq!(StatsQuery::parse(None), Ok(StatsQuery::default()));
        assert_eq!(StatsQuery::parse(Some("")), Ok(StatsQuery::default()));
    }

    #[test]
    fn all_params() {
        let q = StatsQuery::parse(Some(
            "pid=42&comm=nginx&syscall=read&limit=5&sort=p99&offset=10&syscalls=0&buckets=true\
             &exited=false",
        ))
        .unwrap();
        assert_eq!(q.pid, Some(42));
        assert_eq!(q.comm.as_deref(), Some("nginx"));
        assert_eq!(q.syscall, SyscallFilter::parse("read"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.sort, SortKey::P99);
        assert_eq!(q.offset, 10);
        assert_eq!(q.syscalls, 0);
        assert!(q.buckets);
        assert_eq!(q.exited, ExitedFilter::Not);
        for (sort, key) in [("cpu", SortKey::Cpu), ("blocked", SortKey::Blocked)] {
            let q = StatsQuery::parse(Some(&format!("sort={sort}"))).unwrap();
            assert_eq!(q.sort, key);
        }
    }

    #[test]
    fn defaults_are_bounded() {
        let q = StatsQuery::default();
        assert_eq!((q.limit, q.offset, q.syscalls), (50, 0, 10));
        assert!(!q.buckets);
        assert_eq!(q.exited, ExitedFilter::All);
    }

    #[test]
    fn top_is_limit() {
        assert_eq!(StatsQuery::parse(Some("top=7")).unwrap().limit, 7);
        assert_eq!(StatsQuery::parse(Some("top=10000")).unwrap().limit, 10_000);
    }

    #[test]
    fn bad_params_are_named() {
        let cases = [
            ("pid=abc", "pid"),
            ("pid=-1", "pid"),
            ("pid=", "pid"),
            ("comm=0123456789abcdefg", "comm"),
            ("syscall=nosuchcall", "syscall"),
            ("top=0", "top"),
            ("top=x", "top"),
            ("top=10001", "top"),
            ("limit=0", "limit"),
            ("limit=10001", "limit"),
            ("top=5&limit=5", "limit"),
            ("limit=5&top=5", "top"),
            ("offset=-1", "offset"),
            ("offset=x", "offset"),
            ("syscalls=1001", "syscalls"),
            ("syscalls=-2", "syscalls"),
            ("buckets=maybe", "buckets"),
            ("failing_args=101", "failing_args"),
            ("buckets=1", "buckets"),
            ("exited=yes", "exited"),
            ("sort=latency", "sort"),
            ("sortt=count", "sortt"),
            ("top=1&top=2", "top"),
        ];
        for (query, param) in cases {
            let err = StatsQuery::parse(Some(query)).unwrap_err();
            assert_eq!(err.param, param, "{query}");
        }
    }

    #[test]
    fn syscall_filters() {
        assert_eq!(
            SyscallFilter::parse("syscall_100000"),
            Some(SyscallFilter::Nr(100_000))
        );
        assert_eq!(SyscallFilter::parse("7"), Some(SyscallFilter::Nr(7)));
        assert_eq!(
            SyscallFilter::parse("openat"),
            Some(SyscallFilter::Name("openat".into()))
        );
        assert_eq!(SyscallFilter::parse("no_such_call"), None);
        let key = |abi, nr| SyscallKey { abi, nr };
        let f = SyscallFilter::parse("getppid").unwrap().keys();
        assert!(f.contains(&key(Abi::Native, libc::SYS_getppid as u32)));
        #[cfg(target_arch = "x86_64")]
        assert!(f.contains(&key(Abi::Compat, 64)), "i386 getppid is 64");
        assert_eq!(
            SyscallFilter::Nr(3).keys(),
            vec![key(Abi::Native, 3)],
            "numbers mean the host ABI"
        );
    }
}
