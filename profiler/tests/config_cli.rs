//! Bad settings from any source: one line naming the source and key, exit 2, before any eBPF
//! is loaded (so these run without root).

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_syscall-profiler"))
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_usage_error(code: Option<i32>, stderr: &str, needles: &[&str]) {
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' missing from: {stderr}");
    }
}

#[test]
fn bad_config_file_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    for (text, needles) in [
        (
            "interval = \"1h\"\n",
            &["key 'interval'", "out of range"][..],
        ),
        ("lisen = \"127.0.0.1:1\"\n", &["unknown key 'lisen'"]),
        (
            "retention = [1]\n",
            &["key 'retention'", "expected a string"],
        ),
        ("this is not toml\n", &["line 1"]),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, err) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
        assert_usage_error(code, &err, needles);
        assert!(err.contains(file.to_str().unwrap()), "{err}");
    }
    let (code, err) = run(&["serve", "--config", "/nonexistent.toml"], &[]);
    assert_usage_error(code, &err, &["/nonexistent.toml"]);
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, value) in [
        ("SYSCALL_PROFILER_LISTEN", "everywhere"),
        ("SYSCALL_PROFILER_RETENTION", "5 years"),
        ("SYSCALL_PROFILER_MAX_CONNECTIONS", "0"),
        ("SYSCALL_PROFILER_REQUEST_TIMEOUT", "1ms"),
    ] {
        let (code, err) = run(&["serve"], &[(var, value)]);
        assert_usage_error(code, &err, &[var]);
    }
    let (code, err) = run(
        &["serve"],
        &[("SYSCALL_PROFILER_CONFIG", "/nonexistent.toml")],
    );
    assert_usage_error(code, &err, &["/nonexistent.toml"]);
}

#[test]
fn a_missing_web_config_is_a_usage_error() {
    let (code, err) = run(&["serve", "--web-config", "/nonexistent/web.toml"], &[]);
    assert_usage_error(code, &err, &["/nonexistent/web.toml"]);
}

/// Runs `serve` with `args` on a port that is taken, so that a setting wrongly accepted ends in
/// exit 5 at bind, before any eBPF is loaded, instead of a daemon. Kills it if it is still
/// running after 10 s (a read that never ends).
fn serve_guarded(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_syscall-profiler"))
        .arg("serve")
        .args(args)
        .args(["--listen", &addr])
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read while it runs: a long error line must not block it on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
        text
    });
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            let shown: Vec<String> = args.iter().map(|a| a.chars().take(80).collect()).collect();
            panic!("serve {shown:?} still running after 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait().unwrap().code(), reader.join().unwrap())
}

#[test]
fn a_log_level_that_would_silence_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "log_level = \"loud\"\n").unwrap();
    let (code, err) = serve_guarded(&["--log-level", "wanr"], &[]);
    assert_usage_error(code, &err, &["--log-level: 'wanr' is not a log filter"]);
    let (code, err) = serve_guarded(&["--config", file.to_str().unwrap()], &[]);
    assert_usage_error(
        code,
        &err,
        &[
            file.to_str().unwrap(),
            "key 'log_level'",
            "'loud' is not a log filter",
        ],
    );
    let (code, err) = serve_guarded(&[], &[("SYSCALL_PROFILER_LOG_LEVEL", "info,wanr")]);
    assert_usage_error(code, &err, &["SYSCALL_PROFILER_LOG_LEVEL", "'wanr'"]);
}

#[test]
fn an_empty_basic_auth_users_table_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.toml");
    std::fs::write(&web, "[basic_auth_users]\n").unwrap();
    let (code, err) = serve_guarded(&["--web-config", web.to_str().unwrap()], &[]);
    assert_usage_error(
        code,
        &err,
        &[web.to_str().unwrap(), "[basic_auth_users] is empty"],
    );
}

#[test]
fn settings_files_must_be_regular_files_of_at_most_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    for (flag, path, why) in [
        ("--config", "/dev/urandom", "not a regular file"),
        ("--web-config", "/dev/zero", "not a regular file"),
        ("--config", big.to_str().unwrap(), "larger than 1024 KiB"),
    ] {
        let (code, err) = serve_guarded(&[flag, path], &[]);
        assert_usage_error(code, &err, &[path, why]);
    }
}

#[test]
fn a_100_kb_value_is_echoed_clipped() {
    let huge = "9".repeat(100_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, format!("retention = \"{huge}s\"\n")).unwrap();
    for (args, env) in [
        (vec!["--interval", huge.as_str()], vec![]),
        (vec![], vec![("SYSCALL_PROFILER_MAX_EXITED", huge.as_str())]),
        (vec!["--config", file.to_str().unwrap()], vec![]),
    ] {
        let (code, err) = serve_guarded(&args, &env);
        let head: String = err.chars().take(300).collect();
        assert!(err.len() < 300, "{} bytes: {head}…", err.len());
        assert_usage_error(code, &err, &["9…"]);
    }
}

#[test]
fn unknown_variables_with_our_prefix_are_errors_like_unknown_keys() {
    let (code, err) = serve_guarded(&[], &[("SYSCALL_PROFILER_LISTN", "127.0.0.1:1")]);
    assert_usage_error(
        code,
        &err,
        &[
            "environment variable SYSCALL_PROFILER_LISTN",
            "SYSCALL_PROFILER_LISTEN",
        ],
    );
    // The declared variables that are not settings pass (to the bind, which fails: exit 5).
    let (code, err) = serve_guarded(
        &[],
        &[
            ("SYSCALL_PROFILER_SKIP_PROGRAMS", "sys_enter_btf"),
            ("SYSCALL_PROFILER_SHARED_SHARDS", "1"),
        ],
    );
    assert_eq!(code, Some(5), "{err}");
}
