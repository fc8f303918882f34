//! record's report: an `strace -c` table (with both of strace's times, and p99), or JSON, of the
//! whole recording and of each process.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    store::{histogram::Histogram, Process, SyscallKey, SyscallTotals},
    syscalls::{self, Abi},
};

#[derive(Serialize, Default)]
pub struct Report {
    pub duration_seconds: f64,
    /// The command recorded, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `--pid`'s process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The command's process (its calls from its exec on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Fork events the kernel dropped (descendants forked then may be missing).
    pub lost_process_events: u64,
    /// The most frequent arguments of failing calls (views/failing_args.rs), as lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing_paths: Vec<String>,
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
    /// Share of the wall time of all calls.
    pub percent_time: f64,
    /// Wall time: from entry to return, summed over the calls (`strace -c -w`).
    pub total_ns: u64,
    /// System time: the part of `total_ns` on a CPU, in the kernel (`strace -c`). Absent when
    /// the kernel's BTF lacks what the split reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_ns: Option<u64>,
    /// Mean wall time.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_ns: Option<u64>,
    pub syscalls: Vec<Row>,
}

/// The rows of `totals`, and their total; `split` says whether the histograms' time split is
/// measured (else there is no system time).
fn rows(totals: &Totals, split: bool) -> (Vec<Row>, Row) {
    let system = |h: &Histogram| split.then(|| h.on_cpu_ns());
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
            system_ns: system(h),
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
        system_ns: system(&all),
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
    /// The report of `members` (sorted by key), whose totals are `host`'s when the whole host
    /// was recorded: those also hold processes already retired from the store.
    pub fn build(
        members: &[&Process],
        host: Option<&BTreeMap<SyscallKey, SyscallTotals>>,
        elapsed: Duration,
        split: bool,
    ) -> Report {
        let mut all = Totals::new();
        match host {
            Some(system) => {
                for (k, t) in system {
                    all.insert(
                        *k,
                        (
                            t.hist.clone(),
                            t.errnos.iter().map(|(&e, &n)| (e, n)).collect(),
                        ),
                    );
                }
            }
            None => members.iter().for_each(|p| add_process(&mut all, p)),
        }
        let (syscalls, total) = rows(&all, split);
        let processes = members
            .iter()
            .filter(|p| p.total.count > 0)
            .map(|p| {
                let mut own = Totals::new();
                add_process(&mut own, p);
                let (syscalls, total) = rows(&own, split);
                ProcessReport {
                    pid: p.key.pid,
                    comm: p.comm.clone(),
                    calls: total.calls,
                    errors: total.errors,
                    total_ns: total.total_ns,
                    system_ns: total.system_ns,
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

    /// `strace -c`'s layout, with both of its times (wall, as `-w` gives, and system, its
    /// default) and p99, under a line that says what the times are.
    pub fn table(&self) -> String {
        let mut s = String::from(TIMES);
        s.push_str(HEADER);
        s.push_str(RULE);
        for r in &self.syscalls {
            let name = match r.abi {
                Some(abi) if abi != Abi::Native => format!("{} [{}]", r.name, abi.name()),
                _ => r.name.clone(),
            };
            s.push_str(&line(r, &name));
        }
        s.push_str(RULE);
        s.push_str(&line(&self.total, "total"));
        if !self.failing_paths.is_empty() {
            s.push_str("\ntop failing paths (calls, errno, syscall, process, path or address)\n");
            for l in &self.failing_paths {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// The table's first line.
pub const TIMES: &str = "wall: entry to return (strace -c -w); system: on a CPU in the kernel \
                         (strace -c); % time, usecs/call and p99 are of wall time\n";
pub const HEADER: &str =
    "% time    wall (s)  system (s)  usecs/call     calls    errors  p99(usecs) syscall\n";
const RULE: &str = "------ ----------- ----------- ----------- --------- --------- ----------- \
                    ----------------\n";

/// One row of the table; blank where a count is 0, as `strace -c` leaves it.
fn line(r: &Row, name: &str) -> String {
    let errors = if r.errors == 0 {
        String::new()
    } else {
        r.errors.to_string()
    };
    let p99 = r
        .p99_ns
        .map_or(String::new(), |ns| format!("{:.1}", ns as f64 / 1000.0));
    let system = r
        .system_ns
        .map_or("n/a".to_string(), |ns| format!("{:.6}", ns as f64 / 1e9));
    format!(
        "{:6.2} {:11.6} {:>11} {:11} {:9} {:>9} {:>11} {}\n",
        r.percent_time,
        r.total_ns as f64 / 1e9,
        system,
        r.usecs_per_call,
        r.calls,
        errors,
        p99,
        name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::histogram::Delta;

    fn hist(n: u64, each_ns: u64, errors: u64) -> Histogram {
        let mut h = Histogram::default();
        h.add(&Delta {
            errors,
            total_ns: n * each_ns,
            split: Default::default(),
            buckets: vec![(profiler_common::bucket_index(each_ns), n)],
        });
        h
    }

    fn hist_split(n: u64, each_ns: u64, errors: u64, off_cpu_ns: u64) -> Histogram {
        let mut h = hist(n, each_ns, errors);
        h.split.blocked_ns = off_cpu_ns;
        h
    }

    /// The table's rows after its first three lines, split at the fixed columns: % time, wall,
    /// system, usecs/call, calls, errors, p99, name.
    fn columns(line: &str) -> Vec<&str> {
        let cuts = [0, 6, 18, 30, 42, 52, 62, 74];
        let mut out: Vec<&str> = cuts.windows(2).map(|w| line[w[0]..w[1]].trim()).collect();
        out.push(&line[75..]);
        out
    }

    #[test]
    fn table_has_strace_columns_sorted_by_wall_time() {
        let mut t = Totals::new();
        let key = |nr| SyscallKey {
            abi: Abi::Native,
            nr,
        };
        t.insert(key(110), (hist(1000, 60, 0), BTreeMap::new()));
        t.insert(
            key(35),
            (hist_split(5, 2_000_000, 0, 9_990_000), BTreeMap::new()),
        );
        t.insert(key(257), (hist(100, 300, 100), BTreeMap::from([(2, 100)])));
        let (syscalls, total) = rows(&t, true);
        let report = Report {
            syscalls,
            total,
            ..Default::default()
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("wall: entry to return (strace -c -w); system: on a CPU"));
        assert_eq!(
            lines[1],
            "% time    wall (s)  system (s)  usecs/call     calls    errors  p99(usecs) syscall"
        );
        for l in &lines[1..] {
            // Every line has its columns where the header has them.
            for at in [6, 18, 30, 42, 52, 62, 74] {
                assert_eq!(&l[at..=at], " ", "column boundary {at} of {l:?}");
            }
        }
        let rows: Vec<Vec<&str>> = lines[3..6].iter().map(|l| columns(l)).collect();
        let names: Vec<&str> = rows.iter().map(|r| r[7]).collect();
        let want: Vec<String> = [35, 110, 257]
            .iter()
            .map(|&nr| syscalls::name(Abi::Native, nr))
            .collect();
        assert_eq!(names, want);
        // nanosleep: 10 ms of wall time, all but 10 µs of it blocked.
        assert_eq!(&rows[0][1..3], &["0.010000", "0.000010"]);
        assert_eq!(&rows[2][4..6], &["100", "100"]);
        assert_eq!(rows[1][5], "", "no errors column text when there are none");
        let last = columns(lines[7]);
        assert_eq!(last[0], "100.00");
        assert_eq!(&last[4..6], &["1105", "100"]);
        assert_eq!(last[7], "total");
        assert_eq!(report.total.errnos.len(), 0);
    }

    #[test]
    fn without_the_split_system_time_is_not_made_up() {
        let mut t = Totals::new();
        let key = SyscallKey {
            abi: Abi::Native,
            nr: 0,
        };
        t.insert(key, (hist(3, 1000, 0), BTreeMap::new()));
        let (syscalls, total) = rows(&t, false);
        assert_eq!(total.system_ns, None);
        let report = Report {
            syscalls,
            total,
            ..Default::default()
        };
        let table = report.table();
        assert_eq!(columns(table.lines().nth(3).unwrap())[2], "n/a");
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["total"].get("system_ns").is_none());
    }
}
