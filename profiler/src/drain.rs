//! The only code that touches the kernel maps: on every interval it reads them, turns what
//! changed into deltas and applies them to the store.
//!
//! Processes are retired in two steps so no event is lost between the last read and the delete:
//! the drain that first sees a process's exit reads it and marks it exited; the next drain reads
//! it once more and only then deletes its entries from the kernel maps.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result};
use profiler_common::{
    Hist, HistKey, ProcInfo, COUNTER_HISTS_FULL, COUNTER_PROCS_FULL, COUNTER_STARTS_FULL,
    COUNTER_UNMATCHED_EXITS,
};

use crate::{
    bpf::Maps,
    histogram::Delta,
    store::{KernelCounters, Store},
};

pub struct Drain {
    maps: Maps,
    /// Each kernel histogram as of the previous read.
    last: HashMap<HistKey, Hist>,
    /// Processes seen exited by the previous drain: deleted from the maps after this read.
    retiring: HashSet<u32>,
}

/// What one kernel histogram gained between two reads. The kernel's 32-bit counts wrap; the
/// wrapping difference is exact as long as fewer than 2^32 events land in one bucket between
/// two drains.
pub fn delta(old: Option<&Hist>, new: &Hist) -> Delta {
    let (old_errors, old_total) = old.map_or((0, 0), |o| (o.errors, o.total_ns));
    let buckets = new
        .buckets
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| {
            let before = old.map_or(0, |o| o.buckets[i]);
            let d = n.wrapping_sub(before);
            (d != 0).then_some((i, u64::from(d)))
        })
        .collect();
    Delta {
        errors: u64::from(new.errors.wrapping_sub(old_errors)),
        total_ns: new.total_ns.wrapping_sub(old_total),
        buckets,
    }
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Drain {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            last: HashMap::new(),
            retiring: HashSet::new(),
        }
    }

    pub fn run_once(&mut self, store: &RwLock<Store>) -> Result<()> {
        let procs: Vec<(u32, ProcInfo)> = self
            .maps
            .procs
            .iter()
            .collect::<Result<_, _>>()
            .context("reading PROCS")?;
        let names: HashMap<u32, &ProcInfo> = procs.iter().map(|(pid, info)| (*pid, info)).collect();

        let mut deltas = Vec::new();
        let mut keys_by_pid: HashMap<u32, Vec<HistKey>> = HashMap::new();
        for entry in self.maps.hists.iter() {
            let (key, hist) = entry.context("reading HISTS")?;
            let d = delta(self.last.get(&key), &hist);
            if !d.is_empty() {
                deltas.push((key, d));
            }
            self.last.insert(key, hist);
            keys_by_pid.entry(key.tgid).or_default().push(key);
        }

        // A process has exited when the kernel stamped its leader's exit, or, if its name could
        // not be recorded (PROCS full), when /proc no longer has it.
        let exited: HashSet<u32> = keys_by_pid
            .keys()
            .copied()
            .filter(|pid| match names.get(pid) {
                Some(info) => info.exit_ns != 0,
                None => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            })
            .collect();

        let counters = self.read_counters(keys_by_pid.values().map(Vec::len).sum())?;
        let now = (Instant::now(), SystemTime::now());
        {
            let mut store = store.write().unwrap_or_else(|e| e.into_inner());
            for (key, d) in &deltas {
                store.add(key.tgid, key.nr, d);
            }
            for pid in keys_by_pid.keys() {
                match names.get(pid) {
                    Some(info) => store.name(*pid, &comm_string(&info.comm)),
                    None => {
                        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                            store.name(*pid, comm.trim_end());
                        }
                    }
                }
            }
            for pid in &exited {
                store.mark_exited(*pid, now);
            }
            store.expire(now.0);
            store.kernel = counters;
            store.drains += 1;
            store.last_drain = Some(now.1);
        }

        for pid in std::mem::take(&mut self.retiring) {
            for key in keys_by_pid.remove(&pid).unwrap_or_default() {
                // Already gone is fine: the goal is that it is gone.
                let _ = self.maps.hists.remove(&key);
                self.last.remove(&key);
            }
            let _ = self.maps.procs.remove(&pid);
        }
        self.retiring = exited;
        Ok(())
    }

    fn read_counters(&self, hists_entries: usize) -> Result<KernelCounters> {
        let sum = |i: u32| -> Result<u64> {
            let per_cpu = self.maps.counters.get(&i, 0).context("reading COUNTERS")?;
            Ok(per_cpu.iter().sum())
        };
        Ok(KernelCounters {
            hists_full: sum(COUNTER_HISTS_FULL)?,
            procs_full: sum(COUNTER_PROCS_FULL)?,
            starts_full: sum(COUNTER_STARTS_FULL)?,
            unmatched_exits: sum(COUNTER_UNMATCHED_EXITS)?,
            hists_entries: hists_entries as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::BUCKETS;

    fn hist(total: u64, errors: u32, buckets: &[(usize, u32)]) -> Hist {
        let mut h = Hist {
            total_ns: total,
            errors,
            _pad: 0,
            buckets: [0; BUCKETS],
        };
        for &(i, n) in buckets {
            h.buckets[i] = n;
        }
        h
    }

    #[test]
    fn first_read_is_the_whole_value() {
        let d = delta(None, &hist(900, 2, &[(10, 3)]));
        assert_eq!(d.buckets, vec![(10, 3)]);
        assert_eq!((d.errors, d.total_ns), (2, 900));
    }

    #[test]
    fn only_changed_buckets_appear() {
        let old = hist(900, 2, &[(10, 3), (20, 1)]);
        let new = hist(1500, 2, &[(10, 3), (20, 4)]);
        let d = delta(Some(&old), &new);
        assert_eq!(d.buckets, vec![(20, 3)]);
        assert_eq!((d.errors, d.total_ns), (0, 600));
        assert!(delta(Some(&new), &new).is_empty());
    }

    #[test]
    fn wrapped_32_bit_counts_give_the_true_difference() {
        let old = hist(0, u32::MAX - 1, &[(5, u32::MAX - 2)]);
        let new = hist(0, 3, &[(5, 4)]);
        let d = delta(Some(&old), &new);
        assert_eq!(d.buckets, vec![(5, 7)]);
        assert_eq!(d.errors, 5);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(b"bash");
        assert_eq!(comm_string(&c), "bash");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
