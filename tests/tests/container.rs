//! The daemon's image, built and run with real podman: deploy/container/base.sh (mmdebstrap →
//! podman import, no registry), `podman build` of deploy/container/Containerfile with the binary
//! under test, then the daemon in a container run with `--privileged --pid=host`: it attaches,
//! /healthz answers, and a workload run in another real container is counted exactly under its
//! container's label (`container:` and the first 12 hex digits of the id podman gave it).
//!
//! Two settings of this machine kind are passed explicitly: root here lacks CAP_SYS_RESOURCE, so
//! the runtime cannot raise RLIMIT_NOFILE/NPROC to podman's rootful defaults (`--ulimit` keeps
//! them lower); and on a hybrid cgroup host (v2 at /sys/fs/cgroup/unified) crun 1.8 refuses to
//! start containers ("cgroups in hybrid mode not supported, drop all controllers from
//! cgroupv2"), so runc runs them there; crun, podman's default, everywhere else.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{cgroup2_root, count_map, counts, daemon_bin, get_json, native_abi, workload_bin};

const BASE: &str = "localhost/syscall-profiler-base:test";
const IMAGE: &str = "localhost/syscall-profiler:test";
const LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (apt-get install -y podman runc mmdebstrap)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    if cgroup2_root() != Path::new("/sys/fs/cgroup") {
        c.args(["--runtime", "runc"]);
    }
    c
}

/// Removes the test's containers, images and pinned maps however the test ends.
struct Cleanup {
    containers: Vec<&'static str>,
    pin_path: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = podman().args(["rm", "-f", "-t", "5", name]).output();
        }
        let _ = podman().args(["rmi", IMAGE, BASE]).output();
        let _ = std::fs::remove_dir_all(&self.pin_path);
    }
}

fn build_image() {
    let script = repo().join("deploy/container/base.sh");
    run(Command::new(&script).arg(BASE));
    let bin = daemon_bin();
    let rel = bin.strip_prefix(repo()).unwrap_or_else(|_| {
        panic!(
            "{} is outside the repository, the build's context",
            bin.display()
        )
    });
    run(podman()
        .args(["build", "--pull=never", "--quiet", "-f"])
        .arg(repo().join("deploy/container/Containerfile"))
        .arg(format!("--build-arg=BASE={BASE}"))
        .arg(format!("--build-arg=BINARY={}", rel.display()))
        .args(["-t", IMAGE])
        .arg(repo()));
}

