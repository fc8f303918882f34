//! `syscall-profiler record`: one-shot, no daemon. Attaches the same programs as `serve`, drains
//! into the same store, and at the end prints an `strace -c` style table (plus p99) of the host,
//! of one process and its descendants, or of a command it runs and that command's descendants.

mod tree;

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::Args;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::{
    bpf,
    cli::{parse_duration, parse_interval},
    drain::Drain,
    fatal::Fatal,
    histogram::Histogram,
    store::{Process, Store, SyscallKey},
    syscalls::{self, Abi},
};

#[derive(Args, Clone, Debug)]
#[command(after_help = "\
Without --pid or COMMAND, records every process on the host. With COMMAND, records it and every \
process it starts, until it exits, then exits with its exit code (128+N if killed by signal N); \
record's own failures exit 1-5 before the command starts (docs/configuration.md lists them).")]
pub struct RecordArgs {
    /// Stop after this long (e.g. 10s, 500ms). A COMMAND still running then gets SIGTERM.
    /// Without it: until COMMAND or --pid exits, or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Record this process and every process it starts while recording.
    #[arg(long, short = 'p', conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Write the report here instead of stdout (the command's own output stays on stdout).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// How often the kernel maps are read (10ms to 10s); also the progress line's pace.
    #[arg(long, default_value = "100ms", value_parser = parse_interval)]
    pub interval: Duration,

    /// The command to run and record, with its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C or SIGTERM ends the recording and still prints the report, as `strace -c` does.
fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe. A handler (not
    // SIG_IGN) is reset to the default by exec, so the command is unaffected.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

enum Scope {
    Host,
    Tree(tree::Tracker),
}

impl Scope {
    fn members<'a>(&self, store: &'a Store) -> Vec<&'a Process> {
        let mut out: Vec<&Process> = match self {
            Scope::Host => store.processes.values().collect(),
            Scope::Tree(t) => {
                let forks = t.forks.lock().unwrap_or_else(|e| e.into_inner());
                store
                    .processes
                    .values()
                    .filter(|p| forks.member(p.key.pid, p.key.incarnation))
                    .collect()
            }
        };
        out.sort_by_key(|p| p.key);
        out
    }
}

/// Running, not a zombie: a zombie has made its last syscall, and its parent may take a while
/// to reap it.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised name, which may itself contain ") ".
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

pub fn run(args: RecordArgs) -> Result<u8, Fatal> {
    let filter = EnvFilter::try_new("warn").map_err(|e| Fatal::Other(e.into()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Some(pid) = args.pid {
        if pid == 0 || !alive(pid) {
            return Err(Fatal::Other(anyhow!("--pid {pid}: no such process")));
        }
    }
    if let Some(path) = &args.output {
        // Fail before recording, not after.
        std::fs::File::create(path).with_context(|| format!("--output {}", path.display()))?;
    }
    catch_signals();

    let program = match args.command.first() {
        Some(prog) => Some(resolve(prog)?),
        None => None,
    };
    let scope = if args.pid.is_some() || !args.command.is_empty() {
        let tracker = tree::Tracker::start()?;
        {
            let mut forks = tracker.forks.lock().unwrap_or_else(|e| e.into_inner());
            // Our own pid: the command is our child. Our own syscalls are never counted.
            forks.add_root(args.pid.unwrap_or_else(std::process::id));
        }
        Scope::Tree(tracker)
    } else {
        Scope::Host
    };

    let (probes, maps) = bpf::load_and_attach(None, &crate::config::Filter::default(), false)?;
    let mut drain = Drain::new(maps);
    // Everything must still be in the store at the end: nothing expires during a run.
    let store = RwLock::new(Store::new(Duration::from_secs(365 * 86_400), usize::MAX));

    let started = Instant::now();
    let mut child = match &program {
        Some(prog) => Some(spawn(prog, &args.command[1..])?),
        None => None,
    };
    let deadline = args.duration.map(|d| started + d);
    let progress = Progress::new(args.duration);
    // Right away, so the user (and a script waiting on stderr) knows the programs are attached.
    progress.show(Duration::ZERO, &[]);
    let mut exit_status: Option<std::process::ExitStatus> = None;
    let mut next_drain = started + args.interval;
    let mut terminated = false;
    loop {
        thread::sleep(Duration::from_millis(10).min(args.interval));
        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait().context("waiting for the command")? {
                exit_status = Some(status);
                break;
            }
            let over = deadline.is_some_and(|d| Instant::now() >= d);
            if over && !terminated {
                // Like timeout(1): the command is asked to end, and what it did is reported.
                // SAFETY: signalling our own child, which we have not reaped.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
                terminated = true;
            }
            // Ctrl-C in a terminal reaches the command too; wait for it to finish.
        } else {
            if INTERRUPTED.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break;
            }
            if args.pid.is_some_and(|p| !alive(p)) {
                break;
            }
        }
        if Instant::now() >= next_drain {
            next_drain += args.interval;
            drain.run_once(&store).context("reading the kernel maps")?;
            let s = store.read().unwrap_or_else(|e| e.into_inner());
            let members = scope.members(&s);
            progress.show(started.elapsed(), &members);
        }
    }
    let elapsed = started.elapsed();
    // The last events of exited processes are in the maps now; one more read collects them.
    drain.run_once(&store).context("reading the kernel maps")?;
    drop(probes);
    progress.finish();

    let s = store.read().unwrap_or_else(|e| e.into_inner());
    let mut report = Report::build(&scope, &s, elapsed);
    report.command = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    report.pid = args.pid;
    report.exit_code = exit_status.map(exit_code);
    if let Scope::Tree(t) = &scope {
        report.lost_process_events = t.lost.load(Ordering::Relaxed);
    }
    let text = if args.json {
        let mut j = serde_json::to_string_pretty(&report).context("rendering JSON")?;
        j.push('\n');
        j
    } else {
        report.table()
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not worth an error after the command has run.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    }
    if report.lost_process_events > 0 {
        eprintln!(
            "syscall-profiler: warning: the kernel dropped {} process events; children forked \
             then may be missing from the report",
            report.lost_process_events
        );
    }
    Ok(report.exit_code.map_or(0, |c| c as u8))
}

