//! Helpers for the end-to-end tests: run the real daemon binary, query it over real HTTP, run
//! the workload. Every test here loads eBPF into the live kernel, so it needs root and says so
//! loudly without it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod raw_http;
pub mod record;
pub mod tls;
pub mod tmux;

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

/// The daemon binary: $PROFILER_TEST_BIN, or the one cargo built beside these tests. (Not
/// `SYSCALL_PROFILER_…`: the daemon refuses variables with its prefix that it does not know, and
/// the daemons these tests start inherit their environment.)
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROFILER_TEST_BIN") {
        return p.into();
    }
    let p = target_dir().join("syscall-profiler");
    assert!(
        p.exists(),
        "{} is missing: `cargo test --workspace` builds it (or set PROFILER_TEST_BIN)",
        p.display()
    );
    p
}

/// The workload binary cargo built beside these tests (src/bin/workload.rs).
pub fn workload_bin() -> PathBuf {
    target_dir().join("workload")
}

/// A daemon command line: its arguments, environment and an optional wrapper (setpriv, …).
pub struct Spawn {
    pub wrapper: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Spawn {
    /// `syscall-profiler serve` on a free loopback port, logging at info, with extra `args`.
    pub fn serve(args: &[&str]) -> Spawn {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--log-level", "info"];
        all.extend_from_slice(args);
        Spawn::new(&all)
    }

    pub fn new(args: &[&str]) -> Spawn {
        Spawn {
            wrapper: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }

    pub fn wrapper(mut self, w: &[&str]) -> Spawn {
        self.wrapper = w.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Spawn {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self) -> Command {
        let bin = daemon_bin();
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(&bin);
            c
        };
        cmd.args(&self.args).env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs to completion: (exit code, stderr).
    pub fn output(&self) -> (Option<i32>, String) {
        let out = self.command().output().expect("running the daemon");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts it and returns once it serves HTTP (its programs are attached by then).
    pub fn start(&self) -> Daemon {
        require_root();
        let mut child = self
            .command()
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
                    if let Some(i) = line.find("serving on ") {
                        let _ = tx.send(line[i + "serving on ".len()..].trim().to_string());
                    }
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => Daemon {
                child,
                base,
                stderr,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not start serving; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        }
    }
}

pub struct Daemon {
    pub child: Child,
    /// `http://ADDR` or `https://ADDR`, from the "serving on" log line.
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `syscall-profiler serve` on a free loopback port with extra `args`.
    pub fn start(args: &[&str]) -> Daemon {
        Spawn::serve(args).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Polls the log until `needle` appears.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "'{needle}' never appeared in the log:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn agent(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build()
    }

    /// GET `path`: (status, body as JSON, or as a JSON string when it is not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        get_json(&self.agent(), &format!("{}{path}", self.base), None)
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

    /// Waits until `pid`'s newest entry has exited and two more drains have passed (the first
    /// reads it for the last time, the second retires it), then returns that answer: every
    /// syscall of the process listed, with its buckets and its failing arguments (and 1,000 of
    /// the system-wide list).
    pub fn final_stats(&self, pid: u32) -> Value {
        let query = format!("?pid={pid}&syscalls=1000&buckets=true&failing_args=100");
        let wait = Duration::from_secs(30);
        let s = self.wait_for(&query, wait, |s| {
            process(s, pid).is_some_and(|p| p["exited"] == true)
        });
        let drains = s["host"]["drains"].as_u64().unwrap();
        self.wait_for(&query, wait, |s| {
            s["host"]["drains"].as_u64().unwrap() > drains + 1
        })
    }

    /// SIGTERM, then the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("waiting for the daemon").code()
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

/// GET `url` (with an Authorization header value if given): (status, JSON body, or the body as
/// a JSON string when it is not JSON).
pub fn get_json(agent: &ureq::Agent, url: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let parse = |r: ureq::Response| -> Value {
        // Not into_string(): it refuses bodies over 10 MB, and a fork storm's answer is larger.
        let mut text = String::new();
        std::io::Read::read_to_string(&mut r.into_reader(), &mut text).expect("body");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    match req.call() {
        Ok(r) => (r.status(), parse(r)),
        Err(ureq::Error::Status(code, r)) => (code, parse(r)),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Runs the workload (src/bin/workload.rs) to completion and returns its JSON lines.
pub fn workload(args: &[&str]) -> Vec<Value> {
    run_workload_program(&workload_bin(), args)
}

/// [`workload`] under another name (its processes' comm), run through a symlink of that name:
/// for checks of what the daemon groups by name, since the tests of a file run at once, each
/// with a daemon that sees every process on the host, other tests' `workload`s included.
pub fn workload_as(comm: &str, args: &[&str]) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("spt-workload-{}-{comm}", std::process::id()));
    let link = dir.join(comm);
    if !link.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        // Another thread of this test may have made it meanwhile.
        if let Err(e) = std::os::unix::fs::symlink(workload_bin(), &link) {
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        }
    }
    run_workload_program(&link, args)
}

fn run_workload_program(program: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("running the workload");
    assert!(
        out.status.success(),
        "workload {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("workload prints JSON lines"))
        .collect()
}

pub struct WorkloadRun {
    pub child_pid: u32,
    pub sleep_median_ns: u64,
}

/// `workload calls`: a child making exactly `getppid` getppid(), `enoent` failing openat() and
/// `sleep` 2 ms nanosleep() calls.
pub fn run_workload(getppid: u32, enoent: u32, sleep: u32) -> WorkloadRun {
    let lines = workload(&[
        "calls",
        &format!("getppid={getppid}"),
        &format!("enoent={enoent}"),
        &format!("sleep={sleep}"),
    ]);
    WorkloadRun {
        child_pid: pid_of(&lines[0], "child_pid"),
        sleep_median_ns: lines[1]["sleep_median_ns"]
            .as_u64()
            .expect("sleep_median_ns"),
    }
}

/// A workload still running, whose JSON lines are read one at a time.
pub struct RunningWorkload {
    pub child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl RunningWorkload {
    pub fn start(args: &[&str]) -> RunningWorkload {
        let mut child = Command::new(workload_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the workload");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        RunningWorkload { child, lines }
    }

    pub fn next_line(&mut self) -> Value {
        let line = self
            .lines
            .next()
            .expect("workload ended early")
            .expect("reading workload");
        serde_json::from_str(&line).expect("workload prints JSON lines")
    }

    /// Sends a line to its stdin (the go signal of `calls --wait-go`).
    pub fn send_line(&mut self) {
        self.send("go");
    }

    /// Sends `line` and a newline to its stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait_success(mut self) {
        let status = self.child.wait().expect("waiting for the workload");
        assert!(status.success(), "workload failed: {status}");
    }
}

/// The `n`th field of a JSON line as a pid.
pub fn pid_of(v: &Value, field: &str) -> u32 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}")) as u32
}

/// The process entry for `pid` in a /stats answer (the newest, if the pid was recycled).
pub fn process(stats: &Value, pid: u32) -> Option<&Value> {
    processes(stats, pid)
        .into_iter()
        .max_by_key(|p| p["first_seen_unix_ms"].as_u64())
}

/// Every process entry for `pid` (more than one if the pid was recycled).
pub fn processes(stats: &Value, pid: u32) -> Vec<&Value> {
    stats["processes"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["pid"] == pid).collect())
        .unwrap_or_default()
}

/// `counts`' shape, from literal (name, (count, errors)) pairs.
pub fn count_map(entries: &[(&str, (u64, u64))]) -> std::collections::BTreeMap<String, (u64, u64)> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Per syscall name: (count, errors) of a process entry, for one ABI.
pub fn counts(p: &Value, abi: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["abi"] == abi)
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (s["count"].as_u64().unwrap(), s["errors"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The host ABI's name as /stats spells it.
pub fn native_abi() -> &'static str {
    std::env::consts::ARCH
}

/// The calls a syscall entry's histogram buckets hold, summed.
pub fn bucket_total(entry: &Value) -> u64 {
    entry["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum()
}

/// The syscall entry named `name` in a list of syscall stats.
pub fn syscall<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|s| s["name"] == name)
}

/// The cgroup v2 hierarchy: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// cgroup directories a test made, removed (innermost first) when it ends.
#[derive(Default)]
pub struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes `dir` and any missing parents; returns `dir`.
    pub fn create(&mut self, dir: PathBuf) -> PathBuf {
        for d in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if !d.exists() {
                std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                self.0.push(d.to_path_buf());
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Runs `cmd` to completion in the cgroup `dir`: it joins the cgroup between fork and exec, so
/// everything it runs and its children are born there. Returns its JSON lines.
pub fn output_in_cgroup(mut cmd: Command, dir: &std::path::Path) -> Vec<Value> {
    use std::os::unix::process::CommandExt;
    let procs = std::ffi::CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    unsafe {
        cmd.pre_exec(move || {
            // Only async-signal-safe calls between fork and exec.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let out = cmd.output().expect("running a command in a cgroup");
    assert!(
        out.status.success(),
        "{cmd:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}
