//! Loads the embedded eBPF object, attaches its programs and hands the maps to the drain.
//! Links are owned by file descriptors: if the daemon dies in any way, the kernel detaches them.
//! The maps' handles are in maps.rs, the in-kernel filters' setup in filters.rs.

use std::path::Path;

use aya::{
    maps::{Array, MapData, Queue},
    Ebpf, EbpfLoader,
};
use profiler_common::{
    Meta, TaskLayout, ARG_REGS_LEN, CHECKPOINT_MAP, CLONE_NRS_LEN, FREE_SLOTS_MAP, GLOBAL_ARG_REGS,
    GLOBAL_CLONE_NRS, GLOBAL_COMPAT_MASK, GLOBAL_FILTER_CGROUP_ON, GLOBAL_FILTER_PIDS_ON,
    GLOBAL_FILTER_SYSCALLS_ON, GLOBAL_IGNORE_TGID, GLOBAL_SHARD_PER_CPU, GLOBAL_TASK_LAYOUT,
    GLOBAL_TIDS_MASK, HIST_SHARDS, KFUNC_RDONLY_CAST, META_MAP, PINNED_MAPS, STARTS_MAP, TIDS_MAP,
    TIDS_MAX_ENTRIES,
};
use tracing::{info, warn};

use super::{
    args,
    attach::{
        attach_each, attach_first_set, link_task_iterator, skipped_programs, task_storage_wanted,
        ProgramSet, BTF_EXITS, COUNTS_ONLY, LATENCY, LIFECYCLE, TASK_STORAGE_PROGRAMS,
    },
    btf as kernel_btf, caps,
    error::{is_permission_error, load_error, Error},
    exec_marks::ExecMarks,
    filters,
    iter::InFlightIter,
    link,
    maps::{self, CheckpointMaps, Maps},
    pin,
};
use crate::config::Filter;

/// Set (to anything) to run the kernel side as on a host with more CPUs than histogram shards:
/// every shard but a main thread's taken as shared, so atomic adds, every bucket block marked
/// touched, and errnos counted in ERRNOS. How the tests run that path on a small machine.
pub const SHARED_SHARDS_ENV: &str = "SYSCALL_PROFILER_SHARED_SHARDS";

/// A power of two: the length of TIDS (profiler_common::TIDS_MAP) instead of pid_max's; the
/// tests make it small so that live threads share entries.
pub const TIDS_ENTRIES_ENV: &str = crate::config::declare::ENV_TIDS_ENTRIES;

/// Attached programs; dropping this detaches them.
pub struct Probes {
    ebpf: Ebpf,
    time_split: bool,
    /// Whether the exec program can move an exec'ing thread to a new incarnation wherever the
    /// syscall programs keep it: in task storage only the BTF one reaches.
    exec_boundary: bool,
}

impl Probes {
    /// `record`'s exec boundary (taken once).
    pub fn exec_marks(&mut self) -> Result<ExecMarks, Error> {
        if !self.exec_boundary {
            return Err(Error::NoProgramLeft {
                tracepoint: "sched_process_exec",
                why: "a command's calls from its exec on need sched_process_exec_btf with the \
                      BTF syscall programs (left out, or refused)"
                    .into(),
            });
        }
        ExecMarks::take(&mut self.ebpf)
    }

    /// Whether the programs split each call's time into on-CPU, runnable and blocked: not in
    /// counts-only mode, nor on a kernel whose BTF lacks a field the split reads.
    pub fn time_split(&self) -> bool {
        self.time_split
    }
}

/// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) in the effective set, as loading needs.
fn check_privileges() -> Result<(), Error> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").map_err(Error::Status)?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(Error::NotPermitted { cap_eff })
}

