//! `cargo xtask bench`: what the profiler costs per syscall next to nothing attached, the floor
//! and the limit any syscall latency tracer pays, and bpftrace; and what the daemon itself costs
//! while draining many series and answering HTTP. A benchmark, not a test: it asserts nothing
//! about timings, and writes docs/benchmarks.md.

pub mod attach;
pub mod drain;
pub mod goals;
pub mod hostile;
pub mod load;
pub mod machine;
pub mod pingpong;
pub mod progstats;
pub mod report;
pub mod stats;
pub mod tracers;
pub mod workload;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;

use attach::{
    attach, find_on_path, parse_daemon_variant, Config, ConfigKind, Daemon, DaemonVariant, Env,
    Tracefs, DAEMON_VARIANTS, SYSCALL_ONLY_VARIANTS,
};
use machine::{loadavg, machine, merge_section};
use report::{CheckpointCost, Clock, HttpRow, Report, SeriesRow, SyscallResults};
use workload::{time_workload, Cost, SeriesLoad, Workload};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// About one minute instead of about five: fewer rounds, shorter loops and windows.
    #[arg(long)]
    pub quick: bool,
    /// Alternated rounds of every configuration [default: 11; --quick: 3]. Many, because a
    /// ping-pong round trip varies by about a microsecond from run to run.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// Syscalls per timed run of a workload [default: 3000000; --quick: 1000000]. The mixed I/O
    /// workload makes a third as many (its syscalls are slower).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=1_000_000_000))]
    pub iters: Option<u64>,
    /// Round trips per timed run of a ping-pong workload [default: 200000; --quick: 50000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub round_trips: Option<u64>,
    /// Seconds over which the daemon's CPU is measured at each series count, per window
    /// [default: 10; --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub window: Option<u64>,
    /// Consecutive windows of the daemon's CPU at each series count; the report gives their
    /// median and range, as a single window is too noisy to read a fraction of a percent
    /// [default: 5; --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub cpu_windows: Option<u32>,
    /// Seconds of HTTP load per endpoint [default: 10; --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub http_secs: Option<u64>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub clients: u32,
    /// An extra daemon configuration, NAME=SERVE-ARGS (e.g. 'counts-only=--counts-only');
    /// repeatable. Built-in ones are listed in DAEMON_VARIANTS (xtask/src/bench/attach.rs).
    /// SERVE-ARGS starting with bin:PATH run that daemon binary instead (e.g. an earlier
    /// build: 'before=bin:/tmp/syscall-profiler'), for an A/B in one alternated run.
    #[arg(long = "daemon-variant", value_name = "NAME=ARGS", value_parser = parse_daemon_variant)]
    pub daemon_variants: Vec<DaemonVariant>,
    /// The daemon binary [default: target/release/syscall-profiler, built first].
    #[arg(long, value_name = "PATH")]
    pub daemon_bin: Option<PathBuf>,
    /// Also measure issue 17's experiment: the limit plus a syscall's start kept in a per-CPU
    /// slot parked at sched_switch, in BPF task storage, in the slot parked in task storage,
    /// and in an array indexed by tid (bench_tid_array.rs, against the same entry in task
    /// storage reached the daemon's way).
    #[arg(long)]
    pub task_storage: bool,
    /// Measure only these configurations (and "none"), by name, comma-separated (e.g.
    /// `limit,tid-array,ts-entry`): a focused A/B with more rounds in the same time.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Also read each configuration's BPF programs' own run time per workload from the
    /// kernel's statistics (`kernel.bpf_stats_enabled`, on for the run): a low-noise
    /// comparison of programs; the syscall timings of such a run carry the statistics' cost.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Leave out the bpftrace configuration even when bpftrace is installed.
    #[arg(long)]
    pub no_bpftrace: bool,
    /// Leave out the series (CPU, RSS) and HTTP measurements.
    #[arg(long)]
    pub no_load: bool,
    /// Seconds the whole run may spend waiting for someone else's tracing programs to go
    /// (see docs/benchmarks.md's notes) [default: 120; --quick: 30]. 0: never wait.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub max_wait: Option<u64>,
    /// Where to write the report [default: docs/benchmarks.md in the workspace].
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// A line for the report's notes (e.g. what else the machine was doing); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub note: Vec<String>,
}

