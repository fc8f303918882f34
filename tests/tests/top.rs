//! `syscall-profiler top` in a real terminal (tmux) against a running daemon: keys change the
//! view and the screen shows the daemon's exact numbers for a known workload; 80×24 keeps every
//! header whole; a CPU burner ranks above a sleeper; TLS with basic auth, and a wrong password
//! or an unreachable daemon in one line.

use std::process::Command;

use tests::{
    daemon_bin, pid_of, require_root,
    tmux::{line_with, Tmux},
    workload, Daemon,
};

/// The columns top may show (the last header is `TOP SYSCALL` or `SYSCALL`).
const HEADERS: &[&str] = &[
    "PID", "COMM", "ON-CPU", "BLOCKED", "TIME", "CALLS/S", "CALLS", "ERRORS", "ERRNO", "P99",
    "MEAN", "TOP", "SYSCALL",
];

fn top_command(base: &str, extra: &str) -> String {
    tests::tmux::top_command(base, extra)
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
        s.contains("group: process") && s.contains("ON-CPU")
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
    // By column: CALLS/S may read 56 too (a process that lived under a second).
    let (_, header) = line_with(&s, &["CALLS", "ERRORS"]).unwrap();
    let header: Vec<&str> = header.split_whitespace().collect();
    let row: Vec<&str> = openat.split_whitespace().collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (column("CALLS"), column("ERRORS")),
        ("56", "56"),
        "56 calls, 56 errors:\n{s}"
    );
    assert!(getppid_at < openat_at, "sorted by time:\n{s}");

    tmux.keys(&["e"]);
    let s = tmux.wait_for("sorting by errors", |s| {
        s.contains("sort: errors")
            && line_with(s, &["openat", &pid]).map(|x| x.0)
                < line_with(s, &["getppid", "1234"]).map(|x| x.0)
    });
    // Table rows only: the insight line above the table may name workload processes too
    // ("2 workload processes made …", other tests' children among them).
    assert_eq!(
        s.lines()
            .filter(|l| {
                let mut fields = l.split_whitespace();
                fields.next().is_some_and(|f| f.parse::<u32>().is_ok())
                    && fields.next() == Some("workload")
            })
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
    assert!(!s.contains("ON-CPU"), "the screen is restored:\n{s}");
}

/// The table's header line: its fields are whole headers, and the lines under it.
fn table(screen: &str) -> (Vec<&str>, Vec<&str>) {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("CALLS/S"))
        .unwrap_or_else(|| panic!("no table header:\n{screen}"));
    let header = lines[at].split_whitespace().collect();
    let rows = lines[at + 1..]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty() && !l.contains(" rows"))
        .collect();
    (header, rows)
}

#[test]
fn at_80_by_24_every_header_is_whole_and_the_first_frame_has_rates() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["calls", "getppid=1234", "enoent=56"]);
    let child = pid_of(&lines[0], "child_pid");
    daemon.final_stats(child);
    let pid = child.to_string();

    let tmux = Tmux::sized("narrow", &top_command(&daemon.base, ""), 80, 24);
    // The first frame drawn: top takes two samples before it.
    let s = tmux.wait_for("the first frame", |s| s.contains("CALLS/S"));
    let (header, rows) = table(&s);
    for h in &header {
        assert!(HEADERS.contains(h), "a cut or unknown header {h:?}:\n{s}");
    }
    for h in [
        "PID", "COMM", "ON-CPU", "BLOCKED", "CALLS/S", "ERRNO", "TOP", "SYSCALL",
    ] {
        assert!(header.contains(&h), "{h} missing at 80 columns:\n{s}");
    }
    assert!(!rows.is_empty(), "{s}");
    for row in &rows {
        assert!(
            !row.split_whitespace().any(|f| f == "-"),
            "a value missing in the first frame: {row}\n{s}"
        );
    }
    assert!(s.lines().all(|l| l.chars().count() <= 80));
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top exited 0"));

    // The child alone: its exact numbers and its errno fit in 80 columns.
    let tmux = Tmux::sized(
        "narrow-pid",
        &top_command(&daemon.base, &format!("--pid {pid}")),
        80,
        24,
    );
    let s = tmux.wait_for("the child's row", |s| {
        line_with(s, &[&pid, "workload", "ENOENT", "56"]).is_some()
    });
    let (_, row) = line_with(&s, &[&pid, "workload"]).unwrap();
    assert!(row.contains("getppid"), "{row}");
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top exited 0"));
}

#[test]
fn a_cpu_burner_ranks_above_a_sleeper() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    // The sleeper spends more time in syscalls (500 × 2 ms, blocked); the burner less, on a
    // CPU (getrandom of 1 MiB, 100 times): by total time the sleeper would come first.
    let sleeper = pid_of(&workload(&["calls", "sleep=500"])[0], "child_pid");
    let burner = pid_of(&workload(&["compute", "100", "1048576"])[0], "child_pid");
    daemon.final_stats(sleeper);
    daemon.final_stats(burner);
    let s = daemon.stats("?comm=workload");
    let total = |pid: u32| {
        tests::process(&s, pid).unwrap()["total_ns"]
            .as_u64()
            .unwrap()
    };
    assert!(
        total(sleeper) > total(burner),
        "the test needs the sleeper to have more total time"
    );
    let (sleeper, burner) = (sleeper.to_string(), burner.to_string());

    let tmux = Tmux::start("rank", &top_command(&daemon.base, "--comm workload"));
    let s = tmux.wait_for("both children", |s| {
        line_with(s, &[&sleeper]).is_some() && line_with(s, &[&burner]).is_some()
    });
    let at = |pid: &str| line_with(&s, &[pid]).unwrap();
    assert!(at(&burner).0 < at(&sleeper).0, "by CPU:\n{s}");
    assert!(at(&burner).1.contains("getrandom"), "{s}");
    assert!(at(&sleeper).1.contains("nanosleep"), "{s}");

    // By total time (key t), the sleeper is first.
    tmux.keys(&["t"]);
    let s = tmux.wait_for("sorting by time", |s| {
        s.contains("sort: time")
            && line_with(s, &[&sleeper]).map(|x| x.0) < line_with(s, &[&burner]).map(|x| x.0)
    });
    assert!(s.contains("sort: time"));
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top exited 0"));
}

#[test]
fn top_says_in_one_line_that_the_daemon_is_unreachable() {
    require_root();
    // Port 1 on loopback: nothing listens there.
    let tmux = Tmux::start("down", &top_command("http://127.0.0.1:1", ""));
    let s = tmux.wait_for("top to exit", |s| s.contains("top exited"));
    assert!(s.contains("top exited 1"), "{s}");
    let errors: Vec<&str> = s.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{s}");
    assert!(
        errors[0].contains("cannot reach http://127.0.0.1:1/stats"),
        "{s}"
    );
}

#[test]
fn top_rejects_bad_input_in_one_line() {
    for args in [
        &["--url", "ftp://127.0.0.1:9760"][..],
        &["--url", "https://alice:secret@127.0.0.1:9760"],
        &[
            "--url",
            "http://127.0.0.1:9760",
            "--ca-file",
            "/etc/hostname",
        ],
        &[
            "--url",
            "https://127.0.0.1:9760",
            "--ca-file",
            "/nonexistent",
        ],
        &["--credentials-file", "/nonexistent"],
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
