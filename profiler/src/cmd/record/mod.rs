//! `syscall-profiler record`: one-shot, no daemon. Attaches the same programs as `serve`, drains
//! into the same store, and at the end prints an `strace -c` style table (plus p99) of the host,
//! of one process and its descendants, or of a command it runs and that command's descendants.

mod report;
mod tree;

use std::{
    ffi::OsString,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::Args;
use tracing_subscriber::EnvFilter;

use report::Report;

use crate::{
    cmd::exit::Fatal,
    config::parse::{parse_duration, parse_interval},
    drain::Drain,
    host::procfs,
    kernel::{self as bpf, Probes},
    store::{aggregates::MetricsConfig, Process, Store, StoreConfig},
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
            Scope::Host => store.processes().values().collect(),
            Scope::Tree(t) => {
                let forks = t.forks.lock().unwrap_or_else(|e| e.into_inner());
                store
                    .processes()
                    .values()
                    .filter(|p| forks.member(p.key.pid, p.key.incarnation))
                    .collect()
            }
        };
        out.sort_by_key(|p| p.key);
        out
    }
}

pub fn run(args: RecordArgs) -> Result<u8, Fatal> {
    let filter = EnvFilter::try_new("warn").map_err(|e| Fatal::Other(e.into()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Some(pid) = args.pid {
        if pid == 0 || !procfs::alive(pid) {
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
    let store = RwLock::new(Store::new(StoreConfig {
        retention: Duration::from_secs(365 * 86_400),
        max_exited: usize::MAX,
        latency: true,
        time_split: probes.time_split(),
        metrics: MetricsConfig::default(),
        bpf_stats_enabled: false,
    }));
    let recording = Recording {
        args: &args,
        scope: &scope,
        store: &store,
    };
    let (elapsed, exit_status) = recording.until_done(program.as_deref(), &mut drain, probes)?;

    let s = store.read().unwrap_or_else(|e| e.into_inner());
    let members = scope.members(&s);
    let host = matches!(scope, Scope::Host).then(|| s.system());
    let mut report = Report::build(&members, host, elapsed);
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
    write_report(&args, &report)?;
    if report.lost_process_events > 0 {
        eprintln!(
            "syscall-profiler: warning: the kernel dropped {} process events; children forked \
             then may be missing from the report",
            report.lost_process_events
        );
    }
    Ok(report.exit_code.map_or(0, |c| c as u8))
}

/// One recording: what to record, and the store it drains into.
struct Recording<'a> {
    args: &'a RecordArgs,
    scope: &'a Scope,
    store: &'a RwLock<Store>,
}

impl Recording<'_> {
    /// Runs `program` (if any) and drains until it exits, `--duration` passes, `--pid` exits
    /// or Ctrl-C, then once more, and detaches. Returns how long it recorded and the command's
    /// exit status.
    fn until_done(
        &self,
        program: Option<&Path>,
        drain: &mut Drain,
        probes: Probes,
    ) -> Result<(Duration, Option<ExitStatus>), Fatal> {
        let args = self.args;
        let started = Instant::now();
        let mut child = match program {
            Some(prog) => Some(spawn(prog, &args.command[1..])?),
            None => None,
        };
        let deadline = args.duration.map(|d| started + d);
        let progress = Progress::new(args.duration);
        // Right away, so the user (and a script waiting on stderr) knows the programs are
        // attached.
        progress.show(Duration::ZERO, &[]);
        let mut exit_status: Option<ExitStatus> = None;
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
                if INTERRUPTED.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                if args.pid.is_some_and(|p| !procfs::alive(p)) {
                    break;
                }
            }
            if Instant::now() >= next_drain {
                next_drain += args.interval;
                self.drain_and_show(drain, &progress, started)?;
            }
        }
        let elapsed = started.elapsed();
        // The last events of exited processes are in the maps now; one more read collects them.
        drain
            .run_once(self.store)
            .context("reading the kernel maps")?;
        drop(probes);
        progress.finish();
        Ok((elapsed, exit_status))
    }

    fn drain_and_show(
        &self,
        drain: &mut Drain,
        progress: &Progress,
        started: Instant,
    ) -> Result<(), Fatal> {
        drain
            .run_once(self.store)
            .context("reading the kernel maps")?;
        let s = self.store.read().unwrap_or_else(|e| e.into_inner());
        let members = self.scope.members(&s);
        progress.show(started.elapsed(), &members);
        Ok(())
    }
}

/// The report as JSON or a table, to `--output` or stdout.
fn write_report(args: &RecordArgs, report: &Report) -> Result<(), Fatal> {
    let text = if args.json {
        let mut j = serde_json::to_string_pretty(report).context("rendering JSON")?;
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
    Ok(())
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
