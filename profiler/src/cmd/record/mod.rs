//! `syscall-profiler record`: one-shot, no daemon. Attaches the same programs as `serve`, drains
//! into the same store, and at the end writes an `strace -c` style table (plus system time and
//! p99) of the host, of one process and its descendants, or of a command it runs and that
//! command's descendants, to stderr as `strace -c` does, or to `--output`.

mod command;
mod progress;
mod report;
mod tree;

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::Args;
use tracing_subscriber::EnvFilter;

use progress::Progress;
use report::Report;

use crate::{
    cmd::exit::Fatal,
    config::parse::{parse_duration, parse_interval},
    drain::Drain,
    host::procfs,
    kernel::{self as bpf, ExecMarks, Probes},
    store::{aggregates::MetricsConfig, shared::SharedStore, Process, Store, StoreConfig},
};

#[derive(Args, Clone, Debug)]
#[command(after_help = "\
Without --pid or COMMAND, records every process on the host. With COMMAND, records it from its \
exec on and every process it starts, until all of them have exited (as strace -c -f counts), \
then exits with the command's exit code (128+N if killed by signal N); record's own failures \
exit 1-5 before the command starts (docs/configuration.md lists them). The report goes to \
stderr, as strace -c's does, or to --output; the command's own output is left alone. Times: \
wall is from entry to return (strace -c -w); system is the part on a CPU (strace -c).")]
pub struct RecordArgs {
    /// Stop after this long (e.g. 10s, 500ms). A COMMAND still running then gets SIGTERM, and
    /// record stops when it has exited, without waiting for what it started. Without it: until
    /// COMMAND or --pid and everything they started have exited, or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Record this process and every process it starts while recording.
    #[arg(long, short = 'p', conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Write the report to this file instead of stderr.
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
                let forks = t.forks();
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
        Some(prog) => Some(command::resolve(prog)?),
        None => None,
    };
    let scope = if args.pid.is_some() || program.is_some() {
        let tracker = tree::Tracker::start()?;
        // Our own pid: the command is our child. Our own syscalls are never counted.
        tracker
            .forks()
            .add_root(args.pid.unwrap_or_else(std::process::id));
        Scope::Tree(tracker)
    } else {
        Scope::Host
    };
    if program.is_some() {
        command::adopt_orphans()?;
    }

    let (mut probes, maps) = bpf::load_and_attach(None, &crate::config::Filter::default(), false)?;
    let marks = match program {
        Some(_) => Some(probes.exec_marks()?),
        None => None,
    };
    let mut drain = Drain::new(maps);
    // Everything must still be in the store at the end: nothing expires during a run.
    let store = SharedStore::new(Store::new(StoreConfig {
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
    let command = program.as_deref().zip(marks.as_ref());
    let (elapsed, command_pid, exit_status) = recording.until_done(command, &mut drain, probes)?;

    let s = store.read();
    let members = scope.members(&s);
    let host = matches!(scope, Scope::Host).then(|| s.system());
    let mut report = Report::build(&members, host, elapsed, s.time_split());
    report.command = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    report.pid = args.pid;
    report.failing_paths = crate::views::failing_args::top_lines(&s, &members, 10);
    report.command_pid = command_pid;
    report.exit_code = exit_status.map(command::exit_code);
    if let Scope::Tree(t) = &scope {
        report.lost_process_events = t.lost.load(Ordering::Relaxed);
    }
    write_report(&args, &report)?;
    if report.lost_process_events > 0 {
        eprintln!(
            "syscall-profiler: warning: {} reads of the kernel's process events failed or \
             found events dropped; children forked then may be missing from the report",
            report.lost_process_events
        );
    }
    Ok(report.exit_code.map_or(0, |c| c as u8))
}

/// One recording: what to record, and the store it drains into.
struct Recording<'a> {
    args: &'a RecordArgs,
    scope: &'a Scope,
    store: &'a SharedStore,
}

/// Where a recording stands, checked every few milliseconds.
struct Watch {
    deadline: Option<Instant>,
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
    /// `--duration` ran out while the command ran: it was sent SIGTERM.
    terminated: bool,
}

impl Recording<'_> {
    /// Runs `command` (if any: its program, and the marks that start its count at its exec)
    /// and drains until the recording is over (see `over`), then once more, and detaches.
    /// Returns how long it recorded, and the command's pid and exit status.
    fn until_done(
        &self,
        command: Option<(&Path, &ExecMarks)>,
        drain: &mut Drain,
        probes: Probes,
    ) -> Result<(Duration, Option<u32>, Option<ExitStatus>), Fatal> {
        let args = self.args;
        let started = Instant::now();
        let mut watch = Watch {
            deadline: args.duration.map(|d| started + d),
            child: None,
            exit_status: None,
            terminated: false,
        };
        if let Some((program, marks)) = command {
            watch.child = Some(self.start_command(program, marks)?);
        }
        // Once the command has started: a command that cannot be run is one line, the error.
        let progress = Progress::start(args.duration, &self.what());
        let mut next_drain = started + args.interval;
        while !self.over(&mut watch)? {
            thread::sleep(Duration::from_millis(10).min(args.interval));
            if Instant::now() >= next_drain {
                next_drain += args.interval;
                drain
                    .run_once(self.store)
                    .context("reading the kernel maps")?;
                let s = self.store.read();
                progress.show(started.elapsed(), &self.scope.members(&s));
            }
        }
        let elapsed = started.elapsed();
        // Every process recorded has exited (or the recording was cut short): their calls are
        // all in the maps now, and one more read collects them.
        drain
            .run_once(self.store)
            .context("reading the kernel maps")?;
        drop(probes);
        let s = self.store.read();
        progress.finish(elapsed, &self.scope.members(&s));
        let command_pid = watch.child.as_ref().map(Child::id);
        Ok((elapsed, command_pid, watch.exit_status))
    }

    /// What the first progress line says is recorded.
    fn what(&self) -> String {
        match (self.args.pid, self.args.command.is_empty()) {
            (Some(pid), _) => format!("pid {pid} and what it starts"),
            (None, false) => {
                let words: Vec<_> = self
                    .args
                    .command
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect();
                format!("'{}' and what it starts", words.join(" "))
            }
            (None, true) => "every process on the host".into(),
        }
    }

    /// Starts the command, and tells the tree which incarnation its exec started.
    fn start_command(&self, program: &Path, marks: &ExecMarks) -> Result<Child, Fatal> {
        let child = command::start(program, &self.args.command, marks)?;
        let pid = child.id();
        let incarnation = marks.incarnation(pid)?.ok_or_else(|| {
            Fatal::Other(anyhow!(
                "the kernel did not see the command's exec (pid {pid})"
            ))
        })?;
        if incarnation == 0 {
            tracing::warn!(
                "the kernel's process maps are full: the command's calls before its exec are \
                 counted as its own"
            );
        }
        if let Scope::Tree(t) = self.scope {
            t.forks().set_command(pid, incarnation);
        }
        Ok(child)
    }

    /// Whether the recording is over: `--duration` has passed (a command still running gets
    /// SIGTERM and is waited for), Ctrl-C, or the command or `--pid` and every process they
    /// started have exited, as far as the process events read so far say (and, for a command,
    /// as far as waiting for the orphans it left to us says).
    fn over(&self, watch: &mut Watch) -> Result<bool, Fatal> {
        let out_of_time = watch.deadline.is_some_and(|d| Instant::now() >= d);
        let interrupted = INTERRUPTED.load(Ordering::Relaxed);
        if let Some(child) = watch.child.as_mut() {
            if watch.exit_status.is_none() {
                watch.exit_status = child.try_wait().context("waiting for the command")?;
            }
            if watch.exit_status.is_none() {
                if out_of_time && !watch.terminated {
                    // Like timeout(1): the command is asked to end, and what it did is reported.
                    // SAFETY: signalling our own child, which we have not reaped.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                    watch.terminated = true;
                }
                // Ctrl-C in a terminal reaches the command too; wait for it to finish.
                return Ok(false);
            }
            if out_of_time || interrupted {
                return Ok(true);
            }
            let orphans_left = command::reap_orphans();
            return Ok(!orphans_left && !self.tree_running());
        }
        if out_of_time || interrupted {
            return Ok(true);
        }
        Ok(self
            .args
            .pid
            .is_some_and(|p| !procfs::alive(p) && !self.tree_running()))
    }

    /// Whether a process forked into the tree has not exited, as far as the process events say;
    /// false when some were lost (then they cannot say).
    fn tree_running(&self) -> bool {
        match self.scope {
            Scope::Tree(t) => t.lost.load(Ordering::Relaxed) == 0 && t.forks().any_running(),
            Scope::Host => false,
        }
    }
}

/// The report as JSON or a table, to `--output` or stderr.
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
            let mut out = std::io::stderr().lock();
            // A closed pipe is not worth an error after the command has run.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    }
    Ok(())
}
