//! Loads the embedded eBPF object, attaches its programs and hands the maps to the drain.
//! Links are owned by file descriptors: if the daemon dies in any way, the kernel detaches them.
//! The maps' handles are in maps.rs, the in-kernel filters' setup in filters.rs.

use std::{os::fd::AsFd, path::Path};

use aya::{
    maps::{Array, MapData, Queue},
    programs::Program,
    Ebpf, EbpfLoader,
};
use profiler_common::{
    TaskLayout, CLONE_NRS_LEN, COMPAT_DISABLED, FREE_SLOTS_MAP, GLOBAL_CLONE_NRS,
    GLOBAL_COMPAT_MASK, GLOBAL_COMPAT_OFFSET, GLOBAL_FILTER_CGROUP_ON, GLOBAL_FILTER_PIDS_ON,
    GLOBAL_FILTER_SYSCALLS_ON, GLOBAL_IGNORE_TGID, GLOBAL_NR_REG_OFFSET, GLOBAL_SHARD_PER_CPU,
    GLOBAL_TASK_LAYOUT, HIST_SHARDS, LEDGER_ERRNOS_MAP, LEDGER_MAP, META_MAP, PINNED_MAPS,
};
use tracing::{info, warn};

use super::{
    btf as kernel_btf, caps,
    error::{is_permission_error, BoxError, Error},
    exec_marks::ExecMarks,
    filters,
    iter::InFlightIter,
    maps::{self, Ledger, Maps},
    pin,
};
use crate::config::Filter;

/// Built from profiler-ebpf by `cargo xtask build-ebpf`; see docs/building.md ("The embedded
/// eBPF object") for why it is committed and how it is kept fresh.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/profiler.bpf.o");

/// The lifecycle programs, attached first so no thread that starts a syscall can exit unseen.
/// Each entry lists the programs for one tracepoint, preferred first: kernels before 6.16 have
/// no `group_dead` argument on `sched_process_exit`, and refuse the program that reads it.
const LIFECYCLE: &[(&str, &[&str])] = &[
    (
        "sched_process_exit",
        &["sched_process_exit", "sched_process_exit_leader"],
    ),
    (
        "sched_process_exec",
        &["sched_process_exec_btf", "sched_process_exec"],
    ),
];

/// One way of keeping a syscall's start (profiler-ebpf programs/mod.rs): its programs and their
/// tracepoints, all attached or none, in this order (`sys_exit` before `sys_enter`, so no start
/// is recorded without its exit).
struct ProgramSet {
    what: &'static str,
    programs: &'static [(&'static str, &'static str)],
    /// Whether the drain reads the calls in flight through the `in_flight` task iterator
    /// (else from STARTS and CPU_SLOT).
    task_iterator: bool,
}

/// Preferred first: task storage (BTF tracepoints, kernels ≥ 5.11, nothing at context
/// switches), then the raw tracepoints' per-CPU slot parked at `sched_switch`.
const LATENCY: &[ProgramSet] = &[
    ProgramSet {
        what: "syscall starts kept in task storage",
        programs: &[("sys_exit", "sys_exit_btf"), ("sys_enter", "sys_enter_btf")],
        task_iterator: true,
    },
    ProgramSet {
        what: "syscall starts kept in a per-CPU slot, parked at sched_switch",
        programs: &[
            ("sched_switch", "sched_switch"),
            ("sys_exit", "sys_exit"),
            ("sys_enter", "sys_enter"),
        ],
        task_iterator: false,
    },
];

/// Counts-only mode: no `sys_enter` at all.
const COUNTS_ONLY: &[ProgramSet] = &[
    ProgramSet {
        what: "counts only, processes kept in task storage",
        programs: &[("sys_exit", "sys_exit_counts_btf")],
        task_iterator: false,
    },
    ProgramSet {
        what: "counts only, processes looked up per call",
        programs: &[("sys_exit", "sys_exit_counts")],
        task_iterator: false,
    },
];

