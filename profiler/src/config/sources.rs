//! Settings from flags, the environment and a TOML file, in that order of precedence, over the
//! defaults.
//!
//! Every value present in any source is validated, even one a higher source overrides, so a typo
//! in the file is reported now rather than on the day the overriding flag goes away. Each error
//! names its source and key in one line.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::args::{parse_duration, parse_interval, ServeArgs, DEFAULT_LISTEN};

pub const ENV_PREFIX: &str = "SYSCALL_PROFILER_";
pub const ENV_CONFIG: &str = "SYSCALL_PROFILER_CONFIG";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub interval: Duration,
    pub retention: Duration,
    pub max_exited: usize,
    pub log_level: String,
    pub web_config: Option<PathBuf>,
    pub pin_path: Option<PathBuf>,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub max_response_bytes: usize,
    pub metrics_per_pid: bool,
    pub metrics_top_pids: usize,
    pub metrics_max_groups: usize,
    pub bpf_stats: bool,
    pub filter: Filter,
    pub counts_only: bool,
}

/// In-kernel filters (see profiler_common): empty lists and no cgroup record everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub cgroup: Option<PathBuf>,
    pub syscalls: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_file: None,
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            interval: Duration::from_secs(1),
            retention: Duration::from_secs(300),
            max_exited: 10_000,
            log_level: "info".into(),
            web_config: None,
            pin_path: None,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 4,
            max_connections: 256,
            max_response_bytes: 64 << 20,
            metrics_per_pid: false,
            metrics_top_pids: 20,
            metrics_max_groups: 1000,
            bpf_stats: false,
            filter: Filter::default(),
            counts_only: false,
        }
    }
}

/// Every key the file may hold; the flag and variable names derive from it.
pub const KEYS: &[&str] = &[
    "listen",
    "interval",
    "retention",
    "max_exited",
    "log_level",
    "web_config",
    "pin_path",
    "request_timeout",
    "max_concurrent_requests",
    "max_connections",
    "max_response_bytes",
    "metrics_per_pid",
    "metrics_top_pids",
    "metrics_max_groups",
    "bpf_stats",
    "filter_pids",
    "filter_cgroup",
    "filter_syscalls",
    "counts_only",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The TOML file, already checked for syntax and unknown keys.
struct File {
    path: PathBuf,
    table: toml::Table,
}

impl File {
    fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(toml_error(path, &text, &e)))?;
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError(format!(
                    "config file {}: unknown key '{key}' (known: {})",
                    path.display(),
                    KEYS.join(", ")
                )));
            }
        }
        Ok(File {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The value of `key` as text for the shared parsers. Numbers may be written bare.
    fn get(&self, key: &str, numeric: bool) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(n)) if numeric => Ok(Some(n.to_string())),
            // Checked by the key's own parser: only true/false settings accept them.
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(ConfigError(format!(
                "config file {}, key '{key}': expected {}, found {}",
                self.path.display(),
                if numeric {
                    "a whole number"
                } else {
                    "a string"
                },
                other.type_str()
            ))),
        }
    }
}

/// A TOML error in one line: its message and where it is.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let place = e
        .span()
        .map(|span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(", line {line}")
        })
        .unwrap_or_default();
    format!(
        "config file {}{place}: {}",
        path.display(),
        e.message().trim().replace('\n', " ")
    )
}

struct Sources<'a> {
    flags: &'a ServeArgs,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<File>,
}

impl Sources<'_> {
    /// Validates `key` in every source that sets it and returns the highest-precedence value.
    fn get<T>(
        &self,
        key: &str,
        flag: Option<&String>,
        numeric: bool,
        parse: impl Fn(&str, Origin) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let mut found = None;
        if let Some(file) = &self.file {
            if let Some(raw) = file.get(key, numeric)? {
                let v = parse(&raw, Origin::File(&file.path)).map_err(|why| {
                    ConfigError(format!(
                        "config file {}, key '{key}': {why}",
                        file.path.display()
                    ))
                })?;
                found = Some(v);
            }
        }
        let env_key = env_name(key);
        if let Some(raw) = (self.env)(&env_key) {
            let v = parse(&raw, Origin::Env)
                .map_err(|why| ConfigError(format!("environment variable {env_key}: {why}")))?;
            found = Some(v);
        }
        if let Some(raw) = flag {
            let v = parse(raw, Origin::Flag)
                .map_err(|why| ConfigError(format!("{}: {why}", flag_name(key))))?;
            found = Some(v);
        }
        Ok(found)
    }
}

/// Where a value came from: a relative path in the file is relative to the file.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag,
    Env,
    File(&'a Path),
}

