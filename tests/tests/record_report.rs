//! Where record's report goes and what it says: on stderr like `strace -c` (stdout stays the
//! command's, byte for byte) or in `--output`; the last progress line is the final numbers;
//! the time columns are named, and system time is the part of wall time spent on a CPU.

use tests::record::{parse_table, record, text};

/// "recorded 0.123s: 29 calls, 1 error, 1 process" → (29, 1, 1).
fn final_line(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("recorded "))
        .unwrap_or_else(|| panic!("no final progress line in:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split_once(": ")
        .unwrap()
        .1
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn the_report_is_on_stderr_and_stdout_is_the_commands() {
    let out = record(&[
        "--",
        "sh",
        "-c",
        "printf 'exactly this\\n'; ls /nonexistent-dir",
    ]);
    assert_eq!(out.status.code(), Some(2), "ls's exit code");
    assert_eq!(text(&out.stdout), "exactly this\n");
    let stderr = text(&out.stderr);
    let (table, total) = parse_table(&stderr);
    assert!(table.contains_key("execve"), "{stderr}");
    assert!(stderr.contains("nonexistent-dir"), "the command's stderr");
    // The progress lines come first; the last says what the table's total says.
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("record")).collect();
    assert!(progress[0].starts_with("recording 'sh -c"), "{progress:?}");
    let (calls, errors, processes) = final_line(&stderr);
    assert_eq!((calls, errors), (total.calls, total.errors), "{stderr}");
    assert!(processes >= 1, "{stderr}");
    assert!(
        !stderr.contains("recording 0.0s: 0 calls"),
        "a stale first line: {stderr}"
    );
}

#[test]
fn output_takes_the_report_and_stderr_keeps_the_progress() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.txt");
    let out = record(&["-o", file.to_str().unwrap(), "--", "/bin/true"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("% time"), "{stderr}");
    let (_, total) = parse_table(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(final_line(&stderr), (total.calls, total.errors, 1));

    let json = dir.path().join("report.json");
    let cmd = "ls / > /dev/null; ls /nonexistent 2> /dev/null; true";
    let out = record(&[
        "--json",
        "-o",
        json.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        cmd,
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let processes = report["processes"].as_array().unwrap().len() as u64;
    assert!(processes >= 3, "sh and two ls: {report:#}");
    assert_eq!(
        final_line(&stderr),
        (
            n(&report["total"]["calls"]),
            n(&report["total"]["errors"]),
            processes
        )
    );
}

/// bash's `times`: "0m0.003s 0m0.230s" → 0.233 s (user + system).
fn cpu_seconds(line: &str) -> f64 {
    line.split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum()
}

#[test]
fn system_time_is_the_on_cpu_part_of_wall_time() {
    // Five 20 ms sleeps: blocked, nearly no CPU. Reading 128 MiB of /dev/urandom in 4 MiB
    // calls: the kernel computes ChaCha20 for a few hundred ms, on a CPU when it runs at all
    // (on a busy host the call also waits for a CPU, which is wall time, not system time).
    // bash's `times` then prints the CPU time of its children as the kernel accounted it:
    // the reads' system time is nearly all of it.
    let out = record(&[
        "--",
        "bash",
        "-c",
        "for i in 1 2 3 4 5; do sleep 0.02; done; \
         dd if=/dev/urandom of=/dev/null bs=4M count=32 status=none; times",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let children_cpu = cpu_seconds(stdout.lines().nth(1).expect("times' second line"));
    let (table, total) = parse_table(&stderr);
    for (name, r) in &table {
        let system = r.system_s.expect("system time measured on this kernel");
        assert!(
            system <= r.wall_s + 1e-6,
            "{name}: system {system} > wall {}",
            r.wall_s
        );
    }
    let row = |name: &str| {
        table
            .get(name)
            .unwrap_or_else(|| panic!("no {name} row: {stderr}"))
    };
    let sleep = row("clock_nanosleep");
    assert_eq!(sleep.calls, 5);
    assert!(sleep.wall_s >= 0.1, "{stderr}");
    assert!(
        sleep.system_s.unwrap() < 0.1 * sleep.wall_s,
        "a sleep is not CPU: {stderr}"
    );
    let read = row("read").system_s.unwrap();
    assert!(
        read <= children_cpu + 0.005 && read >= 0.8 * children_cpu,
        "the reads' system time {read} s, the children's CPU time {children_cpu} s: {stderr}"
    );
    // The rows add up to the total, within their rounding to µs.
    let sum: f64 = table.values().map(|r| r.system_s.unwrap()).sum();
    let rounding = (table.len() + 1) as f64 * 0.5e-6;
    assert!(
        (total.system_s.unwrap() - sum).abs() <= rounding,
        "{stderr}"
    );
}
