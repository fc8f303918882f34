//! Exact numbers in every corner, against the live kernel: errno breakdown, 32-bit compat
//! calls, threads and processes that exit mid-run, execve chains, recycled pids, a fork storm,
//! syscalls still in flight, and a cross-check against strace.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    count_map, counts, native_abi, pid_of, process, processes, require_root, workload, Daemon,
    RunningWorkload,
};

const WAIT: Duration = Duration::from_secs(15);

fn errnos(p: &Value, name: &str) -> BTreeMap<String, u64> {
    let s = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {p}"));
    serde_json::from_value(s["errnos"].clone()).unwrap()
}

#[test]
fn errno_breakdown_is_exact() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    // Six errnos of openat: the histogram keeps four in place, the rest go to ERRNOS.
    let lines = workload(&["calls", "enoent=37", "ebadf=23", "eagain=11", "openerrs=5"]);
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert_eq!(
        counts(p, native_abi()),
        count_map(&[
            ("openat", (67, 67)),
            ("close", (23, 23)),
            ("read", (11, 11))
        ])
    );
    let openat: BTreeMap<String, u64> = [
        ("ENOENT", 42),
        ("ENOTDIR", 5),
        ("EISDIR", 5),
        ("EFAULT", 5),
        ("ENAMETOOLONG", 5),
        ("EINVAL", 5),
    ]
    .into_iter()
    .map(|(e, n)| (e.to_string(), n))
    .collect();
    assert_eq!(errnos(p, "openat"), openat);
    assert_eq!(
        errnos(p, "close"),
        BTreeMap::from([("EBADF".to_string(), 23)])
    );
    assert_eq!(
        errnos(p, "read"),
        BTreeMap::from([("EAGAIN".to_string(), 11)])
    );
    assert_eq!(stats["kernel_maps"]["drops"]["errnos_full"], 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn int_0x80_from_64_bit_code_counts_under_i386() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["calls", "getppid=5", "int80=42"]);
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert_eq!(counts(p, "x86_64"), count_map(&[("getppid", (5, 0))]));
    // i386 64 is getppid; x86_64 64 would be semget.
    assert_eq!(counts(p, "i386"), count_map(&[("getppid", (42, 0))]));
    let compat = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["abi"] == "i386")
        .unwrap();
    assert_eq!(compat["nr"], 64);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_program_counts_under_i386_with_i386_names() {
    require_root();
    let dir = std::env::temp_dir().join(format!("compat32-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("compat32");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/c/compat32.c");
    let cc = Command::new("gcc")
        .args(["-m32", "-static", "-O1", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("running gcc");
    assert!(
        cc.status.success(),
        "gcc -m32 -static failed (install gcc-multilib): {}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let daemon = Daemon::start(&["--interval", "100ms"]);
    let child = Command::new(&bin).args(["300", "17"]).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stats = daemon.final_stats(pid);
    let p = process(&stats, pid).unwrap();
    let i386 = counts(p, "i386");
    assert_eq!(i386.get("getppid"), Some(&(300, 0)), "{i386:?}");
    assert_eq!(i386.get("close"), Some(&(17, 17)), "{i386:?}");
    assert_eq!(
        errnos(p, "close"),
        BTreeMap::from([("EBADF".to_string(), 17)])
    );
    let x86_64 = counts(p, "x86_64");
    assert!(
        !x86_64.contains_key("getppid") && !x86_64.contains_key("close"),
        "{x86_64:?}"
    );
    // The execve that started it was made by 64-bit code.
    assert_eq!(x86_64.get("execve"), Some(&(1, 0)), "{x86_64:?}");
    let nrs: BTreeMap<String, u64> = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["abi"] == "i386")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["nr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!((nrs["getppid"], nrs["close"]), (64, 6));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_that_exit_mid_run_are_counted_exactly() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["threads", "8", "1000"]);
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert_eq!(counts(p, native_abi()).get("getppid"), Some(&(8000, 0)));
    assert_eq!(processes(&stats, child).len(), 1);
}

/// Threads on every CPU making the same call at once: the kernel side adds them into per-CPU
/// shards without atomic instructions (one writer per shard), so a lost update would show here.
#[test]
fn threads_hammering_one_syscall_on_every_cpu_lose_no_count() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["threads", "6", "200000"]);
    let child = pid_of(&lines[0], "child_pid");
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert_eq!(
        counts(p, native_abi()).get("getppid"),
        Some(&(1_200_000, 0))
    );
}

#[test]
fn an_execve_chain_stays_one_process_under_its_last_name() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["exec-chain", "3", "100"]);
    let pid = pid_of(&lines[0], "pid");
    let stats = daemon.final_stats(pid);
    assert_eq!(processes(&stats, pid).len(), 1, "{stats:#}");
    let p = process(&stats, pid).unwrap();
    assert_eq!(p["comm"], "workload");
    let c = counts(p, native_abi());
    assert_eq!(c.get("getppid"), Some(&(400, 0)));
    // Three execs by the chain, and the one that started it.
    assert_eq!(c.get("execve"), Some(&(4, 0)));
}

