//! The configurations of the alternated rounds and how each is attached and detached.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{programs::Program, Btf, Ebpf, EbpfLoader};

use super::workload::die_with_parent;
use crate::{
    bpfcost::scenarios::{SLOT_PARKED_PROGRAMS, SLOT_TS_PROGRAMS, TASK_STORAGE_PROGRAMS},
    BENCH_FLOOR_OBJECT, BENCH_LIMIT_OBJECT, BENCH_SLOT_OBJECT, BENCH_SLOT_TS_OBJECT,
    BENCH_TASK_STORAGE_OBJECT, BENCH_TID_ARRAY_OBJECT,
};

/// A daemon configuration: the shipped daemon, or a cheaper mode of it selected by extra
/// `serve` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonVariant {
    pub name: String,
    pub args: Vec<String>,
}

/// The daemon configurations every run measures: the profiler as shipped first, then each
/// cheaper mode it offers (one more for a single run: `--daemon-variant 'NAME=SERVE-ARGS'`).
/// The floor/limit ratios and the series and HTTP measurements cover every entry.
pub const DAEMON_VARIANTS: &[(&str, &[&str])] =
    &[("profiler", &[]), ("counts-only", &["--counts-only"])];

/// Daemon configurations measured per syscall only: `filtered-out` records pid 1 alone, so the
/// workloads show what the in-kernel filter costs the processes it leaves out. (Its series and
/// HTTP figures would measure an idle daemon.)
pub const SYSCALL_ONLY_VARIANTS: &[(&str, &[&str])] = &[("filtered-out", &["--filter-pids", "1"])];

