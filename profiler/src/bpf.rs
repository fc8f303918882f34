//! Loads the embedded eBPF object, attaches its programs and hands the maps to the drain.
//! Links are owned by file descriptors: if the daemon dies in any way, the kernel detaches them.

use std::io;

use aya::{
    maps::{Array, CgroupArray, HashMap, MapData, PerCpuArray, Queue},
    programs::Program,
    Ebpf, EbpfLoader,
};
use std::{os::fd::AsRawFd, path::Path};

use profiler_common::{
    ErrnoKey, HistKey, LedgerErrnoKey, LedgerKey, LedgerTotals, ProcInfo, Start, CLONE_NRS_LEN,
    COMPAT_DISABLED, COUNTERS_MAP, CPU_SLOT_MAP, ERRNOS_MAP, FILTER_CGROUP_MAP, FILTER_PIDS_MAP,
    FILTER_SYSCALLS_MAP, FILTER_SYSCALLS_PER_ABI, FREE_SLOTS_MAP, GLOBAL_CLONE_NRS,
    GLOBAL_COMPAT_MASK, GLOBAL_COMPAT_OFFSET, GLOBAL_FILTER_CGROUP_ON, GLOBAL_FILTER_PIDS_ON,
    GLOBAL_FILTER_SYSCALLS_ON, GLOBAL_IGNORE_TGID, GLOBAL_NR_REG_OFFSET, GLOBAL_SHARD_PER_CPU,
    HISTS_MAP, HISTS_MAX_ENTRIES, HIST_SHARDS, HIST_SLOTS_MAP, LEDGER_ERRNOS_MAP, LEDGER_MAP,
    META_MAP, NEW_SLOTS_MAP, PINNED_MAPS, PROCS_MAP, STARTS_MAP,
};
use tracing::{info, warn};

use crate::{caps, config::Filter, fatal::Fatal, hist_arena::HistArena, kernel_btf, pin, syscalls};

/// Built from profiler-ebpf by `cargo xtask build-ebpf`; see docs/building.md ("The embedded
/// eBPF object") for why it is committed and how it is kept fresh.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/profiler.bpf.o");

/// Attached in this order: the lifecycle programs first, so no thread that starts a syscall
/// can exit unseen; `sys_exit` before `sys_enter`, so no start is recorded without its exit.
/// Each entry lists the programs for one tracepoint, preferred first: kernels before 6.16 have
/// no `group_dead` argument on `sched_process_exit`, and refuse the program that reads it.
const PROGRAMS: &[(&str, &[&str])] = &[
    (
        "sched_process_exit",
        &["sched_process_exit", "sched_process_exit_leader"],
    ),
    ("sched_process_exec", &["sched_process_exec"]),
    ("sched_switch", &["sched_switch"]),
    ("sys_exit", &["sys_exit"]),
    ("sys_enter", &["sys_enter_btf", "sys_enter"]),
];

/// Programs to leave out as if the kernel had refused them (names, comma-separated), so the
/// loader takes the next candidate: how the tests run the fallbacks on a kernel that accepts the
/// preferred programs, and a way around a kernel that loads one but misbehaves with it.
pub const SKIP_PROGRAMS_ENV: &str = "SYSCALL_PROFILER_SKIP_PROGRAMS";

/// Set (to anything) to run the kernel side as on a host with more CPUs than histogram shards:
/// every shard but a main thread's taken as shared, so atomic adds, every bucket block marked
/// touched, and errnos counted in ERRNOS. How the tests run that path on a small machine.
pub const SHARED_SHARDS_ENV: &str = "SYSCALL_PROFILER_SHARED_SHARDS";

/// Counts-only mode: no `sys_enter` at all.
const COUNTS_ONLY_PROGRAMS: &[(&str, &[&str])] = &[
    (
        "sched_process_exit",
        &["sched_process_exit", "sched_process_exit_leader"],
    ),
    ("sched_process_exec", &["sched_process_exec"]),
    ("sys_exit", &["sys_exit_counts_btf", "sys_exit_counts"]),
];

/// The maps the drain reads.
pub struct Maps {
    pub hists: HistArena,
    pub hist_slots: HashMap<MapData, HistKey, u32>,
    pub free_slots: Queue<MapData, u32>,
    pub new_slots: Queue<MapData, u32>,
    pub errnos: HashMap<MapData, ErrnoKey, u32>,
    pub procs: HashMap<MapData, profiler_common::ProcKey, ProcInfo>,
    pub starts: HashMap<MapData, u32, Start>,
    pub cpu_slot: PerCpuArray<MapData, Start>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Only with `--pin-path`.
    pub ledger: Option<Ledger>,
}

