//! Kernel side: time every syscall per thread and add it to the (process, syscall) histogram.
//!
//! Per event the work is bounded and allocation-free on the hot path: one pid/tgid read, one
//! clock read and one in-place write at `sys_enter`; one lookup of the thread's start, one clock
//! read, one lookup of the histogram and two or three atomic adds at `sys_exit`. Map inserts
//! happen only the first time a thread or a (process, syscall) pair is seen. The rules and the
//! reasons are in docs/design.md.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use profiler_common::{
    bucket_index, Hist, HistKey, ProcInfo, Start, BUCKETS, COUNTERS_LEN, COUNTER_HISTS_FULL,
    COUNTER_PROCS_FULL, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS, HISTS_MAX_ENTRIES,
    PROCS_MAX_ENTRIES, STARTS_MAX_ENTRIES,
};

// Set by the loader (see profiler_common::GLOBAL_*); read through `read_volatile` so LLVM keeps
// the load instead of folding in the zero written here.
#[no_mangle]
static IGNORE_TGID: u32 = 0;
#[no_mangle]
static EXECVE_NR: u32 = u32::MAX;
#[no_mangle]
static EXECVEAT_NR: u32 = u32::MAX;

#[map]
static STARTS: HashMap<u32, Start> = HashMap::with_max_entries(STARTS_MAX_ENTRIES, 0);

#[map]
static HISTS: HashMap<HistKey, Hist> =
    HashMap::with_max_entries(HISTS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static PROCS: HashMap<u32, ProcInfo> = HashMap::with_max_entries(PROCS_MAX_ENTRIES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// A zeroed `Hist` that is never written: the value of new HISTS entries. A `Hist` is larger
/// than the 512-byte BPF stack, so it cannot be built there.
#[map]
static ZERO_HIST: Array<Hist> = Array::with_max_entries(1, 0);

#[inline(always)]
fn global(v: &u32) -> u32 {
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // Per-CPU slot: no other CPU writes it, so a plain add is exact.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn atomic_add_u32(dst: *mut u32, v: u32) {
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
fn atomic_add_u64(dst: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == global(&IGNORE_TGID) {
        return 0;
    }
    // arg 1 is the syscall number; -1 means "no syscall" (e.g. a ptrace-cancelled one).
    let nr: i64 = ctx.arg(1);
    if nr < 0 {
        return 0;
    }
    let tid = pid_tgid as u32;
    let start = Start {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        nr: nr as u32,
        _pad: 0,
    };
    // Threads keep their entry between syscalls (removed at thread exit), so the common case is
    // an in-place write instead of a hash insert and delete per syscall.
    match STARTS.get_ptr_mut(tid) {
        Some(slot) => unsafe { *slot = start },
        None => {
            if STARTS.insert(tid, start, 0).is_err() {
                bump(COUNTER_STARTS_FULL);
            }
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == global(&IGNORE_TGID) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let Some(slot) = STARTS.get_ptr_mut(tid) else {
        bump(COUNTER_UNMATCHED_EXITS);
        return 0;
    };
    let start = unsafe { *slot };
    if start.ts_ns == 0 {
        bump(COUNTER_UNMATCHED_EXITS);
        return 0;
    }
    unsafe { (*slot).ts_ns = 0 };
    let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
    // arg 1 is the return value; -4095..-1 are errnos.
    let ret: i64 = ctx.arg(1);

    let key = HistKey { tgid, nr: start.nr };
    let hist = match HISTS.get_ptr_mut(&key) {
        Some(h) => h,
        None => match new_hist(&key) {
            Some(h) => h,
            None => return 0,
        },
    };
    if start.nr == global(&EXECVE_NR) || start.nr == global(&EXECVEAT_NR) {
        if ret == 0 {
            record_name(tgid, true);
        }
    }

    // Keep the bound where the verifier sees it: the index comes out of a long ALU sequence
    // (BPF has no count-leading-zeros), after which it can lose track of the range.
    let idx = core::hint::black_box(bucket_index(latency));
    if idx >= BUCKETS {
        return 0;
    }
    unsafe {
        atomic_add_u32(core::ptr::addr_of_mut!((*hist).buckets[idx]), 1);
        atomic_add_u64(core::ptr::addr_of_mut!((*hist).total_ns), latency);
        if ret < 0 && ret >= -4095 {
            atomic_add_u32(core::ptr::addr_of_mut!((*hist).errors), 1);
        }
    }
    0
}

/// First event of a (process, syscall) pair: create its histogram and, if the process is new,
/// record its name now, so processes that exit before the next drain keep their names.
#[inline(never)]
fn new_hist(key: &HistKey) -> Option<*mut Hist> {
    let zero = ZERO_HIST.get_ptr(0)?;
    // NOEXIST: another CPU may have created it meanwhile; then the lookup below finds theirs.
    let _ = HISTS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    match HISTS.get_ptr_mut(key) {
        Some(h) => {
            record_name(key.tgid, false);
            Some(h)
        }
        None => {
            bump(COUNTER_HISTS_FULL);
            None
        }
    }
}

#[inline(never)]
fn record_name(tgid: u32, renamed: bool) {
    if !renamed && PROCS.get_ptr(tgid).is_some() {
        return;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return;
    };
    let info = ProcInfo { comm, exit_ns: 0 };
    if PROCS.insert(tgid, info, 0).is_err() {
        bump(COUNTER_PROCS_FULL);
    }
}

/// A thread exits: free its start slot. If it is the process's leader, stamp the exit time so the
/// daemon can retire the process's histograms after its last drain.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let _ = STARTS.remove(tid);
    if tid == tgid {
        if let Some(info) = PROCS.get_ptr_mut(tgid) {
            unsafe { (*info).exit_ns = bpf_ktime_get_ns() };
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
