//! Where a syscall's time went: on a CPU, runnable on a runqueue, or blocked. Read from the
//! scheduler's own per-task accounting at both ends of the call, no work at context switches
//! (the arithmetic and its caveats: profiler_common::SplitMark, docs/design.md).
//!
//! A call that never left its CPU (its switch counts unchanged) was on a CPU all along: it adds
//! nothing. Otherwise, with `off` the growth of `SplitMark::off_cpu_ns` (clamped to the call's
//! latency): runnable `min(Δrun_delay, off)`, blocked the rest of `off` if the thread switched
//! out blocking at least once (else 0: only preempted), on-CPU the remainder of the latency.

use profiler_common::{task_offset, SplitMark, TaskLayout};

use aya_ebpf::helpers::bpf_probe_read_kernel;

use super::global;

// Set by the loader from the kernel's BTF (see profiler_common::TaskLayout). The programs read
// only its flags here: its offsets the loader writes into their instructions
// (profiler_common::task_offset!).
#[no_mangle]
static TASK_LAYOUT: TaskLayout = TaskLayout {
    pid: 0,
    tgid: 0,
    split: 0,
    state: 0,
    exec_start: 0,
    sum_exec_runtime: 0,
    run_delay: 0,
    nvcsw: 0,
    nivcsw: 0,
    cfs_rq: 0,
    rq_of_cfs_rq: 0,
    rq_clock: 0,
    rq_clock_task: 0,
    start_time: 0,
    rq_btf_id: 0,
    rq_curr: 0,
    compat: 0,
    nr_reg: 0,
};

/// `struct rq`'s BTF type id, 0 when the current task comes from the helper (see
/// TaskLayout::rq_btf_id).
#[inline(always)]
pub(crate) fn rq_btf_id() -> u32 {
    global(&TASK_LAYOUT.rq_btf_id)
}

/// Whether the kernel has every field the split reads (else the verifier removes its code).
#[inline(always)]
pub(crate) fn split_on() -> bool {
    global(&TASK_LAYOUT.split) != 0
}

/// How a program reads kernel memory: BTF programs load from a typed task directly, raw
/// tracepoints through a helper.
pub(crate) trait Reader {
    /// `base + off`, to read at.
    #[inline(always)]
    fn at(base: *const u8, off: usize) -> *const u8 {
        base.wrapping_add(off)
    }
    /// The `u64` at `base + off`.
    fn u64_at(base: *const u8, off: usize) -> u64;
    /// The pointer at `base + off`.
    fn ptr_at(base: *const u8, off: usize) -> *const u8;
}

/// Direct loads from the BTF task pointer (see "Safety" in mod.rs).
pub(crate) struct Direct;

impl Reader for Direct {
    #[inline(always)]
    fn u64_at(base: *const u8, off: usize) -> u64 {
        // SAFETY: a BTF-checked load (see "Safety" in mod.rs).
        unsafe { core::ptr::read_volatile(base.add(off) as *const u64) }
    }

    #[inline(always)]
    fn ptr_at(base: *const u8, off: usize) -> *const u8 {
        // SAFETY: as above; the verifier types the loaded pointer from the same BTF.
        unsafe { core::ptr::read_volatile(base.add(off) as *const *const u8) }
    }
}

/// `bpf_probe_read_kernel`, 0 when the read fails.
pub(crate) struct Probe;

impl Reader for Probe {
    #[inline(always)]
    fn u64_at(base: *const u8, off: usize) -> u64 {
        // SAFETY: the helper checks the address and zero-fills on a fault.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const u64) }.unwrap_or(0)
    }

    #[inline(always)]
    fn ptr_at(base: *const u8, off: usize) -> *const u8 {
        Self::u64_at(base, off) as *const u8
    }
}

/// Where `task` stands now (see SplitMark).
#[inline(always)]
pub(crate) fn mark<R: Reader>(task: *const u8) -> SplitMark {
    mark_on::<R>(task, runqueue_of::<R>(task))
}

/// The runqueue of the CPU `task` runs on (its `se.cfs_rq`'s `rq`).
#[inline(always)]
pub(crate) fn runqueue_of<R: Reader>(task: *const u8) -> *const u8 {
    let cfs_rq = R::ptr_at(task, task_offset!(cfs_rq));
    R::ptr_at(cfs_rq, task_offset!(rq_of_cfs_rq))
}

/// [`mark`] of `task`, running on the CPU of runqueue `rq`.
#[inline(always)]
pub(crate) fn mark_on<R: Reader>(task: *const u8, rq: *const u8) -> SplitMark {
    // How far this CPU's task clock runs behind its clock.
    let lag = R::u64_at(rq, task_offset!(rq_clock))
        .wrapping_sub(R::u64_at(rq, task_offset!(rq_clock_task)));
    // sum_exec_runtime and nivcsw follow exec_start and nvcsw (the loader checks).
    let clocks = R::at(task, task_offset!(exec_start));
    let (exec_start, runtime) = (R::u64_at(clocks, 0), R::u64_at(clocks, 8));
    let switches = R::at(task, task_offset!(nvcsw));
    SplitMark {
        off_cpu_ns: exec_start.wrapping_add(lag).wrapping_sub(runtime),
        run_delay_ns: R::u64_at(task, task_offset!(run_delay)),
        voluntary: R::u64_at(switches, 0),
        involuntary: R::u64_at(switches, 8),
    }
}

/// Whether `task` switched out since `start` (its switch counts moved): two loads, all a call
/// that kept its CPU pays at exit. `start` points into a map value (see "Safety" in mod.rs).
#[inline(always)]
pub(crate) fn left_cpu<R: Reader>(task: *const u8, start: *const SplitMark) -> bool {
    let switches = R::at(task, task_offset!(nvcsw));
    // SAFETY: see above.
    unsafe {
        R::u64_at(switches, 0) != (*start).voluntary
            || R::u64_at(switches, 8) != (*start).involuntary
    }
}

/// A call's time off its CPU, in the parts the histogram adds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Split {
    pub runq_ns: u64,
    pub blocked_ns: u64,
    pub blocked: bool,
}

/// The split of a call of `latency` ns that left its CPU, between marks `start` and `now`.
#[inline(always)]
pub(crate) fn between(start: *const SplitMark, now: &SplitMark, latency: u64) -> Split {
    // SAFETY: `start` points into a map value (see "Safety" in mod.rs).
    let start = unsafe { &*start };
    let off = now.off_cpu_ns.wrapping_sub(start.off_cpu_ns) as i64;
    // Clamped: the lag read at each end is the CPU's as of its last clock update, and the
    // clocks can disagree by a little across CPUs (docs/design.md).
    let off = if off <= 0 {
        0
    } else {
        (off as u64).min(latency)
    };
    let runq_ns = now.run_delay_ns.wrapping_sub(start.run_delay_ns).min(off);
    let blocked = now.voluntary != start.voluntary;
    Split {
        runq_ns,
        blocked_ns: if blocked { off - runq_ns } else { 0 },
        blocked,
    }
}