/// The totals of retired kernel entries, kept for the next daemon (see profiler_common).
pub struct Ledger {
    pub totals: HashMap<MapData, LedgerKey, LedgerTotals>,
    pub errnos: HashMap<MapData, LedgerErrnoKey, u64>,
}

/// Attached programs; dropping this detaches them.
pub struct Probes {
    _ebpf: Ebpf,
}

/// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) in the effective set, as loading needs.
fn check_privileges() -> Result<(), Fatal> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Fatal::Other(anyhow::anyhow!("reading /proc/self/status: {e}")))?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(Fatal::Privileges(format!(
        "not permitted to load eBPF programs: run as root, or with CAP_BPF and CAP_PERFMON \
         (effective capabilities: {cap_eff:#x})"
    )))
}

fn is_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn load_error(what: &str, e: &(dyn std::error::Error + 'static)) -> Fatal {
    let mut msg = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    if is_permission_error(e) {
        Fatal::Privileges(format!(
            "{msg} (needs root, or CAP_BPF and CAP_PERFMON, and no LSM or seccomp profile \
             denying bpf(): in a container, seccomp=unconfined, see docs/deploy.md)"
        ))
    } else {
        Fatal::Kernel(format!(
            "{msg} (needs Linux >= 5.8 with BPF raw tracepoints and the bpf() syscall enabled)"
        ))
    }
}

/// Loads and attaches the programs. With `pin_dir`, the maps live there (see pin.rs): reused
/// if a previous daemon pinned them, created and pinned otherwise.
pub fn load_and_attach(
    pin_dir: Option<&Path>,
    filter: &Filter,
    counts_only: bool,
) -> Result<(Probes, Maps), Fatal> {
    check_privileges()?;
    if let Some(dir) = pin_dir {
        pin::prepare(dir)?;
    }
    let own_tgid = std::process::id();
    let btf = kernel_btf::Btf::from_sys_fs().map_err(|e| format!("{e:#}"));
    fn in_btf<T>(
        btf: &Result<kernel_btf::Btf, String>,
        find: fn(&kernel_btf::Btf) -> anyhow::Result<T>,
    ) -> Result<T, String> {
        let btf = btf.as_ref().map_err(Clone::clone)?;
        find(btf).map_err(|e| format!("{e:#}"))
    }
    let (compat_offset, compat_mask) = in_btf(&btf, kernel_btf::compat_flag).unwrap_or_else(|e| {
        warn!("32-bit compat syscalls will be counted as native ones: {e}");
        (COMPAT_DISABLED, 0)
    });
    let nr_offset = if counts_only {
        in_btf(&btf, kernel_btf::syscall_nr_offset).map_err(|e| {
            Fatal::Kernel(format!(
                "counts_only needs the kernel's BTF to find the syscall number: {e}"
            ))
        })?
    } else {
        0
    };
    let clone_nrs = clone_numbers();
    let shard_per_cpu = match aya::util::nr_cpus() {
        _ if std::env::var_os(SHARED_SHARDS_ENV).is_some() => {
            info!("{SHARED_SHARDS_ENV}: histogram shards will use atomic adds");
            0
        }
        Ok(n) => u32::from(n <= HIST_SHARDS as usize),
        Err((path, e)) => {
            warn!("reading {path}: {e}; histogram shards will use atomic adds");
            0
        }
    };
    let pids_on = u32::from(!filter.pids.is_empty());
    let cgroup_on = u32::from(filter.cgroup.is_some());
    let syscalls_on = u32::from(!filter.syscalls.is_empty());
    let mut loader = EbpfLoader::new();
    loader
        .override_global(GLOBAL_IGNORE_TGID, &own_tgid, true)
        .override_global(GLOBAL_COMPAT_OFFSET, &compat_offset, true)
        .override_global(GLOBAL_COMPAT_MASK, &compat_mask, true)
        .override_global(GLOBAL_NR_REG_OFFSET, &nr_offset, true)
        .override_global(GLOBAL_CLONE_NRS, &clone_nrs, true)
        .override_global(GLOBAL_SHARD_PER_CPU, &shard_per_cpu, true)
        .override_global(GLOBAL_FILTER_PIDS_ON, &pids_on, true)
        .override_global(GLOBAL_FILTER_CGROUP_ON, &cgroup_on, true)
        .override_global(GLOBAL_FILTER_SYSCALLS_ON, &syscalls_on, true);
    for name in PINNED_MAPS.iter().filter(|_| pin_dir.is_some()) {
        loader.map_pin_path(name, pin_dir.unwrap().join(name));
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| load_error("loading the eBPF object", &e))?;

    // Before attaching: a filter that is on with an empty map would drop everything meanwhile,
    // and an empty free-slot queue would drop every new histogram.
    fill_filters(&mut ebpf, filter)?;
    let mut free_slots: Queue<MapData, u32> = take_map(&mut ebpf, FREE_SLOTS_MAP)?;
    if pin_dir.is_none() || unstamped(&ebpf)? {
        fill_free_slots(&mut free_slots)?;
    }
    let programs = if counts_only {
        COUNTS_ONLY_PROGRAMS
    } else {
        PROGRAMS
    };
    let skipped = std::env::var(SKIP_PROGRAMS_ENV).unwrap_or_default();
    let skipped: Vec<&str> = skipped.split(',').map(str::trim).collect();
    for &(tracepoint, candidates) in programs {
        let mut outcome = Err(Fatal::Other(anyhow::anyhow!(
            "no program left for tracepoint {tracepoint}: {SKIP_PROGRAMS_ENV} leaves out {}",
            candidates.join(" and ")
        )));
        for &program in candidates {
            if skipped.contains(&program) {
                info!("left out {program} ({SKIP_PROGRAMS_ENV})");
                continue;
            }
            outcome = attach(&mut ebpf, program, tracepoint);
            if outcome.is_ok() {
                info!("attached {program} to tracepoint {tracepoint}");
                break;
            }
        }
        outcome?;
    }

    let ledger = match pin_dir {
        None => None,
        Some(dir) => {
            let mut meta = take_map(&mut ebpf, META_MAP)?;
            pin::stamp(&mut meta)?;
            info!(
                "maps pinned at {}: counters resume across restarts",
                dir.display()
            );
            Some(Ledger {
                totals: take_map(&mut ebpf, LEDGER_MAP)?,
                errnos: take_map(&mut ebpf, LEDGER_ERRNOS_MAP)?,
            })
        }
    };
    let hists = ebpf
        .take_map(HISTS_MAP)
        .ok_or_else(|| Fatal::Other(anyhow::anyhow!("map {HISTS_MAP} missing from object")))?;
    let aya::maps::Map::Array(hists) = hists else {
        return Err(Fatal::Other(anyhow::anyhow!(
            "map {HISTS_MAP} is not an array"
        )));
    };
    let maps = Maps {
        hists: HistArena::new(hists).map_err(Fatal::Other)?,
        hist_slots: take_map(&mut ebpf, HIST_SLOTS_MAP)?,
        free_slots,
        new_slots: take_map(&mut ebpf, NEW_SLOTS_MAP)?,
        errnos: take_map(&mut ebpf, ERRNOS_MAP)?,
        procs: take_map(&mut ebpf, PROCS_MAP)?,
        starts: take_map(&mut ebpf, STARTS_MAP)?,
        cpu_slot: take_map(&mut ebpf, CPU_SLOT_MAP)?,
        counters: take_map(&mut ebpf, COUNTERS_MAP)?,
        ledger,
    };
    Ok((Probes { _ebpf: ebpf }, maps))
}

/// Whether the pinned maps are new: META is stamped only once they are complete.
fn unstamped(ebpf: &Ebpf) -> Result<bool, Fatal> {
    let meta = ebpf
        .map(META_MAP)
        .ok_or_else(|| Fatal::Other(anyhow::anyhow!("map {META_MAP} missing from object")))?;
    let meta: Array<&MapData, u64> =
        Array::try_from(meta).map_err(|e| Fatal::Other(anyhow::anyhow!("map {META_MAP}: {e}")))?;
    let stamp = meta
        .get(&0, 0)
        .map_err(|e| Fatal::Other(anyhow::anyhow!("reading {META_MAP}: {e}")))?;
    Ok(stamp == 0)
}

/// Puts every HISTS slot in the kernel's free queue, emptying it first: a daemon killed while
/// filling it left a partial queue and an unstamped META, and a slot queued twice would be
/// handed to two keys.
fn fill_free_slots(queue: &mut Queue<MapData, u32>) -> Result<(), Fatal> {
    while queue.pop(0).is_ok() {}
    for slot in 0..HISTS_MAX_ENTRIES {
        queue.push(slot, 0).map_err(|e| {
            Fatal::Other(anyhow::anyhow!(
                "filling {FREE_SLOTS_MAP} (slot {slot}): {e}"
            ))
        })?;
    }
    Ok(())
}

/// See profiler_common::GLOBAL_CLONE_NRS.
fn clone_numbers() -> [u32; CLONE_NRS_LEN] {
    let mut nrs = [u32::MAX; CLONE_NRS_LEN];
    for (i, name) in ["clone", "clone3", "fork", "vfork"].iter().enumerate() {
        for (abi, nr) in syscalls::numbers_of(name) {
            nrs[i + if abi == syscalls::Abi::Compat { 4 } else { 0 }] = nr;
        }
    }
    nrs
}

fn fill_filters(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), Fatal> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Fatal::Other(anyhow::anyhow!("setting up the {what} filter: {e}"))
    };
    fn map<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut aya::maps::Map, Fatal> {
        ebpf.map_mut(name)
            .ok_or_else(|| Fatal::Other(anyhow::anyhow!("map {name} missing from object")))
    }
    if !filter.pids.is_empty() {
        let mut pids: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map(ebpf, FILTER_PIDS_MAP)?).map_err(|e| failed("pid", &e))?;
        for &pid in &filter.pids {
            pids.insert(pid, 1, 0).map_err(|e| failed("pid", &e))?;
        }
    }
    if let Some(dir) = &filter.cgroup {
        let fd = std::fs::File::open(dir)
            .map_err(|e| Fatal::Config(format!("filter_cgroup {}: {e}", dir.display())))?;
        let mut cgroups: CgroupArray<&mut MapData> =
            CgroupArray::try_from(map(ebpf, FILTER_CGROUP_MAP)?)
                .map_err(|e| failed("cgroup", &e))?;
        cgroups.set(0, fd.as_raw_fd(), 0).map_err(|e| {
            Fatal::Config(format!(
                "filter_cgroup {}: not a cgroup v2 directory ({e})",
                dir.display()
            ))
        })?;
    }
    if !filter.syscalls.is_empty() {
        let mut wanted: Array<&mut MapData, u8> =
            Array::try_from(map(ebpf, FILTER_SYSCALLS_MAP)?).map_err(|e| failed("syscall", &e))?;
        for name in &filter.syscalls {
            for (abi, nr) in syscalls::numbers_of(name) {
                if nr >= FILTER_SYSCALLS_PER_ABI {
                    continue;
                }
                let index = u32::from(abi == syscalls::Abi::Compat) * FILTER_SYSCALLS_PER_ABI + nr;
                wanted.set(index, 1, 0).map_err(|e| failed("syscall", &e))?;
            }
        }
    }
    Ok(())
}

