//! Kernel side: time every syscall per thread, split its time into on-CPU, waiting for a CPU
//! and blocked, and add it to the (process, syscall) histogram.
//!
//! A syscall's start goes from `sys_enter` to `sys_exit` one of two ways (the loader takes the
//! first the kernel accepts; the rules and reasons are in docs/design.md):
//! - ../task.rs, BTF tracepoints (kernels ≥ 5.11): in the thread's entry in an array by tid, or
//!   its BPF task storage entry when another live thread holds that one. Nothing runs at context
//!   switches. Per call: the clock on each side, the rest direct loads (the task from its
//!   CPU's runqueue) and inlined lookups. Only in the main object
//!   (main.rs): a kernel without task storage cannot even create its map, and gets the slot
//!   object (main_slot.rs), which has everything here and nothing of task.rs.
//! - slot.rs, raw tracepoints: in a per-CPU slot, which `sched_switch` parks in the thread's
//!   STARTS record when the thread leaves its CPU in the middle of a call.
//!
//! Both end in hist.rs: two array accesses to reach the histogram (this CPU's slot cache, then
//! the slot) and plain adds where the shard has a single writer. split.rs reads the scheduler's
//! own per-task clocks at both ends of a call that left its CPU; a call that did not adds
//! nothing for the split. Hashes (HIST_SLOTS, LIVE, PROCS, and ERRNOS from a slot's fifth
//! errno) are touched only the first time a thread, a process or a (process, syscall) shard is
//! seen. lifecycle.rs follows exec and exit.
//!
//! # Safety
//!
//! Every `unsafe` block here is one of these, and the verifier refuses to load a program that
//! breaks the conditions, so none can fault the kernel:
//! - Map values: `get_ptr`/`get_ptr_mut` and `bpf_task_storage_get` return a pointer to a value
//!   of the map's own type, or null, which is checked before use. The verifier proves every
//!   access through it lies inside the value. The value outlives the program run: array
//!   elements live as long as the map, and hash elements and task storage are freed only after
//!   an RCU grace period, which cannot end while a program runs. Other CPUs may write the same
//!   value at the same time, which is why shards written from several CPUs take atomic adds
//!   (`add_u32`/`add_u64`, `single_writer`).
//! - The context: `ctx.arg(n)` reads the tracepoint's n-th argument; the verifier checks n
//!   against the tracepoint's arguments.
//! - The syscall programs' current task is the `curr` of their CPU's runqueue, whose address
//!   they learn once per CPU (a pointer stored as a number: the daemon has CAP_PERFMON) and
//!   turn back into a `struct rq` pointer with the kfunc `bpf_rdonly_cast`, which the
//!   verifier types from the kernel's BTF as untrusted: every load from it and from what it
//!   leads to is exception-handled (a bad address reads 0), and it can be passed to no helper
//!   (task storage takes the helper's task, below).
//! - The current task, from `bpf_get_current_task_btf`, is typed by the kernel's BTF: the
//!   verifier checks every load from it against `struct task_struct` (offset and size of a real
//!   member; the offsets come from the same BTF at load time, constants in the frozen
//!   `.rodata`), and a pointer loaded from it (`se.cfs_rq`, then `cfs_rq.rq`) is read through
//!   exception-handled loads that give 0 on a bad address.
//! - Raw tracepoints see the task as a plain address: they read it only through
//!   `bpf_probe_read_kernel`, which checks the address and zero-fills on a fault.
//! - Helpers are `unsafe` in aya-ebpf's bindings; the verifier checks every argument against the
//!   helper's prototype.
//! - Globals: `read_volatile` of our own `.rodata`, which the loader fills before the programs
//!   are verified and then freezes.

pub(crate) mod args;
pub(crate) mod counts;
pub(crate) mod filters;
pub(crate) mod hist;
pub(crate) mod lifecycle;
pub(crate) mod slot;
pub(crate) mod split;

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use aya_log_ebpf::error;
use profiler_common::{
    Meta, CHECKPOINT_CHUNK, CHECKPOINT_MAX_ENTRIES, COUNTERS_LEN, COUNTER_ERRNOS_FULL,
    COUNTER_HISTS_FULL, COUNTER_NEW_SLOTS_FULL, COUNTER_PROCS_FULL, COUNTER_STARTS_FULL,
};

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

// Maps of the daemon's own, declared here so they are created (and pinned) with the others;
// no program touches them.
#[map]
static CHECKPOINT: HashMap<u32, [u8; CHECKPOINT_CHUNK]> =
    HashMap::with_max_entries(CHECKPOINT_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static META: Array<Meta> = Array::with_max_entries(1, 0);

/// A global the loader set (see profiler_common::GLOBAL_*). They live in .rodata, which the
/// loader freezes, so the verifier knows their values; `read_volatile` keeps LLVM from folding
/// in the defaults written here.
#[inline(always)]
pub(crate) fn global(v: &u32) -> u32 {
    // SAFETY: a reference to our own .rodata (see "Safety" above).
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub(crate) fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: this CPU's element of a per-CPU array: no other CPU writes it, so a plain
        // add is exact.
        unsafe { *c += 1 };
    }
}

/// [`bump`] for a `COUNTER_*_FULL`: a map found full. The first time on this CPU (its counter
/// was 0) it also says so in the daemon's log, through aya-log: a counter tells how often, the
/// line tells an operator when it started and what it means. Only these rare paths log, so the
/// hot paths carry no log code and AYA_LOGS holds at most one record per counter and CPU.
#[inline(always)]
pub(crate) fn bump_full(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: as in `bump`.
        unsafe {
            if *c == 0 {
                log_full(counter);
            }
            *c += 1;
        }
    }
}

/// The log line of [`bump_full`], a subprogram of its own so its code stays out of the callers'.
/// aya-log's macros take a context they do not use (the record goes to a ring buffer).
#[inline(never)]
fn log_full(counter: u32) {
    match counter {
        COUNTER_HISTS_FULL => error!(
            &(),
            "HISTS is full: a new (process, syscall) series is not timed (counted in hists_full)"
        ),
        COUNTER_PROCS_FULL => error!(
            &(),
            "PROCS is full: a new process's identity is not recorded (counted in procs_full)"
        ),
        COUNTER_STARTS_FULL => error!(
            &(),
            "STARTS is full: a syscall start is not recorded (counted in starts_full)"
        ),
        COUNTER_ERRNOS_FULL => error!(
            &(),
            "ERRNOS is full: an errno beyond a series' own four is not broken down (counted in errnos_full)"
        ),
        COUNTER_NEW_SLOTS_FULL => error!(
            &(),
            "NEW_SLOTS overflowed, which its size should rule out: a new series is timed but the daemon learns of it only from a full scan (counted in new_slots_full)"
        ),
        _ => error!(&(), "impossible: counter {} is not a map-full counter", counter),
    }
}

/// Adds `v` to a counter (wrapping): a plain add when `plain` says nothing else can be adding
/// to it at the same time (see `hist::single_writer`), an atomic one otherwise.
#[inline(always)]
fn add_u32(plain: bool, dst: *mut u32, v: u32) {
    // SAFETY: `dst` points into a map value (see "Safety" above).
    unsafe {
        if plain {
            *dst = (*dst).wrapping_add(v);
        } else {
            atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(dst, v);
        }
    }
}

/// [`add_u32`] for a 64-bit counter.
#[inline(always)]
fn add_u64(plain: bool, dst: *mut u64, v: u64) {
    // SAFETY: as in `add_u32`.
    unsafe {
        if plain {
            *dst = (*dst).wrapping_add(v);
        } else {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
