//! The daemon's drain alone, build against build (issue 17): how long a drain takes, phase by
//! phase, at 10,000 live series. `cargo xtask bench` measures each daemon's whole CPU in one
//! pass (a window of a few seconds each, one daemon after the other); a change of a few
//! percent of a drain is inside that run's spread. So this runs **one daemon at a time** under
//! the bench's series load, each build in turn a fresh daemon, and reads the drain thread's own
//! CPU by phase from the daemon's `syscall_profiler_drain_cpu_seconds_total{phase}` over a
//! window (no other thread's, none of the load's), the builds alternated A B B A over rounds,
//! and reports each phase's median and the median of the per-round ratios to the first build.
//! Prints its table; measures, asserts nothing.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{
    attach::{parse_daemon_variant, Daemon, DaemonVariant},
    load, pin_dir, remove_pinned, stats, wait_for_series,
    workload::SeriesLoad,
    SERIES_PER_PROCESS, SERIES_POINTS,
};

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// A build or configuration to compare with the tree's daemon, NAME=SERVE-ARGS, as for
    /// `bench` (e.g. 'before=bin:/tmp/syscall-profiler'); repeatable. Without one, the tree's
    /// daemon alone: its drain by phase.
    #[arg(long = "daemon-variant", value_name = "NAME=ARGS", value_parser = parse_daemon_variant)]
    pub daemon_variants: Vec<DaemonVariant>,
    /// Rounds; each measures every build once, in alternated order.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Seconds each window reads the drain's CPU over (a drain a second).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub window: u64,
    /// The tree's daemon binary [default: target/release/syscall-profiler, built first].
    #[arg(long, value_name = "PATH")]
    pub daemon_bin: Option<PathBuf>,
}

/// The name of the tree's own daemon among the builds.
const TREE: &str = "tree";

/// One window: a build's drains, and each phase's CPU a drain, in ms, in the daemon's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub drains: f64,
    pub phases: Vec<(String, f64)>,
}

impl Window {
    /// Every phase's CPU a drain, summed.
    pub fn total_ms(&self) -> f64 {
        self.phases.iter().map(|(_, ms)| ms).sum()
    }

    fn phase_ms(&self, phase: &str) -> Option<f64> {
        (phase == "total")
            .then(|| self.total_ms())
            .or_else(|| self.phases.iter().find(|(p, _)| p == phase).map(|p| p.1))
    }
}

/// A daemon's drain counters at one scrape: drains so far, and each phase's CPU seconds so far.
pub type Counters = (f64, Vec<(String, f64)>);

/// The [`Counters`] of a /metrics text.
pub fn drain_counters(metrics: &str) -> Option<Counters> {
    let mut drains = None;
    let mut phases = Vec::new();
    for line in metrics.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == "syscall_profiler_drains_total" {
            drains = Some(value);
        } else if let Some(phase) = name
            .strip_prefix("syscall_profiler_drain_cpu_seconds_total{phase=\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
        {
            phases.push((phase.to_string(), value));
        }
    }
    Some((drains?, phases)).filter(|(_, p)| !p.is_empty())
}

