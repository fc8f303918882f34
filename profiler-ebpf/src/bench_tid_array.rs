//! Experiment of issue 17 on CPUs where calls are dear (AMD with retpolines and safe RET): the
//! limit (bench_limit.rs) plus a syscall's start kept in a plain ARRAY indexed by the thread id,
//! whose lookup the verifier inlines, instead of BPF task storage (bench_task_storage.rs), whose
//! `bpf_task_storage_get` is a call on each side.
//!
//! `sys_enter_tid`/`sys_exit_tid` ("tid-array"): the task pointer (a call), its `pid` and
//! `start_time` (direct loads: together they name a task even when tids are reused), the entry
//! at `pid & (TIDS_LEN - 1)` (inlined), the clock. An entry owned by another live thread (two
//! tids equal modulo the array's length) sends the call to task storage; a thread's exit frees
//! its entry (`sched_process_exit_tid`). Two calls per side, as the daemon's programs would make.
//!
//! `sys_enter_regs`/`sys_exit_regs` ("regs-array"): the same with the entry found and owned by
//! the tracepoint's `pt_regs` pointer (the top of the thread's kernel stack, one per live
//! thread), so no task call at all: the limit's one call per side. Not a design as it stands (a
//! stack is reused by a later thread, and the programs need the task for the split anyway):
//! measured to show what the task call itself costs.
//!
//! `sys_enter_ts`/`sys_exit_ts` ("ts-entry"), the reference: the same entry in task storage,
//! reached as the daemon's programs reach theirs (task pointer, `bpf_task_storage_get`, clock:
//! three calls per side).
//!
//! Loaded by `cargo xtask bench --task-storage`, which sets the task offsets below from the
//! kernel's BTF. Not part of the daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod task_storage;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::BPF_F_MMAPABLE,
        helpers::{bpf_get_current_task_btf, bpf_ktime_get_ns},
        macros::{btf_map, btf_tracepoint, map},
        maps::Array,
        programs::BtfTracePointContext,
    };

    use crate::task_storage::TaskStorage;

    // Set by the bench's loader from the kernel's BTF: byte offsets in `struct task_struct`.
    #[no_mangle]
    static PID_OFFSET: u32 = 0;
    #[no_mangle]
    static TGID_OFFSET: u32 = 0;
    #[no_mangle]
    static START_TIME_OFFSET: u32 = 0;

    #[inline(always)]
    fn global(v: &u32) -> usize {
        unsafe { core::ptr::read_volatile(v) as usize }
    }

    /// A thread's entry: who owns it, and its call in flight. 64 bytes in a map whose values
    /// start on a page (`BPF_F_MMAPABLE`), so each entry is one cache line of its own: threads
    /// with neighbouring tids running on different CPUs would otherwise write the same line on
    /// every call (a plain array's values start 312 bytes into the map on 6.18, 56 modulo 64).
    #[derive(Clone, Copy)]
    #[repr(C)]
    pub struct Entry {
        owner_start: u64,
        owner_tid: u32,
        tgid: u32,
        ts_ns: u64,
        pad: [u64; 5],
    }

    const TIDS_LEN: u32 = 32_768;

    #[map]
    static TIDS: Array<Entry> = Array::with_max_entries(TIDS_LEN, BPF_F_MMAPABLE);

    #[map]
    static REGS: Array<Entry> = Array::with_max_entries(TIDS_LEN, BPF_F_MMAPABLE);

    /// Calls sent to task storage because their entry belonged to another live thread.
    #[map]
    static COLLISIONS: Array<u64> = Array::with_max_entries(1, 0);

    #[btf_map]
    static OVERFLOW: TaskStorage<Entry> = TaskStorage::new();

    #[inline(always)]
    fn load<T: Copy>(task: *const u8, off: usize) -> T {
        unsafe { core::ptr::read_volatile(task.add(off) as *const T) }
    }

    /// The current thread's entry: its own in TIDS (claimed if free), or in task storage when
    /// another live thread owns that one. Null only when task storage cannot allocate.
    #[inline(always)]
    fn entry_of(task: *const u8, create: bool) -> *mut Entry {
        let tid: u32 = load(task, global(&PID_OFFSET));
        let born: u64 = load(task, global(&START_TIME_OFFSET));
        if let Some(e) = TIDS.get_ptr_mut(tid & (TIDS_LEN - 1)) {
            let (owner, owner_born) = unsafe { ((*e).owner_tid, (*e).owner_start) };
            if owner == tid && owner_born == born {
                return e;
            }
            if owner == 0 && create {
                unsafe {
                    (*e).owner_tid = tid;
                    (*e).owner_start = born;
                    (*e).tgid = load(task, global(&TGID_OFFSET));
                }
                return e;
            }
        }
        overflow(task, create)
    }

    #[inline(never)]
    fn overflow(task: *const u8, create: bool) -> *mut Entry {
        if let Some(n) = COLLISIONS.get_ptr_mut(0) {
            unsafe { *n += 1 };
        }
        OVERFLOW.get(task, create)
    }

    /// A syscall starts: its entry (null when it has none) takes the clock.
    #[inline(always)]
    fn begin(e: *mut Entry) {
        if !e.is_null() {
            unsafe { (*e).ts_ns = bpf_ktime_get_ns() };
        }
    }

    /// A syscall returns: its entry's start, if it has one, gives way to the latency (and the
    /// process, where the entry keeps it), for the caller to keep from being optimised away.
    #[inline(always)]
    fn end(e: *mut Entry) -> Option<(u64, u32)> {
        if e.is_null() || unsafe { (*e).ts_ns } == 0 {
            return None;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        let (start, tgid) = unsafe { ((*e).ts_ns, (*e).tgid) };
        unsafe { (*e).ts_ns = 0 };
        Some((now.wrapping_sub(start), tgid))
    }

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_tid(_ctx: BtfTracePointContext) -> i32 {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        begin(entry_of(task, true));
        0
    }

    #[btf_tracepoint(function = "sys_exit")]
    pub fn sys_exit_tid(_ctx: BtfTracePointContext) -> i32 {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        if let Some(measured) = end(entry_of(task, false)) {
            core::hint::black_box(measured);
        }
        0
    }

    /// "ts-entry", the reference: the daemon's way, the entry in task storage (a call).
    #[inline(always)]
    fn stored_entry(task: *const u8, create: bool) -> *mut Entry {
        let e = OVERFLOW.get(task, create);
        if create && !e.is_null() && unsafe { (*e).owner_tid } == 0 {
            unsafe {
                (*e).owner_tid = load(task, global(&PID_OFFSET));
                (*e).tgid = load(task, global(&TGID_OFFSET));
            }
        }
        e
    }

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_ts(_ctx: BtfTracePointContext) -> i32 {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        begin(stored_entry(task, true));
        0
    }

    #[btf_tracepoint(function = "sys_exit")]
    pub fn sys_exit_ts(_ctx: BtfTracePointContext) -> i32 {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        if let Some(measured) = end(stored_entry(task, false)) {
            core::hint::black_box(measured);
        }
        0
    }

    /// A thread's exit frees its TIDS entry for the next thread with a tid equal modulo
    /// TIDS_LEN (task storage frees itself).
    #[btf_tracepoint(function = "sched_process_exit")]
    pub fn sched_process_exit_tid(ctx: BtfTracePointContext) -> i32 {
        let task: *const u8 = ctx.arg(0);
        let tid: u32 = load(task, global(&PID_OFFSET));
        let born: u64 = load(task, global(&START_TIME_OFFSET));
        if let Some(e) = TIDS.get_ptr_mut(tid & (TIDS_LEN - 1)) {
            if unsafe { (*e).owner_tid == tid && (*e).owner_start == born } {
                unsafe {
                    (*e).ts_ns = 0;
                    (*e).owner_tid = 0;
                }
            }
        }
        0
    }

    /// The entry of the thread whose saved registers are at `regs` (its kernel stack's top).
    #[inline(always)]
    fn regs_entry(regs: *const u8, create: bool) -> *mut Entry {
        // The verifier allows no arithmetic on a pointer but the difference of two (a number,
        // to a privileged program): against a fixed address, the map's first element.
        let Some(base) = REGS.get_ptr(0) else {
            return core::ptr::null_mut();
        };
        let regs = (regs as u64).wrapping_sub(base as u64) | 1;
        // Stacks are 16 KiB apart at least: hash the bits above.
        let index = ((regs >> 14).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 49) as u32;
        if let Some(e) = REGS.get_ptr_mut(index & (TIDS_LEN - 1)) {
            let owner = unsafe { (*e).owner_start };
            if owner == regs {
                return e;
            }
            if owner == 0 && create {
                unsafe { (*e).owner_start = regs };
                return e;
            }
        }
        core::ptr::null_mut()
    }

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_regs(ctx: BtfTracePointContext) -> i32 {
        begin(regs_entry(ctx.arg(0), true));
        0
    }

    #[btf_tracepoint(function = "sys_exit")]
    pub fn sys_exit_regs(ctx: BtfTracePointContext) -> i32 {
        // The entry keeps no process here: the latency alone.
        if let Some((latency, _)) = end(regs_entry(ctx.arg(0), false)) {
            core::hint::black_box(latency);
        }
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("bench-tid-array is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