/// Polls the daemon container's log until it serves; returns its base URL.
fn serving_on(name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = podman().args(["logs", name]).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(i) = log.find("serving on ") {
            let rest = &log[i + "serving on ".len()..];
            assert!(
                !log.contains("no cgroup v2 hierarchy") && !log.contains("cgroup namespace"),
                "the daemon cannot see the host's cgroup tree:\n{log}"
            );
            return rest.lines().next().unwrap().trim().to_string();
        }
        assert!(Instant::now() < deadline, "the daemon never served:\n{log}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls /stats?comm=workload until `done` holds for the processes labelled `label`.
fn wait_for(base: &str, label: &str, done: impl Fn(&[&Value]) -> bool) -> Value {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, stats) = get_json(&agent, &format!("{base}/stats?comm=workload"), None);
        assert_eq!(status, 200, "{stats}");
        let mine: Vec<&Value> = stats["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["cgroup"] == label)
            .collect();
        if done(&mine) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {label}; last answer:\n{stats:#}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_image_runs_the_daemon_and_counts_a_container_exactly() {
    tests::require_root();
    let (daemon, least) = (
        "syscall-profiler-test-daemon",
        "syscall-profiler-test-least-privilege",
    );
    let cleanup = Cleanup {
        containers: vec![daemon, least],
        pin_path: PathBuf::from(format!(
            "/sys/fs/bpf/syscall-profiler-test-{}",
            std::process::id()
        )),
    };
    build_image();

    run(podman()
        .args(["run", "-d", "--pull=never", "--name", daemon])
        .args(["--privileged", "--pid=host", "--network=host"])
        // The host's whole cgroup tree, to name every process's cgroup: the container's own
        // /sys/fs/cgroup shows v1 controllers here, or only its own cgroup on v2 hosts.
        .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"])
        .args(LIMITS)
        .arg(IMAGE)
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "100ms"]));
    let base = serving_on(daemon);
    let agent = ureq::agent();
    let (status, body) = get_json(&agent, &format!("{base}/healthz"), None);
    assert_eq!((status, body.as_str().map(str::trim)), (200, Some("ok")));

    // The workload in a container of its own (own pid and network namespaces), from the image's
    // base. Its child waits for a line on stdin, so the daemon has seen the container (and named
    // its cgroup) before it exits and podman removes the cgroup.
    let cidfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::remove_file(cidfile.path()).unwrap();
    let mut workload = podman()
        .args(["run", "-i", "--rm", "--pull=never", "--network=none"])
        .arg(format!("--cidfile={}", cidfile.path().display()))
        .args(LIMITS)
        .arg(format!("-v={}:/workload:ro", workload_bin().display()))
        .arg(BASE)
        .args([
            "/workload",
            "calls",
            "getppid=1234",
            "enoent=56",
            "--wait-go",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman run");
    let mut lines = BufReader::new(workload.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the workload's first line").unwrap();
    assert!(first.contains("child_pid"), "{first}");
    let id = std::fs::read_to_string(cidfile.path()).unwrap();
    let label = format!("container:{}", &id.trim()[..12]);
    wait_for(&base, &label, |mine| !mine.is_empty());
    let mut stdin = workload.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = workload.wait().unwrap();
    assert!(status.success(), "workload container: {status}");

    // The child: exactly its raw syscalls, under the container's label.
    let expected = count_map(&[("getppid", (1234, 0)), ("openat", (56, 56))]);
    let stats = wait_for(&base, &label, |mine| {
        mine.iter()
            .any(|p| p["exited"] == true && counts(p, native_abi()) == expected)
    });
    let in_container: Vec<&Value> = stats["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cgroup"] == label.as_str())
        .collect();
    assert_eq!(
        in_container.len(),
        2,
        "the workload and its child: {stats:#}"
    );
    // Every call in the container is in /metrics once, in the group of the name its process
    // had when the drain read it (runc's init makes a getppid before it execs the workload).
    let (_, all) = get_json(
        &agent,
        &format!("{base}/stats?syscall=getppid&limit=10000"),
        None,
    );
    let in_stats: u64 = all["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cgroup"] == label.as_str())
        .filter_map(|p| counts(p, native_abi()).get("getppid").map(|c| c.0))
        .sum();
    let metrics = agent
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let in_metrics: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("syscall_profiler_syscall_duration_seconds_count{")
                && l.contains(&format!("cgroup=\"{label}\""))
                && l.contains("syscall=\"getppid\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(in_stats >= 1234, "at least the child's: {in_stats}");
    assert_eq!(in_metrics, in_stats);

    // Stopped like any container: SIGTERM, a clean exit.
    stop(daemon);
    least_privilege(least, &cleanup.pin_path);
}

/// The host's bpffs at /sys/fs/bpf, as a Kubernetes node has it (systemd mounts it at boot),
/// mounted here if this machine booted without it: the least-privileged daemon pins into it
/// through a bind mount and cannot mount one itself (no CAP_SYS_ADMIN). Without this the test
/// passed only after another test's daemon, as root on the host, had mounted it.
fn host_bpffs() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf"))
    {
        return;
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (fs, target) = (c("bpf"), c("/sys/fs/bpf"));
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mounting the host's bpffs at /sys/fs/bpf: {}",
        std::io::Error::last_os_error()
    );
}

fn stop(name: &str) {
    run(podman().args(["stop", "-t", "10", name]));
    let code = run(podman().args(["inspect", "-f", "{{.State.ExitCode}}", name]));
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "{name}");
}

/// The DaemonSet's securityContext (deploy/kubernetes) under a real runtime: CAP_BPF and
/// CAP_PERFMON only, a read-only root, no privilege escalation, the maps pinned in the host's
/// bpffs. The runtime's default seccomp profile allows bpf() only with CAP_SYS_ADMIN, which is
/// why the DaemonSet asks for Unconfined: with it, the daemon attaches and serves.
fn least_privilege(name: &str, pin_path: &Path) {
    host_bpffs();
    // Without --security-opt seccomp=…: podman's default profile, as RuntimeDefault would be.
    let args = |seccomp: &[&str]| {
        let mut c = podman();
        c.args(["run", "--pull=never", "--pid=host", "--network=host"])
            .args([
                "--cap-drop=all",
                "--cap-add=bpf,perfmon",
                "--user=0",
                "--read-only",
            ])
            .arg("--security-opt=no-new-privileges")
            .args(seccomp)
            .args([
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "-v",
                "/sys/fs/bpf:/sys/fs/bpf",
            ])
            .args(LIMITS);
        c
    };
    let refused = args(&[])
        .args(["--rm", IMAGE, "serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("Operation not permitted"),
        "the default seccomp profile let bpf() through: {said}"
    );

    run(args(&["--security-opt=seccomp=unconfined"])
        .args(["-d", "--name", name, IMAGE])
        .args(["serve", "--listen", "127.0.0.1:0", "--pin-path"])
        .arg(pin_path));
    let base = serving_on(name);
    let (status, _) = get_json(&ureq::agent(), &format!("{base}/healthz"), None);
    assert_eq!(status, 200);
    assert!(
        pin_path.join("HISTS").exists(),
        "maps pinned in {}",
        pin_path.display()
    );
    stop(name);
}