/// Reads the settings from `args`, the environment (through `env`) and the config file they
/// name.
pub fn load(
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let config_file = match &args.config {
        Some(p) => Some(p.clone()),
        None => env(ENV_CONFIG).map(PathBuf::from),
    };
    let file = config_file.as_deref().map(File::read).transpose()?;
    let src = Sources {
        flags: args,
        env,
        file,
    };
    let f = src.flags;
    let d = Settings::default();
    Ok(Settings {
        config_file,
        listen: src
            .get("listen", f.listen.as_ref(), false, |s, _| parse_listen(s))?
            .unwrap_or(d.listen),
        interval: src
            .get("interval", f.interval.as_ref(), false, |s, _| {
                parse_interval(s)
            })?
            .unwrap_or(d.interval),
        retention: src
            .get("retention", f.retention.as_ref(), false, |s, _| {
                parse_duration(s)
            })?
            .unwrap_or(d.retention),
        max_exited: src
            .get("max_exited", f.max_exited.as_ref(), true, |s, _| {
                parse_count(s, 0, 10_000_000)
            })?
            .unwrap_or(d.max_exited),
        log_level: src
            .get("log_level", f.log_level.as_ref(), false, |s, _| {
                parse_log_level(s)
            })?
            .unwrap_or(d.log_level),
        web_config: src.get("web_config", f.web_config.as_ref(), false, parse_path)?,
        pin_path: src.get("pin_path", f.pin_path.as_ref(), false, parse_path)?,
        request_timeout: src
            .get(
                "request_timeout",
                f.request_timeout.as_ref(),
                false,
                |s, _| {
                    parse_bounded_duration(s, Duration::from_millis(100), Duration::from_secs(600))
                },
            )?
            .unwrap_or(d.request_timeout),
        max_concurrent_requests: src
            .get(
                "max_concurrent_requests",
                f.max_concurrent_requests.as_ref(),
                true,
                |s, _| parse_count(s, 1, 4096),
            )?
            .unwrap_or(d.max_concurrent_requests),
        max_connections: src
            .get(
                "max_connections",
                f.max_connections.as_ref(),
                true,
                |s, _| parse_count(s, 1, 65536),
            )?
            .unwrap_or(d.max_connections),
        max_response_bytes: src
            .get(
                "max_response_bytes",
                f.max_response_bytes.as_ref(),
                true,
                |s, _| parse_size(s, 1 << 10, 1 << 30),
            )?
            .unwrap_or(d.max_response_bytes),
        metrics_per_pid: src
            .get(
                "metrics_per_pid",
                f.metrics_per_pid.as_ref(),
                false,
                |s, _| parse_bool(s),
            )?
            .unwrap_or(d.metrics_per_pid),
        metrics_top_pids: src
            .get(
                "metrics_top_pids",
                f.metrics_top_pids.as_ref(),
                true,
                |s, _| parse_count(s, 1, 10_000),
            )?
            .unwrap_or(d.metrics_top_pids),
        metrics_max_groups: src
            .get(
                "metrics_max_groups",
                f.metrics_max_groups.as_ref(),
                true,
                |s, _| parse_count(s, 1, 100_000),
            )?
            .unwrap_or(d.metrics_max_groups),
        bpf_stats: src
            .get("bpf_stats", f.bpf_stats.as_ref(), false, |s, _| {
                parse_bool(s)
            })?
            .unwrap_or(d.bpf_stats),
        filter: Filter {
            pids: src
                .get("filter_pids", f.filter_pids.as_ref(), false, |s, _| {
                    parse_pids(s)
                })?
                .unwrap_or_default(),
            cgroup: src.get(
                "filter_cgroup",
                f.filter_cgroup.as_ref(),
                false,
                |s, origin| {
                    let p = parse_path(s, origin)?;
                    if !p.is_dir() {
                        return Err(format!("'{}' is not a cgroup directory", p.display()));
                    }
                    Ok(p)
                },
            )?,
            syscalls: src
                .get(
                    "filter_syscalls",
                    f.filter_syscalls.as_ref(),
                    false,
                    |s, _| parse_syscalls(s),
                )?
                .unwrap_or_default(),
        },
        counts_only: src
            .get("counts_only", f.counts_only.as_ref(), false, |s, _| {
                parse_bool(s)
            })?
            .unwrap_or(d.counts_only),
    })
}

