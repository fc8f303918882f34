//! `bench --bpf-stats`: each configuration's BPF programs' own run time, from the kernel's
//! statistics (`kernel.bpf_stats_enabled`: every program run is timed, and each program's fdinfo
//! shows `run_time_ns` and `run_cnt`), read before and after every workload. On a shared or
//! noisy machine the syscall timings move by tens of ns between runs, where a program's mean
//! run time moves by a few: this is how two ways of doing the same work are told apart when
//! they differ by one helper call. The statistics add two clock reads to every run (the same
//! for every program), and to the syscall timings of the same run, which are then not the
//! overheads to quote.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::stats::median;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's statistics switched on while this lives; dropping it restores the setting.
pub struct Enabled {
    before: String,
}

impl Enabled {
    pub fn new() -> Result<Enabled> {
        let before = std::fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(Enabled { before })
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.before);
    }
}

/// Cumulative (runs, ns) per program name of process `pid`'s BPF programs (the programs of one
/// configuration: the harness's own, or a daemon's).
pub fn snapshot(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut by_name = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        // Links show the program id too, but no statistics.
        let (Some(id), Some(ns), Some(runs)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let name = crate::bpfcost::kernel::program(id as u32)?.0.name;
        let total = by_name.entry(name).or_insert((0, 0));
        total.0 += runs;
        total.1 += ns;
    }
    Ok(by_name)
}

/// ns per run of each program between two snapshots (programs that ran at all).
pub fn between(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> Vec<(String, f64)> {
    after
        .iter()
        .filter_map(|(name, &(runs, ns))| {
            let (runs0, ns0) = before.get(name).copied().unwrap_or((0, 0));
            let runs = runs.checked_sub(runs0)?;
            (runs > 0).then(|| (name.clone(), (ns - ns0) as f64 / runs as f64))
        })
        .collect()
}

/// ns per run, one value per round, by (configuration, program) and workload.
#[derive(Default)]
pub struct ProgStats {
    pub samples: BTreeMap<(usize, String), Vec<Vec<f64>>>,
}

impl ProgStats {
    pub fn add(
        &mut self,
        config: usize,
        workload: usize,
        workloads: usize,
        ns: Vec<(String, f64)>,
    ) {
        for (program, per_run) in ns {
            self.samples
                .entry((config, program))
                .or_insert_with(|| vec![Vec::new(); workloads])[workload]
                .push(per_run);
        }
    }

    /// A markdown table: medians over the rounds, with the lowest–highest per-round value.
    pub fn render(&self, configs: &[String], workloads: &[String]) -> String {
        let mut out = String::from(
            "### BPF programs' own run time (`--bpf-stats`)\n\nns per program run, from the \
             kernel's statistics (`kernel.bpf_stats_enabled`, `run_time_ns / run_cnt` of each \
             program, read before and after every workload): the median over the rounds, then \
             the lowest–highest per-round value. The statistics add two clock reads to every \
             run, for every program alike, and to this run's syscall timings above.\n\n",
        );
        out.push_str(&format!(
            "| configuration | program | {} |\n| --- | --- |{}\n",
            workloads.join(" | "),
            " ---: |".repeat(workloads.len())
        ));
        for ((c, program), per_workload) in &self.samples {
            let cells: Vec<String> = per_workload
                .iter()
                .map(|v| match (median(v), v.iter().copied().reduce(f64::min)) {
                    (Some(m), Some(lo)) => {
                        let hi = v.iter().copied().fold(f64::MIN, f64::max);
                        format!("{m:.0}, {lo:.0}–{hi:.0}")
                    }
                    _ => "–".to_string(),
                })
                .collect();
            out.push_str(&format!(
                "| {} | `{program}` | {} |\n",
                configs[*c],
                cells.join(" | ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_run_time_is_the_growth_of_both_counters() {
        let before = BTreeMap::from([("sys_enter".to_string(), (1000, 50_000))]);
        let after = BTreeMap::from([
            ("sys_enter".to_string(), (3000, 250_000)),
            ("sys_exit".to_string(), (0, 0)),
        ]);
        assert_eq!(
            between(&before, &after),
            vec![("sys_enter".to_string(), 100.0)]
        );
    }

    #[test]
    fn the_table_has_a_median_and_range_per_workload() {
        let mut s = ProgStats::default();
        for ns in [120.0, 100.0, 110.0] {
            s.add(1, 0, 2, vec![("sys_exit_tid".into(), ns)]);
        }
        let md = s.render(
            &["none".into(), "tid-array".into()],
            &["getppid".into(), "ping-pong".into()],
        );
        assert!(
            md.contains("| tid-array | `sys_exit_tid` | 110, 100–120 | – |"),
            "{md}"
        );
    }
}
