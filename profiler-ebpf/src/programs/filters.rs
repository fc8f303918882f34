//! Which calls are recorded: the daemon's own process never, and the in-kernel filters
//! (`--filter-pids`, `--filter-cgroup`, `--filter-syscalls`), cheapest first, before any map
//! is written; and the call's ABI, which the syscall filter and the histogram key need.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, CgroupArray, HashMap},
};
use profiler_common::{
    task_offset, ABI_COMPAT, ABI_NATIVE, FILTER_PIDS_MAX_ENTRIES, FILTER_SYSCALLS_PER_ABI,
};

use super::global;

// Set by the loader (see profiler_common::GLOBAL_*).
#[no_mangle]
static IGNORE_TGID: u32 = 0;
#[no_mangle]
static COMPAT_MASK: u32 = 0;
#[no_mangle]
static FILTER_PIDS_ON: u32 = 0;
#[no_mangle]
static FILTER_CGROUP_ON: u32 = 0;
#[no_mangle]
static FILTER_SYSCALLS_ON: u32 = 0;

#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_PIDS_MAX_ENTRIES, 0);

#[map]
static FILTER_CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

#[map]
static FILTER_SYSCALLS: Array<u8> = Array::with_max_entries(2 * FILTER_SYSCALLS_PER_ABI, 0);

/// Whether the process passes the checks that depend on its pid alone, which never change for
/// a thread: not the daemon itself, and in the pid filter when it is on (with a filter off,
/// its branch is dead code the verifier removes).
#[inline(always)]
pub(crate) fn pid_wanted(tgid: u32) -> bool {
    if tgid == global(&IGNORE_TGID) {
        return false;
    }
    !pids_filtered() || FILTER_PIDS.get_ptr(tgid).is_some()
}

/// With the pid filter on, the threads found left out, by where their syscalls save their
/// registers: the tracepoint's own `pt_regs` argument, the top of the thread's kernel stack,
/// one per live thread. A left-out call is told apart with that argument and an inlined array
/// lookup: no helper call, not even for the task. Shared by every CPU and written only at a
/// left-out thread's first call (or when a thread whose hash collides took its entry: it is
/// looked up again, the way every call was) and at its exit, which forgets it before its stack
/// can go to a new thread (task.rs, `free_entry`). Not pinned: a new daemon starts it empty.
#[map]
static LEFT_OUT: Array<u64> = Array::with_max_entries(LEFT_OUT_LEN, 0);
const LEFT_OUT_LEN: u32 = 1 << LEFT_OUT_BITS;
const LEFT_OUT_BITS: u32 = 13;

/// The left-out key of the thread whose syscall saved its registers at `regs`: the address as
/// a number, never 0 (a free entry). A pointer difference is a number to the verifier (with
/// CAP_PERFMON, which the daemon needs anyway); the other pointer is any fixed address.
#[inline(always)]
fn left_out_key(regs: *const u8) -> u64 {
    (regs as u64).wrapping_sub(&IGNORE_TGID as *const u32 as u64) | 1
}

/// The LEFT_OUT entry for `key`. Stacks are 16 KiB apart at least: the bits above 14, hashed.
#[inline(always)]
fn left_out_entry(key: u64) -> Option<*mut u64> {
    let index = ((key >> 14).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - LEFT_OUT_BITS)) as u32;
    LEFT_OUT.get_ptr_mut(index)
}

/// Whether the pid filter is on (else the verifier removes the code behind it).
#[inline(always)]
pub(crate) fn pids_filtered() -> bool {
    global(&FILTER_PIDS_ON) != 0
}

/// Whether the thread whose syscall saved its registers at `regs` (the tracepoint's argument 0)
/// is known to be left out by the pid filter. Always false with the filter off (then the
/// verifier removes the lookup).
#[inline(always)]
pub(crate) fn known_left_out(regs: *const u8) -> bool {
    if !pids_filtered() {
        return false;
    }
    let key = left_out_key(regs);
    // SAFETY: a LEFT_OUT value pointer (see "Safety" in mod.rs).
    matches!(left_out_entry(key), Some(e) if unsafe { *e } == key)
}

