//! Experiment of issue 17, third side: bench_slot.rs (the daemon's per-CPU slot, parked at
//! `sched_switch`) with the parked starts in BPF task storage instead of a hash by thread id:
//! the fast path of a thread that keeps its CPU is bench_slot.rs's, and the switch paths find
//! the thread's record through its task (the switched-out task is an argument of the BTF
//! tracepoint) instead of hashing its id. `cargo xtask bench --task-storage`. Not part of the
//! daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod task_storage;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns},
        macros::{btf_map, btf_tracepoint, map, raw_tracepoint},
        maps::PerCpuArray,
        programs::{BtfTracePointContext, RawTracePointContext},
    };

    use crate::task_storage::TaskStorage;

    #[derive(Clone, Copy)]
    #[repr(C)]
    pub struct Start {
        ts_ns: u64,
        tid: u32,
        tgid: u32,
    }

    #[map]
    static SLOT: PerCpuArray<Start> = PerCpuArray::with_max_entries(1, 0);

    #[btf_map]
    static STARTS: TaskStorage<Start> = TaskStorage::new();

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_btf(_ctx: BtfTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tid = pid_tgid as u32;
        let ts_ns = unsafe { bpf_ktime_get_ns() };
        let Some(slot) = SLOT.get_ptr_mut(0) else {
            return 0;
        };
        if unsafe { (*slot).tid } != tid {
            // The thread's record, created on its first syscall.
            let record = STARTS.get(unsafe { bpf_get_current_task_btf() }.cast(), true);
            if !record.is_null() {
                unsafe { (*record).ts_ns = 0 };
            }
            unsafe {
                (*slot).tid = tid;
                (*slot).tgid = (pid_tgid >> 32) as u32;
            }
        }
        unsafe { (*slot).ts_ns = ts_ns };
        0
    }

    #[btf_tracepoint(function = "sched_switch")]
    pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(slot) = SLOT.get_ptr_mut(0) else {
            return 0;
        };
        if unsafe { (*slot).tid } != tid {
            return 0;
        }
        let start = unsafe { *slot };
        unsafe {
            (*slot).tid = 0;
            (*slot).ts_ns = 0;
        }
        if start.ts_ns != 0 {
            // (preempt, prev, next, prev_state): the task leaving, no helper call to find it.
            let record = STARTS.get(ctx.arg(1), false);
            if !record.is_null() {
                unsafe { (*record).ts_ns = start.ts_ns };
            }
        }
        0
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn sys_exit(_ctx: RawTracePointContext) -> i32 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(slot) = SLOT.get_ptr_mut(0) else {
            return 0;
        };
        let start = if unsafe { (*slot).tid == tid && (*slot).ts_ns != 0 } {
            let start = unsafe { *slot };
            unsafe { (*slot).ts_ns = 0 };
            start
        } else {
            match parked() {
                Some(start) => start,
                None => return 0,
            }
        };
        let now = unsafe { bpf_ktime_get_ns() };
        // The latency and the process, as the histogram would take them.
        core::hint::black_box((now.wrapping_sub(start.ts_ns), start.tgid));
        0
    }

    #[inline(never)]
    fn parked() -> Option<Start> {
        let record = STARTS.get(unsafe { bpf_get_current_task_btf() }.cast(), false);
        if record.is_null() {
            return None;
        }
        let start = unsafe { *record };
        if start.ts_ns == 0 {
            return None;
        }
        unsafe { (*record).ts_ns = 0 };
        Some(start)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("bench-slot-ts is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
