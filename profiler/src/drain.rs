//! The only code that touches the kernel maps: on every interval it reads them, turns what
//! changed into deltas and applies them to the store.
//!
//! Processes are retired in two steps so no event is lost between the last read and the delete:
//! the drain that first sees a process's exit reads it and marks it exited; the next drain reads
//! it once more and only then deletes its entries from the kernel maps.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    sync::RwLock,
    time::{Instant, SystemTime},
};

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use aya::{maps::IterableMap, Pod};
use profiler_common::{
    ErrnoKey, Hist, HistKey, LedgerErrnoKey, LedgerKey, LedgerTotals, ProcInfo, Start, ABI_COMPAT,
    ABI_NATIVE, BUCKETS, COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL, COUNTER_PROCS_FULL,
    COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS,
};
use tracing::warn;

use crate::{
    bpf::{Ledger, Maps},
    bpf_stats,
    cgroups::{self, Resolver},
    histogram::Delta,
    map_batch::{self, Batch},
    store::{InFlight, KernelCounters, ProcKey, Store, SyscallKey, SyscallTotals},
    syscalls::Abi,
};

pub struct Drain {
    maps: Maps,
    /// Each kernel counter as of the previous read, to turn cumulative values into deltas.
    last_hists: HashMap<HistKey, Hist>,
    last_errnos: HashMap<ErrnoKey, u32>,
    /// Processes seen exited by the previous drain: deleted from the maps after this read.
    retiring: HashSet<ProcKey>,
    cgroups: Resolver,
    /// Read buffers, kept across drains (see map_batch.rs).
    hists: Batch<HistKey, Hist>,
    errnos: Batch<ErrnoKey, u32>,
    procs: Batch<profiler_common::ProcKey, ProcInfo>,
    starts: Batch<u32, Start>,
}

