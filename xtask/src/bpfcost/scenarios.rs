//! The paths whose cost is counted, as sequences of events on a modelled kernel: a path is
//! named by what happens (a process's first syscall, a call that blocks, …), never by the
//! branches it takes, so it survives changes to the programs. State carries over from event
//! to event, so a "steady" call really follows the calls that set its process up.

use anyhow::{ensure, Context, Result};
use profiler_common::{
    Hist, FILTER_PIDS_MAP, FREE_SLOTS_MAP, HISTS_MAP, HIST_SLOTS_MAP, LIVE_MAP, NEW_SLOTS_MAP,
    STARTS_MAP,
};

use super::{
    interp::{self, Count},
    kernel::{Program, Symbols},
    memory::{Region, Val},
    world::World,
};

/// A set of programs whose paths are counted: a daemon configuration, or one side of issue
/// 17's experiment (the bench's reference objects, loaded as `bench --task-storage` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Latency,
    CountsOnly,
    FilterPids,
    SlotParked,
    TaskStorage,
    SlotTaskStorage,
}

/// The experiment's programs and their tracepoints, as `bench --task-storage` attaches them.
pub const SLOT_PARKED_PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter_btf", "sys_enter"),
    ("sys_exit", "sys_exit"),
    ("sched_switch", "sched_switch"),
];
pub const TASK_STORAGE_PROGRAMS: &[(&str, &str)] =
    &[("sys_enter_btf", "sys_enter"), ("sys_exit_btf", "sys_exit")];
pub const SLOT_TS_PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter_btf", "sys_enter"),
    ("sys_exit", "sys_exit"),
    ("sched_switch_btf", "sched_switch"),
];

/// Where a mode's programs come from.
pub enum Source {
    /// `syscall-profiler serve` with these arguments.
    Daemon(&'static [&'static str]),
    /// This reference object, with these (program, tracepoint) attached.
    Object(&'static str, &'static [(&'static str, &'static str)]),
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Latency,
        Mode::CountsOnly,
        Mode::FilterPids,
        Mode::SlotParked,
        Mode::TaskStorage,
        Mode::SlotTaskStorage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Latency => "profiler",
            Mode::CountsOnly => "counts-only",
            Mode::FilterPids => "--filter-pids 1",
            Mode::SlotParked => "slot-parked (experiment)",
            Mode::TaskStorage => "task-storage (experiment)",
            Mode::SlotTaskStorage => "slot-ts (experiment)",
        }
    }

    pub fn source(self) -> Source {
        match self {
            Mode::Latency => Source::Daemon(&[]),
            Mode::CountsOnly => Source::Daemon(&["--counts-only"]),
            Mode::FilterPids => Source::Daemon(&["--filter-pids", "1"]),
            Mode::SlotParked => Source::Object(crate::BENCH_SLOT_OBJECT, SLOT_PARKED_PROGRAMS),
            Mode::TaskStorage => {
                Source::Object(crate::BENCH_TASK_STORAGE_OBJECT, TASK_STORAGE_PROGRAMS)
            }
            Mode::SlotTaskStorage => Source::Object(crate::BENCH_SLOT_TS_OBJECT, SLOT_TS_PROGRAMS),
        }
    }

    /// Issue 17's experiment: counted for comparison, not budgeted.
    pub fn is_experiment(self) -> bool {
        matches!(
            self,
            Mode::SlotParked | Mode::TaskStorage | Mode::SlotTaskStorage
        )
    }
}

/// One counted run of one program.
#[derive(Clone, Debug)]
pub struct PathCost {
    pub mode: Mode,
    pub program: String,
    pub path: &'static str,
    pub count: Count,
}

/// Thread ids above any pid the kernel hands out (pid_max is at most 2^22), so the modelled
/// threads can never be the daemon itself, which its programs skip.
const T1: (u32, u32) = (5_000_001, 5_000_001);
const T2: (u32, u32) = (5_000_002, 5_000_002);
/// The one process `--filter-pids 1` records.
const INIT: (u32, u32) = (1, 1);
/// Every timed call lasts this long (the bucket index's branches depend on the latency).
const LATENCY_NS: u64 = 150;
const BLOCKED_NS: u64 = 5_000;
/// How many free histogram slots the modelled daemon queued (it queues all of them).
const FREE_SLOTS: u32 = 64;

/// A modelled kernel with one daemon configuration's programs loaded.
pub struct Sim<'a> {
    world: World,
    programs: &'a [Program],
    syms: &'a Symbols,
    mode: Mode,
    /// Offset of the syscall number in struct pt_regs (`orig_ax` on x86-64).
    nr_offset: i64,
    costs: Vec<PathCost>,
}