/// The settings a run uses once --quick and explicit flags are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub rounds: u32,
    pub iters: u64,
    pub round_trips: u64,
    pub window: Duration,
    pub cpu_windows: u32,
    pub http: Duration,
    pub clients: usize,
    pub max_wait: Duration,
}

impl BenchArgs {
    pub fn settings(&self) -> Settings {
        let (rounds, iters, round_trips, window, cpu_windows, http, max_wait) = if self.quick {
            (3, 1_000_000, 50_000, 3, 3, 3, 30)
        } else {
            (11, 3_000_000, 200_000, 10, 5, 10, 120)
        };
        Settings {
            rounds: self.rounds.unwrap_or(rounds),
            iters: self.iters.unwrap_or(iters),
            round_trips: self.round_trips.unwrap_or(round_trips),
            window: Duration::from_secs(self.window.unwrap_or(window)),
            cpu_windows: self.cpu_windows.unwrap_or(cpu_windows),
            http: Duration::from_secs(self.http_secs.unwrap_or(http)),
            clients: self.clients as usize,
            max_wait: Duration::from_secs(self.max_wait.unwrap_or(max_wait)),
        }
    }
}

impl Settings {
    /// Operations per timed run of `w`: syscalls, or round trips for a ping-pong.
    fn ops(&self, w: Workload) -> u64 {
        match w {
            Workload::MixedIo => (self.iters / 3).max(1),
            Workload::PipePingPong | Workload::FutexPingPong => self.round_trips,
            Workload::Getppid | Workload::GetppidAllCpus => self.iters,
        }
    }
}

/// Live (process, syscall) series at which the daemon's CPU and memory are measured; HTTP
/// latency is measured at the last.
pub const SERIES_POINTS: [u64; 2] = [1_000, 10_000];
/// Distinct syscall numbers each series process calls.
pub(super) const SERIES_PER_PROCESS: u64 = 100;
/// Requests one HTTP client makes at most, whatever the duration: the load stays bounded.
const MAX_REQUESTS_PER_CLIENT: u64 = 100_000;
/// Short-lived processes run before the HTTP load: the store then holds as many exited
/// processes as `--max-exited` keeps by default besides the live series, as on a busy host
/// after a while, and `/stats` is measured over both.
const EXITED_PROCESSES: usize = 10_000;