/// Remembers that the pid filter leaves out the thread of `regs` (see `known_left_out`);
/// returns its key, which its exit forgets (0 with the filter off).
#[inline(always)]
pub(crate) fn remember_left_out(regs: *const u8) -> u64 {
    if !pids_filtered() {
        return 0;
    }
    let key = left_out_key(regs);
    if let Some(e) = left_out_entry(key) {
        // SAFETY: as above.
        unsafe { *e = key };
    }
    key
}

/// A left-out thread exits: its entry goes, if it still holds it, before a new thread can get
/// its stack (and so its key).
#[inline(always)]
pub(crate) fn forget_left_out(key: u64) {
    if !pids_filtered() || key == 0 {
        return;
    }
    if let Some(e) = left_out_entry(key) {
        // SAFETY: as above.
        unsafe {
            if *e == key {
                *e = 0;
            }
        }
    }
}

/// The `u32` at byte offset `off` of the current task, a BTF task pointer.
#[inline(always)]
pub(crate) fn task_u32(task: *const u8, off: usize) -> u32 {
    // SAFETY: a BTF-checked load from the task (see "Safety" in mod.rs).
    unsafe { core::ptr::read_volatile(task.add(off) as *const u32) }
}

/// Whether the current task is under the filter's cgroup, when that filter is on. Checked on
/// every call: a task can be moved to another cgroup at any time.
#[inline(always)]
pub(crate) fn cgroup_wanted() -> bool {
    global(&FILTER_CGROUP_ON) == 0 || FILTER_CGROUP.current_task_under_cgroup(0) == Ok(true)
}

/// Whether syscall `nr` (never negative: -1 means "no syscall" and is left out before) of ABI
/// `abi` passes the syscall filter.
#[inline(always)]
pub(crate) fn syscall_wanted(nr: u32, abi: u8) -> bool {
    if global(&FILTER_SYSCALLS_ON) == 0 {
        return true;
    }
    if nr >= FILTER_SYSCALLS_PER_ABI {
        return false;
    }
    let index = abi as u32 * FILTER_SYSCALLS_PER_ABI + nr;
    matches!(FILTER_SYSCALLS.get(index), Some(&wanted) if wanted != 0)
}

/// Whether the current syscall is a 32-bit compat one. The kernel flags it per syscall in the
/// task (x86: `thread_info.status & TS_COMPAT`, also set for `int 0x80` from 64-bit code), so
/// this is exact where the pt_regs code segment would not be. `read` loads the `u32` at a byte
/// offset of the current task (`TaskLayout::compat`'s).
#[inline(always)]
fn compat_flag(read: impl FnOnce(usize) -> Option<u32>) -> u8 {
    // A mask of 0: the check is off (no BTF), every call counts as native.
    let mask = global(&COMPAT_MASK);
    if mask == 0 {
        return ABI_NATIVE;
    }
    match read(task_offset!(compat)) {
        Some(w) if w & mask != 0 => ABI_COMPAT,
        _ => ABI_NATIVE,
    }
}

/// [`compat_flag`] for raw tracepoints: the task is an untyped address, read with a helper.
#[inline(always)]
pub(crate) fn current_abi() -> u8 {
    compat_flag(|offset| {
        // SAFETY: a helper call; the address is only read through bpf_probe_read_kernel.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        unsafe { bpf_probe_read_kernel(task.add(offset) as *const u32) }.ok()
    })
}

/// [`compat_flag`] for BTF programs, where `task` is the current task as a typed pointer the
/// verifier lets us load from directly.
#[inline(always)]
pub(crate) fn task_abi(task: *const u8) -> u8 {
    compat_flag(|offset| Some(task_u32(task, offset)))
}
