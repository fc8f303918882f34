//! Which programs go in: the lifecycle programs, then the first way of keeping a syscall's
//! start the kernel takes (a program set, all or nothing), and for the task-storage way the
//! in-flight iterator. `SKIP_PROGRAMS_ENV` leaves programs out as if the kernel had refused them.

use std::os::fd::AsFd;

use aya::{programs::Program, Ebpf};
use tracing::{info, warn};

use super::{
    error::{load_error, Error},
    iter::InFlightIter,
};

/// Programs to leave out as if the kernel had refused them (names, comma-separated), so the
/// loader takes the next candidate: how the tests run the fallbacks on a kernel that accepts the
/// preferred programs, and a way around a kernel that loads one but misbehaves with it.
/// Declared in config, so the settings' check of the environment knows it.
pub const SKIP_PROGRAMS_ENV: &str = crate::config::declare::ENV_SKIP_PROGRAMS;

/// The programs only the main object has (they keep starts in task storage).
pub(super) const TASK_STORAGE_PROGRAMS: &[&str] = &[
    "sys_enter_btf",
    "sys_exit_btf",
    "sys_exit_counts_btf",
    "sched_process_exec_btf",
    "sched_process_exit_btf",
    "sched_process_exit_leader_btf",
];

/// The exit programs that free a thread's TIDS entry and forget it in the pid filter's
/// left-out cache (they read the task, typed by BTF).
pub(super) const BTF_EXITS: &[&str] = &["sched_process_exit_btf", "sched_process_exit_leader_btf"];

/// The lifecycle programs, attached first so no thread that starts a syscall can exit unseen.
/// Each entry lists the programs for one tracepoint, preferred first: kernels before 6.16 have
/// no `group_dead` argument on `sched_process_exit`, and refuse the program that reads it.
pub(super) const LIFECYCLE: &[(&str, &[&str])] = &[
    (
        "sched_process_exit",
        // The BTF ones (main object) also free the thread's TIDS entry.
        &[
            "sched_process_exit_btf",
            "sched_process_exit_leader_btf",
            "sched_process_exit",
            "sched_process_exit_leader",
        ],
    ),
    (
        "sched_process_exec",
        &["sched_process_exec_btf", "sched_process_exec"],
    ),
];

/// One way of keeping a syscall's start (profiler-ebpf programs/mod.rs): its programs and their
/// tracepoints, all attached or none, in this order (`sys_exit` before `sys_enter`, so no start
/// is recorded without its exit).
pub(super) struct ProgramSet {
    pub(super) what: &'static str,
    programs: &'static [(&'static str, &'static str)],
    /// Whether the drain reads the calls in flight through the `in_flight` task iterator
    /// (else from STARTS and CPU_SLOT).
    pub(super) task_iterator: bool,
}

impl ProgramSet {
    /// Whether the set keeps each thread's process in its task storage entry.
    pub(super) fn in_task_storage(&self) -> bool {
        self.programs
            .iter()
            .any(|(_, p)| TASK_STORAGE_PROGRAMS.contains(p))
    }
}

/// Preferred first: task storage (BTF tracepoints, kernels ≥ 5.11, nothing at context
/// switches), then the raw tracepoints' per-CPU slot parked at `sched_switch`.
pub(super) const LATENCY: &[ProgramSet] = &[
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
pub(super) const COUNTS_ONLY: &[ProgramSet] = &[
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

/// The programs `SKIP_PROGRAMS_ENV` leaves out, and every BTF program when the kernel's BTF
/// lacks what they load.
pub(super) fn skipped_programs(btf_usable: bool) -> Vec<String> {
    let listed = std::env::var(SKIP_PROGRAMS_ENV).unwrap_or_default();
    let mut skipped: Vec<String> = listed
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !btf_usable {
        skipped.extend(TASK_STORAGE_PROGRAMS.iter().map(|p| p.to_string()));
    }
    skipped
}

/// Whether to load the main object, whose BTF programs keep starts in task storage: unless they
/// are left out, or the kernel has no task storage (then the main object's map cannot be made).
pub(super) fn task_storage_wanted(skipped: &[String], counts_only: bool) -> bool {
    let first = if counts_only {
        "sys_exit_counts_btf"
    } else {
        "sys_enter_btf"
    };
    if skipped.iter().any(|s| s == first) {
        info!("{first} left out ({SKIP_PROGRAMS_ENV}): loading the programs without task storage");
        return false;
    }
    match aya::sys::is_map_supported(aya::maps::MapType::TaskStorage) {
        Ok(false) => {
            info!("no BPF task storage on this kernel (Linux < 5.11): raw-tracepoint programs");
            false
        }
        // An error probing says nothing: the main object's own load will tell.
        Ok(true) | Err(_) => true,
    }
}

/// Attaches each tracepoint's first program the kernel takes (and `skipped` leaves in), in the
/// order of `programs`; returns the programs attached.
pub(super) fn attach_each(
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
pub(super) fn attach_first_set<'s>(
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
pub(super) fn link_task_iterator(ebpf: &mut Ebpf) -> Result<InFlightIter, Error> {
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
