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
