//! The bench harness's command line and its workload processes, run as real processes. No
//! timings are checked: this is a benchmark's plumbing, not a benchmark.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_bench_flags_are_one_line_and_exit_2() {
    for (args, needle) in [
        (&["bench", "--rounds", "0"][..], "--rounds"),
        (&["bench", "--iters", "many"][..], "--iters"),
        (&["bench", "--clients", "0"][..], "--clients"),
        (
            &["bench", "--daemon-variant", "counts-only"][..],
            "--daemon-variant",
        ),
        (&["bench", "--bogus"][..], "--bogus"),
        (&["bench-drain", "--rounds", "0"][..], "--rounds"),
        (&["bench-drain", "--window", "1"][..], "--window"),
        (
            &["bench-drain", "--daemon-variant", "b"][..],
            "--daemon-variant",
        ),
    ] {
        let o = xtask(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_drain_variant_may_not_take_the_trees_name() {
    let o = xtask(&["bench-drain", "--daemon-variant", "tree=--counts-only"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the name 'tree' is taken"), "{err}");
}

#[test]
fn every_workload_reports_a_cost_per_syscall() {
    for w in [
        "getppid",
        "getppid-all-cpus",
        "mixed-io",
        "pipe-ping-pong",
        "futex-ping-pong",
    ] {
        let o = xtask(&["bench-worker", "time", "--workload", w, "--ops", "1000"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{w}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for key in ["wall_ns_per_op=", "cpu_ns_per_op="] {
            let ns: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{w}: no {key} in {out}"));
            assert!(ns > 0.0 && ns.is_finite(), "{w}: {out}");
        }
    }
}

#[test]
fn series_worker_refuses_allocated_syscall_numbers() {
    let o = xtask(&[
        "bench-worker",
        "series",
        "--first-nr",
        "39",
        "--count",
        "1",
        "--period-ms",
        "1",
        "--max-secs",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--first-nr"));
}
