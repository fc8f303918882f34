//! record's report: an `strace -c` table (plus p99), or JSON, of the whole recording and of each
//! process.

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
    /// The report of `members` (sorted by key), whose totals are `host`'s when the whole host
    /// was recorded: those also hold processes already retired from the store.
    pub fn build(
        members: &[&Process],
        host: Option<&BTreeMap<SyscallKey, SyscallTotals>>,
        elapsed: Duration,
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
