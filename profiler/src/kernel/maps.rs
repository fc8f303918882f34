//! The maps the drain reads, taken from the loaded object.

use std::os::fd::AsFd;

use aya::{
    maps::{Array, HashMap, IterableMap, MapData, PerCpuArray, Queue},
    Ebpf,
};
use profiler_common::{
    ErrnoKey, HistKey, Meta, ProcInfo, Start, ARG_STATS_MAP, CHECKPOINT_CHUNK, COUNTERS_MAP,
    CPU_SLOT_MAP, ERRNOS_MAP, FAILED_ARGS_MAP, HISTS_MAP, HISTS_MAX_ENTRIES, HIST_SLOTS_MAP,
    NEW_SLOTS_MAP, PROCS_MAP, STARTS_MAP,
};

use super::{
    arena::HistArena, args::ArgMaps, batch, error::Error, iter::InFlightIter, log::KernelLog,
};

/// The maps the drain reads.
pub struct Maps {
    pub hists: HistArena,
    pub hist_slots: HashMap<MapData, HistKey, u32>,
    pub free_slots: Queue<MapData, u32>,
    pub new_slots: Queue<MapData, u32>,
    pub errnos: HashMap<MapData, ErrnoKey, u32>,
    pub procs: HashMap<MapData, profiler_common::ProcKey, ProcInfo>,
    /// The calls in flight: read through the task iterator when the programs keep starts in
    /// task storage, else from STARTS and CPU_SLOT.
    pub in_flight: Option<InFlightIter>,
    pub starts: HashMap<MapData, u32, Start>,
    pub cpu_slot: PerCpuArray<MapData, Start>,
    pub counters: PerCpuArray<MapData, u64>,
    /// The programs' rare log lines (log.rs).
    pub log: KernelLog,
    /// Failing calls' arguments.
    pub args: ArgMaps,
    /// Only with `--pin-path`.
    pub checkpoint: Option<CheckpointMaps>,
}

/// Where the drain commits its checkpoint (see profiler_common's CHECKPOINT_MAP and META_MAP).
pub struct CheckpointMaps {
    pub chunks: HashMap<MapData, u32, [u8; CHECKPOINT_CHUNK]>,
    pub meta: Array<MapData, Meta>,
}

impl CheckpointMaps {
    /// Writes chunks `keys` from `bytes` (`CHECKPOINT_CHUNK` bytes each, in order), in one call.
    pub fn put_chunks(&mut self, keys: &[u32], bytes: &[u8]) -> std::io::Result<()> {
        if bytes.len() != keys.len() * CHECKPOINT_CHUNK {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        batch::update_all(self.chunks.map().fd().as_fd(), keys, bytes)
    }
}

/// The drain's maps, once the programs are attached: `free_slots` and `checkpoint` were taken
/// before (the loader fills the one and stamps the other's META).
pub(super) fn take(
    ebpf: &mut Ebpf,
    free_slots: Queue<MapData, u32>,
    checkpoint: Option<CheckpointMaps>,
    in_flight: Option<InFlightIter>,
) -> Result<Maps, Error> {
    let hists = ebpf
        .take_map(HISTS_MAP)
        .ok_or_else(|| Error::MissingMap(HISTS_MAP.to_string()))?;
    let aya::maps::Map::Array(hists) = hists else {
        return Err(Error::NotAnArray(HISTS_MAP));
    };
    let maps = Maps {
        hists: HistArena::new(hists).map_err(Error::Arena)?,
        hist_slots: take_map(ebpf, HIST_SLOTS_MAP)?,
        free_slots,
        new_slots: take_map(ebpf, NEW_SLOTS_MAP)?,
        errnos: take_map(ebpf, ERRNOS_MAP)?,
        procs: take_map(ebpf, PROCS_MAP)?,
        in_flight,
        starts: take_map(ebpf, STARTS_MAP)?,
        cpu_slot: take_map(ebpf, CPU_SLOT_MAP)?,
        counters: take_map(ebpf, COUNTERS_MAP)?,
        log: KernelLog::take(ebpf)?,
        args: ArgMaps::new(
            take_map(ebpf, FAILED_ARGS_MAP)?,
            take_map(ebpf, ARG_STATS_MAP)?,
        ),
        checkpoint,
    };
    let mut maps = maps;
    // The first budget: nothing is captured until it is set.
    maps.args
        .renew_budget()
        .map_err(|e| Error::Budget(format!("{e:#}")))?;
    Ok(maps)
}

/// Puts every HISTS slot in the kernel's free queue, emptying it first: a daemon killed while
/// filling it left a partial queue and an unstamped META, and a slot queued twice would be
/// handed to two keys.
pub(super) fn fill_free_slots(queue: &mut Queue<MapData, u32>) -> Result<(), Error> {
    while queue.pop(0).is_ok() {}
    for slot in 0..HISTS_MAX_ENTRIES {
        queue
            .push(slot, 0)
            .map_err(|source| Error::FreeSlots { slot, source })?;
    }
    Ok(())
}

pub(super) fn take_map<M>(ebpf: &mut Ebpf, name: &str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::MissingMap(name.to_string()))?;
    M::try_from(map).map_err(|source| Error::Map {
        name: name.to_string(),
        source,
    })
}
