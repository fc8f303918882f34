//! Reading the settings from every source: precedence, one-line errors naming the source, and
//! the values no source may slip through.

use std::{path::Path, time::Duration};

use super::{
    args::ServeArgs,
    declare::{env_name, ENV_CONFIG},
    sources::{load, Env},
    table::DECLARED,
    Error, Settings,
};

fn env_of(pairs: &[(&str, &str)]) -> Env {
    Env::of(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Ok(v.to_string()))),
    )
}

/// Command-line flags: (key, text) pairs.
fn flags(pairs: &[(&'static str, &str)]) -> ServeArgs {
    ServeArgs {
        config: None,
        flags: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

fn with_config(path: &Path) -> ServeArgs {
    ServeArgs {
        config: Some(path.into()),
        ..Default::default()
    }
}

fn keys() -> Vec<&'static str> {
    DECLARED.iter().map(|d| d.key).collect()
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
        ..flags(&[("interval", "2s")])
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
            flags(&[("interval", "0s")]),
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
            flags(&[("log_level", "loud=[")]),
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
        let e = printed(load(&with_config(file.path()), &env_of(&[])).unwrap_err());
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
        ..flags(&[("retention", "1m")])
    };
    assert!(load(&args, &env_of(&[])).is_err());
}

#[test]
fn missing_file_is_named() {
    let e =
        printed(load(&with_config(Path::new("/nonexistent/p.toml")), &env_of(&[])).unwrap_err());
    assert!(e.contains("/nonexistent/p.toml"), "{e}");
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
        fn any_flag_or_env_value(key in prop::sample::select(keys()), value in ".{0,40}") {
            one_line(load(&flags(&[(key, &value)]), &env_of(&[])))?;
            let var = env_name(key);
            one_line(load(&ServeArgs::default(), &env_of(&[(&var, &value)])))?;
        }

        /// Any file text, and any TOML value under a known key.
        #[test]
        fn any_file(text in "(?s).{0,200}", key in prop::sample::select(keys()),
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
                one_line(load(&with_config(file.path()), &env_of(&[])))?;
            }
        }
    }
}

/// What `load` says about `flag` = `value` (from the command line).
fn flag_error(key: &'static str, value: &str) -> Option<String> {
    load(&flags(&[(key, value)]), &env_of(&[]))
        .err()
        .map(printed)
}

