//! The parsers every setting's text goes through, whichever source it came from: each returns the
//! value or why the text is not one (the caller names the source and key). A value is echoed
//! through [`quote`], so a 100 KB mistake makes a short error line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Where a value came from: a relative path in the file is relative to the file.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    Default,
    Flag,
    Env,
    File(&'a Path),
}

/// The most characters of a value an error line echoes.
pub const ECHO_MAX: usize = 64;

/// `s`, cut to [`ECHO_MAX`] characters with "…" after the cut.
pub fn clip(s: &str) -> String {
    clip_to(s, ECHO_MAX)
}

/// `s`, cut to `max` characters with "…" after the cut.
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// A value as error lines echo it: in single quotes, clipped.
pub fn quote(s: &str) -> String {
    format!("'{}'", clip(s))
}

/// Parses `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{} has no unit: use ms, s, m or h (e.g. 1s)", quote(s)))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{} does not start with a whole number", quote(s)))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "unknown unit {} in {}: use ms, s, m or h",
                quote(unit),
                quote(s)
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{} is too large", quote(s)))
}

/// The drain interval: the 32-bit kernel counters must be read well before they can wrap, and
/// draining faster than 10 ms costs more than it tells.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
        return Err(format!(
            "{} is out of range: the interval must be from 10ms to 10s",
            quote(s)
        ));
    }
    Ok(d)
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{} is not an IP address and port (e.g. 127.0.0.1:9760 or [::1]:9760)",
            quote(s)
        )
    })
}

/// A level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or tracing directives whose every
/// part names a level: `info,hyper=warn`. A bare word that is not a level would be taken by the
/// filter as a target enabled at TRACE, silencing everything else; it is refused instead.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let not_a_filter = |why: String| format!("{} is not a log filter: {why}", quote(s));
    let directives: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(not_a_filter("it names no level".into()));
    }
    let single = directives.len() == 1;
    for d in directives {
        let level = d.rsplit_once('=').map_or(d, |(_, level)| level);
        if level.is_empty()
            || level
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            const LEVELS: &str = "error, warn, info, debug, trace, off";
            return Err(not_a_filter(if single {
                format!("use a level ({LEVELS}) or TARGET=LEVEL directives separated by commas")
            } else {
                format!(
                    "{} is neither a level ({LEVELS}) nor TARGET=LEVEL",
                    quote(d)
                )
            }));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.trim().to_string())
        .map_err(|e| not_a_filter(e.to_string()))
}

pub fn parse_bounded_duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: must be from {min:?} to {max:?}",
            quote(s)
        ));
    }
    Ok(d)
}

/// A comma-separated list of process ids (at most FILTER_PIDS_MAX_ENTRIES).
pub fn parse_pids(s: &str) -> Result<Vec<u32>, String> {
    let pids: Vec<u32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{} is not a process id", quote(p.trim())))
        })
        .collect::<Result<_, _>>()?;
    let max = profiler_common::FILTER_PIDS_MAX_ENTRIES as usize;
    if pids.len() > max {
        return Err(format!("{} process ids, at most {max}", pids.len()));
    }
    Ok(pids)
}

/// A comma-separated list of syscall names known to the host's tables.
pub fn parse_syscalls(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(|n| {
            let n = n.trim();
            if crate::syscalls::numbers_of(n).is_empty() {
                Err(format!("{} is not a syscall name on this host", quote(n)))
            } else {
                Ok(n.to_string())
            }
        })
        .collect()
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{} is not true or false", quote(other))),
    }
}

pub fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a whole number", quote(s)))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range: must be from {min} to {max}"));
    }
    Ok(n)
}

/// A path; in the file, relative to the file.
pub fn parse_path(s: &str, origin: Origin) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("is empty".into());
    }
    let p = PathBuf::from(s);
    Ok(match origin {
        Origin::File(file) if p.is_relative() => {
            file.parent().map_or(p.clone(), |dir| dir.join(&p))
        }
        _ => p,
    })
}

/// A cgroup v2 directory (that it is one of cgroup2 the kernel layer checks).
pub fn parse_cgroup(s: &str, origin: Origin) -> Result<PathBuf, String> {
    let p = parse_path(s, origin)?;
    if !p.is_dir() {
        return Err(format!(
            "{} is not a cgroup directory",
            quote(&p.display().to_string())
        ));
    }
    Ok(p)
}

/// `65536`, `64KiB`, `64MiB` (also `B`, `KB`/`MB` as 1000s would surprise: only binary units).
pub fn parse_size(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{} does not start with a whole number", quote(s)))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {} in {}: use B, KiB, MiB or GiB",
                quote(other),
                quote(s)
            ))
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{} is too large", quote(s)))?;
    if bytes < min || bytes > max {
        return Err(format!(
            "{} is out of range: must be from {min} bytes to {max} bytes",
            quote(s)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn interval_bounds() {
        assert!(parse_interval("9ms").is_err());
        assert!(parse_interval("10ms").is_ok());
        assert!(parse_interval("10s").is_ok());
        assert!(parse_interval("11s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB", 1, usize::MAX), Ok(64 << 20));
        assert_eq!(parse_size("2048", 1, usize::MAX), Ok(2048));
        assert_eq!(parse_size("4 KiB", 1, usize::MAX), Ok(4096));
        assert!(parse_size("1MB", 1, usize::MAX).is_err());
        assert!(parse_size("99999999999999999999GiB", 1, usize::MAX).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Durations in range round-trip; out of range is refused, never wrapped.
            #[test]
            fn durations(n in 0u64..100_000, unit in prop::sample::select(&["ms", "s", "m", "h"][..])) {
                let d = parse_duration(&format!("{n}{unit}")).unwrap();
                let ms = match unit { "ms" => n, "s" => n * 1000, "m" => n * 60_000, _ => n * 3_600_000 };
                prop_assert_eq!(d, Duration::from_millis(ms));
                let interval = parse_interval(&format!("{n}{unit}"));
                prop_assert_eq!(interval.is_ok(), (10..=10_000).contains(&ms));
            }

        }
    }
}