/// Programs to leave out as if the kernel had refused them (names, comma-separated), so the
/// loader takes the next candidate: how the tests run the fallbacks on a kernel that accepts the
/// preferred programs, and a way around a kernel that loads one but misbehaves with it.
/// Declared in config, so the settings' check of the environment knows it.
pub const SKIP_PROGRAMS_ENV: &str = crate::config::declare::ENV_SKIP_PROGRAMS;

/// Set (to anything) to run the kernel side as on a host with more CPUs than histogram shards:
/// every shard but a main thread's taken as shared, so atomic adds, every bucket block marked
/// touched, and errnos counted in ERRNOS. How the tests run that path on a small machine.
/// Declared in config, like `SKIP_PROGRAMS_ENV`.
pub const SHARED_SHARDS_ENV: &str = crate::config::declare::ENV_SHARED_SHARDS;

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

/// What `what` failed with, as a privileges error (EPERM, EACCES) or a kernel that refuses.
fn load_error(what: impl Into<String>, e: impl Into<BoxError>) -> Error {
    let (what, source) = (what.into(), e.into());
    if is_permission_error(&*source) {
        Error::Denied { what, source }
    } else {
        Error::Refused { what, source }
    }
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
    let g = globals(filter, counts_only)?;
    let mut loader = EbpfLoader::new();
    // TASKS is task storage, which aya has no user-space type for (the daemon needs none).
    loader
        .allow_unsupported_maps()
        .override_global(GLOBAL_TASK_LAYOUT, &g.task_layout, true)
        .override_global(GLOBAL_IGNORE_TGID, &g.own_tgid, true)
        .override_global(GLOBAL_COMPAT_OFFSET, &g.compat_offset, true)
        .override_global(GLOBAL_COMPAT_MASK, &g.compat_mask, true)
        .override_global(GLOBAL_NR_REG_OFFSET, &g.nr_offset, true)
        .override_global(GLOBAL_CLONE_NRS, &g.clone_nrs, true)
        .override_global(GLOBAL_SHARD_PER_CPU, &g.shard_per_cpu, true)
        .override_global(GLOBAL_FILTER_PIDS_ON, &g.pids_on, true)
        .override_global(GLOBAL_FILTER_CGROUP_ON, &g.cgroup_on, true)
        .override_global(GLOBAL_FILTER_SYSCALLS_ON, &g.syscalls_on, true);
    for name in PINNED_MAPS.iter().filter(|_| pin_dir.is_some()) {
        loader.map_pin_path(name, pin_dir.unwrap().join(name));
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| load_error("loading the eBPF object", e))?;

    // Before attaching: a filter that is on with an empty map would drop everything meanwhile,
    // and an empty free-slot queue would drop every new histogram.
    filters::fill(&mut ebpf, filter)?;
    let mut free_slots: Queue<MapData, u32> = maps::take_map(&mut ebpf, FREE_SLOTS_MAP)?;
    if pin_dir.is_none() || unstamped(&ebpf)? {
        maps::fill_free_slots(&mut free_slots)?;
    }
    let skipped = skipped_programs(g.btf_usable);
    let lifecycle = attach_each(&mut ebpf, LIFECYCLE, &skipped)?;
    let sets = if counts_only { COUNTS_ONLY } else { LATENCY };
    let set = attach_first_set(&mut ebpf, sets, &skipped)?;
    info!("attached: {}", set.what);
    let in_task_storage = set.programs.iter().any(|(_, p)| p.ends_with("_btf"));
    let exec_boundary = !in_task_storage || lifecycle.contains(&"sched_process_exec_btf");
    let in_flight = match set.task_iterator {
        true => Some(link_task_iterator(&mut ebpf)?),
        false => None,
    };
    let time_split = !counts_only && g.task_layout.split != 0;

    let ledger = match pin_dir {
        None => None,
        Some(dir) => {
            let mut meta = maps::take_map(&mut ebpf, META_MAP)?;
            pin::stamp(&mut meta)?;
            info!(
                "maps pinned at {}: counters resume across restarts",
                dir.display()
            );
            Some(Ledger {
                totals: maps::take_map(&mut ebpf, LEDGER_MAP)?,
                errnos: maps::take_map(&mut ebpf, LEDGER_ERRNOS_MAP)?,
            })
        }
    };
    let maps = maps::take(&mut ebpf, free_slots, ledger, in_flight)?;
    let probes = Probes {
        ebpf,
        time_split,
        exec_boundary,
    };
    Ok((probes, maps))
}