/// The window between two readings of [`drain_counters`]; None without a drain between them
/// or with a phase of the second missing from the first.
pub fn window(before: &Counters, after: &Counters) -> Option<Window> {
    let drains = after.0 - before.0;
    if drains < 1.0 {
        return None;
    }
    let phases = after
        .1
        .iter()
        .map(|(phase, secs)| {
            let was = before.1.iter().find(|(p, _)| p == phase)?.1;
            Some((phase.clone(), (secs - was) / drains * 1e3))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Window { drains, phases })
}

pub fn run(root: &Path, args: DrainArgs) -> Result<()> {
    let mut builds = vec![DaemonVariant {
        name: TREE.to_string(),
        args: Vec::new(),
    }];
    for v in &args.daemon_variants {
        if builds.iter().any(|b| b.name == v.name) {
            bail!("--daemon-variant: the name '{}' is taken", v.name);
        }
        builds.push(v.clone());
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("the drain benchmark runs the daemon, which loads eBPF programs: run it as root");
    }
    crate::check_ebpf_fresh(root)?;
    let bin = match &args.daemon_bin {
        Some(b) => b.clone(),
        None => super::build_daemon(root)?,
    };
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let span = Duration::from_secs(args.window);
    let target = *SERIES_POINTS.last().expect("a series point");
    let processes = target.div_ceil(SERIES_PER_PROCESS) as usize;
    // Each measurement: the daemon's start, the series found, the window, the stop.
    let per_build = span + Duration::from_secs(60);
    let lifetime = per_build * args.rounds * builds.len() as u32;
    let mut load = SeriesLoad::start(
        &exe,
        processes,
        SERIES_PER_PROCESS as usize,
        Duration::from_millis(100),
        lifetime,
    )?;
    let agent = load::agent();
    let mut windows: Vec<Vec<Option<Window>>> = vec![Vec::new(); builds.len()];
    for round in 0..args.rounds as usize {
        for b in stats::round_order(builds.len(), round) {
            let build = &builds[b];
            remove_pinned(pin_dir(&build.args))?;
            let daemon = Daemon::start(&bin, &build.args)?;
            wait_for_series(&agent, &daemon.base, target);
            load.check_alive()?;
            let read = || -> Result<Counters> {
                let body = agent
                    .get(&format!("{}/metrics", daemon.base))
                    .call()
                    .context("scraping /metrics")?
                    .into_string()
                    .context("reading /metrics")?;
                drain_counters(&body).with_context(|| {
                    format!(
                        "{}'s /metrics has no drain counters by phase \
                         (syscall_profiler_drain_cpu_seconds_total)",
                        build.name
                    )
                })
            };
            let before = read()?;
            thread::sleep(span);
            let w = window(&before, &read()?);
            match &w {
                Some(w) => println!(
                    "{} round {}: {} drains, {} ms a drain ({})",
                    build.name,
                    round + 1,
                    w.drains,
                    fmt_ms(w.total_ms()),
                    w.phases
                        .iter()
                        .map(|(p, ms)| format!("{p} {}", fmt_ms(*ms)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => println!("{} round {}: no drain in the window", build.name, round + 1),
            }
            windows[b].push(w);
            daemon.stop()?;
        }
    }
    load.check_alive()?;
    println!("\n{}", render(&builds, &windows, &args));
    Ok(())
}

fn fmt_ms(ms: f64) -> String {
    format!("{ms:.2}")
}

/// The summary: per build, each phase's median ms a drain over its windows; per build after
/// the first, the median of its per-round ratios to the first build, phase by phase.
pub fn render(
    builds: &[DaemonVariant],
    windows: &[Vec<Option<Window>>],
    args: &DrainArgs,
) -> String {
    let phases: Vec<String> = windows
        .iter()
        .flatten()
        .flatten()
        .next()
        .map(|w| w.phases.iter().map(|(p, _)| p.clone()).collect())
        .unwrap_or_default();
    let columns: Vec<&str> = phases.iter().map(String::as_str).chain(["total"]).collect();
    let mut md = format!(
        "Drain CPU a drain (ms, median of {} windows of {} s; the drain thread's own CPU by \
         phase, one daemon at a time, {} live series' load):\n\n| build | {} |\n| --- |{}\n",
        args.rounds,
        args.window,
        SERIES_POINTS.last().expect("a series point"),
        columns.join(" | "),
        " ---: |".repeat(columns.len())
    );
    let of = |b: usize, phase: &str| -> Vec<Option<f64>> {
        windows[b]
            .iter()
            .map(|w| w.as_ref().and_then(|w| w.phase_ms(phase)))
            .collect()
    };
    for (b, build) in builds.iter().enumerate() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let xs: Vec<f64> = of(b, c).into_iter().flatten().collect();
                stats::median(&xs).map_or_else(|| "–".into(), fmt_ms)
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", build.name, cells.join(" | "));
    }
    for (b, build) in builds.iter().enumerate().skip(1) {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let ratios: Vec<f64> = of(b, c)
                    .into_iter()
                    .zip(of(0, c))
                    .filter_map(|(x, base)| Some(x? / base?))
                    .collect();
                stats::median(&ratios).map_or_else(|| "–".into(), |r| format!("{r:.3}"))
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} / {TREE}, median of per-round ratios | {} |",
            build.name,
            cells.join(" | ")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP syscall_profiler_drains_total Drains.
# TYPE syscall_profiler_drains_total counter
syscall_profiler_drains_total 10
syscall_profiler_drain_cpu_seconds_total{phase=\"slots\"} 0.02
syscall_profiler_drain_cpu_seconds_total{phase=\"store\"} 0.01
syscall_profiler_drain_duration_seconds_total 0.5
";

    #[test]
    fn reads_the_drain_counters_and_the_window_between_two_readings() {
        let before = drain_counters(METRICS).unwrap();
        assert_eq!(before.0, 10.0);
        assert_eq!(
            before.1,
            vec![("slots".to_string(), 0.02), ("store".to_string(), 0.01)]
        );
        let after = drain_counters(
            &METRICS
                .replace("total 10", "total 30")
                .replace("} 0.02", "} 0.08")
                .replace("} 0.01", "} 0.05"),
        )
        .unwrap();
        let w = window(&before, &after).unwrap();
        assert_eq!(w.drains, 20.0);
        assert!((w.phase_ms("slots").unwrap() - 3.0).abs() < 1e-9);
        assert!((w.phase_ms("store").unwrap() - 2.0).abs() < 1e-9);
        assert!((w.total_ms() - 5.0).abs() < 1e-9);
        assert_eq!(window(&before, &before), None, "no drain in between");
    }

    #[test]
    fn a_daemon_without_phase_counters_is_told_apart() {
        assert_eq!(drain_counters("syscall_profiler_drains_total 3\n"), None);
        assert_eq!(
            drain_counters("syscall_profiler_drain_cpu_seconds_total{phase=\"slots\"} 1\n"),
            None
        );
    }

    #[test]
    fn ratios_are_per_round_and_against_the_first_build() {
        let w = |slots: f64| {
            Some(Window {
                drains: 20.0,
                phases: vec![("slots".into(), slots)],
            })
        };
        let builds = [
            DaemonVariant {
                name: TREE.into(),
                args: vec![],
            },
            DaemonVariant {
                name: "b".into(),
                args: vec![],
            },
        ];
        // Round 2 is slow for both: its ratio is what counts, not its size.
        let windows = vec![vec![w(4.0), w(8.0), w(4.0)], vec![w(2.0), w(8.0), w(3.0)]];
        let args = DrainArgs {
            daemon_variants: vec![],
            rounds: 3,
            window: 20,
            daemon_bin: None,
        };
        let md = render(&builds, &windows, &args);
        assert!(md.contains("| tree | 4.00 | 4.00 |"), "{md}");
        assert!(md.contains("| b | 3.00 | 3.00 |"), "{md}");
        assert!(
            md.contains("| b / tree, median of per-round ratios | 0.750 | 0.750 |"),
            "{md}"
        );
    }
}
