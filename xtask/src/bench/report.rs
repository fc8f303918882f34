//! What a run measured, and its rendering as docs/benchmarks.md.

use std::fmt::Write;

pub use super::machine::Machine;
use super::{
    attach::{Config, ConfigKind},
    goals::{Reference, Verdict, CPU_GOAL, RATIO_GOALS},
    load::{HttpResult, KernelMap},
    machine::section_marker,
    stats::{median, min_max, overhead_ratio, percentile, ratio_interval},
    workload::Workload,
};

/// ns per operation (syscall or round trip) of every configuration, workload and round.
#[derive(Clone, Debug)]
pub struct SyscallResults {
    pub configs: Vec<Config>,
    pub workloads: Vec<Workload>,
    /// `samples[config][workload]` holds one value per round.
    pub samples: Vec<Vec<Vec<f64>>>,
}

impl SyscallResults {
    pub fn new(configs: Vec<Config>, workloads: Vec<Workload>) -> SyscallResults {
        let samples = vec![vec![Vec::new(); workloads.len()]; configs.len()];
        SyscallResults {
            configs,
            workloads,
            samples,
        }
    }

    fn find(&self, kind: impl Fn(&ConfigKind) -> bool) -> Option<usize> {
        self.configs.iter().position(|c| kind(&c.kind))
    }

    fn median(&self, c: usize, w: usize) -> Option<f64> {
        median(&self.samples[c][w])
    }

    /// Configuration `a`'s overhead over `b`'s on workload `w`, both over `none`, from the
    /// medians (None: `b` adds nothing measurable), with its interval when the run has one;
    /// None when a configuration has no sample there.
    fn ratio(&self, a: usize, b: usize, none: usize, w: usize) -> Option<RatioCell> {
        let (x, y, base) = (
            self.median(a, w)?,
            self.median(b, w)?,
            self.median(none, w)?,
        );
        let (xs, ys, ns) = (
            &self.samples[a][w],
            &self.samples[b][w],
            &self.samples[none][w],
        );
        Some((overhead_ratio(x, y, base), ratio_interval(xs, ys, ns)))
    }
}

/// A ratio of medians (None: n/a) and its interval.
type RatioCell = (Option<f64>, Option<(f64, f64)>);

/// Which clock a set of results was read from (see workload::Cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Wall,
    Cpu,
}

impl Clock {
    fn title(self) -> &'static str {
        match self {
            Clock::Wall => "wall clock",
            Clock::Cpu => "on-CPU time",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            Clock::Cpu => "on-CPU",
        }
    }

    fn how(self) -> &'static str {
        match self {
            Clock::Wall => {
                "CLOCK_MONOTONIC around the loop: what the program experiences, including any \
                 time the scheduler gave its CPU to another process"
            }
            Clock::Cpu => {
                "CLOCK_THREAD_CPUTIME_ID around the loop: the time the looping thread was on a \
                 CPU, user and kernel, tracing programs included (they run in its context). \
                 Time other processes held the CPU is left out, so on a shared machine these \
                 are the figures to compare"
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct SeriesRow {
    pub daemon: String,
    pub target: u64,
    pub processes: usize,
    pub kernel_map: Option<KernelMap>,
    /// The median over the windows, and the lowest and highest window.
    pub cpu_percent: f64,
    pub cpu_range: (f64, f64),
    pub rss_kib: u64,
    /// A pinned daemon's checkpoint commits at this load.
    pub checkpoint: Option<CheckpointCost>,
}

/// Medians over `samples` consecutive checkpoint commits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckpointCost {
    pub samples: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    pub median_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct HttpRow {
    pub daemon: String,
    pub series: u64,
    pub result: HttpResult,
    /// The daemon's CPU during the load, in % of one CPU.
    pub daemon_cpu_percent: f64,
    /// The daemon's peak RSS (VmHWM) after the load.
    pub peak_rss_kib: u64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub settings: Vec<String>,
    pub notes: Vec<String>,
    /// The same runs read from each clock.
    pub syscalls: Vec<(Clock, SyscallResults)>,
    pub series: Vec<SeriesRow>,
    pub series_window_secs: f64,
    /// Consecutive windows the daemon's CPU is measured over, at each series count.
    pub series_windows: u32,
    pub http: Vec<HttpRow>,
    pub http_notes: Vec<String>,
}

fn ns(v: f64) -> String {
    format!("{v:.0}")
}

fn signed_ns(v: f64) -> String {
    format!("{v:+.0}")
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"))
}

/// `value` and, in parentheses, its interval if there is one.
fn with_interval(value: String, interval: Option<(f64, f64)>) -> String {
    match interval {
        Some((lo, hi)) => format!("{value} ({}–{})", bound(lo), bound(hi)),
        None => value,
    }
}

/// An end of a ratio's interval: unbounded where the reference's cost is within the noise.
fn bound(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "∞".to_string()
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(
        || "–".to_string(),
        |v| {
            if v < 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        },
    )
}

/// This run's section of docs/benchmarks.md (see `machine::merge_section`).
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "{}\n## {} ({})\n",
        section_marker(&m.cpu.key()),
        m.cpu.model_name,
        m.cpu.key()
    );
    let _ = writeln!(
        out,
        "- Machine: {}, {} cores, kernel {}, {}",
        m.cpu.model_name, m.cores, m.kernel, m.os
    );
    let mitigations: Vec<String> = m
        .mitigations
        .iter()
        .map(|(v, status)| format!("{v}: {status}"))
        .collect();
    let _ = writeln!(
        out,
        "- Mitigations that tax calls and returns: {}",
        if mitigations.is_empty() {
            "none reported".to_string()
        } else {
            mitigations.join("; ")
        }
    );
    let _ = writeln!(out, "- Clocksource: {}", m.clocksource);
    let _ = writeln!(out, "- Date: {}; tree: {}", m.date, m.commit);
    let _ = writeln!(
        out,
        "- Load average (1 min) at start / end: {} / {}",
        m.load_before, m.load_after
    );
    let _ = writeln!(out, "- Command: `{}`", r.command);
    for line in &r.settings {
        let _ = writeln!(out, "- {line}");
    }
    for note in &r.notes {
        let _ = writeln!(out, "- Note: {note}");
    }

    for (clock, results) in &r.syscalls {
        render_costs(&mut out, *clock, results, r.syscalls.len() > 1);
    }
    render_ratios(&mut out, &r.syscalls);
    render_goals(&mut out, r);
    render_load(&mut out, r);
    let _ = writeln!(out, "\n{}", super::machine::SECTION_END);
    out
}