/// Loads and attaches the programs. With `pin_dir`, the maps live there (see pin.rs): reused
/// if a previous daemon pinned them, created and pinned otherwise.
pub fn load_and_attach(
    pin_dir: Option<&Path>,
    filter: &Filter,
    counts_only: bool,
) -> Result<(Probes, Maps), Error> {
    check_privileges()?;
    if let Some(dir) = pin_dir {
        pin::prepare(dir)?;
    }
    let mut g = globals(filter, counts_only)?;
    // The task fields' offsets go into the programs' instructions (link.rs). The syscall
    // programs find the current task through `bpf_rdonly_cast` (task.rs, `running_task`), a
    // kfunc: its calls are linked here, or the programs call the helper.
    let mut main_object = link::Object::new(link::OBJECT)?;
    main_object.link_task_offsets(&g.task_layout)?;
    // Linked whether the kernel has the kfunc or not: to id 0 without it (see link_kfunc).
    let kfunc_calls = main_object.link_kfunc(KFUNC_RDONLY_CAST, g.rdonly_cast);
    if g.task_layout.rq_btf_id != 0 && kfunc_calls == 0 {
        warn!("no bpf_rdonly_cast call in the eBPF object: the current task comes from a helper");
        g.task_layout.rq_btf_id = 0;
    }

    let mut skipped = skipped_programs(g.btf_usable);
    let sets = if counts_only { COUNTS_ONLY } else { LATENCY };
    let setup = Setup {
        globals: &g,
        pin_dir,
        filter,
    };
    // The main object for the task-storage programs; the one without them if the kernel lacks
    // task storage, refuses those programs, or they are left out.
    let main = match task_storage_wanted(&skipped, counts_only) {
        true => match setup.load(main_object.bytes(), true, &sets[..1], &skipped) {
            Ok(loaded) => Some(loaded),
            Err(e) if !matches!(e, Error::Denied { .. }) => {
                warn!("{e}; loading the programs without task storage");
                None
            }
            Err(e) => return Err(e),
        },
        false => None,
    };
    let mut loaded = match main {
        Some(loaded) => loaded,
        None => {
            skipped.extend(TASK_STORAGE_PROGRAMS.iter().map(|p| p.to_string()));
            // Linked only when it is the one loaded.
            let mut slot_object = link::Object::new(link::SLOT_OBJECT)?;
            slot_object.link_task_offsets(&g.task_layout)?;
            setup.load(slot_object.bytes(), false, &sets[1..], &skipped)?
        }
    };
    info!("attached: {}", loaded.set.what);
    if loaded.set.in_task_storage() {
        info!(
            "the syscall programs find the current task {}",
            match g.task_layout.rq_btf_id {
                0 => "with a helper call (no bpf_rdonly_cast, or no runqueue fields, in this kernel's BTF)",
                _ => "as their CPU's runqueue's curr, through bpf_rdonly_cast: no helper call",
            }
        );
    }
    let ebpf = &mut loaded.ebpf;
    let checkpoint = match pin_dir {
        None => None,
        Some(dir) => {
            let mut meta = maps::take_map(ebpf, META_MAP)?;
            if !loaded.reused {
                pin::stamp(&mut meta)?;
            }
            info!(
                "maps pinned at {}: counters resume across restarts",
                dir.display()
            );
            Some(CheckpointMaps {
                chunks: maps::take_map(ebpf, CHECKPOINT_MAP)?,
                meta,
            })
        }
    };
    let maps = maps::take(ebpf, loaded.free_slots, checkpoint, loaded.in_flight)?;
    let probes = Probes {
        ebpf: loaded.ebpf,
        time_split: !counts_only && g.task_layout.split != 0,
        exec_boundary: loaded.exec_boundary,
    };
    Ok((probes, maps))
}

/// What loading an object needs besides the object.
struct Setup<'a> {
    globals: &'a Globals,
    pin_dir: Option<&'a Path>,
    filter: &'a Filter,
}

/// An object loaded and attached.
struct Loaded {
    ebpf: Ebpf,
    set: &'static ProgramSet,
    free_slots: Queue<MapData, u32>,
    in_flight: Option<InFlightIter>,
    /// Maps a previous daemon pinned, complete (its checkpoint is to be resumed).
    reused: bool,
    /// See `Probes::exec_boundary`.
    exec_boundary: bool,
}

