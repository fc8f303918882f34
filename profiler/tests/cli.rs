//! Bad command lines and an occupied port: one clear line and a distinct exit code, before any
//! eBPF is loaded (so these run without root).

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_syscall-profiler"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["serve", "--interval", "0s"][..], "--interval"),
        (&["serve", "--interval", "fast"][..], "--interval"),
        (&["serve", "--listen", "nowhere"][..], "--listen"),
        (&["serve", "--retention", "5"][..], "--retention"),
        (&["serve", "--bogus"][..], "--bogus"),
        (&["frobnicate"][..], "frobnicate"),
        (
            &["serve", "--metrics-top-pids", "0"][..],
            "--metrics-top-pids",
        ),
        (
            &["serve", "--metrics-top-pids", "10001"][..],
            "--metrics-top-pids",
        ),
        (
            &["serve", "--metrics-max-groups", "x"][..],
            "--metrics-max-groups",
        ),
        (
            &["serve", "--metrics-per-pid=maybe"][..],
            "--metrics-per-pid",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn bad_log_level_is_one_line() {
    let o = run(&["serve", "--log-level", "loud=[", "--listen", "127.0.0.1:0"]);
    // A bad setting is a usage error, like a bad flag.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--log-level"));
}

#[test]
fn port_in_use_exits_5() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = run(&["serve", "--listen", &addr]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

#[test]
fn command_line_errors_are_one_line() {
    let long = "x".repeat(10_000);
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--listen"][..],
        &["frobnicate"][..],
        &[][..],
        &["record", "--interval", "fast"][..],
        &["record", "--pid", "me"][..],
        &["top", "--sort", "nope"][..],
        &["top", "--interval", &long][..],
        &["serve", &format!("--{long}")][..],
    ] {
        let o = run(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("syscall-profiler: error: ")
                && err.trim_end().ends_with("; see --help"),
            "{err}"
        );
        assert!(err.len() < 600, "{} bytes", err.len());
    }
    // Help is not an error: whole, on stdout, exit 0.
    let o = run(&["serve", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--insight-window <DURATION>"), "{help}");
    assert!(help.contains("[default: 5m, SIGHUP applies it]"), "{help}");
}
