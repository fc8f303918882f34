//! `syscall-profiler top` against a daemon with TLS and basic auth: rows with the right
//! credentials (from a file, or the environment) and the CA; one line and exit 1 with a wrong
//! password, without credentials, or without trusting the certificate.

use tests::{
    tls::setup,
    tmux::{top_command, Tmux},
    Daemon,
};

/// Runs top to its exit and returns the one line it printed about it (the screen has the
/// command's exit status too).
fn one_line_failure(name: &str, command: &str) -> String {
    // Wide enough that the line does not wrap.
    let tmux = Tmux::sized(name, command, 300, 40);
    let s = tmux.wait_for("top to exit", |s| s.contains("top exited"));
    assert!(s.contains("top exited 1"), "{s}");
    let errors: Vec<&str> = s.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line:\n{s}");
    assert!(!s.contains("panicked"), "{s}");
    errors[0].to_string()
}

/// The table and a status line of `N rows`, N > 0.
fn has_rows(screen: &str) -> bool {
    screen.contains("ON-CPU")
        && screen.lines().any(|l| {
            l.split_once(" rows")
                .and_then(|(n, _)| n.trim().parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        })
}

#[test]
fn top_reads_a_tls_daemon_with_basic_auth() {
    let password = "correct horse";
    let s = setup(password);
    let daemon = Daemon::start(&[
        "--interval",
        "100ms",
        "--web-config",
        s.web.to_str().unwrap(),
    ]);
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    let ca = s.ca.display();
    let creds = s.dir.path().join("credentials");
    std::fs::write(&creds, format!("alice:{password}\n")).unwrap();

    // Credentials from a file.
    let tmux = Tmux::start(
        "tls-file",
        &top_command(
            &daemon.base,
            &format!("--ca-file {ca} --credentials-file {}", creds.display()),
        ),
    );
    tmux.wait_for("rows", has_rows);
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top exited 0"));

    // Credentials from the environment.
    let tmux = Tmux::start(
        "tls-env",
        &format!(
            "SYSCALL_PROFILER_USER=alice SYSCALL_PROFILER_PASSWORD='{password}' {}",
            top_command(&daemon.base, &format!("--ca-file {ca}"))
        ),
    );
    tmux.wait_for("rows", has_rows);
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top exited 0"));

    // A wrong password, no credentials, no trust: one line each, exit 1.
    let wrong = s.dir.path().join("wrong");
    std::fs::write(&wrong, "alice:battery staple\n").unwrap();
    let line = one_line_failure(
        "tls-wrong",
        &top_command(
            &daemon.base,
            &format!("--ca-file {ca} --credentials-file {}", wrong.display()),
        ),
    );
    assert!(
        line.contains("401 Unauthorized: wrong user or password"),
        "{line}"
    );
    assert!(!line.contains("battery"), "never the password: {line}");

    let line = one_line_failure(
        "tls-none",
        &top_command(&daemon.base, &format!("--ca-file {ca}")),
    );
    assert!(
        line.contains("401 Unauthorized") && line.contains("--credentials-file"),
        "{line}"
    );

    let line = one_line_failure(
        "tls-untrusted",
        &top_command(
            &daemon.base,
            &format!("--credentials-file {}", creds.display()),
        ),
    );
    assert!(
        line.contains("TLS failed") && line.contains("--ca-file"),
        "{line}"
    );

    let plain = daemon.base.replace("https://", "http://");
    let line = one_line_failure(
        "tls-plain",
        &top_command(&plain, &format!("--credentials-file {}", creds.display())),
    );
    assert!(line.contains("https://"), "{line}");
    assert_eq!(daemon.terminate(), Some(0));
}
