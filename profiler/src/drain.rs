//! The only code that touches the kernel maps: on every interval it reads them, turns what
//! changed into deltas and applies them to the store.
//!
//! Processes are retired in two steps so no event is lost between the last read and the delete:
//! the drain that first sees a process's exit reads it and marks it exited; the next drain reads
//! it once more and only then deletes its entries from the kernel maps.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::RwLock,
    time::{Instant, SystemTime},
};

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use aya::{maps::IterableMap, Pod};
use profiler_common::{
    ErrnoKey, HistHead, HistKey, LedgerErrnoKey, LedgerKey, LedgerTotals, ProcInfo, Start,
    ABI_COMPAT, ABI_NATIVE, BUCKETS, COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL,
    COUNTER_NEW_SLOTS_FULL, COUNTER_PROCS_FULL, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS,
    ERRNO_SLOTS,
};
use tracing::warn;

use crate::{
    bpf::{Ledger, Maps},
    bpf_stats,
    cgroups::{self, Resolver},
    histogram::{Delta, DeltaRef},
    map_batch::{self, Batch},
    store::{
        FastMap, FastSet, Gain, InFlight, KernelCounters, ProcKey, Store, SyscallKey, SyscallTotals,
    },
    syscalls::Abi,
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
    errnos_now: Vec<(ErrnoKey, u32)>,
    deltas: Deltas,
}

/// An ERRNOS' entries as of the previous drain, in the order the kernel listed them (its
/// hash order). That order changes only where entries were added or deleted, so an entry's
/// previous value is nearly always right after the last one found: no hashing, and memory read
/// front to back. The index is built only in a drain that finds the order changed.
struct Previous<K, V> {
    entries: Vec<(K, V)>,
    index: Option<FastMap<K, usize>>,
}

impl<K, V> Default for Previous<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: None,
        }
    }
}

/// Positions past the expected one checked before falling back to the index: a few entries
/// deleted since the previous drain are skipped without building it.
const LOOKAHEAD: usize = 4;

impl<K: Copy + Eq + Hash, V> Previous<K, V> {
    /// `key`'s previous value. `next` is where the previous call left off: pass the same one
    /// for every key of a reading, in the kernel's order.
    fn find(&mut self, next: &mut usize, key: &K) -> Option<&V> {
        let ahead = self.entries.get(*next..).unwrap_or_default();
        if let Some(at) = ahead.iter().take(1 + LOOKAHEAD).position(|(k, _)| k == key) {
            *next += at + 1;
            return Some(&ahead[at].1);
        }
        let entries = &self.entries;
        let index = self.index.get_or_insert_with(|| {
            entries
                .iter()
                .enumerate()
                .map(|(at, (k, _))| (*k, at))
                .collect()
        });
        let &at = index.get(key)?;
        *next = at + 1;
        Some(&self.entries[at].1)
    }

    /// Sets back to the default (zero) the values of the keys `gone` says are gone from the
    /// kernel map, so that should the kernel create one again, all of it counts.
    fn retire(&mut self, mut gone: impl FnMut(&K) -> bool)
    where
        V: Default,
    {
        for (k, v) in &mut self.entries {
            if gone(k) {
                *v = V::default();
            }
        }
    }

    /// Makes `now` the previous reading; `now` is left empty, with the old one's capacity.
    fn replace(&mut self, now: &mut Vec<(K, V)>) {
        std::mem::swap(&mut self.entries, now);
        now.clear();
        self.index = None;
    }
}

/// The previous reading of one slot: its header (whose key tells whether the slot still holds
/// the same histogram) and its non-zero buckets (a series usually fills a handful of the 273):
/// `len` entries from `start` in its reading's bucket list, so comparing with it costs a few
/// words rather than another 1.1 KB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reading {
    head: HistHead,
    start: u32,
    len: u32,
}

#[derive(Default)]
struct HistReadings {
    /// By slot, ascending.
    prev: Vec<(u32, Reading)>,
    prev_buckets: Vec<(u16, u32)>,
    /// This drain's, until it is committed.
    now: Vec<(u32, Reading)>,
    now_buckets: Vec<(u16, u32)>,
}