#[test]
fn a_recycled_pid_does_not_inherit_numbers() {
    // A long interval: the second process takes the pid while the kernel still holds the first.
    let daemon = Daemon::start(&["--interval", "2s"]);
    let first = workload(&["calls", "getppid=100"]);
    let pid = pid_of(&first[0], "child_pid");
    let second = workload(&["reuse-pid", &pid.to_string(), "7"]);
    assert_eq!(pid_of(&second[0], "child_pid"), pid);
    let query = format!("?pid={pid}");
    let stats = daemon.wait_for(&query, WAIT, |s| {
        let ps = processes(s, pid);
        ps.len() == 2 && ps.iter().all(|p| p["exited"] == true)
    });
    let drains = stats["host"]["drains"].as_u64().unwrap();
    let stats = daemon.wait_for(&query, WAIT, |s| {
        s["host"]["drains"].as_u64().unwrap() > drains + 1
    });
    let mut getppids: Vec<u64> = processes(&stats, pid)
        .iter()
        .map(|p| counts(p, native_abi()).get("getppid").map_or(0, |c| c.0))
        .collect();
    getppids.sort_unstable();
    assert_eq!(getppids, vec![7, 100], "{stats:#}");
}

#[test]
fn a_blocked_read_shows_in_flight_until_it_returns() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let mut w = RunningWorkload::start(&["block", "6"]);
    let child = pid_of(&w.next_line(), "child_pid");
    let query = format!("?pid={child}");
    let stats = daemon.wait_for(&query, WAIT, |s| {
        process(s, child).is_some_and(|p| {
            p["in_flight"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["oldest_age_ns"].as_u64().unwrap() >= 4_000_000_000)
        })
    });
    let p = process(&stats, child).unwrap();
    let read = &p["in_flight"][0];
    assert_eq!(
        (read["name"].as_str(), read["count"].as_u64()),
        (Some("read"), Some(1)),
        "{p:#}"
    );
    assert!(
        !counts(p, native_abi()).contains_key("read"),
        "not returned yet, so not counted"
    );
    // Released after 6 s: it leaves the in-flight list and is counted once, as a ~6 s read.
    assert_eq!(w.next_line()["released"], true);
    w.wait_success();
    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    assert!(p["in_flight"].as_array().unwrap().is_empty(), "{p:#}");
    let read = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "read")
        .unwrap();
    assert_eq!(read["count"], 1);
    assert!(
        read["total_ns"].as_u64().unwrap() >= 5_500_000_000,
        "{read}"
    );
}

/// strace's summary line per syscall: (calls, errors).
fn parse_strace_summary(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if cols.len() < 5 || cols[0].parse::<f64>().is_err() || cols.last() == Some(&"total") {
            continue;
        }
        let name = cols[cols.len() - 1].to_string();
        let calls: u64 = cols[3].parse().unwrap();
        let errors: u64 = if cols.len() == 6 {
            cols[4].parse().unwrap()
        } else {
            0
        };
        rows.insert(name, (calls, errors));
    }
    rows
}

#[test]
fn counts_match_strace_exactly() {
    require_root();
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let mut w = RunningWorkload::start(&[
        "calls",
        "getppid=200",
        "enoent=50",
        "ebadf=30",
        "eagain=20",
        "sleep=5",
        "--wait-go",
    ]);
    let child = pid_of(&w.next_line(), "child_pid");
    let summary = std::env::temp_dir().join(format!("strace-{child}.txt"));
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&summary)
        .args(["-p", &child.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("running strace (install the strace package)");
    // The child spins without syscalls until strace has attached.
    let mut err = BufReader::new(strace.stderr.take().unwrap()).lines();
    let attached = err.next().expect("strace said nothing").unwrap();
    assert!(attached.contains("attached"), "strace: {attached}");
    w.send_line();
    w.next_line();
    w.wait_success();
    assert!(strace.wait().unwrap().success());
    let mut traced = parse_strace_summary(&std::fs::read_to_string(&summary).unwrap());
    std::fs::remove_file(&summary).unwrap();
    // exit_group never returns, so only strace sees it.
    traced.remove("exit_group");

    let stats = daemon.final_stats(child);
    let p = process(&stats, child).unwrap();
    let profiled = counts(p, native_abi());
    eprintln!("strace -c -f: {traced:?}\nsyscall-profiler: {profiled:?}");
    assert_eq!(profiled, traced);
    assert_eq!(
        traced,
        count_map(&[
            ("getppid", (200, 0)),
            ("openat", (50, 50)),
            ("close", (30, 30)),
            ("read", (20, 20)),
            ("nanosleep", (5, 0)),
        ])
    );
}

#[test]
fn strace_summary_parser() {
    let text = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
 60.00    0.000006           0       200           getppid\n\
 40.00    0.000004           0        50        50 openat\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.000010           0       250        50 total\n";
    assert_eq!(
        parse_strace_summary(text),
        count_map(&[("getppid", (200, 0)), ("openat", (50, 50))])
    );
}