/// Finds a bare command name in $PATH ourselves, as a shell would: otherwise the child tries
/// execve on each $PATH entry and its failed attempts land in the report as the command's own.
fn resolve(prog: &OsString) -> Result<PathBuf, Fatal> {
    use std::os::unix::fs::PermissionsExt;
    let path = PathBuf::from(prog);
    if prog.as_encoded_bytes().contains(&b'/') {
        return Ok(path);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .map(|d| d.join(&path))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Fatal::Other(anyhow!(
                "cannot run '{}': not found in $PATH",
                prog.to_string_lossy()
            ))
        })
}

fn spawn(prog: &std::path::Path, rest: &[OsString]) -> Result<Child, Fatal> {
    Command::new(prog)
        .args(rest)
        .spawn()
        .map_err(|e| Fatal::Other(anyhow!("cannot run '{}': {e}", prog.display())))
}

/// What a shell would report: the code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

struct Progress {
    tty: bool,
    duration: Option<Duration>,
    last_line: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new(duration: Option<Duration>) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            duration,
            last_line: std::cell::Cell::new(None),
        }
    }

    fn show(&self, elapsed: Duration, members: &[&Process]) {
        // On a terminal the line is redrawn each drain; in a log, one line a second is plenty.
        if !self.tty
            && self
                .last_line
                .get()
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_line.set(Some(Instant::now()));
        let calls: u64 = members.iter().map(|p| p.total.count).sum();
        let errors: u64 = members.iter().map(|p| p.total.errors).sum();
        let of = self
            .duration
            .map_or(String::new(), |d| format!(" / {:.1}s", d.as_secs_f64()));
        let line = format!(
            "recording {:.1}s{of}: {} calls, {} errors, {} processes",
            elapsed.as_secs_f64(),
            calls,
            errors,
            members.len()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

#[derive(Serialize, Default)]
pub struct Report {
    pub duration_seconds: f64,
    /// The command recorded, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Fork events the kernel dropped (descendants forked then may be missing).
    pub lost_process_events: u64,
    /// Sorted by total time, descending, as `strace -c` does.
    pub syscalls: Vec<Row>,
    pub total: Row,
    /// Every process recorded, by pid, with its own per-syscall rows.
    pub processes: Vec<ProcessReport>,
}

#[derive(Serialize, Default, Clone)]
pub struct Row {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi: Option<Abi>,
    pub percent_time: f64,
    pub total_ns: u64,
    pub usecs_per_call: u64,
    pub calls: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errnos: BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub syscalls: Vec<Row>,
}

fn rows(totals: &BTreeMap<SyscallKey, (Histogram, BTreeMap<u32, u64>)>) -> (Vec<Row>, Row) {
    let all_ns: u64 = totals.values().map(|(h, _)| h.total_ns).sum();
    let pct = |ns: u64| {
        if all_ns == 0 {
            0.0
        } else {
            ns as f64 * 100.0 / all_ns as f64
        }
    };
    let mut out: Vec<Row> = totals
        .iter()
        .map(|(k, (h, errnos))| Row {
            name: syscalls::name(k.abi, k.nr),
            abi: Some(k.abi),
            percent_time: pct(h.total_ns),
            total_ns: h.total_ns,
            usecs_per_call: h.mean_ns().unwrap_or(0) / 1000,
            calls: h.count,
            errors: h.errors,
            p99_ns: h.quantile_ns(0.99),
            errnos: errnos
                .iter()
                .map(|(&e, &n)| (syscalls::errno_name(e), n))
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(b.calls.cmp(&a.calls))
            .then(a.name.cmp(&b.name))
    });
    let mut all = Histogram::default();
    for (h, _) in totals.values() {
        all.merge(h);
    }
    let total = Row {
        name: "total".into(),
        abi: None,
        percent_time: if all_ns == 0 { 0.0 } else { 100.0 },
        total_ns: all.total_ns,
        usecs_per_call: all.mean_ns().unwrap_or(0) / 1000,
        calls: all.count,
        errors: all.errors,
        p99_ns: all.quantile_ns(0.99),
        errnos: BTreeMap::new(),
    };
    (out, total)
}

type Totals = BTreeMap<SyscallKey, (Histogram, BTreeMap<u32, u64>)>;

fn add_process(into: &mut Totals, p: &Process) {
    for (k, t) in &p.syscalls {
        let (h, errnos) = into.entry(*k).or_default();
        h.merge(&t.hist);
        for (&e, &n) in &t.errnos {
            *errnos.entry(e).or_default() += n;
        }
    }
}

impl Report {
    fn build(scope: &Scope, store: &Store, elapsed: Duration) -> Report {
        let members = scope.members(store);
        let mut all = Totals::new();
        match scope {
            // System-wide totals also hold processes already retired from the store.
            Scope::Host => {
                for (k, t) in &store.system {
                    all.insert(*k, (t.hist.clone(), t.errnos.clone()));
                }
            }
            Scope::Tree(_) => members.iter().for_each(|p| add_process(&mut all, p)),
        }
        let (syscalls, total) = rows(&all);
        let processes = members
            .iter()
            .filter(|p| p.total.count > 0)
            .map(|p| {
                let mut own = Totals::new();
                add_process(&mut own, p);
                let (syscalls, total) = rows(&own);
                ProcessReport {
                    pid: p.key.pid,
                    comm: p.comm.clone(),
                    calls: total.calls,
                    errors: total.errors,
                    total_ns: total.total_ns,
                    syscalls,
                }
            })
            .collect();
        Report {
            duration_seconds: elapsed.as_secs_f64(),
            syscalls,
            total,
            processes,
            ..Default::default()
        }
    }

    /// `strace -c`'s layout, with p99 added before the name.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rule =
            "------ ----------- ----------- --------- --------- ----------- ----------------\n";
        s.push_str("% time     seconds  usecs/call     calls    errors  p99(usecs) syscall\n");
        s.push_str(rule);
        let line = |r: &Row, name: &str| {
            let errors = if r.errors == 0 {
                String::new()
            } else {
                r.errors.to_string()
            };
            let p99 = r
                .p99_ns
                .map_or(String::new(), |ns| format!("{:.1}", ns as f64 / 1000.0));
            format!(
                "{:6.2} {:11.6} {:11} {:9} {:>9} {:>11} {}\n",
                r.percent_time,
                r.total_ns as f64 / 1e9,
                r.usecs_per_call,
                r.calls,
                errors,
                p99,
                name
            )
        };
        for r in &self.syscalls {
            let name = match r.abi {
                Some(abi) if abi != Abi::Native => format!("{} [{}]", r.name, abi.name()),
                _ => r.name.clone(),
            };
            s.push_str(&line(r, &name));
        }
        s.push_str(rule);
        s.push_str(&line(&self.total, "total"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Delta;

    fn hist(n: u64, each_ns: u64, errors: u64) -> Histogram {
        let mut h = Histogram::default();
        h.add(&Delta {
            errors,
            total_ns: n * each_ns,
            buckets: vec![(profiler_common::bucket_index(each_ns), n)],
        });
        h
    }

    #[test]
    fn table_has_strace_columns_sorted_by_time() {
        let mut t = Totals::new();
        let key = |nr| SyscallKey {
            abi: Abi::Native,
            nr,
        };
        t.insert(key(110), (hist(1000, 60, 0), BTreeMap::new()));
        t.insert(key(35), (hist(5, 2_000_000, 0), BTreeMap::new()));
        t.insert(key(257), (hist(100, 300, 100), BTreeMap::from([(2, 100)])));
        let (syscalls, total) = rows(&t);
        let report = Report {
            syscalls,
            total,
            ..Default::default()
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "% time     seconds  usecs/call     calls    errors  p99(usecs) syscall"
        );
        let names: Vec<&str> = lines[2..5]
            .iter()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        let want: Vec<String> = [35, 110, 257]
            .iter()
            .map(|&nr| syscalls::name(Abi::Native, nr))
            .collect();
        assert_eq!(names, want);
        let openat: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(&openat[3..5], &["100", "100"]);
        let getppid: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            getppid.len(),
            6,
            "no errors column text when there are none"
        );
        let last: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(last[0], "100.00");
        assert_eq!(&last[3..5], &["1105", "100"]);
        assert_eq!(*last.last().unwrap(), "total");
        assert_eq!(report.total.errnos.len(), 0);
    }
}
