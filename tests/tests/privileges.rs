//! Once attached, the daemon holds no capability at all, and still counts exactly: the drain's
//! map reads, key walks and deletes work through the fds it already holds.

use std::time::Duration;

use profiler_common::{HistKey, HIST_SLOTS_MAP};
use std::collections::BTreeMap;
use tests::{process, run_workload, syscall};

use tests::{Daemon, Spawn};

const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

/// setpriv arguments for an unprivileged user (nobody) holding exactly `caps` (setpriv names,
/// e.g. "bpf,+perfmon") as ambient capabilities, the way systemd's AmbientCapabilities= does.
fn as_nobody_with(caps: &str) -> Vec<String> {
    let set = format!("-all,+{caps}");
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn serve(wrapper: &[String]) -> Daemon {
    let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Spawn::new(&["serve", "--listen", "127.0.0.1:0", "--interval", "100ms"])
        .wrapper(&w)
        .start()
}

/// Runs the workload with the daemon already unprivileged, waits until its child has exited and
/// been drained twice more (so its kernel entries were deleted), and checks every count.
fn counts_exactly_and_retires(daemon: &Daemon) {
    let run = run_workload(1000, 100, 5);
    let query = format!("?pid={}", run.child_pid);
    let stats = daemon.wait_for(&query, Duration::from_secs(10), |s| {
        process(s, run.child_pid).is_some_and(|p| p["exited"] == true)
    });
    let drains = stats["host"]["drains"].as_u64().unwrap();
    let stats = daemon.wait_for(&query, Duration::from_secs(10), |s| {
        s["host"]["drains"].as_u64().unwrap() > drains + 2
    });
    let p = process(&stats, run.child_pid).expect("child in /stats");
    let count = |name: &str| {
        let s = syscall(&p["syscalls"], name).unwrap_or_else(|| panic!("{name} in {p}"));
        (s["count"].as_u64().unwrap(), s["errors"].as_u64().unwrap())
    };
    assert_eq!(count("getppid"), (1000, 0));
    assert_eq!(count("openat"), (100, 100));
    assert_eq!(count("nanosleep"), (5, 0));
    assert_eq!(p["count"], 1105, "{p}");

    // The retired child's histogram slots were released by the unprivileged drain (unmapped,
    // wiped and queued for reuse: the writes it does).
    let ids = held_map_ids(daemon.pid(), HIST_SLOTS_MAP);
    assert_eq!(
        ids.len(),
        1,
        "the daemon holds one {HIST_SLOTS_MAP} map: {ids:?}"
    );
    let data = aya::maps::MapData::from_id(ids[0]).expect("opening HIST_SLOTS by id");
    let hists: aya::maps::HashMap<_, HistKey, u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("HIST_SLOTS is a hash");
    let left: Vec<HistKey> = hists
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.tgid == run.child_pid)
        .collect();
    assert!(
        left.is_empty(),
        "slots of the retired child remain in HIST_SLOTS: {} of them",
        left.len()
    );
    assert!(
        !daemon.stderr().contains("drain failed"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn as_root_every_capability_is_dropped_after_attaching_and_counts_stay_exact() {
    let daemon = serve(&[]);
    let tasks = thread_caps(daemon.pid());
    assert!(
        tasks.len() >= 3,
        "main, drain and runtime threads: {tasks:?}"
    );
    for caps in &tasks {
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(caps[set], 0, "{set} of a daemon thread: {caps:?}");
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"]),
        "no_new_privs is set:\n{status}"
    );
    counts_exactly_and_retires(&daemon);
    // The capabilities stayed dropped through all of that.
    for caps in thread_caps(daemon.pid()) {
        assert_eq!((caps["CapEff"], caps["CapPrm"]), (0, 0), "{caps:?}");
    }
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn cap_bpf_and_cap_perfmon_are_enough_for_a_non_root_user() {
    let daemon = serve(&as_nobody_with("bpf,+perfmon"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "runs as nobody:\n{status}"
    );
    for caps in thread_caps(daemon.pid()) {
        assert_eq!(
            (
                caps["CapEff"],
                caps["CapPrm"],
                caps["CapInh"],
                caps["CapAmb"]
            ),
            (0, 0, 0, 0),
            "{caps:?}"
        );
        // Without CAP_SETPCAP the bounding set cannot shrink; no_new_privs and an empty
        // permitted set mean nothing can be regained from it.
        assert_eq!(caps["CapBnd"], CAP_BPF | CAP_PERFMON, "{caps:?}");
    }
    counts_exactly_and_retires(&daemon);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn with_cap_setpcap_the_bounding_set_is_emptied_too() {
    let daemon = serve(&as_nobody_with("bpf,+perfmon,+setpcap"));
    for caps in thread_caps(daemon.pid()) {
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(caps[set], 0, "{set}: {caps:?}");
        }
    }
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn either_capability_alone_is_refused_with_exit_3() {
    tests::require_root();
    for caps in ["bpf", "perfmon"] {
        let wrapper = as_nobody_with(caps);
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let (code, stderr) = Spawn::new(&["serve", "--listen", "127.0.0.1:0"])
            .wrapper(&w)
            .output();
        assert_eq!(code, Some(3), "{caps}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("CAP_BPF and CAP_PERFMON"), "{stderr}");
    }
}

/// The capability masks of every thread of `pid` (name → mask), checked thread by thread
/// because capabilities are per thread.
pub fn thread_caps(pid: u32) -> Vec<BTreeMap<String, u64>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("listing tasks") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let caps = status
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), u64::from_str_radix(v.trim(), 16).unwrap())
            })
            .collect();
        out.push(caps);
    }
    out
}

/// The ids of the BPF maps named `name` that process `pid` holds fds to, from
/// /proc/PID/fdinfo.
pub fn held_map_ids(pid: u32, name: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(fd.unwrap().path()) else {
            continue;
        };
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(map) = aya::maps::MapData::from_id(id) else {
            continue;
        };
        if map
            .info()
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_string))
            == Some(name.into())
        {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    ids
}