impl<'a> Sim<'a> {
    pub fn new(
        mode: Mode,
        mut world: World,
        programs: &'a [Program],
        syms: &'a Symbols,
        nr_offset: i64,
    ) -> Result<Sim<'a>> {
        // As the daemon leaves them before attaching: every slot free, the filter filled.
        for slot in (0..FREE_SLOTS).filter(|_| !mode.is_experiment()) {
            world.push_queue(FREE_SLOTS_MAP, &slot.to_le_bytes())?;
        }
        if mode == Mode::FilterPids {
            world.insert(FILTER_PIDS_MAP, &1u32.to_le_bytes(), &[1])?;
        }
        world.now = 1_000_000;
        Ok(Sim {
            world,
            programs,
            syms,
            mode,
            nr_offset,
            costs: Vec::new(),
        })
    }

    /// Runs the first loaded program of `candidates` (the loader's preference order).
    fn run(&mut self, candidates: &[&str], ctx: &[Val], path: Option<&'static str>) -> Result<()> {
        let (name, prog) = candidates
            .iter()
            .find_map(|c| Some((*c, self.programs.iter().find(|p| p.is(c))?)))
            .with_context(|| format!("{}: none of {candidates:?} is loaded", self.mode.name()))?;
        let (_, count) = interp::run(prog, self.syms, &mut self.world, ctx)?;
        if let Some(path) = path {
            self.costs.push(PathCost {
                mode: self.mode,
                program: name.to_string(),
                path,
                count,
            });
        }
        Ok(())
    }

    pub fn on_cpu(&mut self, thread: (u32, u32)) {
        self.world.current = thread;
    }

    pub fn enter(&mut self, nr: i64, path: Option<&'static str>) -> Result<()> {
        self.world
            .mem
            .write(&Region::Regs, self.nr_offset, 8, &Val::Scalar(nr as u64))?;
        let ctx = [Val::Ptr(Region::Regs, 0), Val::Scalar(nr as u64)];
        self.run(&["sys_enter_btf", "sys_enter"], &ctx, path)
    }

    pub fn exit(&mut self, ret: i64, took_ns: u64, path: Option<&'static str>) -> Result<()> {
        self.world.now += took_ns;
        let ctx = [Val::Ptr(Region::Regs, 0), Val::Scalar(ret as u64)];
        let programs: &[&str] = if self.mode == Mode::CountsOnly {
            &["sys_exit_counts_btf", "sys_exit_counts"]
        } else {
            &["sys_exit", "sys_exit_btf"]
        };
        self.run(programs, &ctx, path)
    }

    /// A syscall `nr` returning `ret` after LATENCY_NS (counts-only mode has no sys_enter).
    pub fn call(&mut self, nr: i64, ret: i64, paths: [Option<&'static str>; 2]) -> Result<()> {
        if self.mode == Mode::CountsOnly {
            self.world
                .mem
                .write(&Region::Regs, self.nr_offset, 8, &Val::Scalar(nr as u64))?;
        } else {
            self.enter(nr, paths[0])?;
        }
        self.exit(ret, LATENCY_NS, paths[1])
    }

    /// The current thread leaves the CPU to `next`.
    pub fn switch_to(&mut self, next: (u32, u32), path: Option<&'static str>) -> Result<()> {
        // (preempt, prev, next, prev_state): the task leaving is the current one.
        let ctx = [
            Val::Scalar(0),
            Val::Ptr(Region::Task, 0),
            Val::Scalar(0),
            Val::Scalar(0),
        ];
        self.run(&["sched_switch", "sched_switch_btf"], &ctx, path)?;
        self.world.current = next;
        Ok(())
    }
}

const GETPPID: i64 = libc::SYS_getppid;
const OPENAT: i64 = libc::SYS_openat;
const READ: i64 = libc::SYS_read;
const WRITE: i64 = libc::SYS_write;
const ENOENT: i64 = -(libc::ENOENT as i64);

/// The counted paths of `mode`, run in one modelled kernel, and a check that the programs did
/// what those paths are for: a model that took a wrong turn would count the wrong path.
pub fn run(mut sim: Sim) -> Result<Vec<PathCost>> {
    let expected = match sim.mode {
        Mode::Latency => latency(&mut sim)?,
        Mode::CountsOnly => counts_only(&mut sim)?,
        Mode::FilterPids => filter_pids(&mut sim)?,
        Mode::SlotParked | Mode::TaskStorage | Mode::SlotTaskStorage => {
            // No histograms: the starts are all there is to check.
            experiment(&mut sim)?;
            let threads = sim.world.len(STARTS_MAP)?;
            ensure!(
                threads == 1,
                "{}: {threads} threads recorded, not 1",
                sim.mode.name()
            );
            return Ok(sim.costs);
        }
    };
    let w = &sim.world;
    let found = Outcome {
        histograms: w.len(HIST_SLOTS_MAP)?,
        announced: w.len(NEW_SLOTS_MAP)?,
        threads: w.len(STARTS_MAP)?,
        processes: w.len(LIVE_MAP)?,
        total_ns: w.sum_u64(HISTS_MAP, core::mem::offset_of!(Hist, head.total_ns) as i64)?,
    };
    ensure!(
        found == expected,
        "{}: the modelled kernel ended as {found:?}, not as the paths should leave it: {expected:?}",
        sim.mode.name()
    );
    Ok(sim.costs)
}

