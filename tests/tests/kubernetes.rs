//! Kubernetes pods as kubelet lays out their cgroups, with both cgroup drivers: real cgroup v2
//! directories named the way kubelet names them, a real process moved into each (its pid
//! written to cgroup.procs), and the daemon's /stats and /metrics naming the container, the pod
//! UID and the QoS class. The trees are made under a directory of the test's own, so a kubelet
//! on the host is never disturbed (kubelet's tree may be nested too, as in kind).

use std::{
    io::Write,
    process::{Command, Stdio},
};

use tests::{
    cgroup2_root, counts, native_abi, output_in_cgroup, pid_of, process, workload_bin, Cgroups,
    Daemon,
};

struct Case {
    /// The leaf directory, relative to the test's own directory.
    path: String,
    container: String,
    uid: String,
    qos_class: &'static str,
    getppid: u32,
}

/// One pod per driver and QoS class (Guaranteed pods have no QoS level directory).
fn cases() -> Vec<Case> {
    let pid = std::process::id();
    let case = |i: u32, qos_class: &'static str, systemd: bool| {
        let container = format!("{i:04x}{pid:012x}").repeat(4);
        let uid = format!("{pid:08x}-0000-4000-8000-{i:012x}");
        let level = qos_class.to_lowercase();
        let path = match (systemd, qos_class) {
            (true, "Guaranteed") => format!(
                "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{container}.scope",
                uid.replace('-', "_")
            ),
            (true, _) => format!(
                "kubepods.slice/kubepods-{level}.slice/kubepods-{level}-pod{}.slice/cri-containerd-{container}.scope",
                uid.replace('-', "_")
            ),
            (false, "Guaranteed") => format!("kubepods/pod{uid}/{container}"),
            (false, _) => format!("kubepods/{level}/pod{uid}/{container}"),
        };
        Case {
            path,
            container,
            uid,
            qos_class,
            getppid: 100 + i,
        }
    };
    let mut all = Vec::new();
    for (i, class) in ["Guaranteed", "Burstable", "BestEffort"].iter().enumerate() {
        all.push(case(2 * i as u32, class, true));
        all.push(case(2 * i as u32 + 1, class, false));
    }
    all
}

#[test]
fn pods_of_both_cgroup_drivers_are_named_in_stats_and_metrics() {
    tests::require_root();
    let base = cgroup2_root().join(format!("syscall-profiler-test-k8s-{}", std::process::id()));
    let cases = cases();
    let mut made = Cgroups::default();
    let leaves: Vec<_> = cases
        .iter()
        .map(|c| made.create(base.join(&c.path)))
        .collect();
    let daemon = Daemon::start(&["--interval", "100ms"]);

    let mut children = Vec::new();
    for (case, leaf) in cases.iter().zip(&leaves) {
        let mut cmd = Command::new(workload_bin());
        cmd.args(["calls", &format!("getppid={}", case.getppid)]);
        let lines = output_in_cgroup(cmd, leaf);
        children.push(pid_of(&lines[0], "child_pid"));
    }

    let metrics = || {
        ureq::get(&format!("{}/metrics", daemon.base))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };
    for (case, &child) in cases.iter().zip(&children) {
        let stats = daemon.final_stats(child);
        let p = process(&stats, child).unwrap();
        let label = format!("container:{}", &case.container[..12]);
        assert_eq!(p["cgroup"], label.as_str(), "{}: {p:#}", case.path);
        assert_eq!(p["pod"]["uid"], case.uid.as_str(), "{}", case.path);
        assert_eq!(p["pod"]["qos_class"], case.qos_class, "{}", case.path);
        assert_eq!(
            counts(p, native_abi()).get("getppid"),
            Some(&(u64::from(case.getppid), 0))
        );
    }

    let body = metrics();
    for case in &cases {
        let label = format!("container:{}", &case.container[..12]);
        // The (comm, cgroup) group holds exactly this pod's calls: the workload's parent makes
        // no getppid, its child exactly `getppid`.
        let count = format!(
            "syscall_profiler_syscall_duration_seconds_count{{comm=\"workload\",cgroup=\"{label}\",abi=\"{}\",syscall=\"getppid\"}} {}",
            native_abi(),
            case.getppid
        );
        assert!(body.lines().any(|l| l == count), "no line {count}");
        let info = format!(
            "syscall_profiler_cgroup_info{{cgroup=\"{label}\",pod_uid=\"{}\",qos_class=\"{}\"}} 1",
            case.uid, case.qos_class
        );
        assert!(body.lines().any(|l| l == info), "no line {info}");
    }
    let pods = body
        .lines()
        .filter(|l| l.starts_with("syscall_profiler_cgroup_info{"))
        .count();
    assert_eq!(pods, cases.len(), "one info series per pod container");

    // The scrape with its info family still passes Prometheus's own linter.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: `apt-get install -y prometheus`");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);
    drop(made);
    assert!(!base.exists(), "the test's cgroups are removed");
}
