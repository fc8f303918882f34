//! Helpers for the end-to-end tests: run the real daemon binary, query it over real HTTP, run
//! the workload. Every test here loads eBPF into the live kernel, so it needs root and says so
//! loudly without it.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Panics with the reason unless running as root: these tests exercise the live kernel and must
/// never pass without doing so.
pub fn require_root() {
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests load eBPF programs into the live kernel and must run as root \
         (euid is {euid}); run the test command as root"
    );
}

/// The directory cargo put this test's binaries in (target/<profile>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The daemon binary: $SYSCALL_PROFILER_BIN, or the one cargo built beside these tests.
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SYSCALL_PROFILER_BIN") {
        return p.into();
    }
    let p = target_dir().join("syscall-profiler");
    assert!(
        p.exists(),
        "{} is missing: `cargo test --workspace` builds it (or set SYSCALL_PROFILER_BIN)",
        p.display()
    );
    p
}

/// The workload binary cargo built beside these tests (src/bin/workload.rs).
pub fn workload_bin() -> PathBuf {
    target_dir().join("workload")
}

pub struct Daemon {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `syscall-profiler serve` on a free loopback port with extra `args`, and returns
    /// once it serves HTTP (its programs are attached by then).
    pub fn start(args: &[&str]) -> Daemon {
        require_root();
        let mut child = Command::new(daemon_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the daemon");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("serving on http://") {
                        let _ = tx.send(line[i + "serving on ".len()..].trim().to_string());
                    }
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not start serving; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Daemon {
            child,
            base,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET `path`, returning (status, body as JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
            Ok(r) => (r.status(), r.into_json().expect("JSON body")),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().expect("JSON error body")),
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    pub fn stats(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/stats{query}"));
        assert_eq!(status, 200, "GET /stats{query}: {body}");
        body
    }

    /// Polls /stats until `done` holds for it, or panics after `timeout` with the last answer.
    pub fn wait_for(&self, query: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats(query);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on /stats{query}; last answer:\n{s:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("waiting for the daemon");
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

pub struct WorkloadRun {
    pub child_pid: u32,
    pub sleep_median_ns: u64,
}

/// Runs the workload to completion (see src/bin/workload.rs).
pub fn run_workload(getppids: u32, enoents: u32, sleeps: u32) -> WorkloadRun {
    let out = Command::new(workload_bin())
        .args([
            getppids.to_string(),
            enoents.to_string(),
            sleeps.to_string(),
        ])
        .output()
        .expect("running the workload");
    assert!(
        out.status.success(),
        "workload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("workload prints JSON");
    WorkloadRun {
        child_pid: v["child_pid"].as_u64().unwrap() as u32,
        sleep_median_ns: v["sleep_median_ns"].as_u64().unwrap(),
    }
}

/// The process entry for `pid` in a /stats answer.
pub fn process(stats: &Value, pid: u32) -> Option<&Value> {
    stats["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

/// The syscall entry named `name` in a list of syscall stats.
pub fn syscall<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|s| s["name"] == name)
}