/// `slot`'s reading in `prev` (by slot, ascending), if it was of `key`. Slots are read in
/// ascending order, so `next`, where the previous call left off, only moves forward.
fn previous<'a>(
    prev: &'a [(u32, Reading)],
    next: &mut usize,
    slot: u32,
    key: &HistKey,
) -> Option<&'a Reading> {
    while prev.get(*next).is_some_and(|&(s, _)| s < slot) {
        *next += 1;
    }
    prev.get(*next)
        .filter(|(s, r)| *s == slot && r.head.key == *key)
        .map(|(_, r)| r)
}

impl HistReadings {
    /// Compares `slot`'s header and buckets (`read_buckets` appends the non-zero ones, by
    /// bucket) with its previous reading, appends what changed to `deltas` and records this
    /// reading. Slots in ascending order; `next` as for [`previous`].
    fn read(
        &mut self,
        next: &mut usize,
        slot: u32,
        head: &HistHead,
        read_buckets: impl FnOnce(&mut Vec<(u16, u32)>),
        deltas: &mut Deltas,
    ) {
        let start = self.now_buckets.len();
        let (old, old_buckets) = match previous(&self.prev, next, slot, &head.key) {
            Some(r) => {
                let at = r.start as usize;
                (*r, &self.prev_buckets[at..at + r.len as usize])
            }
            None => (Reading::default(), &[][..]),
        };
        // Every timed call adds at least 1 ns to the sum (the kernel side rounds 0 up), so an
        // unchanged header means an idle slot: its buckets are as they were, and stay unread.
        // Not so in counts-only mode, where the sum stays 0.
        if head.total_ns != 0 && old.head == *head {
            self.now_buckets.extend_from_slice(old_buckets);
            self.now.push((
                slot,
                Reading {
                    start: start as u32,
                    ..old
                },
            ));
            return;
        }
        read_buckets(&mut self.now_buckets);
        let now = &self.now_buckets[start..];
        let from = deltas.buckets.len();
        bucket_deltas(old_buckets, now, &mut deltas.buckets);
        let errors = u64::from(head.errors.wrapping_sub(old.head.errors));
        let total_ns = head.total_ns.wrapping_sub(old.head.total_ns);
        let (proc, sc) = (
            proc_key(&head.key),
            syscall_key(head.key.abi, head.key.nr.into()),
        );
        if deltas.buckets.len() > from || errors != 0 || total_ns != 0 {
            deltas.push(proc, sc, errors, total_ns, from);
        }
        // An entry's errno, once claimed, stays until the slot is freed.
        for i in (0..ERRNO_SLOTS).filter(|&i| head.errnos[i] != 0) {
            let d = head.errno_counts[i].wrapping_sub(old.head.errno_counts[i]);
            if d != 0 {
                let errno = u32::from(head.errnos[i]);
                deltas.unsorted_errnos.push((proc, sc, errno, u64::from(d)));
            }
        }
        self.now.push((
            slot,
            Reading {
                head: *head,
                start: start as u32,
                len: now.len() as u32,
            },
        ));
    }

    /// Makes this drain's readings the previous ones: only once their deltas are in the store,
    /// so a drain that fails half-way loses nothing.
    fn commit(&mut self) {
        std::mem::swap(&mut self.prev, &mut self.now);
        std::mem::swap(&mut self.prev_buckets, &mut self.now_buckets);
        self.now.clear();
        self.now_buckets.clear();
    }
}

/// How many slots ahead of the one being read the drain starts fetching: the slots are
/// scattered over 37 MiB, so their cache misses should overlap rather than stall one after
/// another.
const PREFETCH_AHEAD: usize = 8;

/// Appends to `out` what each bucket gained from the `old` to the `new` non-zero counts (both
/// by bucket). The kernel's 32-bit counts wrap; the wrapping difference is exact as long as
/// fewer than 2^32 events land in one bucket between two drains. A bucket only `old` has
/// wrapped to exactly 0: it gained 2^32 - old.
fn bucket_deltas(old: &[(u16, u32)], new: &[(u16, u32)], out: &mut Vec<(usize, u64)>) {
    let (mut new_at, mut old_at) = (0, 0);
    loop {
        let (i, n, o) = match (new.get(new_at), old.get(old_at)) {
            (None, None) => return,
            (Some(&(i, n)), Some(&(j, o))) if i == j => {
                new_at += 1;
                old_at += 1;
                (i, n, o)
            }
            (Some(&(i, n)), Some(&(j, _))) if i < j => {
                new_at += 1;
                (i, n, 0)
            }
            (Some(&(i, n)), None) => {
                new_at += 1;
                (i, n, 0)
            }
            (_, Some(&(j, o))) => {
                old_at += 1;
                (j, 0, o)
            }
        };
        let d = n.wrapping_sub(o);
        if d != 0 {
            out.push((usize::from(i), u64::from(d)));
        }
    }
}