/// What the programs read from their globals: our own tgid, where the kernel keeps what they
/// need, how the histogram shards are shared, which filters are on.
struct Globals {
    own_tgid: u32,
    task_layout: TaskLayout,
    /// Whether the BTF programs can find what they load (else they are left out).
    btf_usable: bool,
    compat_offset: u32,
    compat_mask: u32,
    nr_offset: u32,
    clone_nrs: [u32; CLONE_NRS_LEN],
    shard_per_cpu: u32,
    pids_on: u32,
    cgroup_on: u32,
    syscalls_on: u32,
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
        (COMPAT_DISABLED, 0)
    });
    let (task_layout, btf_usable) = match in_btf(&btf, kernel_btf::task_layout) {
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
    let nr_offset = if counts_only {
        in_btf(&btf, kernel_btf::syscall_nr_offset).map_err(|e| Error::NoBtf(e.into()))?
    } else {
        0
    };
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
    let pids_on = u32::from(!filter.pids.is_empty());
    let cgroup_on = u32::from(filter.cgroup.is_some());
    let syscalls_on = u32::from(!filter.syscalls.is_empty());
    Ok(Globals {
        own_tgid,
        task_layout,
        btf_usable,
        compat_offset,
        compat_mask,
        nr_offset,
        clone_nrs,
        shard_per_cpu,
        pids_on,
        cgroup_on,
        syscalls_on,
    })
}

/// The programs `SKIP_PROGRAMS_ENV` leaves out, and every BTF program when the kernel's BTF
/// lacks what they load.
fn skipped_programs(btf_usable: bool) -> Vec<String> {
    let listed = std::env::var(SKIP_PROGRAMS_ENV).unwrap_or_default();
    let mut skipped: Vec<String> = listed
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !btf_usable {
        let btf = [
            "sys_enter_btf",
            "sys_exit_btf",
            "sys_exit_counts_btf",
            "sched_process_exec_btf",
        ];
        skipped.extend(btf.iter().map(|p| p.to_string()));
    }
    skipped
}

/// Attaches each tracepoint's first program the kernel takes (and `skipped` leaves in), in the
/// order of `programs`; returns the programs attached.
fn attach_each(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &[&'static str])],
    skipped: &[String],
) -> Result<Vec<&'static str>, Error> {
    let mut attached = Vec::new();
    for &(tracepoint, candidates) in programs {
        let mut outcome = Err(Error::NoProgramLeft {
            tracepoint,
            why: format!(
                "{SKIP_PROGRAMS_ENV} leaves out {}",
                candidates.join(" and ")
            ),
        });
        for &program in candidates {
            if skipped.iter().any(|s| s == program) {
                info!("left out {program} ({SKIP_PROGRAMS_ENV})");
                continue;
            }
            outcome =
                verify(ebpf, program, tracepoint).and_then(|()| attach(ebpf, program, tracepoint));
            if outcome.is_ok() {
                info!("attached {program} to tracepoint {tracepoint}");
                attached.push(program);
                break;
            }
        }
        outcome?;
    }
    Ok(attached)
}

