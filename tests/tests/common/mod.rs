//! A daemon started with full control over its command line, environment and wrapper (setpriv),
//! for the production tests. Complements `tests::Daemon`, which fixes the flags.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub struct Proc {
    pub child: Child,
    /// `http://ADDR` or `https://ADDR`, from the "serving on" log line.
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

pub struct Spawn {
    pub wrapper: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Spawn {
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
        let bin = tests::daemon_bin();
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

    /// Starts it and waits for the "serving on" line.
    pub fn start(&self) -> Proc {
        tests::require_root();
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
            Ok(base) => Proc {
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

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("waiting for the daemon").code()
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

    /// GET with plain HTTP: (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(&self.agent(), &format!("{}{path}", self.base), None)
    }

    pub fn stats(&self, query: &str) -> serde_json::Value {
        let (status, body) = self.get(&format!("/stats{query}"));
        assert_eq!(status, 200, "GET /stats{query}: {body}");
        body
    }

    pub fn wait_for(
        &self,
        query: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

pub fn get_json(agent: &ureq::Agent, url: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let parse = |r: ureq::Response| -> serde_json::Value {
        let text = r.into_string().expect("body");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    match req.call() {
        Ok(r) => (r.status(), parse(r)),
        Err(ureq::Error::Status(code, r)) => (code, parse(r)),
        Err(e) => panic!("GET {url}: {e}"),
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
