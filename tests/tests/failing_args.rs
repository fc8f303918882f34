//! The arguments behind failing calls (issue 14), captured in the kernel at sys_exit: known
//! failing paths (absolute, relative to the working directory and resolved, relative to a
//! directory fd, longer than the 255 bytes kept, in a page that is gone), failing connects to a
//! closed loopback port and a missing AF_UNIX socket; exact counts below the budget, successes
//! never recorded, a 32-bit program's failing open, the budget past it; and
//! `--capture-args=false` capturing nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use serde_json::Value;
use tests::{process, require_root, syscall, Daemon};

/// The capture budget is per CPU and shared by every process on the host, whichever daemon
/// counts it: the storm's 20,000 failures would spend the budget of another test's daemon on
/// that CPU in that interval, and its exact counts would come out sampled (seen in CI). So the
/// storm runs alone, and the other tests beside one another.
static BUDGET: RwLock<()> = RwLock::new(());

/// For a test that needs the budget untouched by the storm.
fn beside_others() -> RwLockReadGuard<'static, ()> {
    BUDGET.read().unwrap_or_else(|e| e.into_inner())
}

/// For the storm.
fn alone() -> RwLockWriteGuard<'static, ()> {
    BUDGET.write().unwrap_or_else(|e| e.into_inner())
}

/// Builds tests/c/failing_args.c (static; `-m32` for the 32-bit one).
fn build(dir: &Path, m32: bool) -> PathBuf {
    let bin = dir.join(if m32 {
        "failing_args32"
    } else {
        "failing_args"
    });
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/c/failing_args.c");
    let mut cc = Command::new("gcc");
    if m32 {
        cc.arg("-m32");
    }
    let out = cc
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc {}-static failed (install gcc{}): {}",
        if m32 { "-m32 " } else { "" },
        if m32 { "-multilib" } else { "" },
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("failing-args-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the program (which gives up its capabilities first: see failing_args.c); its pid and
/// its JSON line.
fn run(bin: &Path, dir: &Path, args: &[&str]) -> (u32, Option<Value>) {
    let child = Command::new(bin)
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{bin:?} {args:?}: {:?}", out.status);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| serde_json::from_str(l).expect("the program prints one JSON line"));
    (pid, line)
}

/// (syscall name, abi) → its failing_args list.
fn failing_args<'a>(p: &'a Value, name: &str, abi: &str) -> &'a Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && s["abi"] == abi)
        .and_then(|s| s["failing_args"].as_array())
        .unwrap_or(&EMPTY)
}

/// The entry for `arg` with `errno`, if listed.
fn entry<'a>(list: &'a [Value], errno: &str, arg: &str) -> Option<&'a Value> {
    list.iter().find(|e| e["errno"] == errno && e["arg"] == arg)
}