#[test]
fn log_levels_are_levels_or_directives_naming_levels() {
    for good in [
        "info",
        "WARN",
        "off",
        "3",
        "info,hyper=warn",
        "syscall_profiler::drain=debug",
        " debug ",
        "info,",
    ] {
        assert_eq!(flag_error("log_level", good), None, "{good}");
    }
    // Each would start a daemon that logs nothing: tracing takes a bare word for a target.
    for bad in [
        "wanr",
        "loud",
        "info,wanr",
        "",
        ",",
        "hyper=",
        "hyper=loud",
        "hyper[{x=1}]",
        "loud=[",
    ] {
        let e = flag_error("log_level", bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(
            e.starts_with("--log-level: ") && e.contains("not a log filter"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let file = file_with("log_level = \"loud\"\n");
    let e = printed(load(&with_config(file.path()), &env_of(&[])).unwrap_err());
    assert!(e.contains("key 'log_level'") && e.contains("'loud'"), "{e}");
    let e = printed(
        load(
            &flags(&[]),
            &env_of(&[("SYSCALL_PROFILER_LOG_LEVEL", "wanr")]),
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("environment variable SYSCALL_PROFILER_LOG_LEVEL"),
        "{e}"
    );
}

#[test]
fn an_unknown_variable_with_our_prefix_is_an_error_like_an_unknown_key() {
    let e = printed(load(&flags(&[]), &env_of(&[("SYSCALL_PROFILER_LISTN", "x")])).unwrap_err());
    assert_eq!(
        e,
        "environment variable SYSCALL_PROFILER_LISTN: not a setting of serve (did you mean \
         'SYSCALL_PROFILER_LISTEN'?)"
    );
    let e = printed(load(&flags(&[]), &env_of(&[("SYSCALL_PROFILER_", "x")])).unwrap_err());
    assert!(
        e.ends_with(
            "(known: SYSCALL_PROFILER_<KEY> for each key of docs/configuration.md, \
             SYSCALL_PROFILER_CONFIG, SYSCALL_PROFILER_SKIP_PROGRAMS, \
             SYSCALL_PROFILER_SHARED_SHARDS, SYSCALL_PROFILER_TIDS_ENTRIES, \
             SYSCALL_PROFILER_CRASH_AT, SYSCALL_PROFILER_USER, SYSCALL_PROFILER_PASSWORD)"
        ),
        "{e}"
    );
    // The declared variables that are not settings are known.
    let others = env_of(&[
        ("SYSCALL_PROFILER_SKIP_PROGRAMS", "sys_enter_btf"),
        ("SYSCALL_PROFILER_SHARED_SHARDS", "1"),
    ]);
    assert!(load(&flags(&[]), &others).is_ok());
    // Not ours: ignored.
    assert!(load(&flags(&[]), &env_of(&[("SYSCALL_PROFILERX", "1")])).is_ok());
    let not_utf8 = Env::of([(
        "SYSCALL_PROFILER_RETENTION".to_string(),
        Err(std::ffi::OsString::from("x")),
    )]);
    let e = printed(load(&flags(&[]), &not_utf8).unwrap_err());
    assert_eq!(
        e,
        "environment variable SYSCALL_PROFILER_RETENTION: not valid UTF-8"
    );
}

#[test]
fn only_regular_files_up_to_the_cap_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.toml");
    // Valid TOML, a comment past the cap: refused for its size, not its syntax.
    std::fs::write(
        &big,
        format!("interval = \"1s\"\n#{}\n", "x".repeat(1 << 20)),
    )
    .unwrap();
    for (path, why) in [
        (Path::new("/dev/urandom"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (dir.path(), "not a regular file"),
        (big.as_path(), "larger than 1024 KiB"),
    ] {
        let started = std::time::Instant::now();
        let e = printed(load(&with_config(path), &env_of(&[])).unwrap_err());
        assert!(started.elapsed() < Duration::from_secs(2), "{e}");
        assert_eq!(
            e,
            format!("cannot read config file {}: {why}", path.display())
        );
    }
}

#[test]
fn echoed_values_are_clipped() {
    let huge = "9".repeat(100_000);
    let file = file_with(&format!("interval = \"{huge}\"\n{huge} = 1\n"));
    let errors = [
        flag_error("interval", &huge).unwrap(),
        flag_error("filter_syscalls", &format!("read,{huge}")).unwrap(),
        printed(load(&flags(&[]), &env_of(&[("SYSCALL_PROFILER_LISTEN", &huge)])).unwrap_err()),
        printed(load(&with_config(file.path()), &env_of(&[])).unwrap_err()),
        printed(
            load(
                &flags(&[]),
                &env_of(&[(&format!("SYSCALL_PROFILER_{huge}"), "1")]),
            )
            .unwrap_err(),
        ),
    ];
    for e in errors {
        // The file's unknown key lists the known ones: ~500 bytes that do not grow with it.
        assert!(e.len() < 700, "{} bytes: {}", e.len(), &e[..700]);
        assert!(e.contains("9…") && !e.contains(&"9".repeat(65)), "{e}");
    }
}

#[test]
fn file_values_of_each_kind() {
    for (text, ok) in [
        ("insight_p99_ratio = 2.5", true),
        ("insight_p99_ratio = 3", true),
        ("insight_p99_ratio = \"2.5\"", true),
        ("insight_p99_ratio = 1.0", false),
        ("insight_window = 5", false),
        ("counts_only = true", true),
        ("counts_only = \"true\"", true),
        ("counts_only = 1", false),
        ("max_response_bytes = \"2KiB\"", true),
        ("max_response_bytes = 4096", true),
        ("max_exited = 1.5", false),
    ] {
        let file = file_with(text);
        let r = load(&with_config(file.path()), &env_of(&[]));
        assert_eq!(r.is_ok(), ok, "{text}: {:?}", r.err().map(printed));
    }
}

#[test]
fn insight_thresholds_come_from_every_source() {
    let file = file_with("insight_window = \"30s\"\ninsight_min_calls = 7\n");
    let args = ServeArgs {
        config: Some(file.path().into()),
        ..flags(&[("insight_p99_ratio", "4")])
    };
    let env = env_of(&[("SYSCALL_PROFILER_INSIGHT_BLOCKED_SHARE", "0.25")]);
    let i = load(&args, &env).unwrap().insights();
    assert_eq!(i.insight_window, Duration::from_secs(30));
    assert_eq!(i.insight_min_calls, 7);
    assert_eq!(i.insight_p99_ratio, 4.0);
    assert_eq!(i.insight_blocked_share, 0.25);
    assert_eq!(i.insight_failures_per_sec, 100.0);
    let e = printed(
        load(
            &flags(&[]),
            &env_of(&[("SYSCALL_PROFILER_INSIGHT_WINDOW", "10m")]),
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("SYSCALL_PROFILER_INSIGHT_WINDOW") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn sighup_applies_the_reloadable_rows_and_names_the_rest() {
    let running = Settings::default();
    let new = load(
        &flags(&[
            ("retention", "0s"),
            ("log_level", "debug"),
            ("max_connections", "9"),
        ]),
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(running.needs_restart(&new), ["max_connections"]);
    let applied = running.reloaded(&new);
    assert_eq!(applied.retention, Duration::ZERO);
    assert_eq!(applied.log_level, "debug");
    assert_eq!(applied.max_connections, 256, "restart-only: kept");
    assert_eq!(
        running.changes(&applied),
        ["retention 5m → 0s", "log_level info → debug"]
    );
}
