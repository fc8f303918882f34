//! Helpers for the `record` tests: run record and real strace, read their tables.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output, Stdio},
};

use crate::{daemon_bin, require_root};

/// Calls and errors per syscall name.
pub type Counts = BTreeMap<String, (u64, u64)>;

/// record's table header; the columns below are cut where the header's are.
pub const HEADER: &str =
    "% time    wall (s)  system (s)  usecs/call     calls    errors  p99(usecs) syscall";

/// One row of record's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub wall_s: f64,
    /// None when the kernel cannot split the time ("n/a").
    pub system_s: Option<f64>,
    pub calls: u64,
    pub errors: u64,
    /// Empty when no call was timed.
    pub p99_us: String,
}

/// Runs `record ARGS` with no stdin.
pub fn record(args: &[&str]) -> Output {
    require_root();
    Command::new(daemon_bin())
        .arg("record")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running record")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// record's table in `out` (its stderr, or an `--output` file): each syscall's row (the name
/// with ` [ABI]` for a non-native one) and the total row.
pub fn parse_table(out: &str) -> (BTreeMap<String, Row>, Row) {
    let lines: Vec<&str> = out.lines().collect();
    let head = lines
        .iter()
        .position(|l| *l == HEADER)
        .unwrap_or_else(|| panic!("no table in:\n{out}"));
    assert!(
        lines[head - 1].starts_with("wall: entry to return (strace -c -w); system: on a CPU"),
        "the line above the header says what the times are:\n{out}"
    );
    let rule = lines[head + 1];
    assert!(rule.starts_with("------ -----------"), "{rule}");
    let field = |l: &str, from: usize, to: usize| l[from..to].trim().to_string();
    let num = |s: String| if s.is_empty() { 0 } else { s.parse().unwrap() };
    let row = |l: &str| Row {
        wall_s: field(l, 7, 18).parse().unwrap(),
        system_s: field(l, 19, 30).parse().ok(),
        calls: num(field(l, 43, 52)),
        errors: num(field(l, 53, 62)),
        p99_us: field(l, 63, 74),
    };
    let mut table = BTreeMap::new();
    let mut i = head + 2;
    while lines[i] != rule {
        table.insert(lines[i][75..].to_string(), row(lines[i]));
        i += 1;
    }
    let total = lines[i + 1];
    assert_eq!(&total[75..], "total");
    (table, row(total))
}

/// Calls and errors of each row of record's table.
pub fn table_counts(out: &str) -> Counts {
    parse_table(out)
        .0
        .into_iter()
        .map(|(name, r)| (name, (r.calls, r.errors)))
        .collect()
}

/// strace -c's table: calls and errors per syscall (its rows have five or six fields; the
/// errors field is left blank when there are none).
pub fn parse_strace(out: &str) -> Counts {
    let lines: Vec<&str> = out.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.starts_with("% time"))
        .unwrap_or_else(|| panic!("no strace table in:\n{out}"));
    let mut counts = Counts::new();
    for l in &lines[head + 2..] {
        if l.starts_with("------") {
            break;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        let (calls, errors) = match f.len() {
            5 => (f[3].parse().unwrap(), 0),
            6 => (f[3].parse().unwrap(), f[4].parse().unwrap()),
            _ => panic!("unexpected strace row {l:?}"),
        };
        counts.insert(f[f.len() - 1].to_string(), (calls, errors));
    }
    counts
}

/// Real strace, as installed (Debian's package: `cargo xtask test` installs it).
fn strace() -> Command {
    let probe = Command::new("strace").arg("-V").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "these tests compare with real strace: install it (apt-get install strace; cargo xtask \
         test does)"
    );
    Command::new("strace")
}

/// `strace -c -f -o FILE CMD` run in `dir`: its counts. The command gets what
/// [`record_report`] gives it: nothing on stdin, stdout to /dev/null, stderr a pipe (programs
/// ask what their descriptors are: Python seeks its standard streams, ls asks for a terminal).
pub fn strace_counts(cmd: &[&str], dir: &Path) -> Counts {
    let out = tempfile::NamedTempFile::new().unwrap();
    let run = strace()
        .args(["-c", "-f", "-o"])
        .arg(out.path())
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "strace {cmd:?}: {}",
        text(&run.stderr)
    );
    parse_strace(&std::fs::read_to_string(out.path()).unwrap())
}

/// `record OPTIONS -o FILE -- CMD` run in `dir` as [`strace_counts`] runs strace (nothing on
/// stdin, stdout and stderr to /dev/null: a program may ask what they are): the report.
pub fn record_report(options: &[&str], cmd: &[&str], dir: &Path) -> String {
    require_root();
    let out = tempfile::NamedTempFile::new().unwrap();
    let run = Command::new(daemon_bin())
        .arg("record")
        .args(options)
        .arg("-o")
        .arg(out.path())
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "record {cmd:?}: {}",
        text(&run.stderr)
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// `record -- CMD` run as [`record_report`] runs it: its counts.
pub fn record_counts(cmd: &[&str], dir: &Path) -> Counts {
    table_counts(&record_report(&[], cmd, dir))
}

/// The rows where `a` and `b` differ, as "name: a vs b" lines.
pub fn differences(a: &Counts, b: &Counts) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| format!("{n}: {:?} vs {:?}", a.get(n), b.get(n)))
        .collect()
}