/// Parses `NAME=ARGS` (ARGS split on whitespace, may be empty).
pub fn parse_daemon_variant(s: &str) -> Result<DaemonVariant, String> {
    let (name, args) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=ARGS (e.g. counts-only=--counts-only)"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "'{name}' is not a valid variant name: use letters, digits, '-' and '_'"
        ));
    }
    Ok(DaemonVariant {
        name: name.to_string(),
        args: args.split_whitespace().map(str::to_string).collect(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    Nothing,
    Floor,
    Limit,
    /// Issue 17's experiment (`--task-storage`): the limit plus a syscall's start kept the
    /// daemon's way (per-CPU slot, parked at sched_switch) or in BPF task storage.
    SlotParked,
    TaskStorage,
    /// The slot, parked in task storage instead of a hash.
    SlotTaskStorage,
    /// The start in an array indexed by the thread id (an inlined lookup), task storage only
    /// for tids that collide.
    TidArray,
    /// The same indexed by the saved registers' address: no task call at all.
    RegsArray,
    /// The same entry in task storage, reached as the daemon reaches its own.
    TaskStorageEntry,
    Daemon(DaemonVariant),
    Bpftrace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub what: String,
    pub kind: ConfigKind,
}

impl Config {
    pub fn nothing() -> Config {
        Config {
            name: "none".into(),
            what: "nothing attached".into(),
            kind: ConfigKind::Nothing,
        }
    }
    pub fn floor() -> Config {
        Config {
            name: "floor".into(),
            what: "empty raw_tracepoint pair on sys_enter + sys_exit".into(),
            kind: ConfigKind::Floor,
        }
    }
    pub fn limit() -> Config {
        Config {
            name: "limit".into(),
            what: "the floor + one bpf_ktime_get_ns() on each side".into(),
            kind: ConfigKind::Limit,
        }
    }
    pub fn slot_parked() -> Config {
        Config {
            name: "slot-parked".into(),
            what: "the limit + the start in a per-CPU slot, parked at sched_switch \
                   (bench_slot.rs)"
                .into(),
            kind: ConfigKind::SlotParked,
        }
    }
    pub fn task_storage() -> Config {
        Config {
            name: "task-storage".into(),
            what: "the limit + the start in BPF task storage (bench_task_storage.rs)".into(),
            kind: ConfigKind::TaskStorage,
        }
    }
    pub fn slot_task_storage() -> Config {
        Config {
            name: "slot-ts".into(),
            what: "slot-parked with the parked starts in BPF task storage (bench_slot_ts.rs)"
                .into(),
            kind: ConfigKind::SlotTaskStorage,
        }
    }
    pub fn tid_array() -> Config {
        Config {
            name: "tid-array".into(),
            what: "the limit + the start in an array indexed by tid, owner checked by tid and \
                   start time (bench_tid_array.rs)"
                .into(),
            kind: ConfigKind::TidArray,
        }
    }
    pub fn regs_array() -> Config {
        Config {
            name: "regs-array".into(),
            what: "the limit + the start in an array indexed by the pt_regs address, no task \
                   call (bench_tid_array.rs)"
                .into(),
            kind: ConfigKind::RegsArray,
        }
    }
    pub fn task_storage_entry() -> Config {
        Config {
            name: "ts-entry".into(),
            what: "the limit + the start in task storage, reached as the daemon reaches its \
                   entry: task, entry, clock (bench_tid_array.rs)"
                .into(),
            kind: ConfigKind::TaskStorageEntry,
        }
    }
    pub fn daemon(v: DaemonVariant) -> Config {
        let mut cmd = String::from("syscall-profiler serve");
        for a in &v.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        Config {
            name: v.name.clone(),
            what: format!("`{cmd}`"),
            kind: ConfigKind::Daemon(v),
        }
    }
    /// `version` as `bpftrace --version` prints it, e.g. "bpftrace v0.17.0".
    pub fn bpftrace(version: &str) -> Config {
        Config {
            name: "bpftrace".into(),
            what: format!("{version}, `hist()` per (pid, syscall) on raw_syscalls tracepoints"),
            kind: ConfigKind::Bpftrace,
        }
    }
}

/// What the harness needs to attach any configuration.
pub struct Env {
    pub root: PathBuf,
    pub daemon_bin: PathBuf,
    pub bpftrace: Option<PathBuf>,
}

/// A configuration in place; dropping it detaches.
pub enum Attached {
    Nothing,
    // Held only so that dropping it detaches the links.
    Programs(#[allow(dead_code)] Ebpf),
    Daemon(Daemon),
    Bpftrace(Bpftrace),
}

impl Attached {
    /// The process holding the configuration's BPF programs, if it has any (`--bpf-stats`).
    pub fn programs_pid(&self) -> Option<u32> {
        match self {
            Attached::Programs(_) => Some(std::process::id()),
            Attached::Daemon(d) => Some(d.child.id()),
            Attached::Nothing | Attached::Bpftrace(_) => None,
        }
    }

    /// Detaches, reporting a configuration that did not stop cleanly.
    pub fn detach(self) -> Result<()> {
        match self {
            Attached::Nothing | Attached::Programs(_) => Ok(()),
            Attached::Daemon(d) => d.stop(),
            Attached::Bpftrace(b) => b.stop(),
        }
    }
}

pub fn attach(config: &Config, env: &Env) -> Result<Attached> {
    Ok(match &config.kind {
        ConfigKind::Nothing => Attached::Nothing,
        ConfigKind::Floor => Attached::Programs(load_programs(
            &env.root.join(BENCH_FLOOR_OBJECT),
            SYSCALL_PAIR,
        )?),
        ConfigKind::Limit => Attached::Programs(load_programs(
            &env.root.join(BENCH_LIMIT_OBJECT),
            SYSCALL_PAIR,
        )?),
        ConfigKind::SlotParked => Attached::Programs(load_programs(
            &env.root.join(BENCH_SLOT_OBJECT),
            SLOT_PARKED_PROGRAMS,
        )?),
        ConfigKind::TaskStorage => Attached::Programs(load_programs(
            &env.root.join(BENCH_TASK_STORAGE_OBJECT),
            TASK_STORAGE_PROGRAMS,
        )?),
        ConfigKind::SlotTaskStorage => Attached::Programs(load_programs(
            &env.root.join(BENCH_SLOT_TS_OBJECT),
            SLOT_TS_PROGRAMS,
        )?),
        ConfigKind::TidArray => Attached::Programs(load_with_task_offsets(
            &env.root.join(BENCH_TID_ARRAY_OBJECT),
            TID_ARRAY_PROGRAMS,
        )?),
        ConfigKind::RegsArray => Attached::Programs(load_with_task_offsets(
            &env.root.join(BENCH_TID_ARRAY_OBJECT),
            REGS_ARRAY_PROGRAMS,
        )?),
        ConfigKind::TaskStorageEntry => Attached::Programs(load_with_task_offsets(
            &env.root.join(BENCH_TID_ARRAY_OBJECT),
            TS_ENTRY_PROGRAMS,
        )?),
        ConfigKind::Daemon(v) => Attached::Daemon(Daemon::start(&env.daemon_bin, &v.args)?),
        ConfigKind::Bpftrace => {
            let bin = env
                .bpftrace
                .as_deref()
                .context("bpftrace configuration without a bpftrace binary")?;
            Attached::Bpftrace(Bpftrace::start(bin)?)
        }
    })
}

/// The floor's and the limit's programs: (program, tracepoint).
const SYSCALL_PAIR: &[(&str, &str)] = &[("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")];

/// bench_tid_array.rs's programs: (program, tracepoint).
pub const TID_ARRAY_PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter_tid", "sys_enter"),
    ("sys_exit_tid", "sys_exit"),
    ("sched_process_exit_tid", "sched_process_exit"),
];
pub const REGS_ARRAY_PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter_regs", "sys_enter"),
    ("sys_exit_regs", "sys_exit"),
];
pub const TS_ENTRY_PROGRAMS: &[(&str, &str)] =
    &[("sys_enter_ts", "sys_enter"), ("sys_exit_ts", "sys_exit")];

/// [`load_programs`] for bench_tid_array.rs, whose programs load the task fields at the
/// offsets the kernel's BTF gives.
pub fn load_with_task_offsets(object: &Path, programs: &[(&str, &str)]) -> Result<Ebpf> {
    let btf = crate::bpfcost::btf::Btf::from_sys_fs()?;
    let task = |m| btf.member_offset("task_struct", m);
    let globals = [
        ("PID_OFFSET", task("pid")?),
        ("TGID_OFFSET", task("tgid")?),
        ("START_TIME_OFFSET", task("start_time")?),
    ];
    load_programs_with(object, programs, &globals)
}

/// Loads a reference object and attaches each (program, tracepoint), as a raw or a BTF
/// tracepoint, whichever the object says the program is.
pub fn load_programs(object: &Path, programs: &[(&str, &str)]) -> Result<Ebpf> {
    load_programs_with(object, programs, &[])
}

/// [`load_programs`] with these `u32` globals set first.
fn load_programs_with(
    object: &Path,
    programs: &[(&str, &str)],
    globals: &[(&str, u32)],
) -> Result<Ebpf> {
    let bytes = std::fs::read(object)
        .with_context(|| format!("reading {}: run `cargo xtask build-ebpf`", object.display()))?;
    // aya has no user-space type for task storage; the programs need none.
    let mut loader = EbpfLoader::new();
    loader.allow_unsupported_maps();
    for (name, value) in globals {
        loader.override_global(name, value, true);
    }
    let mut bpf = loader
        .load(&bytes)
        .with_context(|| format!("loading {}", object.display()))?;
    let mut btf = None;
    for &(name, tp) in programs {
        let refused = || format!("the kernel refused {name} of {}", object.display());
        let attaching = || format!("attaching {name} of {}", object.display());
        match bpf
            .program_mut(name)
            .with_context(|| format!("{} has no program {name}", object.display()))?
        {
            Program::RawTracePoint(p) => {
                p.load().with_context(refused)?;
                p.attach(tp).with_context(attaching)?;
            }
            Program::BtfTracePoint(p) => {
                if btf.is_none() {
                    btf = Some(Btf::from_sys_fs().context("reading the kernel's BTF")?);
                }
                p.load(tp, btf.as_ref().unwrap()).with_context(refused)?;
                p.attach().with_context(attaching)?;
            }
            _ => bail!("{name} in {} is not a tracepoint program", object.display()),
        }
    }
    Ok(bpf)
}

/// Collects a child's stream into a shared string, sending lines that contain `watch.0` to
/// `watch.1`.
fn collect_lines(
    pipe: impl Read + Send + 'static,
    watch: Option<(&'static str, mpsc::Sender<String>)>,
) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some((needle, tx)) = &watch {
                if line.contains(needle) {
                    let _ = tx.send(line.clone());
                }
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    log
}

fn last_lines(log: &Mutex<String>) -> String {
    let s = log.lock().map(|s| s.clone()).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// Sends `signal`, waits up to `grace`, then kills. Returns the exit status if it exited on its
/// own.
fn terminate(
    child: &mut Child,
    signal: libc::c_int,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let deadline = Instant::now() + grace;
    let mut next_signal = Instant::now();
    while Instant::now() < deadline {
        // Repeated: bpftrace 0.17 can miss a SIGINT that lands just as it starts polling, and
        // then sleeps until its next event, which with this script never comes.
        if Instant::now() >= next_signal {
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            next_signal += Duration::from_secs(1);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The real daemon binary, serving on a free loopback port.
pub struct Daemon {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `syscall-profiler serve --listen 127.0.0.1:0 ARGS` and returns once it serves
    /// HTTP, which it does only after its programs are attached.
    pub fn start(bin: &Path, args: &[String]) -> Result<Daemon> {
        Self::start_with_env(bin, args, &[])
    }

    /// [`Daemon::start`] with these environment variables set. ARGS starting with `bin:PATH`
    /// run that binary instead (an A/B of two builds in one alternated run).
    pub fn start_with_env(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Result<Daemon> {
        let (bin, args) = match args.split_first() {
            Some((first, rest)) if first.starts_with("bin:") => (Path::new(&first[4..]), rest),
            _ => (bin, args),
        };
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGTERM);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let log = collect_lines(
            child.stderr.take().unwrap(),
            Some(("serving on http://", tx)),
        );
        let mut daemon = Daemon {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let i = line.find("http://").unwrap_or(0);
                    daemon.base = line[i..].trim().to_string();
                    return Ok(daemon);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = daemon.child.try_wait()? {
                        // Let the reader thread catch the last line.
                        thread::sleep(Duration::from_millis(50));
                        bail!(
                            "the daemon exited ({status}) before serving: {}",
                            last_lines(&daemon.log)
                        );
                    }
                }
                _ => bail!(
                    "the daemon did not start serving within 30 s: {}",
                    last_lines(&daemon.log)
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as an operator would stop it; the daemon detaches and exits 0.
    pub fn stop(mut self) -> Result<()> {
        use std::os::unix::process::ExitStatusExt;
        match terminate(&mut self.child, libc::SIGTERM, Duration::from_secs(10)) {
            Some(s) if s.success() => Ok(()),
            // A SIGTERM that lands right after "serving on", before the daemon's handler is in
            // place, ends it by the default action. Its programs go with its file descriptors,
            // so for the benchmark that is as good as a clean exit.
            Some(s) if s.signal() == Some(libc::SIGTERM) => Ok(()),
            Some(s) => bail!("the daemon exited with {s}: {}", last_lines(&self.log)),
            None => bail!("the daemon did not exit within 10 s of SIGTERM; killed it"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child, libc::SIGTERM, Duration::from_secs(10));
    }
}

/// The bpftrace equivalent of the daemon's kernel side: the latency of every syscall into a
/// histogram per (process, syscall). `pid` is the process (tgid) in bpftrace. Classic
/// raw_syscalls tracepoints, as bpftrace 0.17 has no raw tracepoint probes. END clears the maps
/// so stopping does not print thousands of histograms.
pub const BPFTRACE_SCRIPT: &str = "\
tracepoint:raw_syscalls:sys_enter { @start[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /@start[tid]/ {
  @lat[pid, args->id] = hist(nsecs - @start[tid]);
  delete(@start[tid]);
}
BEGIN { printf(\"bench-ready\\n\"); }
END { clear(@start); clear(@lat); }
";

pub struct Bpftrace {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Bpftrace {
    fn start(bin: &Path) -> Result<Bpftrace> {
        let mut cmd = Command::new(bin);
        // Line-buffered, so the BEGIN line (printed once every probe is attached) arrives now.
        cmd.args(["-B", "line", "-e", BPFTRACE_SCRIPT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGINT);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        collect_lines(child.stdout.take().unwrap(), Some(("bench-ready", tx)));
        let log = collect_lines(child.stderr.take().unwrap(), None);
        let mut bt = Bpftrace { child, log };
        // bpftrace compiles the script with LLVM first: slow on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(_) => return Ok(bt),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = bt.child.try_wait()? {
                        thread::sleep(Duration::from_millis(50));
                        bail!(
                            "bpftrace exited ({status}) before attaching: {}",
                            last_lines(&bt.log)
                        );
                    }
                }
                _ => bail!(
                    "bpftrace did not attach within 60 s: {}",
                    last_lines(&bt.log)
                ),
            }
        }
    }

    fn stop(mut self) -> Result<()> {
        match terminate(&mut self.child, libc::SIGINT, Duration::from_secs(10)) {
            Some(_) => Ok(()),
            None => bail!("bpftrace did not exit within 10 s of SIGINT; killed it"),
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        terminate(&mut self.child, libc::SIGINT, Duration::from_secs(10));
    }
}

/// What `bin --version` prints, trimmed; `fallback` if it prints nothing.
pub fn version_of(bin: &Path, fallback: &str) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// `name` on $PATH, if executable.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    crate::deb::find(name, &std::env::var_os("PATH")?)
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// tracefs, which bpftrace's tracepoint probes need, mounted for the run if it was not; unmounted
/// again when dropped.
pub struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    pub fn ensure() -> Result<Tracefs> {
        let has_events = |base: &str| Path::new(base).join("events/raw_syscalls").is_dir();
        if has_events(TRACEFS) || has_events("/sys/kernel/debug/tracing") {
            return Ok(Tracefs {
                mounted_here: false,
            });
        }
        let target = std::ffi::CString::new(TRACEFS).unwrap();
        let fstype = std::ffi::CString::new("tracefs").unwrap();
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            bail!(
                "mounting tracefs on {TRACEFS} for bpftrace: {}",
                std::io::Error::last_os_error()
            );
        }
        println!("note: mounted tracefs on {TRACEFS} for bpftrace (unmounted at the end)");
        Ok(Tracefs { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let target = std::ffi::CString::new(TRACEFS).unwrap();
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_variants_parse() {
        assert_eq!(
            parse_daemon_variant("counts-only=--counts-only --interval 2s"),
            Ok(DaemonVariant {
                name: "counts-only".into(),
                args: vec!["--counts-only".into(), "--interval".into(), "2s".into()],
            })
        );
        assert_eq!(
            parse_daemon_variant("plain=").map(|v| v.args),
            Ok(Vec::<String>::new())
        );
        assert!(parse_daemon_variant("--counts-only").is_err());
        assert!(parse_daemon_variant("=--x").is_err());
        assert!(parse_daemon_variant("a b=--x").is_err());
    }

    #[test]
    fn built_in_variants_are_valid_and_shipped_first() {
        assert_eq!(DAEMON_VARIANTS[0], ("profiler", &[][..]));
        for (name, _) in DAEMON_VARIANTS {
            assert!(parse_daemon_variant(&format!("{name}=")).is_ok());
        }
    }

    #[test]
    fn daemon_config_names_its_command() {
        let c = Config::daemon(DaemonVariant {
            name: "counts-only".into(),
            args: vec!["--counts-only".into()],
        });
        assert_eq!(c.what, "`syscall-profiler serve --counts-only`");
    }
}
