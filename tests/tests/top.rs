//! `syscall-profiler top` in a real terminal (tmux) against a running daemon: keys change the
//! view and the screen shows the daemon's exact numbers for a known workload.

use std::{
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use tests::{daemon_bin, pid_of, require_root, workload, Daemon};

/// A tmux server of our own (its own socket), so nothing else's sessions are touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("spt-{name}-{}", std::process::id()),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "200",
            "-y",
            "40",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session (is tmux installed? .ci/run installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("running tmux (apt-get install tmux)")
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "top", k]);
            assert!(out.status.success());
        }
    }

    /// Waits until the screen satisfies `done`, or fails showing the last screen.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The screen line that has every one of `words` as a whole field.
fn line_with<'a>(screen: &'a str, words: &[&str]) -> Option<(usize, &'a str)> {
    screen.lines().enumerate().find(|(_, l)| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        words.iter().all(|w| fields.contains(w))
    })
}

fn top_command(base: &str, extra: &str) -> String {
    // The shell line after top shows its exit status and that the screen was restored.
    format!(
        "{} top --url {base} --interval 200ms {extra}; echo \"top exited $?\"; sleep 60",
        daemon_bin().display()
    )
}

#[test]
fn top_shows_exact_numbers_and_keys_change_the_view() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["calls", "getppid=1234", "enoent=56"]);
    let child = pid_of(&lines[0], "child_pid");
    daemon.final_stats(child);
    let pid = child.to_string();

    let tmux = Tmux::start("keys", &top_command(&daemon.base, ""));
    tmux.wait_for("the process view", |s| {
        s.contains("group: process") && s.contains("% TIME")
    });

    tmux.keys(&["/"]);
    tmux.wait_for("the filter prompt", |s| s.contains("filter (pid or comm"));
    tmux.keys(&[&pid, "Enter"]);
    let s = tmux.wait_for("the child's row", |s| {
        s.contains(&format!("filter: pid {pid}"))
            && line_with(s, &[&pid, "workload", "1290", "56"]).is_some()
    });
    let (_, row) = line_with(&s, &[&pid, "workload"]).unwrap();
    assert!(row.contains("getppid"), "top syscall by time: {row}");

    tmux.keys(&["g"]);
    let s = tmux.wait_for("the syscall view of the child", |s| {
        s.contains("group: syscall") && line_with(s, &["getppid", "1234", &pid]).is_some()
    });
    let (getppid_at, _) = line_with(&s, &["getppid", "1234"]).unwrap();
    let (openat_at, openat) = line_with(&s, &["openat", &pid]).unwrap();
    assert_eq!(
        openat.split_whitespace().filter(|f| *f == "56").count(),
        2,
        "56 calls, 56 errors: {openat}"
    );
    assert!(getppid_at < openat_at, "sorted by time:\n{s}");

    tmux.keys(&["e"]);
    let s = tmux.wait_for("sorting by errors", |s| {
        s.contains("sort: errors")
            && line_with(s, &["openat", &pid]).map(|x| x.0)
                < line_with(s, &["getppid", "1234"]).map(|x| x.0)
    });
    assert_eq!(
        s.lines()
            .filter(|l| l.split_whitespace().any(|f| f == "workload"))
            .count(),
        2,
        "only the child's syscalls:\n{s}"
    );

    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared, system-wide syscalls", |s| {
        s.contains("filter: none") && !s.contains("PID")
    });
    tmux.keys(&["q"]);
    let s = tmux.wait_for("top to exit", |s| s.contains("top exited"));
    assert!(s.contains("top exited 0"), "{s}");
    assert!(!s.contains("% TIME"), "the screen is restored:\n{s}");
}

#[test]
fn top_survives_a_missing_daemon_and_quits() {
    require_root();
    // Port 1 on loopback: nothing listens there.
    let tmux = Tmux::start(
        "down",
        &top_command("http://127.0.0.1:1", "--group syscall"),
    );
    tmux.wait_for("the error in the status line", |s| {
        s.contains("cannot read http://127.0.0.1:1/stats") && s.contains("group: syscall")
    });
    tmux.keys(&["q"]);
    let s = tmux.wait_for("top to exit", |s| s.contains("top exited"));
    assert!(s.contains("top exited 0"), "{s}");
}

#[test]
fn top_rejects_bad_input_in_one_line() {
    for args in [
        &["--url", "ftp://127.0.0.1:9760"][..],
        &["--interval", "10ms"],
        &["--comm", "a-name-longer-than-15"],
        &["--sort", "speed"],
        // Not a terminal: stdout is a pipe here.
        &[],
    ] {
        let out = Command::new(daemon_bin())
            .arg("top")
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