/// The process environment, for [`load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Settings {
    /// Keys whose value differs between `self` and `new` and that SIGHUP cannot apply: the
    /// socket, the drain's clock and the HTTP stack are set up once. (SIGHUP applies
    /// retention, max_exited, log_level and web_config.)
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.interval != new.interval {
            changed.push("interval");
        }
        if self.pin_path != new.pin_path {
            changed.push("pin_path");
        }
        if self.request_timeout != new.request_timeout {
            changed.push("request_timeout");
        }
        if self.max_concurrent_requests != new.max_concurrent_requests {
            changed.push("max_concurrent_requests");
        }
        if self.max_connections != new.max_connections {
            changed.push("max_connections");
        }
        if self.max_response_bytes != new.max_response_bytes {
            changed.push("max_response_bytes");
        }
        if (
            self.metrics_per_pid,
            self.metrics_top_pids,
            self.metrics_max_groups,
        ) != (
            new.metrics_per_pid,
            new.metrics_top_pids,
            new.metrics_max_groups,
        ) {
            changed.push("metrics_*");
        }
        if self.bpf_stats != new.bpf_stats {
            changed.push("bpf_stats");
        }
        if self.filter != new.filter {
            changed.push("filter_*");
        }
        if self.counts_only != new.counts_only {
            changed.push("counts_only");
        }
        changed
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("'{s}' is not an IP address and port (e.g. 127.0.0.1:9760 or [::1]:9760)")
    })
}

pub fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("'{s}' is not a log filter: {e}"))
}

fn parse_path(s: &str, origin: Origin) -> Result<PathBuf, String> {
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

fn parse_bounded_duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "'{s}' is out of range: must be from {min:?} to {max:?}"
        ));
    }
    Ok(d)
}

/// A comma-separated list of process ids (at most FILTER_PIDS_MAX_ENTRIES).
fn parse_pids(s: &str) -> Result<Vec<u32>, String> {
    let pids: Vec<u32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("'{}' is not a process id", p.trim()))
        })
        .collect::<Result<_, _>>()?;
    let max = profiler_common::FILTER_PIDS_MAX_ENTRIES as usize;
    if pids.len() > max {
        return Err(format!("{} process ids, at most {max}", pids.len()));
    }
    Ok(pids)
}

/// A comma-separated list of syscall names known to the host's tables.
fn parse_syscalls(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(|n| {
            let n = n.trim();
            if crate::syscalls::numbers_of(n).is_empty() {
                Err(format!("'{n}' is not a syscall name on this host"))
            } else {
                Ok(n.to_string())
            }
        })
        .collect()
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("'{other}' is not true or false")),
    }
}

fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range: must be from {min} to {max}"));
    }
    Ok(n)
}