impl Setup<'_> {
    /// Loads `object` with the globals set (and, for the main object, whose programs keep no
    /// thread records, `STARTS` cut to one entry: 8.5 MiB less kernel memory), fills the
    /// filters and the free-slot queue, then attaches the lifecycle programs and the first of
    /// `sets` the kernel takes.
    fn load(
        &self,
        object: &[u8],
        main: bool,
        sets: &'static [ProgramSet],
        skipped: &[String],
    ) -> Result<Loaded, Error> {
        let g = self.globals;
        let mut loader = EbpfLoader::new();
        // TASKS is task storage, which aya has no user-space type for (the daemon needs none).
        loader
            .allow_unsupported_maps()
            .override_global(GLOBAL_TASK_LAYOUT, &g.task_layout, true)
            .override_global(GLOBAL_IGNORE_TGID, &g.own_tgid, true)
            .override_global(GLOBAL_COMPAT_MASK, &g.compat_mask, true)
            .override_global(GLOBAL_CLONE_NRS, &g.clone_nrs, true)
            .override_global(GLOBAL_SHARD_PER_CPU, &g.shard_per_cpu, true)
            .override_global(GLOBAL_FILTER_PIDS_ON, &g.pids_on, true)
            .override_global(GLOBAL_FILTER_CGROUP_ON, &g.cgroup_on, true)
            .override_global(GLOBAL_FILTER_SYSCALLS_ON, &g.syscalls_on, true)
            .override_global(GLOBAL_ARG_REGS, &g.arg_regs, true);
        if main {
            loader.map_max_entries(STARTS_MAP, 1);
            loader.map_max_entries(TIDS_MAP, g.tids_entries);
            loader.override_global(GLOBAL_TIDS_MASK, &g.tids_mask, true);
        }
        match self.pin_dir {
            Some(dir) => {
                for name in PINNED_MAPS {
                    loader.map_pin_path(name, dir.join(name));
                }
            }
            // Never written: one entry costs nothing.
            None => {
                loader.map_max_entries(CHECKPOINT_MAP, 1);
            }
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| load_error("loading the eBPF object", e))?;
        // Before attaching: a filter that is on with an empty map would drop everything
        // meanwhile, and an empty free-slot queue would drop every new histogram.
        filters::fill(&mut ebpf, self.filter)?;
        args::fill_kinds(&mut ebpf, self.filter.no_arg_capture)?;
        let mut free_slots: Queue<MapData, u32> = maps::take_map(&mut ebpf, FREE_SLOTS_MAP)?;
        let reused = self.pin_dir.is_some() && !unstamped(&ebpf)?;
        if reused {
            pin::forget_unseen_exits(&mut ebpf)?;
        } else {
            maps::fill_free_slots(&mut free_slots)?;
        }
        let lifecycle = attach_each(&mut ebpf, LIFECYCLE, skipped)?;
        let set = attach_first_set(&mut ebpf, sets, skipped)?;
        // The pid filter's left-out cache (task.rs) is keyed by the thread's kernel stack, which
        // a later thread gets: only a BTF exit program forgets a thread before that.
        if set.in_task_storage()
            && g.pids_on != 0
            && !lifecycle.iter().any(|p| BTF_EXITS.contains(p))
        {
            return Err(Error::NoProgramLeft {
                tracepoint: "sched_process_exit",
                why: format!(
                    "the pid filter needs {} with the BTF syscall programs",
                    BTF_EXITS.join(" or ")
                ),
            });
        }
        let exec_boundary = !set.in_task_storage() || lifecycle.contains(&"sched_process_exec_btf");
        let in_flight = match set.task_iterator {
            true => Some(link_task_iterator(&mut ebpf)?),
            false => None,
        };
        Ok(Loaded {
            ebpf,
            set,
            free_slots,
            in_flight,
            reused,
            exec_boundary,
        })
    }
}

/// What the programs read from their globals: our own tgid, where the kernel keeps what they
/// need, how the histogram shards are shared, which filters are on.
struct Globals {
    own_tgid: u32,
    /// Its offsets go into the programs' instructions (link.rs), its flags into a global.
    task_layout: TaskLayout,
    /// The BTF id of the kfunc `bpf_rdonly_cast`, 0 when the programs do without.
    rdonly_cast: u32,
    /// Whether the BTF programs can find what they load (else they are left out).
    btf_usable: bool,
    compat_mask: u32,
    clone_nrs: [u32; CLONE_NRS_LEN],
    shard_per_cpu: u32,
    /// TIDS's length, and it less one.
    tids_entries: u32,
    tids_mask: u32,
    pids_on: u32,
    cgroup_on: u32,
    syscalls_on: u32,
    arg_regs: [u32; ARG_REGS_LEN],
}

