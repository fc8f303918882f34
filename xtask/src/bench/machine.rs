//! The machine a run measured, and docs/benchmarks.md as one section per CPU kind.
//!
//! The same tree costs very different amounts on different CPUs: where the kernel mitigates
//! Spectre v2 with retpolines, or AMD's return-address predictor with "safe RET", every call and
//! return (in the kernel and in BPF programs) is dearer. A run therefore records what decides
//! that, and replaces only its own CPU kind's section of the report.

use std::{path::Path, process::Command};

/// The CPU by what `/proc/cpuinfo` says of its first processor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuKind {
    pub vendor: String,
    pub family: String,
    pub model: String,
    pub model_name: String,
}

impl CpuKind {
    pub fn parse(cpuinfo: &str) -> CpuKind {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| "?".into())
        };
        CpuKind {
            vendor: field("vendor_id"),
            family: field("cpu family"),
            model: field("model"),
            model_name: field("model name"),
        }
    }

    /// What tells CPU kinds apart in the report: "GenuineIntel family 6 model 167".
    pub fn key(&self) -> String {
        format!(
            "{} family {} model {}",
            self.vendor, self.family, self.model
        )
    }
}

/// The entries of /sys/devices/system/cpu/vulnerabilities whose mitigations tax calls and
/// returns (retpolines, return thunks, RSB filling, safe RET), in the order reported. The last
/// is absent on older kernels.
pub const CALL_RETURN_MITIGATIONS: [&str; 4] = [
    "spectre_v2",
    "spec_rstack_overflow",
    "retbleed",
    "indirect_target_selection",
];

#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu: CpuKind,
    pub cores: usize,
    pub kernel: String,
    pub os: String,
    /// (vulnerability, the kernel's status line) for each of [`CALL_RETURN_MITIGATIONS`]
    /// the kernel reports.
    pub mitigations: Vec<(String, String)>,
    pub clocksource: String,
    pub date: String,
    pub commit: String,
    pub load_before: String,
    pub load_after: String,
}

/// The busy and total time of all CPUs so far, in clock ticks, from the `cpu` line of
/// /proc/stat (`user nice system idle iowait irq softirq steal …`): busy is all but idle and
/// iowait.
pub fn parse_proc_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// How many CPUs' worth of work the machine did over `window` (the caller sleeping): what
/// else runs while the bench is about to measure. The load average cannot tell it: its
/// minute includes the bench's own daemon build and attach pass just before.
pub fn busy_cpus(window: std::time::Duration, cores: usize) -> Option<f64> {
    let read = || parse_proc_stat_cpu(&std::fs::read_to_string("/proc/stat").ok()?);
    let (b0, t0) = read()?;
    std::thread::sleep(window);
    let (b1, t1) = read()?;
    Some(busy_share(b1 - b0, t1 - t0) * cores as f64)
}