/// One drain's deltas: their buckets share one buffer, kept from drain to drain.
#[derive(Default)]
struct Deltas {
    list: Vec<DeltaAt>,
    buckets: Vec<(usize, u64)>,
    /// Failures by errno as read, from slots and ERRNOS, in any order, until sorted into:
    unsorted_errnos: Vec<(ProcKey, SyscallKey, u32, u64)>,
    /// failures by errno, in the order of `list` once sorted.
    errno_keys: Vec<(ProcKey, SyscallKey)>,
    errnos: Vec<(u32, u64)>,
}

/// A delta of [`Deltas`], its buckets `len` entries from `start` of the shared buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeltaAt {
    proc: ProcKey,
    sc: SyscallKey,
    errors: u64,
    total_ns: u64,
    start: u32,
    len: u32,
}

/// (process, syscall) as two integers, cheap to compare in a sort.
fn order(proc: ProcKey, sc: SyscallKey) -> (u64, u64) {
    (
        u64::from(proc.pid) << 32 | u64::from(proc.incarnation),
        (sc.abi as u64) << 32 | u64::from(sc.nr),
    )
}

impl DeltaAt {
    fn order(&self) -> (u64, u64) {
        order(self.proc, self.sc)
    }
}

impl Deltas {
    fn clear(&mut self) {
        self.list.clear();
        self.buckets.clear();
        self.unsorted_errnos.clear();
        self.errno_keys.clear();
        self.errnos.clear();
    }

    /// Sorts the failures by errno read so far like `list` (see `gains`).
    fn sort_errnos(&mut self) {
        self.unsorted_errnos
            .sort_unstable_by_key(|&(p, sc, _, _)| order(p, sc));
        self.errno_keys.clear();
        self.errnos.clear();
        for &(p, sc, errno, n) in &self.unsorted_errnos {
            self.errno_keys.push((p, sc));
            self.errnos.push((errno, n));
        }
    }

    fn push(&mut self, proc: ProcKey, sc: SyscallKey, errors: u64, total_ns: u64, from: usize) {
        self.list.push(DeltaAt {
            proc,
            sc,
            errors,
            total_ns,
            start: from as u32,
            len: (self.buckets.len() - from) as u32,
        });
    }

    fn buckets_of(&self, d: &DeltaAt) -> &[(usize, u64)] {
        &self.buckets[d.start as usize..][..d.len as usize]
    }

    /// Sorts by process, then syscall: the store takes them grouped by process (see
    /// Store::add_batch), and sees the same order whatever the kernel's hash order. The deltas
    /// of one (process, syscall)'s shards become one.
    fn sort_and_merge_shards(&mut self) {
        self.list.sort_unstable_by_key(DeltaAt::order);
        let mut kept = 0;
        for at in 0..self.list.len() {
            let d = self.list[at];
            if kept > 0 && self.list[kept - 1].order() == d.order() {
                let into = self.list[kept - 1];
                let from = self.buckets.len();
                merge_sorted(&mut self.buckets, into, d);
                self.list[kept - 1] = DeltaAt {
                    errors: into.errors + d.errors,
                    total_ns: into.total_ns.wrapping_add(d.total_ns),
                    start: from as u32,
                    len: (self.buckets.len() - from) as u32,
                    ..into
                };
            } else {
                self.list[kept] = d;
                kept += 1;
            }
        }
        self.list.truncate(kept);
    }

