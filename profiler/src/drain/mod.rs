//! The only code that touches the kernel maps: on every interval it reads them, turns what
//! changed into deltas and applies them to the store.
//!
//! A drain is a sequence of phases (`Drain::run_once`): read PROCS, the histogram slots and
//! ERRNOS (readings.rs compares them with the previous drain's and gathers deltas.rs' deltas),
//! then the syscalls in flight, exits and the kernel's own counters; apply it all to the store
//! under one write lock (identify.rs names the processes first); commit the readings; retire
//! what the previous drain saw exit (retire.rs).
//!
//! Processes are retired in two steps so no event is lost between the last read and the delete:
//! the drain that first sees a process's exit reads it and marks it exited; the next drain reads
//! it once more and only then deletes its entries from the kernel maps.

mod deltas;
mod identify;
mod keys;
mod readings;
mod retire;

use std::{
    collections::HashMap,
    os::fd::AsFd,
    sync::RwLock,
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result};
use aya::{maps::IterableMap, Pod};
use profiler_common::{
    ErrnoKey, HistHead, ProcInfo, Start, COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL,
    COUNTER_NEW_SLOTS_FULL, COUNTER_PROCS_FULL, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS,
};
use tracing::warn;

use deltas::Deltas;
use keys::{proc_key, syscall_key};
use readings::{HistReadings, Previous};

use crate::{
    host::cgroups::{self, Cgroup, Resolver},
    kernel::{
        batch::{self, Batch},
        bpf_stats, Maps,
    },
    store::{
        histogram::{Delta, TimeSplit},
        telemetry::BpfProgram,
        FastMap, FastSet, KernelCounters, ProcKey, Store, SyscallKey, SyscallTotals,
    },
};

pub struct Drain {
    maps: Maps,
    /// The HISTS slots holding a histogram, ascending: learnt from NEW_SLOTS, and by reading
    /// every slot's key at the first drain (maps pinned by a predecessor) or when NEW_SLOTS
    /// overflowed (as of `new_slots_full`).
    live: Vec<u32>,
    new_slots_full: Option<u64>,
    /// Each kernel counter as of the previous read, to turn cumulative values into deltas.
    hists: HistReadings,
    errnos: Previous<ErrnoKey, u32>,
    /// Processes seen exited by the previous drain: deleted from the maps after this read.
    retiring: FastSet<ProcKey>,
    cgroups: Resolver,
    /// Read buffers and this drain's readings and deltas, kept across drains.
    heads: Vec<HistHead>,
    errnos_read: Batch<ErrnoKey, u32>,
    procs_read: Batch<profiler_common::ProcKey, ProcInfo>,
    starts_read: Batch<u32, Start>,
    iter_buf: Vec<u8>,
    errnos_now: Vec<(ErrnoKey, u32)>,
    deltas: Deltas,
}

/// How many slots ahead of the one being read the drain starts fetching: the slots are
/// scattered over 37 MiB, so their cache misses should overlap rather than stall one after
/// another.
const PREFETCH_AHEAD: usize = 8;

/// Threads inside a syscall as one drain found them.
struct InFlightStarts {
    /// Parked in a thread's STARTS record, or running on a CPU.
    starts: Vec<Start>,
    /// How many of them were STARTS records.
    thread_records: u64,
    /// CLOCK_MONOTONIC right after they were read.
    now_ns: u64,
}

/// What one drain read besides the deltas, until it is applied to the store.
struct Snapshot {
    procs: FastMap<ProcKey, ProcInfo>,
    in_flight: InFlightStarts,
    exited: FastSet<ProcKey>,
    counters: KernelCounters,
    cgroup_labels: HashMap<u64, Cgroup>,
}