fn render_costs(out: &mut String, clock: Clock, s: &SyscallResults, titled: bool) {
    let title = if titled {
        format!(" ({})", clock.title())
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n### Cost per syscall{title}\n\n\
         ns per syscall, or per round trip for the ping-pong workloads (two context switches \
         and four syscalls each: see xtask/src/bench/pingpong.rs), by {}. Each workload runs \
         in a fresh child process. Each cell: the \
         median over the rounds, its overhead over `none` in parentheses, then the \
         lowest–highest per-round value. Configurations were alternated within each round \
         (forward, then backward) so drift of the machine weighs on all alike.\n",
        clock.how()
    );
    let none = s.find(|k| *k == ConfigKind::Nothing);
    table_head(out, &["configuration", "what"], &s.workloads, "---:");
    for (c, config) in s.configs.iter().enumerate() {
        let _ = write!(out, "| {} | {} |", config.name, config.what);
        for w in 0..s.workloads.len() {
            let cell = match (s.median(c, w), min_max(&s.samples[c][w])) {
                (Some(med), Some((lo, hi))) => {
                    let over = match none.and_then(|n| s.median(n, w)) {
                        Some(base) if Some(c) != none => format!(" ({})", signed_ns(med - base)),
                        _ => String::new(),
                    };
                    format!("{}{over}, {}–{}", ns(med), ns(lo), ns(hi))
                }
                _ => "–".to_string(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
}

fn render_ratios(out: &mut String, clocks: &[(Clock, SyscallResults)]) {
    let mut rows = Vec::new();
    let mut spans = Vec::new();
    for (clock, s) in clocks {
        let suffix = if clocks.len() > 1 {
            format!(" ({})", clock.short())
        } else {
            String::new()
        };
        let (r, sp) = ratio_rows(s, &suffix);
        rows.extend(r);
        spans.extend(sp);
    }
    let Some((_, first)) = clocks.first() else {
        return;
    };
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Overhead ratios\n\n\
         `a / b` is (a − none) / (b − none), from the medians above: how many times the cost \
         that `b` adds to a syscall (or round trip) `a` adds. In parentheses, from 3 rounds on, a \
         90% interval by the bootstrap over the rounds (rounds drawn whole with replacement, the \
         ratio of each draw's medians; ∞ where some draws' reference added nothing measurable): \
         a goal is met with confidence where the interval's top is under it. For bpftrace, the \
         ratio of its lowest and highest per-round value follows in parentheses instead (its \
         cost here has been seen to be bimodal). n/a: the reference adds no measurable cost.\n"
    );
    table_head(out, &["ratio"], &first.workloads, "---:");
    for (label, cells) in rows {
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    for span in spans {
        let _ = writeln!(out, "\n{span}");
    }
}

type Row = (String, Vec<String>);

/// A table's head: the `leading` columns, then one per workload, aligned by `align` (`---:`
/// for figures).
fn table_head(out: &mut String, leading: &[&str], workloads: &[Workload], align: &str) {
    for column in leading {
        let _ = write!(out, "| {column} ");
    }
    for w in workloads {
        let _ = write!(out, "| {} ", w.label());
    }
    out.push_str("|\n");
    for _ in leading {
        out.push_str("| --- ");
    }
    for _ in workloads {
        let _ = write!(out, "| {align} ");
    }
    out.push_str("|\n");
}

/// Each of issue 17's goals (goals.rs) against this run: the ratios from the on-CPU figures
/// (the first clock's when there are none), the daemon's CPU from its series row.
fn render_goals(out: &mut String, r: &Report) {
    let Some((clock, s)) = r
        .syscalls
        .iter()
        .find(|(c, _)| *c == Clock::Cpu)
        .or(r.syscalls.first())
    else {
        return;
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut verdicts = Vec::new();
    if let Some(none) = s.find(|k| *k == ConfigKind::Nothing) {
        for g in RATIO_GOALS {
            let reference = match g.reference {
                Reference::Floor => ConfigKind::Floor,
                Reference::Limit => ConfigKind::Limit,
            };
            let (Some(a), Some(b)) = (
                s.configs.iter().position(|c| c.name == g.config),
                s.find(|k| *k == reference),
            ) else {
                continue;
            };
            let cells = (0..s.workloads.len())
                .map(|w| match s.ratio(a, b, none, w) {
                    Some((Some(v), interval)) => {
                        let verdict = Verdict::of(v, interval, g.at_most);
                        verdicts.push(verdict);
                        format!(
                            "{}: {}",
                            verdict.label(),
                            with_interval(ratio(Some(v)), interval)
                        )
                    }
                    Some((None, _)) => "n/a".to_string(),
                    None => "–".to_string(),
                })
                .collect();
            let label = format!("{} / {} ≤ {}", g.config, g.reference.name(), g.at_most);
            rows.push((label, cells));
        }
    }
    let cpu = r
        .series
        .iter()
        .find(|row| row.daemon == CPU_GOAL.daemon && row.target == CPU_GOAL.series);
    if rows.is_empty() && cpu.is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Against the goals\n\n\
         Issue 17's goals (declared in xtask/src/bench/goals.rs), read from this run's {} \
         figures. **met**: the median and its whole interval at or under the goal; **not met**: \
         the median and its whole interval over it; otherwise the run leaves the goal \
         undecided, and says on which side the median fell (met / over at the median). The \
         intervals are those of the ratios above, and the lowest–highest window for the \
         daemon's CPU.\n",
        clock.title()
    );
    if !rows.is_empty() {
        // Verdicts are words: left-aligned.
        table_head(out, &["goal"], &s.workloads, "---");
        for (label, cells) in &rows {
            let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
        }
        let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
        let _ = writeln!(
            out,
            "\nOf {} cells: {} met and {} not met; {} undecided ({} of them met at the median).",
            verdicts.len(),
            count(Verdict::Met),
            count(Verdict::NotMet),
            verdicts.iter().filter(|v| !v.decided()).count(),
            count(Verdict::MetAtMedian),
        );
    }
    let goal = format!(
        "`{}` at {} live series ≤ {}% of a core",
        CPU_GOAL.daemon, CPU_GOAL.series, CPU_GOAL.at_most_percent
    );
    match cpu {
        Some(row) => {
            let verdict = Verdict::of(
                row.cpu_percent,
                Some(row.cpu_range),
                CPU_GOAL.at_most_percent,
            );
            let _ = writeln!(
                out,
                "\nThe daemon, {goal}: {}, {:.2}% ({:.2}–{:.2} over the windows).",
                verdict.label(),
                row.cpu_percent,
                row.cpu_range.0,
                row.cpu_range.1
            );
        }
        None => {
            let _ = writeln!(out, "\nThe daemon, {goal}: not measured in this run.");
        }
    }
}

/// The ratio rows of one clock's results, and a sentence giving bpftrace's per-round range.
fn ratio_rows(s: &SyscallResults, suffix: &str) -> (Vec<Row>, Vec<String>) {
    let mut rows: Vec<Row> = Vec::new();
    let mut spans = Vec::new();
    let Some(none) = s.find(|k| *k == ConfigKind::Nothing) else {
        return (rows, spans);
    };
    let floor = s.find(|k| *k == ConfigKind::Floor);
    let limit = s.find(|k| *k == ConfigKind::Limit);
    let bpftrace = s.find(|k| *k == ConfigKind::Bpftrace);
    let daemons: Vec<usize> = (0..s.configs.len())
        .filter(|&c| matches!(s.configs[c].kind, ConfigKind::Daemon(_)))
        .collect();
    let ratio_row = |a: usize, b: usize| -> Vec<String> {
        (0..s.workloads.len())
            .map(|w| match s.ratio(a, b, none, w) {
                Some((r, interval)) => with_interval(ratio(r), interval),
                None => "–".to_string(),
            })
            .collect()
    };
    for &d in &daemons {
        let name = &s.configs[d].name;
        for (reference, label) in [(floor, "floor"), (limit, "limit")] {
            if let Some(reference) = reference {
                rows.push((format!("{name} / {label}{suffix}"), ratio_row(d, reference)));
            }
        }
    }
    // Issue 17's experiment: each way of keeping the start against the limit, then against
    // its reference.
    let slot = s.find(|k| *k == ConfigKind::SlotParked);
    let task = s.find(|k| *k == ConfigKind::TaskStorage);
    let slot_ts = s.find(|k| *k == ConfigKind::SlotTaskStorage);
    let tid_array = s.find(|k| *k == ConfigKind::TidArray);
    let regs_array = s.find(|k| *k == ConfigKind::RegsArray);
    let ts_entry = s.find(|k| *k == ConfigKind::TaskStorageEntry);
    let experiment = [
        (slot, "slot-parked"),
        (task, "task-storage"),
        (slot_ts, "slot-ts"),
        (tid_array, "tid-array"),
        (regs_array, "regs-array"),
        (ts_entry, "ts-entry"),
    ];
    for (e, name) in experiment {
        if let (Some(e), Some(limit)) = (e, limit) {
            rows.push((format!("{name} / limit{suffix}"), ratio_row(e, limit)));
        }
    }
    for (e, name) in &experiment[1..3] {
        if let (Some(e), Some(slot)) = (e, slot) {
            rows.push((format!("{name} / slot-parked{suffix}"), ratio_row(*e, slot)));
        }
    }
    // The arrays against their reference, the same entry in task storage.
    for (e, name) in &experiment[3..5] {
        if let (Some(e), Some(ts)) = (e, ts_entry) {
            rows.push((format!("{name} / ts-entry{suffix}"), ratio_row(*e, ts)));
        }
    }
    let Some(bt) = bpftrace else {
        return (rows, spans);
    };
    for &d in &daemons {
        // Both ends of bpftrace's per-round range too: its cost here is bimodal.
        let cells = (0..s.workloads.len())
            .map(|w| {
                let (Some(base), Some(dm), Some(bm), Some((lo, hi))) = (
                    s.median(none, w),
                    s.median(d, w),
                    s.median(bt, w),
                    min_max(&s.samples[bt][w]),
                ) else {
                    return "–".to_string();
                };
                format!(
                    "{} ({}–{})",
                    ratio(overhead_ratio(bm, dm, base)),
                    ratio(overhead_ratio(lo, dm, base)),
                    ratio(overhead_ratio(hi, dm, base))
                )
            })
            .collect();
        rows.push((format!("bpftrace / {}{suffix}", s.configs[d].name), cells));
    }
    let parts: Vec<String> = (0..s.workloads.len())
        .filter_map(|w| {
            let base = s.median(none, w)?;
            let (lo, hi) = min_max(&s.samples[bt][w])?;
            Some(format!(
                "{} {} to {} ns",
                s.workloads[w].label(),
                signed_ns(lo - base),
                signed_ns(hi - base)
            ))
        })
        .collect();
    if !parts.is_empty() {
        spans.push(format!(
            "bpftrace's overhead per round{suffix}, lowest to highest: {}.",
            parts.join("; ")
        ));
    }
    (rows, spans)
}

fn map_cell(m: KernelMap) -> String {
    let mut cell = m.entries.to_string();
    if let Some(cap) = m.capacity {
        let _ = write!(cell, " of {cap}");
    }
    if let Some(d) = m.dropped.filter(|&d| d > 0) {
        let _ = write!(cell, ", full: {d} events dropped");
    }
    cell
}

fn render_load(out: &mut String, r: &Report) {
    if !r.series.is_empty() {
        let _ = writeln!(
            out,
            "\n### The daemon draining live series\n\n\
             N processes each call 100 distinct named syscalls that fail at once (a bad file \
             descriptor, pid or size: xtask/src/bench/workload.rs, `FAILING_CALLS`) every \
             100 ms, so every (process, syscall) series gains events between drains. CPU is the daemon's process CPU-time clock (all its \
             threads, to the nanosecond: `clock_getcpuclockid`) over {} consecutive windows of \
             {:.0} s, in % of one CPU: the median, then the lowest–highest window (the machine's \
             noise moves a single window by a tenth of a point, as much as the goals it is read \
             against); RSS is VmRSS at the end of the last window, which includes the \
             daemon's mapping of the kernel's histogram array (35 MiB of kernel memory, counted \
             in docs/kernel-maps.md, not allocated by the daemon). \"in kernel map\" \
             is the daemon's own `kernel_maps` (its series of every process on the host, so \
             above the target by whatever else runs; a full map drops the events of new \
             series).\n",
            r.series_windows, r.series_window_secs
        );
        let _ = writeln!(
            out,
            "| daemon | live series | processes | in kernel map | CPU % | RSS MiB |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for row in &r.series {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2}, {:.2}–{:.2} | {:.1} |",
                row.daemon,
                row.target,
                row.processes,
                row.kernel_map.map_or_else(|| "–".to_string(), map_cell),
                row.cpu_percent,
                row.cpu_range.0,
                row.cpu_range.1,
                row.rss_kib as f64 / 1024.0
            );
        }
    }
    let checkpoints: Vec<(&SeriesRow, CheckpointCost)> = r
        .series
        .iter()
        .filter_map(|row| Some((row, row.checkpoint?)))
        .collect();
    if !checkpoints.is_empty() {
        let _ = writeln!(
            out,
            "\n### Checkpoint commits (daemons with `--pin-path`)\n\n\
             Each drain encodes the exported totals and the readings they rest on and writes them \
             to the pinned CHECKPOINT map (docs/operations.md, \"Restarts\"); the daemon times \
             each commit (`store.checkpoint` in /stats). Consecutive commits at the load above.\n"
        );
        let _ = writeln!(
            out,
            "| daemon | live series | commits | median ms | max ms | size KiB |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (row, c) in checkpoints {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} | {:.0} |",
                row.daemon,
                row.target,
                c.samples,
                c.median_ms,
                c.max_ms,
                c.median_bytes as f64 / 1024.0
            );
        }
    }
    if !r.http.is_empty() || !r.http_notes.is_empty() {
        let _ = writeln!(
            out,
            "\n### HTTP latency under concurrent clients\n\n\
             Each client is a thread of the harness with its own keep-alive connection, sending \
             GETs back to back and reading each full body; latency is request to last byte. \
             Percentiles are nearest-rank.\n"
        );
    }
    if !r.http.is_empty() {
        let _ = writeln!(
            out,
            "| daemon | endpoint | live series | clients | requests | errors | p50 ms | p99 ms | \
             max ms | req/s | KiB/response | daemon CPU % | daemon peak RSS MiB |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | \
             ---: |"
        );
        for row in &r.http {
            let h = &row.result;
            let n = h.latencies_ms.len();
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.0} | {:.1} |",
                row.daemon,
                h.path,
                row.series,
                h.clients,
                n,
                h.errors,
                ms(percentile(&h.latencies_ms, 50.0)),
                ms(percentile(&h.latencies_ms, 99.0)),
                ms(min_max(&h.latencies_ms).map(|(_, hi)| hi)),
                if h.secs > 0.0 { n as f64 / h.secs } else { 0.0 },
                if n > 0 {
                    format!("{:.0}", h.bytes as f64 / n as f64 / 1024.0)
                } else {
                    "–".to_string()
                },
                row.daemon_cpu_percent,
                row.peak_rss_kib as f64 / 1024.0,
            );
        }
    }
    for note in &r.http_notes {
        let _ = writeln!(out, "\n{note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::attach::DaemonVariant;

    fn results(with_bpftrace: bool) -> SyscallResults {
        let mut configs = vec![
            Config::nothing(),
            Config::floor(),
            Config::limit(),
            Config::daemon(DaemonVariant {
                name: "profiler".into(),
                args: vec![],
            }),
        ];
        if with_bpftrace {
            configs.push(Config::bpftrace("bpftrace v0.17.0"));
        }
        let mut s = SyscallResults::new(configs, vec![Workload::Getppid, Workload::MixedIo]);
        // none 90, floor 130, limit 180, profiler 200 on getppid.
        for (c, base) in [90.0, 130.0, 180.0, 200.0, 450.0].iter().enumerate() {
            if c >= s.configs.len() {
                break;
            }
            s.samples[c][0] = vec![base - 1.0, *base, base + 1.0];
            s.samples[c][1] = vec![base * 3.0];
        }
        if with_bpftrace {
            // Bimodal: 340 and 490 per round.
            s.samples[4][0] = vec![340.0, 490.0, 350.0];
        }
        s
    }

    fn report(with_bpftrace: bool) -> Report {
        Report {
            machine: Machine {
                cpu: super::super::machine::CpuKind {
                    vendor: "GenuineIntel".into(),
                    family: "6".into(),
                    model: "167".into(),
                    model_name: "Test CPU @ 1 GHz".into(),
                },
                cores: 2,
                kernel: "6.18.0".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                mitigations: vec![
                    ("spectre_v2".into(), "Mitigation: Retpolines".into()),
                    ("retbleed".into(), "Vulnerable".into()),
                ],
                clocksource: "tsc".into(),
                date: "2026-01-02 03:04 UTC".into(),
                commit: "abc1234".into(),
                load_before: "0.10".into(),
                load_after: "0.20".into(),
            },
            command: "cargo xtask bench --quick".into(),
            settings: vec!["3 rounds".into()],
            notes: vec!["noisy".into()],
            syscalls: vec![(Clock::Wall, results(with_bpftrace))],
            series: vec![SeriesRow {
                daemon: "profiler".into(),
                target: 10_000,
                processes: 100,
                kernel_map: Some(KernelMap {
                    entries: 10_123,
                    capacity: Some(16_384),
                    dropped: None,
                }),
                cpu_percent: 12.34,
                cpu_range: (11.5, 13.25),
                checkpoint: Some(CheckpointCost {
                    samples: 11,
                    median_ms: 1.234,
                    max_ms: 2.5,
                    median_bytes: 512 * 1024,
                }),
                rss_kib: 20 * 1024,
            }],
            series_window_secs: 10.0,
            series_windows: 5,
            http: vec![HttpRow {
                daemon: "profiler".into(),
                series: 10_000,
                result: HttpResult {
                    path: "/stats".into(),
                    clients: 50,
                    latencies_ms: (1..=100).map(f64::from).collect(),
                    errors: 0,
                    first_error: None,
                    bytes: 100 * 2048,
                    secs: 10.0,
                },
                daemon_cpu_percent: 150.4,
                peak_rss_kib: 300 * 1024,
            }],
            http_notes: vec!["`/metrics`: not served (HTTP 404).".into()],
        }
    }

    #[test]
    fn renders_machine_command_and_medians() {
        let md = render(&report(true));
        assert!(
            md.starts_with(
                "<!-- cpu-kind: GenuineIntel family 6 model 167 -->\n\
                 ## Test CPU @ 1 GHz (GenuineIntel family 6 model 167)\n"
            ),
            "{md}"
        );
        assert!(md.trim_end().ends_with("<!-- /cpu-kind -->"), "{md}");
        assert!(
            md.contains("- Machine: Test CPU @ 1 GHz, 2 cores, kernel 6.18.0"),
            "{md}"
        );
        assert!(
            md.contains(
                "- Mitigations that tax calls and returns: spectre_v2: Mitigation: \
                 Retpolines; retbleed: Vulnerable\n- Clocksource: tsc\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("- Date: 2026-01-02 03:04 UTC; tree: abc1234"),
            "{md}"
        );
        assert!(
            md.contains("- Command: `cargo xtask bench --quick`"),
            "{md}"
        );
        assert!(md.contains("- Note: noisy"), "{md}");
        assert!(
            md.contains("| configuration | what | getppid, 1 thread | mixed I/O |"),
            "{md}"
        );
        assert!(
            md.contains("| none | nothing attached | 90, 89–91 | 270, 270–270 |"),
            "{md}"
        );
        assert!(md.contains("| floor | empty raw_tracepoint pair on sys_enter + sys_exit | 130 (+40), 129–131 |"), "{md}");
        assert!(
            md.contains("| profiler | `syscall-profiler serve` | 200 (+110), 199–201 |"),
            "{md}"
        );
        // bpftrace median of 340, 350, 490.
        assert!(
            md.contains("| bpftrace | bpftrace v0.17.0, `hist()` per (pid, syscall)"),
            "{md}"
        );
        assert!(md.contains("350 (+260), 340–490"), "{md}");
    }

    #[test]
    fn renders_overhead_ratios() {
        let md = render(&report(true));
        // (200-90)/(130-90) = 2.75; (200-90)/(180-90) = 1.22; mixed: 330/120, 330/270. The
        // getppid column's 3 rounds move together, so every draw's ratio is the same; the mixed
        // column's single round has no interval.
        assert!(
            md.contains("| profiler / floor | 2.75 (2.75–2.75) | 2.75 |"),
            "{md}"
        );
        assert!(
            md.contains("| profiler / limit | 1.22 (1.22–1.22) | 1.22 |"),
            "{md}"
        );
        // bpftrace: median (350-90)/110 = 2.36, lowest 250/110 = 2.27, highest 400/110 = 3.64.
        assert!(
            md.contains("| bpftrace / profiler | 2.36 (2.27–3.64) |"),
            "{md}"
        );
        assert!(md.contains("getppid, 1 thread +250 to +400 ns"), "{md}");
    }

    #[test]
    fn without_bpftrace_there_is_no_bpftrace_row() {
        let md = render(&report(false));
        assert!(!md.contains("bpftrace /"), "{md}");
        assert!(!md.contains("| bpftrace |"), "{md}");
        assert!(md.contains("| profiler / limit |"), "{md}");
    }

    #[test]
    fn a_reference_adding_nothing_gives_na() {
        let mut r = report(false);
        r.syscalls[0].1.samples[1][0] = vec![90.0];
        let md = render(&r);
        assert!(md.contains("| profiler / floor | n/a |"), "{md}");
    }

    #[test]
    fn each_goal_gets_a_verdict_from_the_ratios_intervals() {
        let md = render(&report(true));
        assert!(md.contains("### Against the goals"), "{md}");
        // Each table's head: words left-aligned, figures right-aligned.
        assert!(
            md.contains("| goal | getppid, 1 thread | mixed I/O |\n| --- | --- | --- |\n"),
            "{md}"
        );
        assert!(
            md.contains("| ratio | getppid, 1 thread | mixed I/O |\n| --- | ---: | ---: |\n"),
            "{md}"
        );
        assert!(
            md.contains(
                "| configuration | what | getppid, 1 thread | mixed I/O |\n\
                 | --- | --- | ---: | ---: |\n"
            ),
            "{md}"
        );
        // Only the wall clock in this run: its figures, said so.
        assert!(
            md.contains("read from this run's wall clock figures"),
            "{md}"
        );
        // getppid: 3 rounds moving together, so 1.22 (1.22–1.22), all over 1.15; mixed I/O: one
        // round, no interval, so the median alone.
        assert!(
            md.contains(
                "| profiler / limit ≤ 1.15 | not met: 1.22 (1.22–1.22) | over at the median: \
                 1.22 |"
            ),
            "{md}"
        );
        // No counts-only or filtered-out daemon in this run: no row for their goals.
        assert!(!md.contains("| counts-only / floor ≤"), "{md}");
        assert!(
            md.contains(
                "Of 2 cells: 0 met and 1 not met; 1 undecided (0 of them met at the median)."
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "The daemon, `profiler` at 10000 live series ≤ 0.5% of a core: not met, 12.34% \
                 (11.50–13.25 over the windows)."
            ),
            "{md}"
        );
    }

    #[test]
    fn the_goals_are_read_from_the_on_cpu_figures_when_there_are_some() {
        let mut r = report(false);
        let mut cpu = results(false);
        cpu.configs.push(Config::daemon(DaemonVariant {
            name: "counts-only".into(),
            args: vec!["--counts-only".into()],
        }));
        // profiler on-CPU: (190-90)/(180-90) = 1.11 on both workloads (mixed I/O 570 against
        // none 270 and limit 540); counts-only (120-90)/(130-90) = 0.75.
        cpu.samples[3][0] = vec![189.0, 190.0, 191.0];
        cpu.samples[3][1] = vec![570.0];
        cpu.samples.push(vec![vec![119.0, 120.0, 121.0], vec![]]);
        r.syscalls.push((Clock::Cpu, cpu));
        r.series[0].cpu_percent = 0.45;
        r.series[0].cpu_range = (0.41, 0.52);
        let md = render(&r);
        assert!(
            md.contains("read from this run's on-CPU time figures"),
            "{md}"
        );
        assert!(
            md.contains(
                "| profiler / limit ≤ 1.15 | met: 1.11 (1.11–1.11) | met at the median: 1.11 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| counts-only / floor ≤ 1.1 | met: 0.75 (0.75–0.75) | – |"),
            "{md}"
        );
        assert!(
            md.contains(
                "Of 3 cells: 2 met and 0 not met; 1 undecided (1 of them met at the median)."
            ),
            "{md}"
        );
        assert!(
            md.contains("≤ 0.5% of a core: met at the median, 0.45% (0.41–0.52 over the windows)."),
            "{md}"
        );
        assert_eq!(md.matches("### Against the goals").count(), 1, "{md}");
    }

    #[test]
    fn a_run_without_the_goals_series_count_says_so() {
        let mut r = report(false);
        r.series[0].target = 1_000;
        let md = render(&r);
        assert!(
            md.contains("≤ 0.5% of a core: not measured in this run."),
            "{md}"
        );
    }

    #[test]
    fn two_clocks_get_a_section_and_ratio_rows_each() {
        let mut r = report(true);
        let mut cpu = results(true);
        cpu.samples[3][0] = vec![180.0]; // profiler on-CPU: (180-90)/(130-90) = 2.25
        r.syscalls.push((Clock::Cpu, cpu));
        let md = render(&r);
        assert!(md.contains("## Cost per syscall (wall clock)"), "{md}");
        assert!(md.contains("## Cost per syscall (on-CPU time)"), "{md}");
        assert!(md.contains("CLOCK_THREAD_CPUTIME_ID"), "{md}");
        assert!(
            md.contains("| profiler / floor (wall) | 2.75 (2.75–2.75) |"),
            "{md}"
        );
        assert!(md.contains("| profiler / floor (on-CPU) | 2.25 |"), "{md}");
        assert!(md.contains("| bpftrace / profiler (on-CPU) |"), "{md}");
        assert!(
            md.contains("bpftrace's overhead per round (on-CPU), lowest to highest"),
            "{md}"
        );
        assert_eq!(md.matches("## Overhead ratios").count(), 1, "{md}");
    }

    #[test]
    fn the_task_storage_experiment_gets_its_ratio_rows() {
        let mut r = report(false);
        let s = &mut r.syscalls[0].1;
        s.configs.push(Config::slot_parked());
        s.configs.push(Config::task_storage());
        // slot-parked 195, task-storage 190 on getppid: (105 and 100) / the limit's 90.
        s.samples.push(vec![vec![195.0], vec![]]);
        s.samples.push(vec![vec![190.0], vec![]]);
        let md = render(&r);
        assert!(md.contains("| slot-parked / limit | 1.17 | – |"), "{md}");
        assert!(md.contains("| task-storage / limit | 1.11 | – |"), "{md}");
        assert!(
            md.contains("| task-storage / slot-parked | 0.95 | – |"),
            "{md}"
        );
    }

    #[test]
    fn the_tid_array_experiment_is_compared_with_its_task_storage_reference() {
        let mut r = report(false);
        let s = &mut r.syscalls[0].1;
        s.configs.push(Config::tid_array());
        s.configs.push(Config::task_storage_entry());
        // tid-array 170, ts-entry 190 on getppid: (80 and 100) over none's 90.
        s.samples.push(vec![vec![170.0], vec![]]);
        s.samples.push(vec![vec![190.0], vec![]]);
        let md = render(&r);
        assert!(md.contains("| tid-array / ts-entry | 0.80 | – |"), "{md}");
        assert!(md.contains("| ts-entry / limit | 1.11 | – |"), "{md}");
        assert!(!md.contains("tid-array / slot-parked"), "{md}");
    }

    #[test]
    fn a_full_kernel_map_says_so() {
        let full = KernelMap {
            entries: 16_384,
            capacity: Some(16_384),
            dropped: Some(42),
        };
        assert_eq!(map_cell(full), "16384 of 16384, full: 42 events dropped");
        let bare = KernelMap {
            entries: 7,
            capacity: None,
            dropped: Some(0),
        };
        assert_eq!(map_cell(bare), "7");
    }

    #[test]
    fn renders_series_and_http() {
        let md = render(&report(false));
        assert!(
            md.contains("| profiler | 10000 | 100 | 10123 of 16384 | 12.34, 11.50–13.25 | 20.0 |"),
            "{md}"
        );
        // 100 latencies 1..=100 ms: p50 50, p99 99, max 100; 10 req/s; 2 KiB each.
        assert!(
            md.contains(
                "| profiler | `/stats` | 10000 | 50 | 100 | 0 | 50 | 99 | 100 | 10.0 | 2 |"
            ),
            "{md}"
        );
        assert!(md.contains("`/metrics`: not served (HTTP 404)."), "{md}");
        assert!(
            md.contains("| profiler | 10000 | 11 | 1.23 | 2.50 | 512 |"),
            "{md}"
        );
    }
}