/// `65536`, `64KiB`, `64MiB` (also `B`, `KB`/`MB` as 1000s would surprise: only binary units).
fn parse_size(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' does not start with a whole number"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}': use B, KiB, MiB or GiB"
            ))
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes < min || bytes > max {
        return Err(format!(
            "'{s}' is out of range: must be from {min} bytes to {max} bytes"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_without_any_source() {
        let s = load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(s, Settings::default());
        assert!(s.listen.ip().is_loopback());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = file_with("interval = \"3s\"\nretention = \"1m\"\nlog_level = \"warn\"\n");
        let args = ServeArgs {
            config: Some(file.path().into()),
            interval: Some("2s".into()),
            ..Default::default()
        };
        let env = env_of(&[
            ("SYSCALL_PROFILER_INTERVAL", "4s"),
            ("SYSCALL_PROFILER_RETENTION", "2m"),
        ]);
        let s = load(&args, &env).unwrap();
        assert_eq!(s.interval, Duration::from_secs(2), "flag wins");
        assert_eq!(s.retention, Duration::from_secs(120), "env beats file");
        assert_eq!(s.log_level, "warn", "file beats default");
        assert_eq!(s.max_connections, 256, "default");
    }

    #[test]
    fn config_path_from_env_and_relative_paths_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "web_config = \"web.toml\"\nmax_connections = 9\n").unwrap();
        let env = env_of(&[(ENV_CONFIG, path.to_str().unwrap())]);
        let s = load(&ServeArgs::default(), &env).unwrap();
        assert_eq!(s.web_config, Some(dir.path().join("web.toml")));
        assert_eq!(s.max_connections, 9);
        assert_eq!(s.config_file, Some(path));
    }

    #[test]
    fn errors_name_source_and_key() {
        type Case<'a> = (ServeArgs, Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                ServeArgs {
                    interval: Some("0s".into()),
                    ..Default::default()
                },
                vec![],
                "--interval",
                "out of range",
            ),
            (
                ServeArgs::default(),
                vec![("SYSCALL_PROFILER_LISTEN", "localhost")],
                "SYSCALL_PROFILER_LISTEN",
                "not an IP address",
            ),
            (
                ServeArgs::default(),
                vec![("SYSCALL_PROFILER_MAX_RESPONSE_BYTES", "12parsecs")],
                "SYSCALL_PROFILER_MAX_RESPONSE_BYTES",
                "unknown unit",
            ),
            (
                ServeArgs {
                    log_level: Some("loud=[".into()),
                    ..Default::default()
                },
                vec![],
                "--log-level",
                "not a log filter",
            ),
        ];
        for (args, env, name, why) in cases {
            let e = load(&args, &env_of(&env)).unwrap_err().0;
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn file_errors_are_one_line_with_the_key() {
        for (text, needles) in [
            ("interval = \"0s\"", &["key 'interval'", "out of range"][..]),
            (
                "interval = 5",
                &["key 'interval'", "expected a string", "integer"],
            ),
            ("bogus = 1", &["unknown key 'bogus'"]),
            (
                "max_connections = \"many\"",
                &["key 'max_connections'", "not a whole number"],
            ),
            (
                "max_connections = 0",
                &["key 'max_connections'", "out of range"],
            ),
            ("\n\nlisten = ", &["line 3"]),
            ("listen = \"1.2.3.4\"", &["key 'listen'"]),
        ] {
            let file = file_with(text);
            let args = ServeArgs {
                config: Some(file.path().into()),
                ..Default::default()
            };
            let e = load(&args, &env_of(&[])).unwrap_err().0;
            assert_eq!(e.lines().count(), 1, "{e}");
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn an_overridden_bad_value_is_still_an_error() {
        let file = file_with("retention = \"forever\"");
        let args = ServeArgs {
            config: Some(file.path().into()),
            retention: Some("1m".into()),
            ..Default::default()
        };
        assert!(load(&args, &env_of(&[])).is_err());
    }

    #[test]
    fn missing_file_is_named() {
        let args = ServeArgs {
            config: Some("/nonexistent/p.toml".into()),
            ..Default::default()
        };
        let e = load(&args, &env_of(&[])).unwrap_err().0;
        assert!(e.contains("/nonexistent/p.toml"), "{e}");
    }

    #[test]
    fn the_packaged_example_config_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = load(&args, &env_of(&[])).unwrap();
        assert_eq!(
            s,
            Settings {
                config_file: Some(path),
                ..Settings::default()
            }
        );
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

        fn one_line(r: Result<Settings, ConfigError>) -> Result<(), TestCaseError> {
            if let Err(e) = r {
                prop_assert_eq!(e.0.lines().count(), 1, "{}", e.0);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any value for any key, from a flag or the environment: a setting or one line.
            #[test]
            fn any_flag_or_env_value(key in prop::sample::select(KEYS), value in ".{0,40}") {
                let mut args = ServeArgs::default();
                let slot = match key {
                    "listen" => &mut args.listen,
                    "interval" => &mut args.interval,
                    "retention" => &mut args.retention,
                    "max_exited" => &mut args.max_exited,
                    "log_level" => &mut args.log_level,
                    "web_config" => &mut args.web_config,
                    "pin_path" => &mut args.pin_path,
                    "request_timeout" => &mut args.request_timeout,
                    "max_concurrent_requests" => &mut args.max_concurrent_requests,
                    "max_connections" => &mut args.max_connections,
                    "metrics_per_pid" => &mut args.metrics_per_pid,
                    "metrics_top_pids" => &mut args.metrics_top_pids,
                    "metrics_max_groups" => &mut args.metrics_max_groups,
                    "bpf_stats" => &mut args.bpf_stats,
                    "filter_pids" => &mut args.filter_pids,
                    "filter_cgroup" => &mut args.filter_cgroup,
                    "filter_syscalls" => &mut args.filter_syscalls,
                    "counts_only" => &mut args.counts_only,
                    _ => &mut args.max_response_bytes,
                };
                *slot = Some(value.clone());
                one_line(load(&args, &env_of(&[])))?;
                let var = env_name(key);
                one_line(load(&ServeArgs::default(), &env_of(&[(&var, &value)])))?;
            }

            /// Any file text, and any TOML value under a known key.
            #[test]
            fn any_file(text in "(?s).{0,200}", key in prop::sample::select(KEYS),
                        value in prop_oneof![
                            any::<i64>().prop_map(|n| n.to_string()),
                            "[0-9]{1,12}(ms|s|m|h|B|KiB|MiB|GiB|x)?".prop_map(|s| format!("\"{s}\"")),
                            ".{0,20}".prop_map(|s| format!("{s:?}")),
                            Just("[1, 2]".to_string()),
                            Just("{ a = 1 }".to_string()),
                            Just("true".to_string()),
                            Just("1.5".to_string()),
                        ]) {
                for contents in [text, format!("{key} = {value}\n")] {
                    let file = file_with(&contents);
                    let args = ServeArgs {
                        config: Some(file.path().into()),
                        ..Default::default()
                    };
                    one_line(load(&args, &env_of(&[])))?;
                }
            }

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
