//! `record -- CMD` equals `strace -c -f CMD`, call for call and error for error, on real
//! programs whose calls do not depend on timing: coreutils, find, a Python start-up, a shell
//! script that forks subshells and command substitutions. Each is run once under each tool,
//! with the same arguments, in the same directory, with nothing on stdin.
//!
//! Nothing is left out of the comparison: the calls that never return (exit_group, exit) are
//! in neither table. Trees whose calls depend on timing (pipes, coalescing SIGCHLDs) are
//! compared within one run in record_strace_same_run.rs.

use std::path::Path;

use tests::record::{differences, record_counts, strace_counts};

fn assert_same(cmd: &[&str], dir: &Path) {
    let strace = strace_counts(cmd, dir);
    let record = record_counts(cmd, dir);
    let diff = differences(&record, &strace);
    assert!(
        diff.is_empty(),
        "{cmd:?}: record vs strace -c -f differ (record first):\n{}",
        diff.join("\n")
    );
    assert!(
        strace.values().map(|c| c.0).sum::<u64>() > 20,
        "{cmd:?} made almost no calls: {strace:?}"
    );
    assert!(
        strace.get("execve").is_some_and(|e| e.0 >= 1),
        "{cmd:?}: {strace:?}"
    );
}

/// A directory of its own, so what a program finds in its working directory is the same for
/// both runs.
fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// 2,000 lines in a random order (fixed seed), ~60 KiB: several reads for cat and sort.
fn unsorted_file(dir: &Path) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = String::new();
    for i in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:016x} line {i}\n", x));
    }
    let path = dir.join("lines.txt");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn coreutils_ls_cat_sort() {
    let dir = workdir();
    let file = unsorted_file(dir.path());
    assert_same(&["ls", "-la", "/usr"], dir.path());
    assert_same(&["cat", &file], dir.path());
    assert_same(&["sort", &file], dir.path());
}

#[test]
fn find_over_usr() {
    let dir = workdir();
    assert_same(&["find", "/usr", "-name", "x"], dir.path());
}

/// Debian's own Python, by its path: the `python3` first in $PATH may be a wrapper (pyenv's
/// shim is a bash script with pipes; record_strace_same_run.rs runs that one).
#[test]
fn python_start_up() {
    let dir = workdir();
    assert_same(&["/usr/bin/python3", "-c", "pass"], dir.path());
}

/// Subshells, command substitutions in a loop, a subshell inside a substitution, a nested
/// shell: every child is waited for before the next starts, so no two SIGCHLDs can coalesce.
const FORKING_SCRIPT: &str = r#"
for i in 1 2 3 4 5 6; do
  n=$(expr $i \* 3)
  ( echo "sub $n" ) > /dev/null
  m=$( (echo $n) )
done
sh -c 'x=$(ls /) ; echo ${#x}' > /dev/null
"#;

#[test]
fn a_shell_script_that_forks() {
    let dir = workdir();
    let script = dir.path().join("forks.sh");
    std::fs::write(&script, FORKING_SCRIPT).unwrap();
    assert_same(&["sh", script.to_str().unwrap()], dir.path());
}