pub fn run(root: &Path, args: BenchArgs, argv: &[String]) -> Result<()> {
    let started = Instant::now();
    let settings = args.settings();
    let mut variants: Vec<DaemonVariant> = DAEMON_VARIANTS
        .iter()
        .map(|(name, a)| DaemonVariant {
            name: name.to_string(),
            args: a.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    for v in &args.daemon_variants {
        if variants.iter().any(|x| x.name == v.name)
            || SYSCALL_ONLY_VARIANTS
                .iter()
                .any(|(name, _)| *name == v.name)
            || [
                "none",
                "floor",
                "limit",
                "slot-parked",
                "task-storage",
                "slot-ts",
                "tid-array",
                "regs-array",
                "ts-entry",
                "bpftrace",
            ]
            .contains(&v.name.as_str())
        {
            bail!("--daemon-variant: the name '{}' is taken", v.name);
        }
        variants.push(v.clone());
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    crate::check_ebpf_fresh(root)?;
    // The hostile clients' scenarios come last: their tool is checked first.
    let wrk = match args.no_load {
        true => None,
        false => Some(hostile::wrk()?),
    };
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let daemon_bin = match &args.daemon_bin {
        Some(p) => {
            anyhow::ensure!(p.is_file(), "--daemon-bin {}: no such file", p.display());
            p.clone()
        }
        None => build_daemon(root)?,
    };

    let mut notes = Vec::new();
    let mut configs = vec![Config::nothing(), Config::floor(), Config::limit()];
    if args.task_storage {
        configs.extend([
            Config::slot_parked(),
            Config::task_storage(),
            Config::slot_task_storage(),
            Config::tid_array(),
            Config::regs_array(),
            Config::task_storage_entry(),
        ]);
    }
    configs.extend(variants.iter().cloned().map(Config::daemon));
    configs.extend(SYSCALL_ONLY_VARIANTS.iter().map(|(name, a)| {
        Config::daemon(DaemonVariant {
            name: name.to_string(),
            args: a.iter().map(|s| s.to_string()).collect(),
        })
    }));

    if !args.only.is_empty() {
        for name in &args.only {
            if !configs.iter().any(|c| &c.name == name) {
                bail!("--only: no configuration named '{name}'");
            }
        }
        // "none" stays: every figure is an overhead over it.
        configs.retain(|c| c.kind == ConfigKind::Nothing || args.only.contains(&c.name));
    }

    let mut tracefs = None;
    let bpftrace = if args.no_bpftrace {
        note(&mut notes, "bpftrace left out (--no-bpftrace).");
        None
    } else {
        match find_on_path("bpftrace") {
            None => {
                note(
                    &mut notes,
                    "bpftrace is not installed, so its configuration was skipped \
                     (Debian: apt-get install bpftrace).",
                );
                None
            }
            Some(bin) => match Tracefs::ensure() {
                Ok(t) => {
                    tracefs = Some(t);
                    Some(bin)
                }
                Err(e) => {
                    note(&mut notes, &format!("bpftrace skipped: {e:#}."));
                    None
                }
            },
        }
    };
    let env = Env {
        root: root.to_path_buf(),
        daemon_bin,
        bpftrace,
    };
    if let Some(bin) = &env.bpftrace {
        configs.push(Config::bpftrace(&attach::version_of(bin, "bpftrace")));
    }

    // One untimed pass attaching every configuration: it fails early on a broken setup, and
    // pages in the daemon and bpftrace so the first timed round is not the odd one out.
    println!("preflight: attaching each configuration once");
    let mut usable = Vec::new();
    for config in configs {
        match attach(&config, &env).and_then(|a| a.detach()) {
            Ok(()) => usable.push(config),
            Err(e) if config.kind == ConfigKind::Bpftrace => {
                note(
                    &mut notes,
                    &format!("bpftrace skipped: it failed to attach: {e:#}."),
                );
            }
            Err(e) => return Err(e.context(format!("attaching configuration {}", config.name))),
        }
    }
    let machine_before = machine(root);
    // What else runs, measured over a few seconds now rather than read from a load average
    // that still holds the build and the attach pass above.
    let busy_before = machine::busy_cpus(Duration::from_secs(3), machine_before.cores);

    let mut wall = SyscallResults::new(usable, Workload::ALL.to_vec());
    let mut cpu = wall.clone();
    let mut rounds = RoundLog::new(settings.max_wait);
    let stats_on = match args.bpf_stats {
        true => Some(progstats::Enabled::new()?),
        false => None,
    };
    let mut prog_stats = progstats::ProgStats::default();
    while rounds.kept < settings.rounds as usize {
        let before = rounds.wait_for_clean_host();
        let mut round_stats = stats_on.as_ref().map(|_| progstats::ProgStats::default());
        let samples = run_round(
            &wall,
            &env,
            &exe,
            &settings,
            rounds.kept,
            round_stats.as_mut(),
        )?;
        let after = tracers::foreign_tracers();
        if rounds.keep(&before, &after, settings.rounds as usize) {
            for (c, w, ns) in samples {
                wall.samples[c][w].push(ns.wall);
                cpu.samples[c][w].push(ns.cpu);
            }
            for (key, per_workload) in round_stats.into_iter().flat_map(|r| r.samples) {
                let into = prog_stats
                    .samples
                    .entry(key)
                    .or_insert_with(|| vec![Vec::new(); per_workload.len()]);
                for (w, v) in per_workload.into_iter().enumerate() {
                    into[w].extend(v);
                }
            }
        }
    }
    drop(stats_on);
    notes.extend(rounds.notes(settings.rounds));
    drop(tracefs);

    let mut load = LoadResults::default();
    if !args.no_load {
        for v in &variants {
            measure_load(&env, &exe, v, &settings, &mut rounds, &mut load)?;
        }
    }
    notes.append(&mut load.notes);

    let mut machine = machine_before;
    machine.load_after = loadavg();
    match busy_before {
        Some(busy) if busy >= 0.1 => notes.push(format!(
            "the machine was not idle: its CPUs did {busy:.2} CPUs' worth of other work in the \
             3 s before the first round, which shares its {} cores with the workloads, raises \
             and spreads the figures; the alternated rounds and medians limit the effect on \
             comparisons but do not remove it.",
            machine.cores
        )),
        Some(busy) => notes.push(format!(
            "the machine was idle before the first round ({busy:.2} CPUs' worth of other work \
             in the 3 s before it)."
        )),
        None => notes.push(
            "/proc/stat could not be read: whether the machine was idle is not known.".into(),
        ),
    }
    notes.extend(args.note.iter().cloned());

    let report = Report {
        machine,
        command: command_line(argv),
        settings: vec![
            format!(
                "Settings: {} rounds; {} syscalls per timed getppid run (per thread on all \
                 CPUs), {} per mixed I/O run, {} round trips per ping-pong run; CPU {} windows \
                 of {} s; HTTP {} s per endpoint with {} clients; up to {} s of waiting for other \
                 tracers to go",
                settings.rounds,
                settings.iters,
                settings.ops(Workload::MixedIo),
                settings.round_trips,
                settings.cpu_windows,
                settings.window.as_secs(),
                settings.http.as_secs(),
                settings.clients,
                settings.max_wait.as_secs()
            ),
            format!(
                "Run time: {:.0} s (daemon build excluded)",
                started.elapsed().as_secs_f64()
            ),
        ],
        notes,
        syscalls: vec![(Clock::Wall, wall), (Clock::Cpu, cpu)],
        series: load.series,
        series_window_secs: settings.window.as_secs_f64(),
        series_windows: settings.cpu_windows,
        http: load.http,
        http_notes: load.http_notes,
    };
    let mut md = report::render(&report);
    if args.bpf_stats {
        let names: Vec<String> = report.syscalls[0]
            .1
            .configs
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let workloads: Vec<String> = report.syscalls[0]
            .1
            .workloads
            .iter()
            .map(|w| w.label().to_string())
            .collect();
        md = insert_before_end(&md, &prog_stats.render(&names, &workloads));
    }
    if let Some(wrk) = &wrk {
        let rows = hostile::measure(&env.daemon_bin, wrk, settings.http)?;
        let table = hostile::render(&rows, settings.http.as_secs());
        md = hostile::splice(&md, &report.machine.cpu.key(), &table);
    }
    println!("\n{md}");
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| root.join("docs/benchmarks.md"));
    // Other CPU kinds' sections stay: a missing file just has none.
    let existing = std::fs::read_to_string(&out).unwrap_or_default();
    let doc = merge_section(&existing, &report.machine.cpu.key(), &md);
    std::fs::write(&out, doc).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `section` with `table` added at its end, before the CPU kind's closing marker.
fn insert_before_end(section: &str, table: &str) -> String {
    match section.rfind("<!-- /cpu-kind -->") {
        Some(at) => format!("{}{table}\n{}", &section[..at], &section[at..]),
        None => format!("{section}\n{table}"),
    }
}

/// One round: every configuration in the round's order, every workload under each. Returns
/// (configuration, workload, cost per operation) triples. Prints wall/on-CPU ns per workload.
/// With `prog_stats`, also each configuration's programs' run time per workload.
fn run_round(
    results: &SyscallResults,
    env: &Env,
    exe: &Path,
    settings: &Settings,
    round: usize,
    mut prog_stats: Option<&mut progstats::ProgStats>,
) -> Result<Vec<(usize, usize, Cost)>> {
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut line = format!("round {}/{}:", round + 1, settings.rounds);
    for c in stats::round_order(results.configs.len(), round) {
        let config = &results.configs[c];
        let attached = attach(config, env)
            .with_context(|| format!("attaching configuration {}", config.name))?;
        let mut cells = Vec::new();
        let pid = attached.programs_pid().filter(|_| prog_stats.is_some());
        for (w, &workload) in results.workloads.iter().enumerate() {
            let before = pid.map(progstats::snapshot).transpose()?;
            let ns = time_workload(exe, workload, settings.ops(workload))?;
            if let (Some(pid), Some(before), Some(stats)) = (pid, before, prog_stats.as_mut()) {
                let after = progstats::snapshot(pid)?;
                let per_run = progstats::between(&before, &after);
                stats.add(c, w, results.workloads.len(), per_run);
            }
            cells.push(format!("{:.0}/{:.0}", ns.wall, ns.cpu));
            samples.push((c, w, ns));
        }
        attached
            .detach()
            .with_context(|| format!("detaching configuration {}", config.name))?;
        line.push_str(&format!(" | {} {}", config.name, cells.join(" ")));
    }
    println!("{line} ({:.0} s)", t0.elapsed().as_secs_f64());
    Ok(samples)
}

/// Which rounds count. A round during which someone else's tracing program was loaded measured
/// that program as much as ours: it is discarded and run again, within a bounded budget of
/// waiting (shared with the load measurements) and re-running; past that it is kept and the
/// report says so.
struct RoundLog {
    kept: usize,
    discarded: usize,
    kept_dirty: usize,
    wait_budget: Duration,
    seen: std::collections::BTreeSet<String>,
}

impl RoundLog {
    fn new(wait_budget: Duration) -> RoundLog {
        RoundLog {
            kept: 0,
            discarded: 0,
            kept_dirty: 0,
            wait_budget,
            seen: Default::default(),
        }
    }

    fn wait_for_clean_host(&mut self) -> Vec<String> {
        if self.wait_budget.is_zero() {
            return tracers::foreign_tracers();
        }
        let t0 = Instant::now();
        let found = tracers::wait_until_clean(self.wait_budget.min(Duration::from_secs(60)));
        self.wait_budget = self.wait_budget.saturating_sub(t0.elapsed());
        found
    }

    /// Whether the round just run counts.
    fn keep(&mut self, before: &[String], after: &[String], rounds: usize) -> bool {
        let dirty = !before.is_empty() || !after.is_empty();
        // Names only: ids change with every load, the names say who it is.
        self.seen.extend(
            before
                .iter()
                .chain(after)
                .map(|t| t.split(" (id ").next().unwrap_or(t).to_string()),
        );
        if dirty && self.discarded < rounds && !self.wait_budget.is_zero() {
            self.discarded += 1;
            println!(
                "round discarded: tracing programs loaded by someone else: {}",
                before
                    .iter()
                    .chain(after)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return false;
        }
        self.kept_dirty += usize::from(dirty);
        self.kept += 1;
        true
    }

    fn notes(&self, rounds: u32) -> Vec<String> {
        let mut notes = Vec::new();
        let seen = self.seen.iter().cloned().collect::<Vec<_>>().join(", ");
        if self.discarded > 0 {
            notes.push(format!(
                "{} round(s) were discarded and run again because tracing programs loaded by \
                 someone else were present ({seen}).",
                self.discarded
            ));
        }
        if self.kept_dirty > 0 {
            notes.push(format!(
                "{} of the {rounds} rounds kept ran while tracing programs loaded by someone \
                 else were present ({seen}): every configuration of those rounds, `none` \
                 included, paid for them too.",
                self.kept_dirty
            ));
        }
        notes
    }
}

fn note(notes: &mut Vec<String>, text: &str) {
    println!("note: {text}");
    notes.push(text.to_string());
}

/// `cargo build --release` of the daemon; its path.
pub fn build_daemon(root: &Path) -> Result<PathBuf> {
    println!("building the daemon (cargo build --release -p profiler)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "profiler",
            "--bin",
            "syscall-profiler",
        ])
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "building the daemon failed ({status})");
    Ok(root.join("target/release/syscall-profiler"))
}

#[derive(Default)]
struct LoadResults {
    series: Vec<SeriesRow>,
    http: Vec<HttpRow>,
    http_notes: Vec<String>,
    notes: Vec<String>,
}

fn measure_load(
    env: &Env,
    exe: &Path,
    variant: &DaemonVariant,
    settings: &Settings,
    rounds: &mut RoundLog,
    out: &mut LoadResults,
) -> Result<()> {
    let agent = load::agent();
    for &target in &SERIES_POINTS {
        let foreign = rounds.wait_for_clean_host();
        if !foreign.is_empty() {
            out.notes.push(format!(
                "the {} measurement at {target} series started while tracing programs loaded \
                 by someone else were present ({}).",
                variant.name,
                foreign.join(", ")
            ));
        }
        // A fresh daemon per point: the previous point's processes would linger in its store
        // (retention) and weigh on this one. Pinned maps too would carry them over.
        let pinned = pin_dir(&variant.args);
        remove_pinned(pinned)?;
        let daemon = Daemon::start(&env.daemon_bin, &variant.args)?;
        let processes = target.div_ceil(SERIES_PER_PROCESS) as usize;
        let lifetime =
            settings.window * settings.cpu_windows + settings.http * 2 + Duration::from_secs(120);
        let mut procs = SeriesLoad::start(
            exe,
            processes,
            SERIES_PER_PROCESS as usize,
            Duration::from_millis(100),
            lifetime,
        )?;
        wait_for_series(&agent, &daemon.base, target);
        procs.check_alive()?;
        let windows = (0..settings.cpu_windows)
            .map(|_| load::cpu_percent(daemon.pid(), settings.window))
            .collect::<Result<Vec<f64>>>()?;
        let (cpu_percent, cpu_range) = (
            stats::median(&windows).context("no CPU window")?,
            stats::min_max(&windows).context("no CPU window")?,
        );
        let rss_kib = load::status_kib(daemon.pid(), "VmRSS")?;
        let kernel_map = load::kernel_map(&agent, &daemon.base);
        let checkpoint = sample_checkpoints(&agent, &daemon.base);
        println!(
            "{} with {target} live series: {cpu_percent:.2}% CPU ({:.2}–{:.2}), RSS {:.1} MiB \
             (kernel map: {})",
            variant.name,
            cpu_range.0,
            cpu_range.1,
            rss_kib as f64 / 1024.0,
            kernel_map.map_or_else(|| "?".into(), |m| m.entries.to_string())
        );
        out.series.push(SeriesRow {
            daemon: variant.name.clone(),
            target,
            processes,
            kernel_map,
            cpu_percent,
            cpu_range,
            rss_kib,
            checkpoint,
        });
        if Some(&target) == SERIES_POINTS.last() {
            let exited = exit_processes(&agent, &daemon.base, EXITED_PROCESSES)?;
            out.http_notes.push(format!(
                "{}: the HTTP load ran with {} exited processes in the store \
                 (`store.exited_processes`) besides the live series.",
                variant.name,
                exited.map_or_else(|| "?".into(), |n| n.to_string())
            ));
            // /metrics will be a Prometheus endpoint: measured as soon as the daemon serves it.
            for path in ["/stats", "/metrics"] {
                match load::get(&agent, &format!("{}{path}", daemon.base)) {
                    Ok((200, _)) => {
                        let cpu0 = load::cpu_ns(daemon.pid())?;
                        let result = load::http_load(
                            &daemon.base,
                            path,
                            settings.clients,
                            settings.http,
                            MAX_REQUESTS_PER_CLIENT,
                        );
                        let daemon_cpu_percent = load::percent_of_cpu_ns(
                            load::cpu_ns(daemon.pid())? - cpu0,
                            Duration::from_secs_f64(result.secs),
                        );
                        let peak_rss_kib = load::status_kib(daemon.pid(), "VmHWM")?;
                        println!(
                            "{} {path}: {} requests, {} errors{}",
                            variant.name,
                            result.latencies_ms.len(),
                            result.errors,
                            result
                                .first_error
                                .as_deref()
                                .map(|e| format!(" (first: {e})"))
                                .unwrap_or_default()
                        );
                        out.http.push(HttpRow {
                            daemon: variant.name.clone(),
                            series: target,
                            result,
                            daemon_cpu_percent,
                            peak_rss_kib,
                        });
                    }
                    Ok((code, _)) => out.http_notes.push(format!(
                        "`{path}` ({}): not served (HTTP {code}), so not measured; the harness \
                         measures it as soon as it answers 200.",
                        variant.name
                    )),
                    Err(e) => out.http_notes.push(format!(
                        "`{path}` ({}): not measured, the probe failed: {e}.",
                        variant.name
                    )),
                }
            }
        }
        procs.check_alive()?;
        drop(procs);
        daemon.stop()?;
        remove_pinned(pinned)?;
    }
    Ok(())
}

/// Commits timed per load point.
const CHECKPOINT_SAMPLES: usize = 11;

/// The next `CHECKPOINT_SAMPLES` checkpoint commits of a pinned daemon (None for others), as
/// the daemon timed them.
fn sample_checkpoints(agent: &ureq::Agent, base: &str) -> Option<CheckpointCost> {
    let mut last = load::checkpoint(agent, base)?;
    let mut seen: Vec<load::Checkpoint> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < CHECKPOINT_SAMPLES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Some(now) = load::checkpoint(agent, base) else {
            continue;
        };
        if now.committed != last.committed {
            seen.push(now);
            last = now;
        }
    }
    let mut ms: Vec<f64> = seen
        .iter()
        .map(|c| c.last_duration_ns as f64 / 1e6)
        .collect();
    let mut bytes: Vec<u64> = seen.iter().map(|c| c.last_bytes).collect();
    ms.sort_by(f64::total_cmp);
    bytes.sort_unstable();
    Some(CheckpointCost {
        samples: seen.len(),
        median_ms: *ms.get(ms.len() / 2)?,
        max_ms: *ms.last()?,
        median_bytes: *bytes.get(bytes.len() / 2)?,
    })
}

/// The `--pin-path` of a daemon's arguments.
pub(super) fn pin_dir(args: &[String]) -> Option<&Path> {
    let at = args.iter().position(|a| a == "--pin-path")?;
    args.get(at + 1).map(Path::new)
}

/// Removes pinned maps, so a daemon starts fresh and none are left behind.
pub(super) fn remove_pinned(dir: Option<&Path>) -> Result<()> {
    match dir {
        Some(d) if d.exists() => {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))
        }
        _ => Ok(()),
    }
}

