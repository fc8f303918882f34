//! Counts-only mode: no `sys_enter` program at all, exact call and error counts, no times.

use tests::{counts, native_abi, process, run_workload, Daemon};

#[test]
fn counts_only_mode_counts_exactly_without_timing() {
    let daemon = Daemon::start(&["--interval", "100ms", "--counts-only"]);
    let attached = daemon.stderr();
    assert!(attached.contains("attached sys_exit_counts"), "{attached}");
    assert!(
        !attached.contains("attached sys_enter"),
        "sys_enter must not be attached: {attached}"
    );

    let run = run_workload(250, 40, 2);
    let stats = daemon.final_stats(run.child_pid);
    assert_eq!(stats["host"]["mode"], "counts_only");
    let p = process(&stats, run.child_pid).unwrap();
    let c = counts(p, native_abi());
    assert_eq!(c.get("getppid"), Some(&(250, 0)));
    assert_eq!(c.get("openat"), Some(&(40, 40)));
    assert_eq!(c.get("nanosleep"), Some(&(2, 0)));
    assert_eq!(c.len(), 3, "{c:?}");
    for s in p["syscalls"].as_array().unwrap() {
        assert!(
            s["p50_ns"].is_null() && s["mean_ns"].is_null(),
            "no times: {s}"
        );
        assert!(s["time_split"].is_null(), "no split without times: {s}");
        assert_eq!(s["buckets"], serde_json::json!([]));
        assert_eq!(s["total_ns"], 0);
    }
    let openat = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "openat")
        .unwrap();
    assert_eq!(openat["errnos"]["ENOENT"], 40);
    assert_eq!(p["in_flight"], serde_json::json!([]));
}
