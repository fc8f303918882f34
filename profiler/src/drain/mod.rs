//! The only code that touches the kernel maps: on every interval it reads them, turns what
//! changed into deltas and applies them to the store.
//!
//! A drain is a sequence of phases (`Drain::run_once`): read the histogram slots and ERRNOS
//! (readings.rs compares them with the previous drain's and gathers deltas.rs' deltas), then
//! PROCS, the syscalls in flight, exits and the kernel's own counters; apply it all to the store
//! under one write lock (identify.rs names the processes first); make the readings the ones
//! the next drain compares with; with pinned maps, commit a checkpoint of the store's exported
//! totals and those readings (checkpoint.rs, commit.rs); retire what the previous drain saw
//! exit (retire.rs). A restarted daemon resumes from the checkpoint (resume.rs).
//!
//! Processes are retired in two steps so no event is lost between the last read and the delete:
//! the drain that first sees a process's exit reads it and marks it exited; the next drain reads
//! it once more, commits, and only then deletes its entries from the kernel maps.

mod checkpoint;
mod commit;
mod deltas;
mod failing_args;
mod identify;
mod keys;
mod ranking;
mod readings;
mod resume;
mod retire;

use std::{
    collections::HashMap,
    os::fd::AsFd,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use aya::{maps::IterableMap, Pod};
use checkpoint::{CheckpointRef, ReadingsRef};
use commit::{CommitError, Committer};
use profiler_common::{
    ErrnoKey, ProcInfo, Start, COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL, COUNTER_NEW_SLOTS_FULL,
    COUNTER_PROCS_FULL, COUNTER_STARTS_FULL, COUNTER_TIDS_SHARED, COUNTER_UNMATCHED_EXITS,
};
use tracing::{info, warn};

use deltas::Deltas;
use keys::{proc_key, syscall_key};
use readings::{HistReadings, Previous};

use crate::{
    host::{
        cgroups::{self, Cgroup, Resolver},
        clock::{monotonic_ns, thread_cpu},
    },
    kernel::{batch::Batch, bpf_stats, CheckpointMaps, Maps},
    store::{
        failing_args::CaptureCounters,
        shared::SharedStore,
        telemetry::{BpfProgram, CheckpointCost, DrainCpu, DrainPhase},
        FastMap, FastSet, KernelCounters, ProcKey,
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
    /// With pinned maps.
    checkpoint: Option<Checkpointing>,
    cgroups: Resolver,
    /// Read buffers and this drain's readings and deltas, kept across drains.
    errnos_read: Batch<ErrnoKey, u32>,
    procs_read: Batch<profiler_common::ProcKey, ProcInfo>,
    starts_read: Batch<u32, Start>,
    iter_buf: Vec<u8>,
    errnos_now: Vec<(ErrnoKey, u32)>,
    deltas: Deltas,
    programs: bpf_stats::OwnPrograms,
}

/// Where and how the drain commits its checkpoint.
struct Checkpointing {
    committer: Committer<CheckpointMaps>,
    /// The encoded checkpoint, kept from drain to drain.
    bytes: Vec<u8>,
    /// Since when commits fail (logged once per episode).
    failing_since: Option<u64>,
    crash_at: Option<CrashAt>,
}

/// For the tests (config::declare::ENV_CRASH_AT): SIGKILL at this instant of the first commit
/// that retires processes, as a `kill -9` landing there would.
use crate::config::declare::ENV_CRASH_AT as CRASH_AT_ENV;

#[derive(Clone, Copy, PartialEq, Eq)]
enum CrashAt {
    BeforeFlip,
    BeforeDeletes,
}

fn crash_at() -> Option<CrashAt> {
    match std::env::var(CRASH_AT_ENV).ok()?.as_str() {
        "before-flip" => Some(CrashAt::BeforeFlip),
        "before-deletes" => Some(CrashAt::BeforeDeletes),
        other => {
            warn!("{CRASH_AT_ENV}={other} means nothing (before-flip, before-deletes)");
            None
        }
    }
}

/// Dies as by `kill -9`: no destructor, no flush, no exit code.
fn crash(at: CrashAt, crash_at: Option<CrashAt>, retiring: bool) {
    if crash_at == Some(at) && retiring {
        // SAFETY: kill has no preconditions; SIGKILL cannot be caught.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
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
    pub fn new(mut maps: Maps) -> Self {
        let checkpoint = maps.checkpoint.take().map(|chunks| Checkpointing {
            committer: Committer::new(chunks),
            bytes: Vec::new(),
            failing_since: None,
            crash_at: crash_at(),
        });
        Self {
            checkpoint,
            maps,
            live: Vec::new(),
            new_slots_full: None,
            hists: HistReadings::default(),
            errnos: Previous::default(),
            retiring: FastSet::default(),
            cgroups: Resolver::new(cgroups::v2_root()),
            errnos_read: Batch::default(),
            procs_read: Batch::default(),
            starts_read: Batch::default(),
            iter_buf: Vec::new(),
            errnos_now: Vec::new(),
            deltas: Deltas::default(),
            programs: bpf_stats::OwnPrograms::default(),
        }
    }

    /// One drain. A failed read leaves the maps and the previous readings as they were, so the
    /// next drain picks up where this one failed.
    pub fn run_once(&mut self, store: &SharedStore) -> Result<()> {
        let started = Instant::now();
        let mut cpu = PhaseClock::start();
        self.read_slots()?;
        cpu.end(DrainPhase::Slots);
        self.read_errnos()?;
        // After the slots: the kernel records a process before it counts its first call, so
        // every process with data has a name, even one born and gone since the slots were read.
        let procs = self.read_procs()?;
        let in_flight = self.read_in_flight()?;
        let snapshot = self.read_exits_and_counters(procs, in_flight)?;
        // After the slots and ERRNOS: the kernel counts a failure's errno before its argument,
        // so a list whose counts add up to less than its errno's was sampled.
        let args = self.read_failing_args()?;
        cpu.end(DrainPhase::Maps);
        let exited = self.apply(store, snapshot, args);
        cpu.end(DrainPhase::Store);
        // The store has this drain's deltas: these readings are now what the next one compares
        // with.
        self.hists.commit();
        self.errnos.replace(&mut self.errnos_now);
        // Before the deletes: a checkpoint always holds the last reading of what they delete.
        let checkpoint = self.commit_checkpoint(store);
        self.retire(exited);
        // With the counters just read: a map's first "full" line shows up with its count.
        self.maps.log.forward();
        let programs = own_programs(&mut self.programs);
        cpu.end(DrainPhase::Finish);
        record_cost(store, started, &cpu.spent, checkpoint, programs);
        Ok(())
    }

    /// Commits a checkpoint of the store's exported totals and the readings they rest on. A
    /// checkpoint that fails or does not fit is skipped (counted, logged once per episode): a
    /// restart would then resume from the last one committed, and lose the calls of processes
    /// retired since (never count any twice).
    fn commit_checkpoint(&mut self, store: &SharedStore) -> Option<CheckpointCost> {
        let cp = self.checkpoint.as_mut()?;
        let started = Instant::now();
        let mut retiring: Vec<ProcKey> = self.retiring.iter().copied().collect();
        retiring.sort_unstable();
        cp.bytes.clear();
        let encoded = {
            let store = store.read();
            let c = CheckpointRef {
                format: checkpoint::format(),
                exported: store.exported(started),
                readings: ReadingsRef(&self.hists),
                errnos: self.errnos.entries(),
                retiring,
            };
            checkpoint::encode(&c, &mut cp.bytes)
        };
        let bytes = cp.bytes.len() as u64;
        let retires = !self.retiring.is_empty();
        let crash_at = cp.crash_at;
        let outcome = match encoded {
            Ok(()) => cp.committer.commit(&mut cp.bytes, || {
                crash(CrashAt::BeforeFlip, crash_at, retires)
            }),
            Err(e) => Err(CommitError::Encode(e)),
        };
        let committed = outcome.is_ok();
        if committed {
            crash(CrashAt::BeforeDeletes, crash_at, retires);
        }
        match (outcome, cp.failing_since) {
            (Ok(()), Some(_)) => {
                info!("checkpoint committed again");
                cp.failing_since = None;
            }
            (Ok(()), None) => {}
            (Err(e), None) => {
                warn!(
                    "checkpoint not committed, and will not be until this is logged as over: a \
                     restart would resume from the last one, losing the calls of processes \
                     retired since: {:#}",
                    anyhow::Error::from(e)
                );
                cp.failing_since = Some(bytes);
            }
            (Err(_), Some(_)) => {}
        }
        Some(CheckpointCost {
            committed,
            bytes,
            took: started.elapsed(),
        })
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
        // One pass, two prefetch distances: a slot's header is asked for 2 × PREFETCH_AHEAD
        // slots before it is read, and its touched blocks PREFETCH_AHEAD before, by the
        // header's mask, by then in cache.
        for &slot in self.live.iter().take(2 * PREFETCH_AHEAD) {
            arena.prefetch_head(slot);
        }
        let mut next = 0;
        for (at, &slot) in self.live.iter().enumerate() {
            if let Some(&far) = self.live.get(at + 2 * PREFETCH_AHEAD) {
                arena.prefetch_head(far);
            }
            if let Some(&ahead) = self.live.get(at + PREFETCH_AHEAD) {
                arena.prefetch_blocks(ahead, arena.touched(ahead));
            }
            let head = arena.head(slot).unwrap_or_default();
            if head.key.tgid == 0 {
                continue;
            }
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            self.hists
                .read(&mut next, slot, &head, read_buckets, &mut self.deltas);
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
                now_ns: monotonic_ns(),
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
            now_ns: monotonic_ns(),
        })
    }

    /// Failing calls' arguments captured since the last drain (taken out of the map), and the
    /// capture counters; renews every CPU's capture budget.
    fn read_failing_args(&mut self) -> Result<(Vec<failing_args::Entry>, CaptureCounters)> {
        let s = self.maps.args.renew_budget().context("reading ARG_STATS")?;
        let mut cwds = HashMap::new();
        let entries = self
            .maps
            .args
            .take()
            .context("reading FAILED_ARGS")?
            .map(|(k, &n)| failing_args::decode(k, n, &mut cwds))
            .collect();
        let counters = CaptureCounters {
            captured: s.captured,
            missed: s.missed,
            unreadable: s.unreadable,
            full: s.full,
        };
        Ok((entries, counters))
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

    /// Every store write of this drain, under one lock. Returns the processes seen exiting.
    fn apply(
        &self,
        store: &SharedStore,
        s: Snapshot,
        (args, capture): (Vec<failing_args::Entry>, CaptureCounters),
    ) -> FastSet<ProcKey> {
        let now = (Instant::now(), SystemTime::now());
        let mut store = store.write();
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
        store.add_failing_args(args, capture);
        store.finish_drain(now);
        s.exited
    }

    /// Deletes the kernel entries of the processes the previous drain saw exit; the ones seen
    /// exiting now are next, but for those deleted now: this drain read PROCS before deleting.
    fn retire(&mut self, exited: FastSet<ProcKey>) {
        let retiring = std::mem::take(&mut self.retiring);
        if !retiring.is_empty() {
            let slots = self.hists.previous_keys();
            let freed = retire::delete(&mut self.maps, &retiring, slots, &mut self.errnos);
            // Both lists and `freed` are ascending.
            self.live.retain(|slot| freed.binary_search(slot).is_err());
            self.hists.forget(&freed);
        }
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
            tids_shared: sum(COUNTER_TIDS_SHARED)?,
            ..sizes
        })
    }
}

/// The drain thread's CPU time spent in each phase of a drain, phase by phase.
struct PhaseClock {
    spent: DrainCpu,
    last: Duration,
}

impl PhaseClock {
    fn start() -> Self {
        Self {
            spent: DrainCpu::default(),
            last: thread_cpu(),
        }
    }

    /// Ends `phase`: the CPU time since the previous phase ended is its.
    fn end(&mut self, phase: DrainPhase) {
        let now = thread_cpu();
        self.spent[phase as usize] = now.saturating_sub(self.last);
        self.last = now;
    }
}

/// The kernel's accounting of our programs, read by the drain (in its `finish` phase: the
/// reading is part of its cost).
fn own_programs(programs: &mut bpf_stats::OwnPrograms) -> Vec<BpfProgram> {
    programs
        .read()
        .into_iter()
        .map(|p| BpfProgram {
            name: p.name,
            run_time_ns: p.run_time_ns,
            run_count: p.run_count,
        })
        .collect()
}

/// The drain's own cost (its wall time, its CPU time by phase, its checkpoint's), and the
/// kernel's accounting of our programs, for /metrics.
fn record_cost(
    store: &SharedStore,
    started: Instant,
    cpu: &DrainCpu,
    checkpoint: Option<CheckpointCost>,
    programs: Vec<BpfProgram>,
) {
    let mut store = store.write();
    store.record_drain(started.elapsed(), cpu, programs);
    if let Some(c) = checkpoint {
        store.record_checkpoint(c);
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