/// The busy share of `total` ticks.
pub fn busy_share(busy: u64, total: u64) -> f64 {
    busy as f64 / total.max(1) as f64
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The tree at `root` by its short commit, "with uncommitted changes" when files other than
/// `own_outputs` (which the run itself rewrites) differ from it.
pub fn tree(root: &Path, own_outputs: &[&str]) -> String {
    let commit =
        output(
            Command::new("git")
                .current_dir(root)
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_else(|| "unknown".into());
    let mut status = Command::new("git");
    status
        .current_dir(root)
        .args(["status", "--porcelain", "--", "."]);
    for path in own_outputs {
        status.arg(format!(":!{path}"));
    }
    if output(&mut status).is_some_and(|s| !s.is_empty()) {
        format!("{commit} with uncommitted changes")
    } else {
        commit
    }
}

pub fn machine(root: &Path) -> Machine {
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let mitigations = CALL_RETURN_MITIGATIONS
        .iter()
        .filter_map(|v| {
            let status = read(&format!("/sys/devices/system/cpu/vulnerabilities/{v}"));
            (!status.is_empty()).then(|| (v.to_string(), status))
        })
        .collect();
    Machine {
        cpu: CpuKind::parse(&read("/proc/cpuinfo")),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease"),
        os,
        mitigations,
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        date: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_else(|| "unknown date".into()),
        commit: tree(root, &["docs/benchmarks.md"]),
        load_before: loadavg(),
        load_after: String::new(),
    }
}

/// The head of docs/benchmarks.md, above the sections.
const PREAMBLE: &str = "# Benchmarks\n\n\
Written by `cargo xtask bench` (xtask/src/bench/); re-run it to refresh this file rather than \
editing it. One section per CPU kind (vendor, family and model): a run replaces the section of \
its own CPU kind and keeps the others, because figures taken on different CPUs, under different \
mitigations, do not compare. Costs that do not depend on the CPU (BPF instructions and helper \
calls per program path) are in [performance.md](performance.md).\n";

const SECTION_START: &str = "<!-- cpu-kind: ";
pub const SECTION_END: &str = "<!-- /cpu-kind -->";

/// The first line of the section of CPU kind `key`.
pub fn section_marker(key: &str) -> String {
    format!("{SECTION_START}{key} -->")
}

/// The sections of a report file: (CPU kind key, whole section text including its markers).
/// Text outside sections (the preamble, or a file from before sections existed) is dropped.
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(SECTION_START) {
        let from = &rest[start..];
        let Some(key_end) = from.find(" -->") else {
            break;
        };
        let key = from[SECTION_START.len()..key_end].to_string();
        let end = from
            .find(SECTION_END)
            .map_or(from.len(), |e| e + SECTION_END.len());
        out.push((key, from[..end].trim_end().to_string()));
        rest = &from[end..];
    }
    out
}

/// The report file with `section` (rendered by `report::render`, starting with its marker) in
/// place of the section of the same CPU kind in `existing`, or after the others.
pub fn merge_section(existing: &str, key: &str, section: &str) -> String {
    let mut kept = sections(existing);
    let new = section.trim_end().to_string();
    match kept.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = new,
        None => kept.push((key.to_string(), new)),
    }
    let mut doc = PREAMBLE.to_string();
    for (_, text) in kept {
        doc.push('\n');
        doc.push_str(&text);
        doc.push('\n');
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_is_all_but_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 0 5 0 0 0\ncpu0 50 2 25 400 20 0 3 0 0 0\n";
        assert_eq!(parse_proc_stat_cpu(stat), Some((160, 1000)));
        assert_eq!(parse_proc_stat_cpu("cpu0 1 2 3\n"), None);
        assert_eq!(busy_share(160, 1000), 0.16);
        assert!(busy_cpus(std::time::Duration::from_millis(50), 2).is_some());
    }

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
        model\t\t: 17\nmodel name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu\n\n\
        processor\t: 1\nvendor_id\t: Other\n";

    #[test]
    fn cpu_kind_is_the_first_processors() {
        let k = CpuKind::parse(CPUINFO);
        assert_eq!(k.vendor, "AuthenticAMD");
        assert_eq!(k.model_name, "AMD EPYC 9R14 96-Core Processor");
        assert_eq!(k.key(), "AuthenticAMD family 25 model 17");
        assert_eq!(CpuKind::parse("").key(), "? family ? model ?");
    }

    fn section(key: &str, body: &str) -> String {
        format!(
            "{}\n## {key}\n\n{body}\n{SECTION_END}\n",
            section_marker(key)
        )
    }

    #[test]
    fn a_run_replaces_its_own_kind_and_keeps_the_others() {
        let intel = "GenuineIntel family 6 model 167";
        let amd = "AuthenticAMD family 25 model 17";
        // A file from before sections: its text goes, the new section comes.
        let doc = merge_section(
            "# Benchmarks\n\nold figures\n",
            intel,
            &section(intel, "one"),
        );
        assert!(doc.starts_with(PREAMBLE), "{doc}");
        assert!(!doc.contains("old figures"), "{doc}");
        let doc = merge_section(&doc, amd, &section(amd, "quoted"));
        let doc = merge_section(&doc, intel, &section(intel, "two"));
        assert_eq!(sections(&doc).len(), 2, "{doc}");
        assert!(!doc.contains("one"), "{doc}");
        // Order is kept: the Intel section stays first, replaced in place.
        let (i, a) = (doc.find("two").unwrap(), doc.find("quoted").unwrap());
        assert!(i < a, "{doc}");
        // Merging is stable: the same run again changes nothing.
        assert_eq!(merge_section(&doc, intel, &section(intel, "two")), doc);
    }
}