#[test]
fn failing_paths_and_addresses_are_counted_exactly() {
    require_root();
    let _budget = beside_others();
    let dir = workdir("full");
    let bin = build(&dir, false);
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let (pid, line) = run(&bin, &dir, &["full"]);
    let line = line.expect("the program's line");
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).expect("the process");
    let native = tests::native_abi();
    let openat = failing_args(p, "openat", native);

    let abs = entry(openat, "ENOENT", "/nonexistent/failing-args/abs.conf").expect("absolute");
    assert_eq!(abs["count"], 5, "{abs}");
    assert_eq!(abs["kind"], "path");
    assert_eq!(abs["truncated"], false);
    assert_eq!(abs["sampled"], false, "{abs}");
    assert!(
        abs.get("resolved").is_none() && abs.get("dirfd").is_none(),
        "{abs}"
    );

    let rel = entry(openat, "ENOENT", "rel/missing.txt").expect("relative to the cwd");
    assert_eq!(rel["count"], 4);
    let cwd = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        rel["resolved"],
        cwd.join("rel/missing.txt").to_str().unwrap(),
        "{rel}"
    );

    let at = entry(openat, "ENOENT", "in-dir/missing").expect("relative to a dirfd");
    assert_eq!(at["count"], 3);
    assert_eq!(at["dirfd"], line["dirfd"], "{at}");
    assert!(at.get("resolved").is_none(), "{at}");

    let long = line["long"].as_str().unwrap();
    let cut = &long[..255];
    let truncated = entry(openat, "ENOENT", cut).expect("the long path, cut at 255 bytes");
    assert_eq!(truncated["count"], 2);
    assert_eq!(truncated["truncated"], true);

    let gone = entry(openat, "EFAULT", "").expect("the unreadable path");
    assert_eq!(gone["count"], 6);
    assert_eq!(gone["unreadable"], true);

    // Successes (10 openat of "/") are never recorded; the five failing kinds are all there is.
    assert_eq!(openat.len(), 5, "{openat:#?}");
    let listed: u64 = openat.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(listed, 5 + 4 + 3 + 2 + 6);

    let connect = failing_args(p, "connect", native);
    let port = line["port"].as_u64().unwrap();
    let refused = entry(connect, "ECONNREFUSED", &format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("the closed port: {connect:#?}"));
    assert_eq!(refused["count"], 2);
    assert_eq!(refused["kind"], "address");
    let unix = entry(connect, "ENOENT", "unix:/nonexistent/failing-args.sock")
        .unwrap_or_else(|| panic!("the missing socket: {connect:#?}"));
    assert_eq!(unix["count"], 2);
    assert_eq!(connect.len(), 2, "{connect:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_programs_failing_open_names_its_path() {
    require_root();
    let _budget = beside_others();
    let dir = workdir("m32");
    let bin = build(&dir, true);
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let (pid, _) = run(&bin, &dir, &["open"]);
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).expect("the process");
    let openat = failing_args(p, "openat", "i386");
    let abs = entry(openat, "ENOENT", "/nonexistent/failing-args/abs.conf")
        .unwrap_or_else(|| panic!("the 32-bit open: {p:#}"));
    assert_eq!(abs["count"], 5);
    let gone = entry(openat, "EFAULT", "").expect("the unreadable path");
    assert_eq!(gone["count"], 6);
    assert_eq!(openat.len(), 2, "{openat:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn past_the_budget_failures_count_and_the_list_says_sampled() {
    require_root();
    let _alone = alone();
    let dir = workdir("storm");
    let bin = build(&dir, false);
    // One long interval: the storm lands in it, beyond the 1,000 captures a CPU gets.
    let daemon = Daemon::start(&["--interval", "5s"]);
    let (pid, _) = run(&bin, &dir, &["storm", "20000"]);
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).expect("the process");
    let s = syscall(&p["syscalls"], "openat").expect("openat");
    assert_eq!(
        s["errnos"]["ENOENT"], 20000,
        "every failure counted by errno"
    );
    let e = entry(
        failing_args(p, "openat", tests::native_abi()),
        "ENOENT",
        "/nonexistent/failing-args/storm",
    )
    .expect("the storm's path");
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let n = e["count"].as_u64().unwrap();
    // The budget is per CPU, shared with every process failing on it in the interval.
    assert!(n > 0 && n <= 1000 * cpus, "{e}");
    assert_eq!(e["sampled"], true, "{e}");
    let share = e["captured_share"].as_f64().unwrap();
    assert!((share - n as f64 / 20000.0).abs() < 1e-9, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 14's story: a program names many paths at start-up, then fails on one again and
/// again. That one is listed first, its count exact, and the insight names it (the store keeps
/// at most 16 arguments per process, syscall and errno: the start-up's must give way).
#[test]
fn the_path_a_program_keeps_failing_on_is_listed_after_its_start_up_ones() {
    require_root();
    let _budget = beside_others();
    let dir = workdir("late");
    let bin = build(&dir, false);
    let daemon = Daemon::start(&["--interval", "100ms", "--insight-failures-per-sec", "10"]);
    let (pid, _) = run(&bin, &dir, &["late"]);
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).expect("the process");
    let openat = failing_args(p, "openat", tests::native_abi());
    let hot = "/nonexistent/failing-args/app/config.yaml";
    assert_eq!(openat[0]["arg"], hot, "{openat:#?}");
    assert_eq!(openat[0]["count"], 300, "{openat:#?}");
    assert_eq!(openat[0]["sampled"], false, "{openat:#?}");
    let (status, body) = daemon.get(&format!("/insights?pid={pid}"));
    assert_eq!(status, 200, "{body}");
    let finding = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "failing_calls" && f["syscall"] == "openat")
        .unwrap_or_else(|| panic!("a failing openat finding: {body:#}"));
    assert_eq!(finding["failing_arg"], hot, "{finding}");
    let summary = finding["summary"].as_str().unwrap();
    assert!(summary.contains(&format!(" on {hot} ")), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn capture_args_false_captures_nothing() {
    require_root();
    let _budget = beside_others();
    let dir = workdir("off");
    let bin = build(&dir, false);
    let daemon = Daemon::start(&["--interval", "100ms", "--capture-args=false"]);
    let (pid, _) = run(&bin, &dir, &["open"]);
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).expect("the process");
    let s = syscall(&p["syscalls"], "openat").expect("openat");
    assert_eq!(s["errnos"]["ENOENT"], 5);
    assert!(s.get("failing_args").is_none(), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn record_prints_the_top_failing_paths_after_its_table() {
    let _budget = beside_others();
    let dir = workdir("record");
    let bin = build(&dir, false);
    let out = tests::record::record(&["--", bin.to_str().unwrap(), dir.to_str().unwrap(), "open"]);
    assert!(out.status.success(), "{out:?}");
    let err = tests::record::text(&out.stderr);
    let section = err
        .split("top failing paths")
        .nth(1)
        .unwrap_or_else(|| panic!("no section: {err}"));
    let lines: Vec<&str> = section.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{section}");
    assert!(
        lines[0].contains("6 EFAULT") && lines[0].ends_with("<unreadable>"),
        "{section}"
    );
    assert!(
        lines[1].contains("5 ENOENT") && lines[1].ends_with("/nonexistent/failing-args/abs.conf"),
        "{section}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