impl Drain {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            live: Vec::new(),
            new_slots_full: None,
            hists: HistReadings::default(),
            errnos: Previous::default(),
            retiring: FastSet::default(),
            cgroups: Resolver::new(cgroups::v2_root()),
            heads: Vec::new(),
            errnos_read: Batch::default(),
            procs_read: Batch::default(),
            starts_read: Batch::default(),
            iter_buf: Vec::new(),
            errnos_now: Vec::new(),
            deltas: Deltas::default(),
        }
    }

    /// One drain. A failed read leaves the maps and the previous readings as they were, so the
    /// next drain picks up where this one failed.
    pub fn run_once(&mut self, store: &RwLock<Store>) -> Result<()> {
        let started = Instant::now();
        let procs = self.read_procs()?;
        self.read_slots()?;
        self.read_errnos()?;
        let in_flight = self.read_in_flight()?;
        let snapshot = self.read_exits_and_counters(procs, in_flight)?;
        let (retired, exited) = self.apply(store, snapshot);
        // The store has this drain's deltas: these readings are now what the next one compares
        // with.
        self.hists.commit();
        self.errnos.replace(&mut self.errnos_now);
        self.retire(&retired, exited);
        record_cost(store, started);
        Ok(())
    }

    fn read_procs(&mut self) -> Result<FastMap<ProcKey, ProcInfo>> {
        read_into(&mut self.procs_read, &self.maps.procs, "PROCS")?;
        Ok(self
            .procs_read
            .iter()
            .map(|(&k, &info)| {
                let key = ProcKey {
                    pid: k.tgid,
                    incarnation: k.incarnation,
                };
                (key, info)
            })
            .collect())
    }

    /// Every live slot read in place through the mapping: the headers first, then the touched
    /// blocks of each, each fetched a few slots ahead.
    fn read_slots(&mut self) -> Result<()> {
        self.discover()?;
        self.deltas.clear();
        self.hists.begin();
        let arena = &self.maps.hists;
        self.heads.clear();
        for (at, &slot) in self.live.iter().enumerate() {
            if let Some(&ahead) = self.live.get(at + PREFETCH_AHEAD) {
                arena.prefetch_head(ahead);
            }
            self.heads.push(arena.head(slot).unwrap_or_default());
        }
        let mut next = 0;
        for (at, (&slot, head)) in self.live.iter().zip(&self.heads).enumerate() {
            if let (Some(&ahead), Some(h)) = (
                self.live.get(at + PREFETCH_AHEAD),
                self.heads.get(at + PREFETCH_AHEAD),
            ) {
                arena.prefetch_blocks(ahead, h.touched);
            }
            if head.key.tgid == 0 {
                continue;
            }
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            self.hists
                .read(&mut next, slot, head, read_buckets, &mut self.deltas);
        }
        self.deltas.sort_and_merge_shards();
        Ok(())
    }

    /// Failures the slots had no room for, or of shards with several writers.
    fn read_errnos(&mut self) -> Result<()> {
        read_into(&mut self.errnos_read, &self.maps.errnos, "ERRNOS")?;
        let mut next = 0;
        self.errnos_now.clear();
        for (key, &n) in self.errnos_read.iter() {
            let before = self.errnos.find(&mut next, key).copied().unwrap_or(0);
            let d = n.wrapping_sub(before);
            if d != 0 {
                let sc = syscall_key(key.hist.abi, key.hist.nr.into());
                let errno = (proc_key(&key.hist), sc, key.errno, u64::from(d));
                self.deltas.unsorted_errnos.push(errno);
            }
            self.errnos_now.push((*key, n));
        }
        self.deltas.sort_errnos();
        Ok(())
    }

    /// In flight: from the task iterator, or parked in a thread's record and running on a CPU
    /// (the slot programs).
    fn read_in_flight(&mut self) -> Result<InFlightStarts> {
        let mut starts = Vec::new();
        if let Some(iter) = &self.maps.in_flight {
            iter.read(&mut starts, &mut self.iter_buf)
                .context("reading the calls in flight (task iterator)")?;
            return Ok(InFlightStarts {
                starts,
                thread_records: 0,
                now_ns: identify::monotonic_ns(),
            });
        }
        read_into(&mut self.starts_read, &self.maps.starts, "STARTS")?;
        starts.extend_from_slice(self.starts_read.values());
        let thread_records = starts.len() as u64;
        let on_cpu = self.maps.cpu_slot.get(&0, 0).context("reading CPU_SLOT")?;
        starts.extend(on_cpu.iter().filter(|s| s.tid != 0));
        Ok(InFlightStarts {
            starts,
            thread_records,
            now_ns: identify::monotonic_ns(),
        })
    }

    /// Which processes exited, the kernel side's own counters and the labels of new cgroups.
    fn read_exits_and_counters(
        &mut self,
        procs: FastMap<ProcKey, ProcInfo>,
        in_flight: InFlightStarts,
    ) -> Result<Snapshot> {
        let exited = retire::exited_processes(&procs, self.hists.keys().map(proc_key));
        let counters = self.read_counters(KernelCounters {
            hists_entries: self.hists.slots_read() as u64,
            starts_entries: in_flight.thread_records,
            procs_entries: procs.len() as u64,
            errnos_entries: self.errnos_now.len() as u64,
            ..Default::default()
        })?;
        let cgroup_labels = self
            .cgroups
            .resolve(procs.values().map(|info| info.cgroup_id));
        Ok(Snapshot {
            procs,
            in_flight,
            exited,
            counters,
            cgroup_labels,
        })
    }

    /// Every store write of this drain, under one lock. Returns what the processes retired now
    /// contributed (read before the store can expire them) and the processes seen exiting.
    fn apply(
        &self,
        store: &RwLock<Store>,
        s: Snapshot,
    ) -> (HashMap<SyscallKey, SyscallTotals>, FastSet<ProcKey>) {
        let now = (Instant::now(), SystemTime::now());
        let mut retired = HashMap::new();
        let mut store = store.write().unwrap_or_else(|e| e.into_inner());
        store.add_cgroup_labels(s.cgroup_labels);
        // Named first, so a new process's calls count under its name in /metrics.
        let starts = &s.in_flight.starts;
        identify::identify(
            &mut store,
            &s.procs,
            self.hists.keys().map(proc_key),
            starts,
        );
        store.add_batch(self.deltas.gains());
        store.set_in_flight(identify::in_flight(starts, s.in_flight.now_ns));
        for key in &s.exited {
            store.mark_exited(*key, now);
        }
        store.set_kernel_counters(s.counters);
        if self.maps.ledger.is_some() {
            retired = retire::retired_totals(&store, &self.retiring);
        }
        store.finish_drain(now);
        (retired, s.exited)
    }

    /// Deletes the kernel entries of the processes the previous drain saw exit, once the ledger
    /// has their totals; the ones seen exiting now are next.
    fn retire(&mut self, retired: &HashMap<SyscallKey, SyscallTotals>, exited: FastSet<ProcKey>) {
        if let Some(ledger) = &mut self.maps.ledger {
            // Before the delete: a kill -9 between the two counts these processes twice at the
            // next start rather than not at all.
            retire::keep_in_ledger(ledger, retired);
        }
        let retiring = std::mem::take(&mut self.retiring);
        if !retiring.is_empty() {
            let slots = self.hists.previous_keys();
            let freed = retire::delete(&mut self.maps, &retiring, slots, &mut self.errnos);
            // Both lists and `freed` are ascending.
            self.live.retain(|slot| freed.binary_search(slot).is_err());
            self.hists.forget(&freed);
        }
        // `exited` was read before this drain's deletions: those it just retired are in it
        // still, and must not reach the ledger a second time.
        self.retiring = exited
            .into_iter()
            .filter(|key| !retiring.contains(key))
            .collect();
    }

    /// Adds to `live` the slots the kernel handed out since the last drain. At the first drain,
    /// and should NEW_SLOTS have overflowed, also every slot holding a key.
    fn discover(&mut self) -> Result<()> {
        let mut found = Vec::new();
        loop {
            match self.maps.new_slots.pop(0) {
                Ok(slot) => found.push(slot),
                Err(aya::maps::MapError::ElementNotFound) => break,
                Err(e) => return Err(e).context("reading NEW_SLOTS"),
            }
        }
        let overflows = self.counter(COUNTER_NEW_SLOTS_FULL)?;
        if self.new_slots_full != Some(overflows) {
            if self.new_slots_full.is_some() {
                warn!("NEW_SLOTS overflowed: reading every HISTS slot's key");
            }
            found.extend(self.maps.hists.scan());
            self.new_slots_full = Some(overflows);
        }
        if !found.is_empty() {
            self.live.extend(found);
            self.live.sort_unstable();
            self.live.dedup();
        }
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
                split: TimeSplit {
                    runq_ns: t.runq_ns,
                    blocked_ns: t.blocked_ns,
                    blocked_calls: t.blocked_calls,
                },
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

    /// A COUNTERS entry, summed over the CPUs.
    fn counter(&self, i: u32) -> Result<u64> {
        let per_cpu = self.maps.counters.get(&i, 0).context("reading COUNTERS")?;
        Ok(per_cpu.iter().sum())
    }

    fn read_counters(&self, sizes: KernelCounters) -> Result<KernelCounters> {
        let sum = |i| self.counter(i);
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

/// The drain's own cost, and the kernel's accounting of our programs, for /metrics.
fn record_cost(store: &RwLock<Store>, started: Instant) {
    let programs = bpf_stats::read_own()
        .into_iter()
        .map(|p| BpfProgram {
            name: p.name,
            run_time_ns: p.run_time_ns,
            run_count: p.run_count,
        })
        .collect();
    let mut store = store.write().unwrap_or_else(|e| e.into_inner());
    store.record_drain(started.elapsed(), programs);
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
    batch::lookup_all(map.map().fd().as_fd()).with_context(|| format!("reading {name}"))
}