fn globals(filter: &Filter, counts_only: bool) -> Result<Globals, Error> {
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
        (0, 0)
    });
    let (mut task_layout, btf_usable) = match in_btf(&btf, kernel_btf::task_layout) {
        Ok((layout, None)) => (layout, true),
        Ok((layout, Some(missing))) => {
            if !counts_only {
                warn!(
                    "where syscall time goes (on CPU, runnable, blocked) is unavailable: {missing}"
                );
            }
            (layout, true)
        }
        Err(e) => {
            warn!("no BTF programs: {e}");
            (TaskLayout::default(), false)
        }
    };
    // The runqueue's layout is of use only with the kfunc to load through it.
    let rdonly_cast = match task_layout.rq_btf_id {
        0 => 0,
        _ => in_btf(&btf, kernel_btf::rdonly_cast_id).unwrap_or(0),
    };
    if rdonly_cast == 0 {
        task_layout.rq_btf_id = 0;
    }
    task_layout.compat = compat_offset;
    if counts_only {
        task_layout.nr_reg =
            in_btf(&btf, kernel_btf::syscall_nr_offset).map_err(|e| Error::NoBtf(e.into()))?;
    }
    let clone_nrs = filters::clone_numbers();
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
    let tids_entries = tids_entries()?;
    let pids_on = u32::from(!filter.pids.is_empty());
    let cgroup_on = u32::from(filter.cgroup.is_some());
    let syscalls_on = u32::from(!filter.syscalls.is_empty());
    Ok(Globals {
        own_tgid,
        task_layout,
        rdonly_cast,
        btf_usable,
        compat_mask,
        clone_nrs,
        shard_per_cpu,
        tids_entries,
        tids_mask: tids_entries - 1,
        pids_on,
        cgroup_on,
        syscalls_on,
        arg_regs: args::arg_regs(),
    })
}

/// TIDS's length: one entry per tid the kernel can hand out (`pid_max`, rounded up to a power
/// of two for the mask), at most TIDS_MAX_ENTRIES; or what `TIDS_ENTRIES_ENV` says.
/// A value that is not such a power of two is refused, never ignored.
fn tids_entries() -> Result<u32, Error> {
    if let Some(value) = std::env::var_os(TIDS_ENTRIES_ENV) {
        let value = value.to_string_lossy().into_owned();
        let n = value
            .parse::<u32>()
            .ok()
            .filter(|n| n.is_power_of_two() && *n <= TIDS_MAX_ENTRIES)
            .ok_or(Error::BadVariable {
                name: TIDS_ENTRIES_ENV,
                value,
                expected: "a power of two from 1 to 32768",
            })?;
        info!("{TIDS_ENTRIES_ENV}: {n} entries in TIDS");
        return Ok(n);
    }
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(TIDS_MAX_ENTRIES);
    Ok(pid_max.max(2).next_power_of_two().min(TIDS_MAX_ENTRIES))
}

/// Whether the pinned maps are new: META is stamped only once they are complete.
fn unstamped(ebpf: &Ebpf) -> Result<bool, Error> {
    let meta = ebpf
        .map(META_MAP)
        .ok_or_else(|| Error::MissingMap(META_MAP.to_string()))?;
    let meta: Array<&MapData, Meta> = Array::try_from(meta).map_err(|source| Error::Map {
        name: META_MAP.to_string(),
        source,
    })?;
    let record = meta.get(&0, 0).map_err(|e| Error::ReadMap(META_MAP, e))?;
    Ok(record.fingerprint == 0)
}

/// Whether the drain's map operations (lookup, next key) work on the held fds with no
/// capability at all. True on kernels ≥ 6.5; older ones check CAP_BPF on every bpf() call while
/// `kernel.unprivileged_bpf_disabled` is set.
pub fn maps_readable_unprivileged(maps: &Maps) -> Result<bool, Error> {
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
    .map_err(Error::Probe)?;
    match outcome {
        Ok(()) => Ok(true),
        Err(e) if is_permission_error(&e) => Ok(false),
        Err(e) => Err(Error::Unprivileged(e)),
    }
}