/// Attaches the first of `sets` whose programs `skipped` leaves in and the kernel verifies,
/// every one of them: a set is all or nothing.
fn attach_first_set<'s>(
    ebpf: &mut Ebpf,
    sets: &'s [ProgramSet],
    skipped: &[String],
) -> Result<&'s ProgramSet, Error> {
    let mut why_not = None;
    for set in sets {
        if let Some(&(tracepoint, program)) = set
            .programs
            .iter()
            .find(|(_, p)| skipped.iter().any(|s| s == p))
        {
            info!("left out {program} ({SKIP_PROGRAMS_ENV})");
            why_not = Some(Error::NoProgramLeft {
                tracepoint,
                why: format!("{SKIP_PROGRAMS_ENV} leaves out {program}"),
            });
            continue;
        }
        // Verified first, so a kernel that refuses one program leaves none of the set attached.
        if let Err(e) = set
            .programs
            .iter()
            .try_for_each(|&(tracepoint, program)| verify(ebpf, program, tracepoint))
        {
            warn!("{}: {e}; trying the next way", set.what);
            why_not = Some(e);
            continue;
        }
        for &(tracepoint, program) in set.programs {
            attach(ebpf, program, tracepoint)?;
            info!("attached {program} to tracepoint {tracepoint}");
        }
        return Ok(set);
    }
    Err(why_not.unwrap_or(Error::MissingProgram("sys_exit".into())))
}

/// Loads the `in_flight` task iterator and links it, for the drain.
fn link_task_iterator(ebpf: &mut Ebpf) -> Result<InFlightIter, Error> {
    const PROGRAM: &str = "in_flight";
    let prog = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| Error::MissingProgram(PROGRAM.to_string()))?;
    let Program::Iter(prog) = prog else {
        return Err(Error::NotATracepoint(PROGRAM.to_string()));
    };
    let btf = aya::Btf::from_sys_fs().map_err(|e| load_error("reading the kernel's BTF", e))?;
    prog.load("task", &btf)
        .map_err(|e| load_error(format!("verifying program {PROGRAM}"), e))?;
    let fd = prog
        .fd()
        .map_err(|e| load_error(format!("program {PROGRAM}"), e))?;
    InFlightIter::link(fd.as_fd()).map_err(|e| load_error(format!("linking {PROGRAM}"), e))
}

/// Whether the pinned maps are new: META is stamped only once they are complete.
fn unstamped(ebpf: &Ebpf) -> Result<bool, Error> {
    let meta = ebpf
        .map(META_MAP)
        .ok_or_else(|| Error::MissingMap(META_MAP.to_string()))?;
    let meta: Array<&MapData, u64> = Array::try_from(meta).map_err(|source| Error::Map {
        name: META_MAP.to_string(),
        source,
    })?;
    let stamp = meta.get(&0, 0).map_err(|e| Error::ReadMap(META_MAP, e))?;
    Ok(stamp == 0)
}

/// Loads (has the kernel verify) `program` for `tracepoint`, as a BTF tracepoint (which needs
/// the kernel's BTF) or a raw one, whichever the object says it is.
fn verify(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), Error> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| Error::MissingProgram(program.to_string()))?;
    let verifying = |e| load_error(format!("verifying program {program}"), e);
    match prog {
        Program::BtfTracePoint(prog) => {
            let btf =
                aya::Btf::from_sys_fs().map_err(|e| load_error("reading the kernel's BTF", e))?;
            prog.load(tracepoint, &btf).map_err(verifying)
        }
        Program::RawTracePoint(prog) => prog.load().map_err(verifying),
        _ => Err(Error::NotATracepoint(program.to_string())),
    }
}

/// Attaches `program`, verified, to `tracepoint`.
fn attach(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), Error> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| Error::MissingProgram(program.to_string()))?;
    let attaching = |e| load_error(format!("attaching {program} to tracepoint {tracepoint}"), e);
    match prog {
        Program::BtfTracePoint(prog) => prog.attach().map(drop).map_err(attaching),
        Program::RawTracePoint(prog) => prog.attach(tracepoint).map(drop).map_err(attaching),
        _ => Err(Error::NotATracepoint(program.to_string())),
    }
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