/// Loads and attaches `program` to `tracepoint`, as a BTF tracepoint (which needs the kernel's
/// BTF) or a raw one, whichever the object says it is.
fn attach(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), Fatal> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| Fatal::Other(anyhow::anyhow!("program {program} missing from object")))?;
    let verifying =
        |e: &aya::programs::ProgramError| load_error(&format!("verifying program {program}"), e);
    let attaching = |e: &aya::programs::ProgramError| {
        load_error(
            &format!("attaching {program} to tracepoint {tracepoint}"),
            e,
        )
    };
    match prog {
        Program::BtfTracePoint(prog) => {
            let btf =
                aya::Btf::from_sys_fs().map_err(|e| load_error("reading the kernel's BTF", &e))?;
            prog.load(tracepoint, &btf).map_err(|e| verifying(&e))?;
            prog.attach().map_err(|e| attaching(&e))?;
        }
        Program::RawTracePoint(prog) => {
            prog.load().map_err(|e| verifying(&e))?;
            prog.attach(tracepoint).map_err(|e| attaching(&e))?;
        }
        _ => {
            return Err(Fatal::Other(anyhow::anyhow!(
                "program {program} is neither a raw nor a BTF tracepoint"
            )))
        }
    }
    Ok(())
}

fn take_map<M>(ebpf: &mut Ebpf, name: &str) -> Result<M, Fatal>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Fatal::Other(anyhow::anyhow!("map {name} missing from object")))?;
    M::try_from(map).map_err(|e| Fatal::Other(anyhow::anyhow!("map {name}: {e}")))
}

/// Whether the drain's map operations (lookup, next key) work on the held fds with no
/// capability at all. True on kernels ≥ 6.5; older ones check CAP_BPF on every bpf() call while
/// `kernel.unprivileged_bpf_disabled` is set.
pub fn maps_readable_unprivileged(maps: &Maps) -> Result<bool, Fatal> {
    let outcome = caps::works_unprivileged(|| -> Result<(), aya::maps::MapError> {
        maps.counters.get(&0, 0)?;
        if let Some(key) = maps.hist_slots.keys().next() {
            key?;
        }
        if let Some(entry) = maps.procs.iter().next() {
            entry?;
        }
        Ok(())
    })
    .map_err(|e| Fatal::Other(anyhow::anyhow!(e)))?;
    match outcome {
        Ok(()) => Ok(true),
        Err(e) if is_permission_error(&e) => Ok(false),
        Err(e) => Err(Fatal::Other(anyhow::anyhow!(
            "reading the maps with no capabilities: {e}"
        ))),
    }
}