    /// Every (process, syscall) that gained calls or failures, by process then syscall.
    fn gains(&self) -> impl Iterator<Item = Gain<'_>> {
        let (mut at, mut errno_at) = (0, 0);
        std::iter::from_fn(move || {
            let calls = self.list.get(at);
            let fails = self.errno_keys.get(errno_at);
            let (proc, sc) = match (calls, fails) {
                (None, None) => return None,
                (Some(d), Some(&(p, sc))) if order(p, sc) < d.order() => (p, sc),
                (Some(d), _) => (d.proc, d.sc),
                (None, Some(&(p, sc))) => (p, sc),
            };
            let delta = match calls {
                Some(d) if (d.proc, d.sc) == (proc, sc) => {
                    at += 1;
                    DeltaRef {
                        errors: d.errors,
                        total_ns: d.total_ns,
                        buckets: self.buckets_of(d),
                    }
                }
                _ => DeltaRef::default(),
            };
            let from = errno_at;
            while self.errno_keys.get(errno_at) == Some(&(proc, sc)) {
                errno_at += 1;
            }
            Some(Gain {
                proc,
                sc,
                delta,
                errnos: &self.errnos[from..errno_at],
            })
        })
    }
}

/// Appends to `buckets` the sum of the bucket lists of `a` and `b` (both by bucket), by bucket.
fn merge_sorted(buckets: &mut Vec<(usize, u64)>, a: DeltaAt, b: DeltaAt) {
    let (mut i, mut j) = (a.start as usize, b.start as usize);
    let (a_end, b_end) = (i + a.len as usize, j + b.len as usize);
    while i < a_end || j < b_end {
        let next = match (i < a_end, j < b_end) {
            (true, true) if buckets[i].0 == buckets[j].0 => {
                i += 1;
                j += 1;
                (buckets[i - 1].0, buckets[i - 1].1 + buckets[j - 1].1)
            }
            (true, true) if buckets[i].0 < buckets[j].0 => {
                i += 1;
                buckets[i - 1]
            }
            (true, false) => {
                i += 1;
                buckets[i - 1]
            }
            _ => {
                j += 1;
                buckets[j - 1]
            }
        };
        buckets.push(next);
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
            errnos_now: Vec::new(),
            deltas: Deltas::default(),
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
        read_into(&mut self.procs_read, &self.maps.procs, "PROCS")?;
        let procs: FastMap<ProcKey, ProcInfo> = self
            .procs_read
            .iter()
            .map(|(&k, &info)| {
                let key = ProcKey {
                    pid: k.tgid,
                    incarnation: k.incarnation,
                };
                (key, info)
            })
            .collect();

        // Every live slot read in place through the mapping: the headers first, then the
        // touched blocks of each, each fetched a few slots ahead.
        self.discover()?;
        self.deltas.clear();
        self.hists.now.clear();
        self.hists.now_buckets.clear();
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

        // Failures the slots had no room for, or of shards with several writers.
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

        // In flight: parked in a thread's record, or running on a CPU.
        read_into(&mut self.starts_read, &self.maps.starts, "STARTS")?;
        let mut starts: Vec<Start> = self.starts_read.values().to_vec();
        let thread_records = starts.len() as u64;
        let on_cpu = self.maps.cpu_slot.get(&0, 0).context("reading CPU_SLOT")?;
        starts.extend(on_cpu.iter().filter(|s| s.tid != 0));
        let now_ns = monotonic_ns();

        let hist_keys = || self.hists.now.iter().map(|(_, r)| &r.head.key);
        let exited = exited_processes(&procs, hist_keys().map(proc_key));
        let counters = self.read_counters(KernelCounters {
            hists_entries: self.hists.now.len() as u64,
            starts_entries: thread_records,
            procs_entries: procs.len() as u64,
            errnos_entries: self.errnos_now.len() as u64,
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
            identify(&mut store, &procs, hist_keys().map(proc_key), &starts);
            store.add_batch(self.deltas.gains());
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
        // The store has this drain's deltas: these readings are now what the next one compares
        // with.
        self.hists.commit();
        self.errnos.replace(&mut self.errnos_now);

        if let Some(ledger) = &mut self.maps.ledger {
            // Before the delete: a kill -9 between the two counts these processes twice at the
            // next start rather than not at all.
            ledger.add(&retired)?;
        }
        let retiring = std::mem::take(&mut self.retiring);
        if !retiring.is_empty() {
            let maps = &mut self.maps;
            let mut freed = Vec::new();
            for &(slot, ref r) in &self.hists.prev {
                // Unmapped first, so no new event can find the slot; wiped and queued only if
                // the key was still mapped to it, so a slot is never queued twice.
                let key = &r.head.key;
                if retiring.contains(&proc_key(key)) && maps.hist_slots.remove(key).is_ok() {
                    maps.hists.clear(slot);
                    let _ = maps.free_slots.push(slot, 0);
                    freed.push(slot);
                }
            }
            // Both lists and `freed` are ascending.
            let kept = |slot: &u32| freed.binary_search(slot).is_err();
            self.live.retain(kept);
            self.hists.prev.retain(|(slot, _)| kept(slot));
            self.errnos.retire(|key| {
                let gone = retiring.contains(&proc_key(&key.hist));
                if gone {
                    let _ = maps.errnos.remove(key);
                }
                gone
            });
            for key in &retiring {
                let _ = self.maps.procs.remove(&profiler_common::ProcKey {
                    tgid: key.pid,
                    incarnation: key.incarnation,
                });
            }
        }
        // `exited` was read before this drain's deletions: those it just retired are in it
        // still, and must not reach the ledger a second time.
        self.retiring = exited
            .into_iter()
            .filter(|key| !retiring.contains(key))
            .collect();
        Ok(())
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
    retiring: &FastSet<ProcKey>,
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

/// Names every process with data or a syscall in flight.
fn identify(
    store: &mut Store,
    procs: &FastMap<ProcKey, ProcInfo>,
    with_data: impl Iterator<Item = ProcKey>,
    starts: &[Start],
) {
    let mut named: FastSet<ProcKey> = FastSet::default();
    for key in with_data.chain(starts.iter().map(|s| ProcKey {
        pid: s.tgid,
        incarnation: s.incarnation,
    })) {
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

/// The process incarnations that have exited: every one the kernel stamped, and any with data
/// but no PROCS entry (full map) that /proc no longer has.
fn exited_processes(
    procs: &FastMap<ProcKey, ProcInfo>,
    with_data: impl Iterator<Item = ProcKey>,
) -> FastSet<ProcKey> {
    let mut exited: FastSet<ProcKey> = procs
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
    use crate::hist_arena::HistArena;
    use profiler_common::{Hist, TOUCH_BLOCK};

    /// A slot's content as the kernel leaves it: `touched` marks the blocks of its non-zero
    /// buckets.
    fn hist(total: u64, errors: u32, buckets: &[(usize, u32)]) -> Hist {
        let mut h = Hist {
            head: HistHead {
                errors,
                total_ns: total,
                ..HistHead::default()
            },
            buckets: [0; BUCKETS],
        };
        for &(i, n) in buckets {
            h.buckets[i] = n;
            h.head.touched |= 1 << (i / TOUCH_BLOCK);
        }
        h
    }

    fn key(tgid: u32, nr: u16, shard: u8) -> HistKey {
        HistKey {
            tgid,
            incarnation: 1,
            nr,
            abi: ABI_NATIVE,
            shard,
        }
    }

    type Got = (ProcKey, SyscallKey, Delta);
    /// A failure count as read: (pid, syscall number, errno, failures).
    type GotErrno = (u32, u32, u32, u64);

    /// Slots `read` (slot, key, content) laid out in an arena of their own.
    fn arena(read: &[(u32, HistKey, Hist)]) -> HistArena {
        let len = read.iter().map(|r| r.0 + 1).max().unwrap_or(0);
        let mut slots = vec![hist(0, 0, &[]); len as usize];
        for &(slot, key, mut h) in read {
            h.head.key = key;
            slots[slot as usize] = h;
        }
        HistArena::of(Box::leak(slots.into_boxed_slice()))
    }

    /// One drain's reading of the slots `read`, as `read_maps` takes it (ascending slots, read
    /// through an arena): the deltas, sorted and merged, and the failures by errno. Committed
    /// unless `fail` (a drain that failed before reaching the store).
    fn drain_errnos(
        readings: &mut HistReadings,
        read: &[(u32, HistKey, Hist)],
        fail: bool,
    ) -> (Vec<Got>, Vec<GotErrno>) {
        let arena = arena(read);
        let mut deltas = Deltas::default();
        let mut next = 0;
        let mut slots: Vec<u32> = read.iter().map(|r| r.0).collect();
        slots.sort_unstable();
        for slot in slots {
            let head = arena.head(slot).unwrap();
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            readings.read(&mut next, slot, &head, read_buckets, &mut deltas);
        }
        deltas.sort_and_merge_shards();
        deltas.sort_errnos();
        let got = deltas
            .gains()
            .filter(|g| !g.delta.is_empty())
            .map(|g| {
                let d = Delta {
                    errors: g.delta.errors,
                    total_ns: g.delta.total_ns,
                    buckets: g.delta.buckets.to_vec(),
                };
                (g.proc, g.sc, d)
            })
            .collect();
        let errnos = deltas
            .unsorted_errnos
            .iter()
            .map(|&(p, sc, errno, n)| (p.pid, sc.nr, errno, n))
            .collect();
        if fail {
            readings.now.clear();
            readings.now_buckets.clear();
        } else {
            readings.commit();
        }
        (got, errnos)
    }

    fn drain(readings: &mut HistReadings, read: &[(u32, HistKey, Hist)], fail: bool) -> Vec<Got> {
        drain_errnos(readings, read, fail).0
    }

    fn one(got: &[Got]) -> &Delta {
        assert_eq!(got.len(), 1, "{got:?}");
        &got[0].2
    }

    #[test]
    fn first_read_is_the_whole_value() {
        let mut r = HistReadings::default();
        let got = drain(
            &mut r,
            &[(4, key(1, 0, 0), hist(900, 2, &[(10, 3)]))],
            false,
        );
        let d = one(&got);
        assert_eq!(d.buckets, vec![(10, 3)]);
        assert_eq!((d.errors, d.total_ns), (2, 900));
        assert_eq!(
            (got[0].0, got[0].1),
            (
                ProcKey {
                    pid: 1,
                    incarnation: 1
                },
                syscall_key(ABI_NATIVE, 0)
            )
        );
    }

    #[test]
    fn only_changed_buckets_appear() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(900, 2, &[(10, 3), (20, 1)]))], false);
        let new = hist(1500, 2, &[(10, 3), (20, 4), (272, 1)]);
        let got = drain(&mut r, &[(0, k, new)], false);
        let d = one(&got);
        assert_eq!(d.buckets, vec![(20, 3), (272, 1)]);
        assert_eq!((d.errors, d.total_ns), (0, 600));
        assert!(drain(&mut r, &[(0, k, new)], false).is_empty(), "unchanged");
    }

    #[test]
    fn wrapped_32_bit_counts_give_the_true_difference() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        let before = hist(0, u32::MAX - 1, &[(5, u32::MAX - 2), (6, u32::MAX)]);
        drain(&mut r, &[(0, k, before)], false);
        // Bucket 6 gained exactly one event and wrapped to 0: no longer non-zero, still counted.
        let got = drain(&mut r, &[(0, k, hist(0, 3, &[(5, 4)]))], false);
        let d = one(&got);
        assert_eq!(d.buckets, vec![(5, 7), (6, 1)]);
        assert_eq!(d.errors, 5);
        // And from 0 it counts on.
        let got = drain(&mut r, &[(0, k, hist(0, 3, &[(5, 4), (6, 2)]))], false);
        assert_eq!(one(&got).buckets, vec![(6, 2)]);
    }

    #[test]
    fn every_bucket_is_seen() {
        // Block edges and the tail past the last whole block.
        let all: Vec<(usize, u32)> = (0..BUCKETS).map(|i| (i, i as u32 + 1)).collect();
        let mut r = HistReadings::default();
        let got = drain(&mut r, &[(0, key(1, 0, 0), hist(1, 0, &all))], false);
        let want: Vec<(usize, u64)> = (0..BUCKETS).map(|i| (i, i as u64 + 1)).collect();
        assert_eq!(one(&got).buckets, want);
        let edges = [0, TOUCH_BLOCK - 1, TOUCH_BLOCK, 2 * TOUCH_BLOCK - 1];
        for i in edges.into_iter().chain([BUCKETS - 2, BUCKETS - 1]) {
            let mut r = HistReadings::default();
            let got = drain(&mut r, &[(0, key(1, 0, 0), hist(1, 0, &[(i, 9)]))], false);
            assert_eq!(one(&got).buckets, vec![(i, 9)], "bucket {i}");
        }
    }

    #[test]
    fn an_idle_slot_is_not_read_again_unless_counts_only() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        // A header as it was: the buckets are not read (a change there alone would be a call
        // that added nothing to the sum, which the kernel side never makes).
        let got = drain(&mut r, &[(0, k, hist(10, 0, &[(3, 5)]))], false);
        assert!(got.is_empty(), "{got:?}");
        let got = drain(&mut r, &[(0, k, hist(20, 0, &[(3, 6)]))], false);
        assert_eq!(one(&got).buckets, vec![(3, 5)]);
        // Counts-only: the sum stays 0, the buckets are always read.
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(0, 0, &[(0, 1)]))], false);
        let got = drain(&mut r, &[(0, k, hist(0, 0, &[(0, 4)]))], false);
        assert_eq!(one(&got).buckets, vec![(0, 3)]);
    }

    #[test]
    fn a_count_not_yet_marked_touched_is_read_once_it_is() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        // The kernel has counted in bucket 40 but not yet set its block's bit.
        let mut h = hist(20, 0, &[(3, 1), (40, 1)]);
        h.head.touched &= !(1 << (40 / TOUCH_BLOCK));
        let got = drain(&mut r, &[(0, k, h)], false);
        assert_eq!(one(&got).buckets, vec![]);
        let got = drain(&mut r, &[(0, k, hist(20, 0, &[(3, 1), (40, 1)]))], false);
        assert_eq!(one(&got).buckets, vec![(40, 1)]);
    }

    #[test]
    fn readings_follow_their_slot_and_key() {
        let reading = |n: u32| -> Vec<(u32, HistKey, Hist)> {
            (0..20)
                .map(|i| {
                    (
                        3 * i,
                        key(i, 7, 0),
                        hist(u64::from(n), 0, &[(i as usize, n)]),
                    )
                })
                .collect()
        };
        let mut r = HistReadings::default();
        drain(&mut r, &reading(1), false);
        let got = drain(&mut r, &reading(3), false);
        assert_eq!(got.len(), 20);
        assert!(got
            .iter()
            .all(|g| g.2.buckets == vec![(g.0.pid as usize, 2)]));
        // Slots gone, one new, and one handed to another key: that one starts from zero.
        let mut next: Vec<(u32, HistKey, Hist)> = reading(6).into_iter().skip(3).collect();
        next.push((1, key(99, 7, 0), hist(5, 0, &[(1, 5)])));
        next[4].1 = key(98, 7, 0);
        let got = drain(&mut r, &next, false);
        assert_eq!(got.len(), 18);
        for (p, _, d) in &got {
            let want = match p.pid {
                99 => (1, 5),
                98 => (7, 6),
                pid => (pid as usize, 3),
            };
            assert_eq!(d.buckets, vec![want], "pid {}", p.pid);
        }
    }

    #[test]
    fn a_failed_drain_loses_nothing() {
        let k = key(1, 0, 0);
        let mut r = HistReadings::default();
        drain(&mut r, &[(0, k, hist(10, 0, &[(3, 1)]))], false);
        drain(&mut r, &[(0, k, hist(30, 0, &[(3, 4)]))], true);
        let got = drain(&mut r, &[(0, k, hist(40, 0, &[(3, 5)]))], false);
        let d = one(&got);
        assert_eq!((d.buckets.clone(), d.total_ns), (vec![(3, 4)], 30));
    }

    #[test]
    fn shards_of_one_pair_become_one_delta() {
        let mut r = HistReadings::default();
        let got = drain(
            &mut r,
            &[
                (0, key(2, 5, 1), hist(10, 1, &[(3, 1), (9, 2)])),
                (1, key(1, 5, 0), hist(7, 0, &[(3, 1)])),
                (2, key(2, 5, 0), hist(20, 0, &[(3, 4), (4, 1)])),
                (3, key(2, 6, 0), hist(1, 0, &[(1, 1)])),
                (4, key(2, 5, 2), hist(5, 2, &[(9, 1)])),
            ],
            false,
        );
        type Summary = (u32, u32, Vec<(usize, u64)>, u64, u64);
        let summary: Vec<Summary> = got
            .iter()
            .map(|(p, sc, d)| (p.pid, sc.nr, d.buckets.clone(), d.errors, d.total_ns))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 5, vec![(3, 1)], 0, 7),
                (2, 5, vec![(3, 5), (4, 1), (9, 3)], 3, 35),
                (2, 6, vec![(1, 1)], 0, 1),
            ]
        );
    }

    #[test]
    fn errnos_counted_in_a_slot_give_deltas_by_errno() {
        let k = key(1, 2, 0);
        let with_errnos = |counts: [u32; ERRNO_SLOTS], errnos: [u16; ERRNO_SLOTS]| {
            let mut h = hist(10, counts.iter().sum(), &[(3, 1)]);
            (h.head.errno_counts, h.head.errnos) = (counts, errnos);
            h
        };
        let mut r = HistReadings::default();
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 1, 0, 0], [2, 13, 0, 0]))],
            false,
        );
        assert_eq!(errnos, vec![(1, 2, 2, 4), (1, 2, 13, 1)]);
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 3, 1, 0], [2, 13, 11, 0]))],
            false,
        );
        assert_eq!(errnos, vec![(1, 2, 13, 2), (1, 2, 11, 1)]);
        // A count claimed but not yet added to: nothing yet.
        let (_, errnos) = drain_errnos(
            &mut r,
            &[(0, k, with_errnos([4, 3, 1, 0], [2, 13, 11, 4]))],
            false,
        );
        assert_eq!(errnos, vec![]);
    }

    #[test]
    fn calls_and_failures_of_a_pair_come_together() {
        let mut r = HistReadings::default();
        let mut deltas = Deltas::default();
        let arena = arena(&[
            (0, key(1, 5, 0), hist(7, 0, &[(3, 1)])),
            (1, key(3, 5, 0), hist(10, 1, &[(3, 1)])),
        ]);
        let mut next = 0;
        for slot in [0, 1] {
            let head = arena.head(slot).unwrap();
            let read_buckets = |into: &mut Vec<_>| arena.nonzero_buckets(slot, head.touched, into);
            r.read(&mut next, slot, &head, read_buckets, &mut deltas);
        }
        deltas.sort_and_merge_shards();
        let pk = |pid| ProcKey {
            pid,
            incarnation: 1,
        };
        let sc = |nr| syscall_key(ABI_NATIVE, nr);
        // Failures of pairs with no new calls (read after their calls), in any order.
        deltas.unsorted_errnos.extend([
            (pk(3), sc(5), 2, 1),
            (pk(2), sc(9), 13, 4),
            (pk(3), sc(5), 11, 6),
            (pk(9), sc(1), 2, 1),
        ]);
        deltas.sort_errnos();
        type Seen = (u32, u32, u64, Vec<(u32, u64)>);
        let got: Vec<Seen> = deltas
            .gains()
            .map(|g| (g.proc.pid, g.sc.nr, g.delta.count(), g.errnos.to_vec()))
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], (1, 5, 1, vec![]));
        assert_eq!(got[1], (2, 9, 0, vec![(13, 4)]));
        assert_eq!((got[2].0, got[2].1, got[2].2), (3, 5, 1));
        let mut errnos = got[2].3.clone();
        errnos.sort();
        assert_eq!(errnos, vec![(2, 1), (11, 6)]);
        assert_eq!(got[3], (9, 1, 0, vec![(2, 1)]));
    }

    #[test]
    fn errno_counts_are_found_by_position_or_index() {
        let k = |errno| ErrnoKey {
            hist: key(1, 2, 0),
            errno,
        };
        let mut p: Previous<ErrnoKey, u32> = Previous::default();
        let mut now = vec![(k(2), 5), (k(13), 1)];
        p.replace(&mut now);
        assert!(now.is_empty());
        let mut next = 0;
        assert_eq!(p.find(&mut next, &k(2)), Some(&5));
        assert_eq!(p.find(&mut next, &k(13)), Some(&1));
        assert!(p.index.is_none());
        let mut next = 0;
        assert_eq!(p.find(&mut next, &k(22)), None);
        assert_eq!(p.find(&mut next, &k(2)), Some(&5));
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
        let procs = FastMap::from_iter([(k(1, 5), info(0)), (k(2, 6), info(123))]);
        let own = std::process::id();
        // 1: running; 2: stamped; our own pid without an entry: alive in /proc; 4_000_000 (past
        // any pid_max) without an entry: gone.
        let data = [k(1, 5), k(2, 6), k(own, 3), k(4_000_000, 4)];
        let exited = exited_processes(&procs, data.into_iter());
        assert_eq!(exited, FastSet::from_iter([k(2, 6), k(4_000_000, 4)]));
    }
}
