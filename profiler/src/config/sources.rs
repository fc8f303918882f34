//! Reads the settings from flags, the environment and a TOML file, in that order of precedence,
//! over the defaults.
//!
//! Every value present in any source is validated, even one a higher source overrides, so a typo
//! in the file is reported now rather than on the day the overriding flag goes away. Each error
//! names its source and key in one line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    args::ServeArgs,
    env_name, flag_name,
    parse::{
        parse_bool, parse_bounded_duration, parse_count, parse_duration, parse_interval,
        parse_listen, parse_log_level, parse_pids, parse_size, parse_syscalls,
    },
    Error, Filter, Settings, ENV_CONFIG, KEYS,
};

/// The TOML file, already checked for syntax and unknown keys.
struct File {
    path: PathBuf,
    table: toml::Table,
}

impl File {
    fn read(path: &Path) -> Result<File, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            what: "config file",
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| syntax_error("config file", path, &text, &e))?;
        if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(Error::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        }
        Ok(File {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The value of `key` as text for the shared parsers. Numbers may be written bare.
    fn get(&self, key: &str, numeric: bool) -> Result<Option<String>, Error> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(n)) if numeric => Ok(Some(n.to_string())),
            // Checked by the key's own parser: only true/false settings accept them.
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(Error::WrongType {
                path: self.path.clone(),
                key: key.to_string(),
                expected: if numeric {
                    "a whole number"
                } else {
                    "a string"
                },
                found: other.type_str(),
            }),
        }
    }
}

