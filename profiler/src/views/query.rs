//! The query of `GET /stats`: which processes and syscalls, how many, in which order.

use serde::Serialize;

use super::error::BadParam;
use crate::syscalls::{self, Abi};

/// The most rows `top` may ask for.
const MAX_TOP: usize = 100_000;

/// Which syscalls a query asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    pub fn matches(&self, abi: Abi, nr: u32, name: &str) -> bool {
        match self {
            SyscallFilter::Name(n) => n == name,
            SyscallFilter::Nr(want) => abi == Abi::Native && *want == nr,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    Count,
    #[default]
    Total,
    P99,
    Errors,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatsQuery {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub syscall: Option<SyscallFilter>,
    pub top: Option<usize>,
    pub sort: SortKey,
}

impl StatsQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, BadParam> {
        let mut q = StatsQuery::default();
        let mut seen = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.contains(&key) {
                return Err(BadParam::new(&key, "given more than once"));
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
                "top" => {
                    let n: usize = value.parse().map_err(|_| {
                        BadParam::new("top", format!("'{value}' is not a whole number"))
                    })?;
                    if n == 0 || n > MAX_TOP {
                        return Err(BadParam::new("top", format!("must be from 1 to {MAX_TOP}")));
                    }
                    q.top = Some(n);
                }
                "sort" => {
                    q.sort = match value {
                        "count" => SortKey::Count,
                        "total" => SortKey::Total,
                        "p99" => SortKey::P99,
                        "errors" => SortKey::Errors,
                        _ => {
                            return Err(BadParam::new(
                                "sort",
                                format!("'{value}' is not one of count, total, p99, errors"),
                            ))
                        }
                    }
                }
                other => {
                    return Err(BadParam::new(
                        other,
                        "unknown parameter (known: pid, comm, syscall, top, sort)",
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
        let q = StatsQuery::parse(Some("pid=42&comm=nginx&syscall=read&top=5&sort=p99")).unwrap();
        assert_eq!(q.pid, Some(42));
        assert_eq!(q.comm.as_deref(), Some("nginx"));
        assert_eq!(q.syscall, SyscallFilter::parse("read"));
        assert_eq!(q.top, Some(5));
        assert_eq!(q.sort, SortKey::P99);
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
            ("top=100001", "top"),
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
        let f = SyscallFilter::parse("openat").unwrap();
        assert!(f.matches(Abi::Compat, 295, "openat"));
        assert!(!f.matches(Abi::Native, 0, "read"));
        let n = SyscallFilter::Nr(3);
        assert!(n.matches(Abi::Native, 3, "close"));
        assert!(
            !n.matches(Abi::Compat, 3, "read"),
            "numbers mean the host ABI"
        );
    }
}
