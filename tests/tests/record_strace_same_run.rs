//! Within one run, record counts what `strace -c -f` counts, call for call and error for error,
//! on shell scripts whose calls depend on timing: pipes (how many reads a reader needs depends
//! on when the writer writes) and SIGCHLDs that coalesce when children exit together (one
//! `rt_sigreturn` fewer, and a `wait4` or `clone` interrupted and restarted, differ from run
//! to run under either tool). So both watch the same run: record runs
//! `strace -f -c -o FILE -- CMD` and the comparison is between strace's table and record's
//! counts of strace's tracees.
//!
//! Left out, and why: the strace process itself and the children it forks to probe the kernel
//! (strace does not trace itself); and the calls strace's start-up child makes before its
//! execve of CMD (it stops itself, then execs), which strace hides. Those are measured on
//! `/bin/true` in the same way, and must be the whole difference on every script.

use std::{path::Path, process::Stdio};

use serde_json::Value;
use tests::{
    daemon_bin,
    record::{differences, parse_strace, text, Counts},
    require_root,
};

/// One run of a command under both tools.
struct Run {
    /// Record's counts of strace's tracees.
    record: Counts,
    /// Strace's table.
    strace: Counts,
    /// Whom record saw, for a failure's message: the processes it reported (pid, name, calls)
    /// and the process events it lost, which are what decide who a tracee is.
    seen: String,
}

/// `cmd` run under both tools.
fn one_run(cmd: &[&str], dir: &Path) -> Run {
    require_root();
    let report = tempfile::NamedTempFile::new().unwrap();
    let table = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(daemon_bin())
        .args(["record", "--json", "-o"])
        .arg(report.path())
        .args(["--", "strace", "-f", "-c", "-o"])
        .arg(table.path())
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    let strace_pid = report["command_pid"].as_u64().expect("command_pid");
    let mut tracees = Counts::new();
    let mut seen = format!(
        "strace is {strace_pid}, lost process events {}; record's processes:",
        report["lost_process_events"]
    );
    for p in report["processes"].as_array().unwrap() {
        seen += &format!(" {} {} ({} calls);", p["pid"], p["comm"], p["calls"]);
        // strace's feature probes are forked and never exec: they keep its name.
        if p["pid"] == strace_pid || p["comm"] == "strace" {
            continue;
        }
        for s in p["syscalls"].as_array().unwrap() {
            let row = tracees
                .entry(s["name"].as_str().unwrap().to_string())
                .or_default();
            row.0 += s["calls"].as_u64().unwrap();
            row.1 += s["errors"].as_u64().unwrap();
        }
    }
    let strace = parse_strace(&std::fs::read_to_string(table.path()).unwrap());
    Run {
        record: tracees,
        strace,
        seen,
    }
}

/// What record counted beyond strace, per syscall (no entry where they agree).
fn excess(run: &Run) -> Counts {
    let Run {
        record,
        strace,
        seen,
    } = run;
    let mut out = Counts::new();
    for (name, &(calls, errors)) in record {
        let (c, e) = strace.get(name).copied().unwrap_or((0, 0));
        assert!(
            calls >= c && errors >= e,
            "{name}: record {calls}/{errors} < strace {c}/{e}: {:?}; {seen}",
            differences(record, strace)
        );
        if (calls, errors) != (c, e) {
            out.insert(name.clone(), (calls - c, errors - e));
        }
    }
    for name in strace.keys() {
        assert!(
            record.contains_key(name),
            "record has no {name}: {strace:?}; {seen}"
        );
    }
    out
}

/// The calls of strace's start-up child before its execve.
fn strace_start_up(dir: &Path) -> Counts {
    let start_up = excess(&one_run(&["/bin/true"], dir));
    let calls: u64 = start_up.values().map(|c| c.0).sum();
    assert!(
        (1..=12).contains(&calls),
        "strace's start-up child made {calls} calls before its exec? {start_up:?}"
    );
    start_up
}

const PIPES_AND_SUBSTITUTIONS: &str = r#"
for i in 1 2 3 4 5 6 7 8; do
  x=$(echo $i | cat)
  ( echo "sub $x" ) > /dev/null
  y=$(expr $i + 1)
done
seq 1 20000 | sort -r | head -n 5 > /dev/null
echo done | tr a-z A-Z | wc -c > /dev/null
"#;

/// Background jobs, a pipeline inside a substitution, a subshell pipeline, `wait`.
const BACKGROUND_JOBS: &str = r#"
for i in 1 2 3; do
  ( ls / | wc -l > /dev/null ) &
done
n=$(cat /etc/passwd | grep -c :)
wait
( cat /etc/services | sort | uniq -c | sort -n | tail -n 3 ) > /dev/null
"#;

fn assert_same_run(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let start_up = strace_start_up(dir.path());
    let path = dir.path().join("script.sh");
    std::fs::write(&path, script).unwrap();
    for shell in ["sh", "bash"] {
        let run = one_run(&[shell, path.to_str().unwrap()], dir.path());
        assert_eq!(
            excess(&run),
            start_up,
            "{shell}: record counts beyond strace's, other than strace's start-up child's \
             calls; all differences (record first):\n{}\n{}",
            differences(&run.record, &run.strace).join("\n"),
            run.seen
        );
        assert!(run.strace["clone"].0 > 15, "{shell}: {:?}", run.strace);
    }
}

#[test]
fn pipes_and_command_substitutions() {
    assert_same_run(PIPES_AND_SUBSTITUTIONS);
}

#[test]
fn background_jobs_and_pipelines() {
    assert_same_run(BACKGROUND_JOBS);
}

/// Whatever `python3` is first in $PATH: Debian's Python, or a wrapper around it (pyenv's shim
/// runs bash, which runs pipelines, before it execs the interpreter).
#[test]
fn python_from_path() {
    let dir = tempfile::tempdir().unwrap();
    let start_up = strace_start_up(dir.path());
    let run = one_run(&["python3", "-c", "pass"], dir.path());
    assert_eq!(
        excess(&run),
        start_up,
        "{}\n{}",
        differences(&run.record, &run.strace).join("\n"),
        run.seen
    );
}