/// Runs `n` processes that exit at once (`true`), then waits (at most 30 s) until the daemon
/// holds them as exited; returns how many exited processes it holds (None: no such field).
fn exit_processes(agent: &ureq::Agent, base: &str, n: usize) -> Result<Option<u64>> {
    for _ in 0..n {
        let status = std::process::Command::new("true")
            .stdin(std::process::Stdio::null())
            .status()
            .context("running true")?;
        if !status.success() {
            bail!("true failed: {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = load::exited_processes(agent, base);
        if held.is_none_or(|h| h >= n as u64) || Instant::now() > deadline {
            return Ok(held);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until the daemon's kernel map holds `target` series, then for one more drain, so the
/// measured window sees every series drained each interval. Without a `hists_entries` field
/// in /stats it waits a fixed few seconds.
pub(super) fn wait_for_series(agent: &ureq::Agent, base: &str, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match load::kernel_map(agent, base) {
            Some(m) if m.entries >= target || Some(m.entries) == m.capacity => break,
            Some(_) => std::thread::sleep(Duration::from_millis(250)),
            None => {
                std::thread::sleep(Duration::from_secs(3));
                return;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
}

/// How the run was invoked, as a user would type it.
pub fn command_line(argv: &[String]) -> String {
    let mut cmd = String::from("cargo xtask");
    for a in argv {
        cmd.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            cmd.push('\'');
            cmd.push_str(&a.replace('\'', r"'\''"));
            cmd.push('\'');
        } else {
            cmd.push_str(a);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_rounds_are_redone_within_budget_then_kept_and_noted() {
        let clean: Vec<String> = vec![];
        let dirty = vec!["raw_tracepoint sys_enter (id 7)".to_string()];
        let mut log = RoundLog::new(Duration::from_secs(60));
        assert!(log.keep(&clean, &clean, 2));
        // Up to `rounds` discards, then a dirty round is kept.
        assert!(!log.keep(&dirty, &clean, 2));
        assert!(!log.keep(&clean, &dirty, 2));
        assert!(log.keep(&dirty, &clean, 2));
        assert_eq!((log.kept, log.discarded, log.kept_dirty), (2, 2, 1));
        let notes = log.notes(2).join("\n");
        assert!(notes.contains("2 round(s) were discarded"), "{notes}");
        assert!(notes.contains("1 of the 2 rounds kept"), "{notes}");
        assert!(notes.contains("(raw_tracepoint sys_enter)"), "{notes}");

        // No waiting budget left: kept at once.
        let mut log = RoundLog::new(Duration::ZERO);
        assert!(log.keep(&dirty, &dirty, 3));
        assert_eq!((log.kept, log.discarded, log.kept_dirty), (1, 0, 1));
        assert!(RoundLog::new(Duration::from_secs(5)).notes(3).is_empty());
    }

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        T::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn quick_and_explicit_flags_resolve() {
        let d = args(&[]).settings();
        assert_eq!(
            (
                d.rounds,
                d.iters,
                d.round_trips,
                d.window.as_secs(),
                d.cpu_windows,
                d.clients
            ),
            (11, 3_000_000, 200_000, 10, 5, 50)
        );
        let q = args(&["--quick"]).settings();
        assert_eq!(
            (
                q.rounds,
                q.iters,
                q.round_trips,
                q.http.as_secs(),
                q.cpu_windows
            ),
            (3, 1_000_000, 50_000, 3, 3)
        );
        assert_eq!(args(&["--cpu-windows", "7"]).settings().cpu_windows, 7);
        let o = args(&["--quick", "--rounds", "5", "--iters", "2000"]).settings();
        assert_eq!((o.rounds, o.iters), (5, 2000));
        assert_eq!(o.ops(Workload::MixedIo), 666);
        assert_eq!(o.ops(Workload::Getppid), 2000);
        assert_eq!(o.ops(Workload::PipePingPong), 50_000);
        let r = args(&["--round-trips", "1000"]).settings();
        assert_eq!(r.ops(Workload::FutexPingPong), 1000);
    }

    #[test]
    fn command_line_quotes_what_a_shell_would_split() {
        assert_eq!(command_line(&["bench".into()]), "cargo xtask bench");
        assert_eq!(
            command_line(&["bench".into(), "--note".into(), "it's busy".into()]),
            r"cargo xtask bench --note 'it'\''s busy'"
        );
    }
}
