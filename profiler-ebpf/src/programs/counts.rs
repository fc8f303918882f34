//! Counts-only mode: `sys_enter` is not attached, so there are no start times, no latency and
//! no split; `sys_exit` reads the syscall number from the saved registers and counts the call
//! in bucket 0 (the daemon knows the mode and reports counts and errors only). The BTF program
//! is task.rs' `sys_exit_counts_btf`; this is the raw-tracepoint one and what both share.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use profiler_common::task_offset;

use super::{
    args::capture,
    filters::{cgroup_wanted, current_abi, pid_wanted, syscall_wanted},
    hist::{add_counted, cpu_cached_slot, is_clone, key_high, key_low, key_nr, shard, Words},
    lifecycle::process_incarnation,
    split::Probe,
};

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_counts(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !pid_wanted(tgid) || !cgroup_wanted() {
        return 0;
    }
    let regs = ctx.arg::<u64>(0) as *const u8;
    // SAFETY: the helper checks the address and fails on a fault.
    let Ok(nr) = (unsafe { bpf_probe_read_kernel(regs.add(task_offset!(nr_reg)) as *const i32) })
    else {
        return 0;
    };
    let Some(cached) = cpu_cached_slot(key_nr(nr as u32)) else {
        return 0;
    };
    let words = |abi| {
        let high = key_high(key_nr(nr as u32), abi, shard(tid == tgid));
        (key_low(tgid, process_incarnation(tgid)), high)
    };
    count(
        nr,
        ctx.arg(1),
        current_abi(),
        words,
        cached,
        |(low, high), errno| capture::<Probe>(regs, low, high, errno),
    );
    0
}

/// Counts syscall `nr` of ABI `abi` returning `ret` in the histogram `words` names for the
/// ABI (its slot cached in `cached`), unless the syscall filter leaves it out or it is a new
/// task's first return from a clone (its parent's call, counted there, as strace counts it).
#[inline(always)]
pub(crate) fn count(
    nr: i32,
    ret: i64,
    abi: u8,
    words: impl FnOnce(u8) -> Words,
    cached: *mut u32,
    on_error: impl FnOnce(Words, u16),
) {
    if nr < 0 || !syscall_wanted(nr as u32, abi) || (ret == 0 && is_clone(nr as u32, abi)) {
        return;
    }
    add_counted(words(abi), cached, ret, on_error);
}