/// What a scenario leaves in the maps.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Histograms given a slot (HIST_SLOTS), and announced to the daemon (NEW_SLOTS).
    histograms: usize,
    announced: usize,
    /// Threads and processes recorded (STARTS, LIVE).
    threads: usize,
    processes: usize,
    /// Latency summed over every histogram: each timed call counted once, exactly.
    total_ns: u64,
}

fn latency(s: &mut Sim) -> Result<Outcome> {
    s.on_cpu(T1);
    s.call(
        GETPPID,
        1,
        [
            Some("first call of a process (records it)"),
            Some("first call of a process (new histogram)"),
        ],
    )?;
    s.call(GETPPID, 1, [Some("success"), Some("success")])?;
    // The failing call's histogram and errno exist from its first failure.
    s.call(
        OPENAT,
        ENOENT,
        [None, Some("first failure of a syscall (new histogram)")],
    )?;
    s.call(OPENAT, ENOENT, [None, Some("failure")])?;
    s.call(READ, 1, [None, None])?;
    // A read that sleeps: the thread leaves the CPU in the syscall, another one runs (and
    // leaves, in no syscall of its own), and the read returns on the same CPU.
    s.enter(READ, None)?;
    s.switch_to(T2, Some("switch out, syscall in flight (parks it)"))?;
    s.switch_to(T1, Some("switch out, no slot of its own"))?;
    s.exit(
        1,
        BLOCKED_NS,
        Some("blocked call (start parked at the switch)"),
    )?;
    s.enter(WRITE, Some("first call back on the CPU (claims the slot)"))?;
    s.exit(1, LATENCY_NS, None)?;
    // Preempted in user space, between syscalls.
    s.switch_to(T2, Some("switch out, no syscall in flight"))?;
    Ok(Outcome {
        histograms: 4,
        announced: 4,
        threads: 1,
        processes: 1,
        // getppid, openat and read twice each (one read blocked), write once.
        total_ns: 6 * LATENCY_NS + BLOCKED_NS,
    })
}

fn counts_only(s: &mut Sim) -> Result<Outcome> {
    s.on_cpu(T1);
    s.call(GETPPID, 1, [None, Some("first call of a process")])?;
    s.call(GETPPID, 1, [None, Some("success")])?;
    s.call(OPENAT, ENOENT, [None, None])?;
    s.call(OPENAT, ENOENT, [None, Some("failure")])?;
    Ok(Outcome {
        histograms: 2,
        announced: 2,
        threads: 0,
        processes: 1,
        total_ns: 0,
    })
}

fn filter_pids(s: &mut Sim) -> Result<Outcome> {
    s.on_cpu(T1);
    s.call(
        GETPPID,
        1,
        [Some("filtered-out process"), Some("filtered-out process")],
    )?;
    s.switch_to(INIT, Some("filtered-out process switching out"))?;
    // What the filter adds to the calls it keeps.
    s.call(GETPPID, 1, [None, None])?;
    s.call(
        GETPPID,
        1,
        [
            Some("success, process kept by the filter"),
            Some("success, process kept by the filter"),
        ],
    )?;
    Ok(Outcome {
        histograms: 1,
        announced: 1,
        threads: 1,
        processes: 1,
        total_ns: 2 * LATENCY_NS,
    })
}

/// Issue 17's experiment: the same calls as the daemon's steady and blocked paths. The
/// task-storage side has no sched_switch program: the switches are no-ops there.
fn experiment(s: &mut Sim) -> Result<()> {
    let parked = s.mode != Mode::TaskStorage;
    s.on_cpu(T1);
    s.call(GETPPID, 1, [Some("first call of a thread"), None])?;
    s.call(GETPPID, 1, [Some("success"), Some("success")])?;
    s.enter(READ, None)?;
    if parked {
        s.switch_to(T2, Some("switch out, syscall in flight (parks it)"))?;
        s.switch_to(T1, Some("switch out, no slot of its own"))?;
    }
    s.exit(1, BLOCKED_NS, Some("blocked call"))?;
    s.enter(WRITE, Some("first call back on the CPU"))?;
    s.exit(1, LATENCY_NS, None)?;
    if parked {
        s.switch_to(T2, Some("switch out, no syscall in flight"))?;
    }
    Ok(())
}
