//! `/stats?sort=cpu` and `sort=blocked` rank processes by the parts of their syscall time (the
//! time split): a process computing in the kernel (getrandom of 4 MiB) above one sleeping in
//! nanosleep for cpu, the other way round for blocked; each process's parts add up to its time.

use serde_json::Value;
use tests::{pid_of, process, workload, Daemon};

/// The pids of a sorted answer, in order.
fn order(s: &Value) -> Vec<u64> {
    s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

fn rank(s: &Value, pid: u32) -> usize {
    order(s)
        .iter()
        .position(|&p| p == u64::from(pid))
        .unwrap_or_else(|| panic!("{pid} not in {:?}", order(s)))
}

#[test]
fn cpu_ranks_computing_above_sleeping_and_blocked_the_reverse() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let computing = pid_of(&workload(&["compute", "40", "4194304"])[0], "child_pid");
    let sleeping = pid_of(&workload(&["calls", "sleep=100"])[0], "child_pid");
    daemon.final_stats(computing);
    daemon.final_stats(sleeping);

    let query = "?comm=workload&exited=true&limit=10000&syscalls=1";
    let by_cpu = daemon.stats(&format!("{query}&sort=cpu"));
    let by_blocked = daemon.stats(&format!("{query}&sort=blocked"));
    assert_eq!(by_cpu["sort"], "cpu");
    assert!(
        rank(&by_cpu, computing) < rank(&by_cpu, sleeping),
        "sort=cpu: {:?}",
        order(&by_cpu)
    );
    assert!(
        rank(&by_blocked, sleeping) < rank(&by_blocked, computing),
        "sort=blocked: {:?}",
        order(&by_blocked)
    );

    // The ranking is the key, descending; and each process's parts add up to its time.
    for (s, key) in [(&by_cpu, "on_cpu_ns"), (&by_blocked, "blocked_ns")] {
        let keys: Vec<u64> = s["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[key].as_u64().unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{key}: {keys:?}");
    }
    for pid in [computing, sleeping] {
        let p = process(&by_cpu, pid).unwrap();
        let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
        assert_eq!(
            n("on_cpu_ns") + n("runq_ns") + n("blocked_ns"),
            n("total_ns"),
            "{p}"
        );
    }
    // The one syscall listed (syscalls=1) is the process's first by the same key.
    let computer = process(&by_cpu, computing).unwrap();
    assert_eq!(computer["syscalls"][0]["name"], "getrandom", "{computer}");
    let sleeper = process(&by_blocked, sleeping).unwrap();
    assert_eq!(sleeper["syscalls"][0]["name"], "nanosleep", "{sleeper}");
}
