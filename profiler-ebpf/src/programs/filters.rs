//! Which calls are recorded: the daemon's own process never, and the in-kernel filters
//! (`--filter-pids`, `--filter-cgroup`, `--filter-syscalls`), cheapest first, before any map
//! is written; and the call's ABI, which the syscall filter and the histogram key need.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, CgroupArray, HashMap, PerCpuArray},
};
use profiler_common::{ABI_COMPAT, ABI_NATIVE, FILTER_PIDS_MAX_ENTRIES, FILTER_SYSCALLS_PER_ABI};

use super::{global, split::offset};

// Set by the loader (see profiler_common::GLOBAL_*).
#[no_mangle]
static IGNORE_TGID: u32 = 0;
#[no_mangle]
static COMPAT_OFFSET: u32 = 0;
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

/// With the pid filter on, the processes this CPU last found left out, by `tgid % 64`: a
/// process the filter leaves out is then told apart with the task pointer and an inlined
/// array access, no map lookup and no task storage (the verdict depends on the pid alone).
#[map]
static LEFT_OUT: PerCpuArray<u32> = PerCpuArray::with_max_entries(LEFT_OUT_LEN, 0);
const LEFT_OUT_LEN: u32 = 64;

/// Whether the process passes the checks that depend on its pid alone, which never change for
/// a thread: not the daemon itself, and in the pid filter when it is on (with a filter off,
/// its branch is dead code the verifier removes).
#[inline(always)]
pub(crate) fn pid_wanted(tgid: u32) -> bool {
    if tgid == global(&IGNORE_TGID) {
        return false;
    }
    global(&FILTER_PIDS_ON) == 0 || FILTER_PIDS.get_ptr(tgid).is_some()
}

/// Whether this CPU has seen the process of `task` (a BTF task pointer) left out by the pid
/// filter. Always false with the filter off (then the verifier removes the lookup).
#[inline(always)]
pub(crate) fn known_left_out(task: *const u8) -> bool {
    if global(&FILTER_PIDS_ON) == 0 {
        return false;
    }
    let tgid = task_u32(task, offset(|l| &l.tgid));
    // SAFETY: this CPU's element of a per-CPU array (see "Safety" in mod.rs).
    matches!(LEFT_OUT.get_ptr(tgid & (LEFT_OUT_LEN - 1)), Some(seen) if unsafe { *seen } == tgid)
}

/// Remembers that the pid filter leaves `tgid` out (see `known_left_out`).
#[inline(always)]
pub(crate) fn remember_left_out(tgid: u32) {
    if global(&FILTER_PIDS_ON) == 0 {
        return;
    }
    if let Some(seen) = LEFT_OUT.get_ptr_mut(tgid & (LEFT_OUT_LEN - 1)) {
        // SAFETY: as above.
        unsafe { *seen = tgid };
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
/// offset of the current task.
#[inline(always)]
fn compat_flag(read: impl FnOnce(usize) -> Option<u32>) -> u8 {
    // A mask of 0: the check is off (no BTF), every call counts as native.
    let mask = global(&COMPAT_MASK);
    if mask == 0 {
        return ABI_NATIVE;
    }
    match read(global(&COMPAT_OFFSET) as usize) {
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