/// A TOML error in one line: its message and where it is. `what` is the kind of file.
pub fn syntax_error(what: &'static str, path: &Path, text: &str, e: &toml::de::Error) -> Error {
    Error::Syntax {
        what,
        path: path.to_path_buf(),
        line: e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().replace('\n', " "),
    }
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
    ) -> Result<Option<T>, Error> {
        let mut found = None;
        if let Some(file) = &self.file {
            if let Some(raw) = file.get(key, numeric)? {
                let v = parse(&raw, Origin::File(&file.path)).map_err(|why| Error::Invalid {
                    place: format!("config file {}, key '{key}'", file.path.display()),
                    why,
                })?;
                found = Some(v);
            }
        }
        let env_key = env_name(key);
        if let Some(raw) = (self.env)(&env_key) {
            let v = parse(&raw, Origin::Env).map_err(|why| Error::Invalid {
                place: format!("environment variable {env_key}"),
                why,
            })?;
            found = Some(v);
        }
        if let Some(raw) = flag {
            let v = parse(raw, Origin::Flag).map_err(|why| Error::Invalid {
                place: flag_name(key),
                why,
            })?;
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
pub fn load(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Error> {
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
    // Key by key in the order of KEYS: the first bad value is the one reported.
    let mut s = Settings {
        config_file,
        ..Settings::default()
    };
    src.read_daemon(&mut s)?;
    src.read_http(&mut s)?;
    src.read_metrics(&mut s)?;
    s.filter = src.read_filter()?;
    let counts_only = src.get("counts_only", args.counts_only.as_ref(), false, |v, _| {
        parse_bool(v)
    })?;
    s.counts_only = counts_only.unwrap_or(s.counts_only);
    Ok(s)
}

impl Sources<'_> {
    /// Where to listen, how often to drain, how long to keep exited processes, how to log, and
    /// the web config file and pin directory.
    fn read_daemon(&self, s: &mut Settings) -> Result<(), Error> {
        let f = self.flags;
        s.listen = self
            .get("listen", f.listen.as_ref(), false, |v, _| parse_listen(v))?
            .unwrap_or(s.listen);
        s.interval = self
            .get("interval", f.interval.as_ref(), false, |v, _| {
                parse_interval(v)
            })?
            .unwrap_or(s.interval);
        s.retention = self
            .get("retention", f.retention.as_ref(), false, |v, _| {
                parse_duration(v)
            })?
            .unwrap_or(s.retention);
        s.max_exited = self
            .get("max_exited", f.max_exited.as_ref(), true, |v, _| {
                parse_count(v, 0, 10_000_000)
            })?
            .unwrap_or(s.max_exited);
        if let Some(level) = self.get("log_level", f.log_level.as_ref(), false, |v, _| {
            parse_log_level(v)
        })? {
            s.log_level = level;
        }
        s.web_config = self.get("web_config", f.web_config.as_ref(), false, parse_path)?;
        s.pin_path = self.get("pin_path", f.pin_path.as_ref(), false, parse_path)?;
        Ok(())
    }

    /// What one HTTP request and the server may cost.
    fn read_http(&self, s: &mut Settings) -> Result<(), Error> {
        let f = self.flags;
        s.request_timeout = self
            .get(
                "request_timeout",
                f.request_timeout.as_ref(),
                false,
                |v, _| {
                    parse_bounded_duration(v, Duration::from_millis(100), Duration::from_secs(600))
                },
            )?
            .unwrap_or(s.request_timeout);
        s.max_concurrent_requests = self
            .get(
                "max_concurrent_requests",
                f.max_concurrent_requests.as_ref(),
                true,
                |v, _| parse_count(v, 1, 4096),
            )?
            .unwrap_or(s.max_concurrent_requests);
        s.max_connections = self
            .get(
                "max_connections",
                f.max_connections.as_ref(),
                true,
                |v, _| parse_count(v, 1, 65536),
            )?
            .unwrap_or(s.max_connections);
        s.max_response_bytes = self
            .get(
                "max_response_bytes",
                f.max_response_bytes.as_ref(),
                true,
                |v, _| parse_size(v, 1 << 10, 1 << 30),
            )?
            .unwrap_or(s.max_response_bytes);
        Ok(())
    }

    /// What /metrics exports, and whether the kernel times our programs.
    fn read_metrics(&self, s: &mut Settings) -> Result<(), Error> {
        let f = self.flags;
        s.metrics_per_pid = self
            .get(
                "metrics_per_pid",
                f.metrics_per_pid.as_ref(),
                false,
                |v, _| parse_bool(v),
            )?
            .unwrap_or(s.metrics_per_pid);
        s.metrics_top_pids = self
            .get(
                "metrics_top_pids",
                f.metrics_top_pids.as_ref(),
                true,
                |v, _| parse_count(v, 1, 10_000),
            )?
            .unwrap_or(s.metrics_top_pids);
        s.metrics_max_groups = self
            .get(
                "metrics_max_groups",
                f.metrics_max_groups.as_ref(),
                true,
                |v, _| parse_count(v, 1, 100_000),
            )?
            .unwrap_or(s.metrics_max_groups);
        s.metrics_fine_buckets = self
            .get(
                "metrics_fine_buckets",
                f.metrics_fine_buckets.as_ref(),
                false,
                |v, _| parse_bool(v),
            )?
            .unwrap_or(s.metrics_fine_buckets);
        s.bpf_stats = self
            .get("bpf_stats", f.bpf_stats.as_ref(), false, |v, _| {
                parse_bool(v)
            })?
            .unwrap_or(s.bpf_stats);
        Ok(())
    }

    /// The in-kernel filters.
    fn read_filter(&self) -> Result<Filter, Error> {
        let f = self.flags;
        Ok(Filter {
            pids: self
                .get("filter_pids", f.filter_pids.as_ref(), false, |v, _| {
                    parse_pids(v)
                })?
                .unwrap_or_default(),
            cgroup: self.get(
                "filter_cgroup",
                f.filter_cgroup.as_ref(),
                false,
                |v, origin| {
                    let p = parse_path(v, origin)?;
                    if !p.is_dir() {
                        return Err(format!("'{}' is not a cgroup directory", p.display()));
                    }
                    Ok(p)
                },
            )?,
            syscalls: self
                .get(
                    "filter_syscalls",
                    f.filter_syscalls.as_ref(),
                    false,
                    |v, _| parse_syscalls(v),
                )?
                .unwrap_or_default(),
        })
    }
}

/// The process environment, for [`load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
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

    /// The error as the daemon prints it: with its causes, on one line.
    fn printed(e: Error) -> String {
        format!("{:#}", anyhow::Error::new(e))
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
            let e = printed(load(&args, &env_of(&env)).unwrap_err());
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
            let e = printed(load(&args, &env_of(&[])).unwrap_err());
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
        let e = printed(load(&args, &env_of(&[])).unwrap_err());
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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn one_line(r: Result<Settings, Error>) -> Result<(), TestCaseError> {
            if let Err(e) = r {
                let e = printed(e);
                prop_assert_eq!(e.lines().count(), 1, "{}", e);
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
                    "metrics_fine_buckets" => &mut args.metrics_fine_buckets,
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
        }
    }
}
