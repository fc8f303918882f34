//! The paths whose cost is counted, as sequences of events on a modelled kernel: a path is
//! named by what happens (a process's first syscall, a call that blocks, …), never by the
//! branches it takes, so it survives changes to the programs. State carries over from event
//! to event, so a "steady" call really follows the calls that set its process up.

use anyhow::{ensure, Context, Result};
use std::mem::offset_of;

use profiler_common::{
    Hist, TaskEntry, ARG_BUDGET_PER_CPU, ARG_KINDS_MAP, ARG_KIND_DIRFD_SHIFT, ARG_STATS_MAP,
    ARG_STAT_ALLOWANCE, FAILED_ARGS_MAP, FILTER_PIDS_MAP, FREE_SLOTS_MAP, HISTS_MAP,
    HIST_SLOTS_MAP, LIVE_MAP, NEW_SLOTS_MAP, RUNQUEUE_MAP, STARTS_MAP, TASKS_MAP, TIDS_MAP,
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
    Fallback,
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
    /// `syscall-profiler serve` with these arguments and environment.
    Daemon(
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
    /// This reference object, with these (program, tracepoint) attached.
    Object(&'static str, &'static [(&'static str, &'static str)]),
}

/// How the daemon is made to take its raw-tracepoint programs (profiler/src/kernel/load.rs).
const SKIP_BTF: &[(&str, &str)] = &[("SYSCALL_PROFILER_SKIP_PROGRAMS", "sys_enter_btf")];

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::Latency,
        Mode::Fallback,
        Mode::CountsOnly,
        Mode::FilterPids,
        Mode::SlotParked,
        Mode::TaskStorage,
        Mode::SlotTaskStorage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Latency => "profiler",
            Mode::Fallback => "raw-tracepoint fallback",
            Mode::CountsOnly => "counts-only",
            Mode::FilterPids => "--filter-pids 1",
            Mode::SlotParked => "slot-parked (experiment)",
            Mode::TaskStorage => "task-storage (experiment)",
            Mode::SlotTaskStorage => "slot-ts (experiment)",
        }
    }

    pub fn source(self) -> Source {
        match self {
            Mode::Latency => Source::Daemon(&[], &[]),
            Mode::Fallback => Source::Daemon(&[], SKIP_BTF),
            Mode::CountsOnly => Source::Daemon(&["--counts-only"], &[]),
            Mode::FilterPids => Source::Daemon(&["--filter-pids", "1"], &[]),
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
/// threads can never be the daemon itself, which its programs skip. (tgid, tid).
const T1: (u32, u32) = (5_000_001, 5_000_001);
const T2: (u32, u32) = (5_000_002, 5_000_002);
/// Another thread of T1's process whose tid falls on T1's TIDS entry (equal modulo its length,
/// profiler_common::TIDS_MAX_ENTRIES): T1 is alive, so the BTF programs keep T3's start in task
/// storage.
const T3: (u32, u32) = (T1.0, T1.1 + profiler_common::TIDS_MAX_ENTRIES);
/// The one process `--filter-pids 1` records.
const INIT: (u32, u32) = (1, 1);
/// Every timed call lasts this long (the bucket index's branches depend on the latency).
const LATENCY_NS: u64 = 150;
/// A call that blocks: on its CPU until it sleeps, asleep, waiting for a CPU once woken, then
/// on a CPU again (another one) until it returns.
const BEFORE_SLEEP_NS: u64 = 400;
const ASLEEP_NS: u64 = 5_000;
const WOKEN_WAIT_NS: u64 = 700;
const AFTER_WAKE_NS: u64 = 300;
/// A call preempted once: on its CPU, waiting on the runqueue, on its CPU again.
const PREEMPTED_WAIT_NS: u64 = 2_000;
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
        // Failing calls' arguments: openat's path (argument 2, its dirfd argument 1) is
        // captured, within each CPU's budget.
        if world.has_map(ARG_KINDS_MAP) {
            let kind = 2 | 1 << ARG_KIND_DIRFD_SHIFT;
            world.set_element(ARG_KINDS_MAP, OPENAT as u32, None, &[kind])?;
            for cpu in 0..2 {
                let budget = ARG_BUDGET_PER_CPU.to_le_bytes();
                world.set_element(ARG_STATS_MAP, ARG_STAT_ALLOWANCE, Some(cpu), &budget)?;
            }
        }
        // CPU 1 has run syscalls since the programs were loaded, so a call that comes back
        // there finds its runqueue known; CPU 0 learns its own at the scenarios' first call.
        if world.has_map(RUNQUEUE_MAP) {
            world.learn_runqueue(RUNQUEUE_MAP, 1)?;
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

    /// Whether a program of this name is loaded.
    fn has(&self, name: &str) -> bool {
        self.programs.iter().any(|p| p.is(name))
    }

    /// Runs the first loaded program of `candidates` (the loader's preference order).
    fn run(&mut self, candidates: &[&str], ctx: &[Val], path: Option<&'static str>) -> Result<()> {
        let (name, prog) = candidates
            .iter()
            .find_map(|c| Some((*c, self.programs.iter().find(|p| p.is(c))?)))
            .with_context(|| format!("{}: none of {candidates:?} is loaded", self.mode.name()))?;
        self.world.publish()?;
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

    /// The current thread's saved registers.
    fn regs(&self) -> Region {
        Region::Regs(self.world.current.1)
    }

    /// `thread` starts running on `cpu`.
    pub fn on_cpu(&mut self, thread: (u32, u32), cpu: u32) -> Result<()> {
        self.world.switch_in(thread, cpu)
    }

    /// Time passes on the CPU.
    pub fn elapse(&mut self, ns: u64) {
        self.world.now += ns;
    }

    pub fn enter(&mut self, nr: i64, path: Option<&'static str>) -> Result<()> {
        self.world
            .mem
            .write(&self.regs(), self.nr_offset, 8, &Val::Scalar(nr as u64))?;
        let ctx = [Val::Ptr(self.regs(), 0), Val::Scalar(nr as u64)];
        self.run(&["sys_enter_btf", "sys_enter"], &ctx, path)
    }

    pub fn exit(&mut self, ret: i64, took_ns: u64, path: Option<&'static str>) -> Result<()> {
        self.world.now += took_ns;
        let ctx = [Val::Ptr(self.regs(), 0), Val::Scalar(ret as u64)];
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
                .write(&self.regs(), self.nr_offset, 8, &Val::Scalar(nr as u64))?;
        } else {
            self.enter(nr, paths[0])?;
        }
        self.exit(ret, LATENCY_NS, paths[1])
    }

    /// The current thread leaves its CPU to `next`, blocking or preempted; `path` names the
    /// `sched_switch` run, where one is loaded (the task-storage programs have none).
    pub fn switch_to(
        &mut self,
        next: (u32, u32),
        blocking: bool,
        path: Option<&'static str>,
    ) -> Result<()> {
        self.leave_cpu(blocking, path)?;
        let cpu = self.world.cpu;
        self.world.switch_in(next, cpu)
    }

    /// The current thread leaves its CPU, blocking or preempted (see `switch_to`).
    pub fn leave_cpu(&mut self, blocking: bool, path: Option<&'static str>) -> Result<()> {
        self.world.switch_out(blocking)?;
        if self.has("sched_switch") || self.has("sched_switch_btf") {
            // (preempt, prev, next, prev_state): the task leaving is the current one.
            let prev = self.world.current.1;
            let ctx = [
                Val::Scalar(u64::from(!blocking)),
                Val::Ptr(Region::Task(prev), 0),
                Val::Scalar(0),
                Val::Scalar(u64::from(blocking)),
            ];
            self.run(&["sched_switch", "sched_switch_btf"], &ctx, path)?;
        }
        Ok(())
    }
}

const GETPPID: i64 = libc::SYS_getppid;
const OPENAT: i64 = libc::SYS_openat;
const CLOSE: i64 = libc::SYS_close;
const EBADF: i64 = -(libc::EBADF as i64);
const READ: i64 = libc::SYS_read;
const WRITE: i64 = libc::SYS_write;
const ENOENT: i64 = -(libc::ENOENT as i64);

/// The counted paths of `mode`, run in one modelled kernel, and a check that the programs did
/// what those paths are for: a model that took a wrong turn would count the wrong path.
pub fn run(mut sim: Sim) -> Result<Vec<PathCost>> {
    let expected = match sim.mode {
        Mode::Latency | Mode::Fallback => latency(&mut sim)?,
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
    let head = |field: usize| w.sum_u64(HISTS_MAP, field as i64);
    let found = Outcome {
        histograms: w.len(HIST_SLOTS_MAP)?,
        announced: w.len(NEW_SLOTS_MAP)?,
        threads: w.len_if_used(STARTS_MAP)?
            + w.len_if_used(TASKS_MAP)?
            + match w.has_map(TIDS_MAP) {
                true => w.count_nonzero_u32(TIDS_MAP, offset_of!(TaskEntry, owner_tid) as i64)?,
                false => 0,
            },
        processes: w.len(LIVE_MAP)?,
        total_ns: head(offset_of!(Hist, head.total_ns))?,
        runq_ns: head(offset_of!(Hist, head.runq_ns))?,
        blocked_ns: head(offset_of!(Hist, head.blocked_ns))?,
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
    /// Threads and processes recorded (STARTS or TASKS, LIVE).
    threads: usize,
    processes: usize,
    /// Latency summed over every histogram: each timed call counted once, exactly; and the
    /// parts of it spent runnable and blocked.
    total_ns: u64,
    runq_ns: u64,
    blocked_ns: u64,
}

fn latency(s: &mut Sim) -> Result<Outcome> {
    // The raw-tracepoint programs are named without `_btf`, and `sched_switch` runs.
    let slot = s.mode == Mode::Fallback;
    s.on_cpu(T1, 0)?;
    s.call(
        GETPPID,
        1,
        [
            Some("first call of a process (records it)"),
            Some("first call of a process (new histogram)"),
        ],
    )?;
    s.call(GETPPID, 1, [Some("success"), Some("success")])?;
    // The failing call's histogram and errno exist from its first failure. close takes no
    // path: nothing more happens.
    s.call(
        CLOSE,
        EBADF,
        [None, Some("first failure of a syscall (new histogram)")],
    )?;
    s.call(CLOSE, EBADF, [None, Some("failure")])?;
    // openat does: its path is captured (the first time into a new FAILED_ARGS entry).
    s.call(OPENAT, ENOENT, [None, None])?;
    s.call(OPENAT, ENOENT, [None, Some("failure, its path captured")])?;
    s.call(READ, 1, [None, None])?;
    blocked_read(s, slot)?;
    s.enter(
        WRITE,
        slot.then_some("first call back on the CPU (claims the slot)"),
    )?;
    s.exit(1, LATENCY_NS, None)?;
    preempted_call(s)?;
    // Preempted in user space, between syscalls.
    s.switch_to(T2, false, Some("switch out, no syscall in flight"))?;
    // A thread whose TIDS entry T1 holds (its first call also makes its histogram shard:
    // not the main thread).
    s.switch_to(T3, false, None)?;
    let shared = |path| (!slot).then_some(path);
    s.call(
        GETPPID,
        1,
        [
            shared("first call of a thread whose tid's entry another thread holds"),
            None,
        ],
    )?;
    s.call(
        GETPPID,
        1,
        [
            shared("success, the entry in task storage (tid shared)"),
            shared("success, the entry in task storage (tid shared)"),
        ],
    )?;
    let blocked_total = BEFORE_SLEEP_NS + ASLEEP_NS + WOKEN_WAIT_NS + AFTER_WAKE_NS;
    ensure!(
        s.world.len(FAILED_ARGS_MAP)? == 1,
        "the two failing openats should leave one captured path"
    );
    Ok(Outcome {
        // T3's getppid shard is the sixth.
        histograms: 6,
        announced: 6,
        threads: 2,
        processes: 1,
        // getppid three times (one preempted), close, openat and read twice each (one read
        // blocked), write once; T3's getppid twice.
        total_ns: 10 * LATENCY_NS + blocked_total + 2 * LATENCY_NS + PREEMPTED_WAIT_NS,
        runq_ns: WOKEN_WAIT_NS + PREEMPTED_WAIT_NS,
        blocked_ns: ASLEEP_NS,
    })
}

/// A read that sleeps: the thread leaves its CPU in the call, another thread runs (and
/// leaves, in no syscall of its own), the reader is woken, waits for a CPU, and returns on
/// the other CPU (whose task clock lags by a different amount).
fn blocked_read(s: &mut Sim, slot: bool) -> Result<()> {
    s.enter(READ, None)?;
    s.elapse(BEFORE_SLEEP_NS);
    s.switch_to(T2, true, Some("switch out, syscall in flight (parks it)"))?;
    s.elapse(ASLEEP_NS);
    s.world.wake(T1.1)?;
    s.elapse(WOKEN_WAIT_NS);
    s.leave_cpu(true, Some("switch out, no slot of its own"))?;
    s.on_cpu(T1, 1)?;
    let path = if slot {
        "blocked call (start parked at the switch)"
    } else {
        "blocked call (slept, woken, back on another CPU)"
    };
    s.exit(1, AFTER_WAKE_NS, Some(path))
}

/// A call preempted once: it waits on the runqueue, then returns (runnable time, no blocked).
fn preempted_call(s: &mut Sim) -> Result<()> {
    s.enter(GETPPID, None)?;
    s.elapse(LATENCY_NS);
    s.switch_to(T2, false, None)?;
    s.elapse(PREEMPTED_WAIT_NS);
    s.switch_to(T1, true, None)?;
    s.exit(1, LATENCY_NS, Some("preempted call"))
}

fn counts_only(s: &mut Sim) -> Result<Outcome> {
    s.on_cpu(T1, 0)?;
    s.call(GETPPID, 1, [None, Some("first call of a process")])?;
    s.call(GETPPID, 1, [None, Some("success")])?;
    s.call(CLOSE, EBADF, [None, None])?;
    s.call(CLOSE, EBADF, [None, Some("failure")])?;
    s.call(OPENAT, ENOENT, [None, None])?;
    s.call(OPENAT, ENOENT, [None, Some("failure, its path captured")])?;
    Ok(Outcome {
        histograms: 3,
        announced: 3,
        threads: 1,
        processes: 1,
        total_ns: 0,
        runq_ns: 0,
        blocked_ns: 0,
    })
}

fn filter_pids(s: &mut Sim) -> Result<Outcome> {
    s.on_cpu(T1, 0)?;
    // The thread's first call looks it up in the filter; the count is of the calls after.
    s.call(GETPPID, 1, [None, None])?;
    s.call(
        GETPPID,
        1,
        [Some("filtered-out process"), Some("filtered-out process")],
    )?;
    s.switch_to(INIT, true, Some("filtered-out process switching out"))?;
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
        // The filtered-out thread's entry records its verdict (task storage).
        threads: 2,
        processes: 1,
        total_ns: 2 * LATENCY_NS,
        runq_ns: 0,
        blocked_ns: 0,
    })
}

/// Issue 17's experiment: the same calls as the daemon's steady and blocked paths. The
/// task-storage side has no sched_switch program: the switches are no-ops there.
fn experiment(s: &mut Sim) -> Result<()> {
    s.on_cpu(T1, 0)?;
    s.call(GETPPID, 1, [Some("first call of a thread"), None])?;
    s.call(GETPPID, 1, [Some("success"), Some("success")])?;
    s.enter(READ, None)?;
    s.switch_to(T2, true, Some("switch out, syscall in flight (parks it)"))?;
    s.switch_to(T1, true, Some("switch out, no slot of its own"))?;
    s.exit(1, BEFORE_SLEEP_NS + ASLEEP_NS, Some("blocked call"))?;
    s.enter(WRITE, Some("first call back on the CPU"))?;
    s.exit(1, LATENCY_NS, None)?;
    s.switch_to(T2, false, Some("switch out, no syscall in flight"))?;
    Ok(())
}