/// What one kernel histogram gained between two reads. The kernel's 32-bit counts wrap; the
/// wrapping difference is exact as long as fewer than 2^32 events land in one bucket between
/// two drains.
pub fn delta(old: Option<&Hist>, new: &Hist) -> Delta {
    const NEVER_READ: [u32; BUCKETS] = [0; BUCKETS];
    let (old_errors, old_total) = old.map_or((0, 0), |o| (o.errors, o.total_ns));
    // One plain pass over two arrays (no per-bucket Option): the drain runs this for every
    // (process, syscall) pair on every interval.
    let before = old.map_or(&NEVER_READ, |o| &o.buckets);
    let buckets = new
        .buckets
        .iter()
        .zip(before)
        .enumerate()
        .filter_map(|(i, (&n, &b))| {
            let d = n.wrapping_sub(b);
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

fn proc_key(k: &HistKey) -> ProcKey {
    ProcKey {
        pid: k.tgid,
        incarnation: k.incarnation,
    }
}

fn abi_byte(abi: Abi) -> u8 {
    match abi {
        Abi::Native => ABI_NATIVE,
        Abi::Compat => ABI_COMPAT,
    }
}

fn syscall_key(abi: u8, nr: u32) -> SyscallKey {
    SyscallKey {
        abi: Abi::from_kernel(abi),
        nr,
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Groups threads' in-flight syscalls per process and syscall: how many, and the oldest's age.
pub fn in_flight(starts: &[Start], now_ns: u64) -> HashMap<ProcKey, Vec<InFlight>> {
    let mut grouped: HashMap<(ProcKey, SyscallKey), (u32, u64)> = HashMap::new();
    for s in starts.iter().filter(|s| s.ts_ns != 0) {
        let key = (
            ProcKey {
                pid: s.tgid,
                incarnation: s.incarnation,
            },
            syscall_key(s.abi, s.nr),
        );
        let e = grouped.entry(key).or_default();
        e.0 += 1;
        e.1 = e.1.max(now_ns.saturating_sub(s.ts_ns));
    }
    let mut out: HashMap<ProcKey, Vec<InFlight>> = HashMap::new();
    for ((p, syscall), (count, oldest_age_ns)) in grouped {
        out.entry(p).or_default().push(InFlight {
            syscall,
            count,
            oldest_age_ns,
        });
    }
    for list in out.values_mut() {
        list.sort_by_key(|f| std::cmp::Reverse(f.oldest_age_ns));
    }
    out
}

impl Drain {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            last_hists: HashMap::new(),
            last_errnos: HashMap::new(),
            retiring: HashSet::new(),
            cgroups: Resolver::new(cgroups::v2_root()),
            hists: Batch::default(),
            errnos: Batch::default(),
            procs: Batch::default(),
            starts: Batch::default(),
        }
    }

    pub fn run_once(&mut self, store: &RwLock<Store>) -> Result<()> {
        let started = Instant::now();
        self.read_maps(store)?;
        let programs = bpf_stats::read_own();
        let mut store = store.write().unwrap_or_else(|e| e.into_inner());
        store.metrics.telemetry.bpf_programs = programs;
        store.metrics.telemetry.record_drain(started.elapsed());
        Ok(())
    }

    fn read_maps(&mut self, store: &RwLock<Store>) -> Result<()> {
        read_into(&mut self.procs, &self.maps.procs, "PROCS")?;
        let procs: HashMap<ProcKey, ProcInfo> = self
            .procs
            .iter()
            .map(|(&k, &info)| {
                let key = ProcKey {
                    pid: k.tgid,
                    incarnation: k.incarnation,
                };
                (key, info)
            })
            .collect();

        let mut deltas = Vec::new();
        let mut hist_keys: Vec<HistKey> = Vec::new();
        read_into(&mut self.hists, &self.maps.hists, "HISTS")?;
        for (&key, hist) in self.hists.iter() {
            // One hash lookup per pair: compare with, then overwrite, the previous reading.
            let d = match self.last_hists.entry(key) {
                Entry::Occupied(mut last) => {
                    let d = delta(Some(last.get()), hist);
                    *last.get_mut() = *hist;
                    d
                }
                Entry::Vacant(slot) => delta(None, slot.insert(*hist)),
            };
            if !d.is_empty() {
                deltas.push((key, d));
            }
            hist_keys.push(key);
        }

        let mut errno_deltas = Vec::new();
        let mut errno_keys: Vec<ErrnoKey> = Vec::new();
        read_into(&mut self.errnos, &self.maps.errnos, "ERRNOS")?;
        for (&key, &n) in self.errnos.iter() {
            let before = self.last_errnos.insert(key, n).unwrap_or(0);
            let d = n.wrapping_sub(before);
            if d != 0 {
                errno_deltas.push((key, u64::from(d)));
            }
            errno_keys.push(key);
        }

        // In flight: parked in a thread's record, or running on a CPU.
        read_into(&mut self.starts, &self.maps.starts, "STARTS")?;
        let mut starts: Vec<Start> = self.starts.values().to_vec();
        let thread_records = starts.len() as u64;
        let on_cpu = self.maps.cpu_slot.get(&0, 0).context("reading CPU_SLOT")?;
        starts.extend(on_cpu.iter().filter(|s| s.tid != 0));
        let now_ns = monotonic_ns();

        let exited = exited_processes(&procs, hist_keys.iter().map(proc_key));
        let counters = self.read_counters(KernelCounters {
            hists_entries: hist_keys.len() as u64,
            starts_entries: thread_records,
            procs_entries: procs.len() as u64,
            errnos_entries: errno_keys.len() as u64,
            ..Default::default()
        })?;
        let cgroup_labels = self
            .cgroups
            .resolve(procs.values().map(|info| info.cgroup_id));
        let now = (Instant::now(), SystemTime::now());
        let mut retired = HashMap::new();
        {
            let mut store = store.write().unwrap_or_else(|e| e.into_inner());
            store.metrics.cgroup_labels.extend(cgroup_labels);
            // Named first, so a new process's calls count under its name in /metrics.
            self.identify(&mut store, &procs, &hist_keys, &starts);
            for (key, d) in &deltas {
                store.add(proc_key(key), syscall_key(key.abi, key.nr), d);
            }
            for (key, n) in &errno_deltas {
                let sc = syscall_key(key.hist.abi, key.hist.nr);
                store.add_errno(proc_key(&key.hist), sc, key.errno, *n);
            }
            store.set_in_flight(in_flight(&starts, now_ns));
            for key in &exited {
                store.mark_exited(*key, now);
            }
            store.kernel = counters;
            if self.maps.ledger.is_some() {
                retired = retired_totals(&store, &self.retiring);
            }
            store.finish_drain(now);
        }

        if let Some(ledger) = &mut self.maps.ledger {
            // Before the delete: a kill -9 between the two counts these processes twice at the
            // next start rather than not at all.
            ledger.add(&retired)?;
        }
        let retiring = std::mem::take(&mut self.retiring);
        for key in hist_keys.iter().filter(|k| retiring.contains(&proc_key(k))) {
            // Already gone is fine: the goal is that it is gone.
            let _ = self.maps.hists.remove(key);
            self.last_hists.remove(key);
        }
        for key in errno_keys
            .iter()
            .filter(|k| retiring.contains(&proc_key(&k.hist)))
        {
            let _ = self.maps.errnos.remove(key);
            self.last_errnos.remove(key);
        }
        for key in &retiring {
            let _ = self.maps.procs.remove(&profiler_common::ProcKey {
                tgid: key.pid,
                incarnation: key.incarnation,
            });
        }
        self.retiring = exited;
        Ok(())
    }

    /// With pinned maps, starts the system-wide totals from what previous daemons retired; the
    /// first drain then adds everything the live kernel entries hold.
    pub fn resume(&self, store: &RwLock<Store>) -> Result<usize> {
        let Some(ledger) = &self.maps.ledger else {
            return Ok(0);
        };
        let totals = read_all(&ledger.totals, "LEDGER")?;
        let errnos = read_all(&ledger.errnos, "LEDGER_ERRNOS")?;
        let mut store = store.write().unwrap_or_else(|e| e.into_inner());
        for (k, t) in &totals {
            let delta = Delta {
                errors: t.errors,
                total_ns: t.total_ns,
                buckets: t
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(|(i, &n)| (i, n))
                    .collect(),
            };
            store.add_system(syscall_key(k.abi, k.nr), &delta);
        }
        for (k, n) in &errnos {
            store.add_system_errno(syscall_key(k.syscall.abi, k.syscall.nr), k.errno, *n);
        }
        Ok(totals.len())
    }

    fn identify(
        &self,
        store: &mut Store,
        procs: &HashMap<ProcKey, ProcInfo>,
        hist_keys: &[HistKey],
        starts: &[Start],
    ) {
        let mut named: HashSet<ProcKey> = HashSet::new();
        for key in hist_keys
            .iter()
            .map(proc_key)
            .chain(starts.iter().map(|s| ProcKey {
                pid: s.tgid,
                incarnation: s.incarnation,
            }))
        {
            if !named.insert(key) {
                continue;
            }
            match procs.get(&key) {
                Some(info) => store.identify(key, &comm_string(&info.comm), info.cgroup_id),
                None => {
                    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{}/comm", key.pid)) {
                        store.identify(key, comm.trim_end(), 0);
                    }
                }
            }
        }
    }

    fn read_counters(&self, sizes: KernelCounters) -> Result<KernelCounters> {
        let sum = |i: u32| -> Result<u64> {
            let per_cpu = self.maps.counters.get(&i, 0).context("reading COUNTERS")?;
            Ok(per_cpu.iter().sum())
        };
        Ok(KernelCounters {
            hists_full: sum(COUNTER_HISTS_FULL)?,
            procs_full: sum(COUNTER_PROCS_FULL)?,
            starts_full: sum(COUNTER_STARTS_FULL)?,
            errnos_full: sum(COUNTER_ERRNOS_FULL)?,
            unmatched_exits: sum(COUNTER_UNMATCHED_EXITS)?,
            ..sizes
        })
    }
}

fn read_into<K: Pod, V: Pod>(
    batch: &mut Batch<K, V>,
    map: &impl IterableMap<K, V>,
    name: &str,
) -> Result<()> {
    batch
        .read(map.map().fd().as_fd())
        .with_context(|| format!("reading {name}"))
}

fn read_all<K: Pod, V: Pod>(map: &impl IterableMap<K, V>, name: &str) -> Result<Vec<(K, V)>> {
    map_batch::lookup_all(map.map().fd().as_fd()).with_context(|| format!("reading {name}"))
}

/// What the processes about to be retired contributed, per syscall, from the store's 64-bit
/// totals (exact even where the kernel's 32-bit counts wrapped).
fn retired_totals(
    store: &Store,
    retiring: &HashSet<ProcKey>,
) -> HashMap<SyscallKey, SyscallTotals> {
    let mut sum: HashMap<SyscallKey, SyscallTotals> = HashMap::new();
    for p in retiring.iter().filter_map(|k| store.processes.get(k)) {
        for (sc, t) in &p.syscalls {
            let into = sum.entry(*sc).or_default();
            into.hist.merge(&t.hist);
            for (&e, &n) in &t.errnos {
                *into.errnos.entry(e).or_default() += n;
            }
        }
    }
    sum
}

impl Ledger {
    fn add(&mut self, retired: &HashMap<SyscallKey, SyscallTotals>) -> Result<()> {
        for (sc, t) in retired {
            let key = LedgerKey {
                nr: sc.nr,
                abi: abi_byte(sc.abi),
                _pad: [0; 3],
            };
            let mut v = self.totals.get(&key, 0).unwrap_or(LedgerTotals {
                errors: 0,
                total_ns: 0,
                buckets: [0; BUCKETS],
            });
            v.errors += t.hist.errors;
            v.total_ns += t.hist.total_ns;
            for (i, n) in t.hist.bucket_counts() {
                v.buckets[i] += n;
            }
            if let Err(e) = self.totals.insert(key, v, 0) {
                warn!("ledger full, retired totals of {sc:?} not kept for the next start: {e}");
            }
            for (&errno, &n) in &t.errnos {
                let ekey = LedgerErrnoKey {
                    syscall: key,
                    errno,
                };
                let before = self.errnos.get(&ekey, 0).unwrap_or(0);
                if let Err(e) = self.errnos.insert(ekey, before + n, 0) {
                    warn!("ledger full, retired errno {errno} of {sc:?} not kept: {e}");
                }
            }
        }
        Ok(())
    }
}

/// The process incarnations that have exited: every one the kernel stamped, and any with data
/// but no PROCS entry (full map) that /proc no longer has.
fn exited_processes(
    procs: &HashMap<ProcKey, ProcInfo>,
    with_data: impl Iterator<Item = ProcKey>,
) -> HashSet<ProcKey> {
    let mut exited: HashSet<ProcKey> = procs
        .iter()
        .filter(|(_, info)| info.exit_ns != 0)
        .map(|(&key, _)| key)
        .collect();
    for key in with_data {
        if !procs.contains_key(&key)
            && !std::path::Path::new(&format!("/proc/{}", key.pid)).exists()
        {
            exited.insert(key);
        }
    }
    exited
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

    fn start(tgid: u32, nr: u32, ts_ns: u64) -> Start {
        Start {
            ts_ns,
            nr,
            tgid,
            incarnation: 7,
            tid: tgid,
            abi: 0,
            _pad: [0; 7],
        }
    }

    #[test]
    fn in_flight_groups_threads_and_keeps_the_oldest() {
        let starts = [
            start(10, 0, 1_000),
            start(10, 0, 4_000),
            start(10, 202, 9_000),
            start(11, 0, 0), // not in a syscall
        ];
        let got = in_flight(&starts, 10_000);
        let p10 = &got[&ProcKey {
            pid: 10,
            incarnation: 7,
        }];
        assert_eq!(p10.len(), 2);
        assert_eq!(
            (p10[0].syscall.nr, p10[0].count, p10[0].oldest_age_ns),
            (0, 2, 9_000)
        );
        assert_eq!(
            (p10[1].syscall.nr, p10[1].count, p10[1].oldest_age_ns),
            (202, 1, 1_000)
        );
        assert!(!got.keys().any(|k| k.pid == 11));
    }

    #[test]
    fn exit_detection() {
        let k = |pid, incarnation| ProcKey { pid, incarnation };
        let info = |exit_ns| ProcInfo {
            comm: [0; 16],
            cgroup_id: 0,
            exit_ns,
        };
        let procs = HashMap::from([(k(1, 5), info(0)), (k(2, 6), info(123))]);
        let own = std::process::id();
        // 1: running; 2: stamped; our own pid without an entry: alive in /proc; 4_000_000 (past
        // any pid_max) without an entry: gone.
        let data = [k(1, 5), k(2, 6), k(own, 3), k(4_000_000, 4)];
        let exited = exited_processes(&procs, data.into_iter());
        assert_eq!(exited, HashSet::from([k(2, 6), k(4_000_000, 4)]));
    }
}
