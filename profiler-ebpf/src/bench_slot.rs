//! Experiment of issue 17, one side: the limit (bench_limit.rs) plus the daemon's way of
//! keeping a syscall's start: a per-CPU slot, taken over by a thread through its `STARTS`
//! record when it arrives on the CPU, and parked in that record at `sched_switch` when the
//! thread leaves mid-syscall. The same reads, checks and map accesses as programs.rs, without
//! the histogram; compared with bench_task_storage.rs on the ping-pong workloads by
//! `cargo xtask bench --task-storage`. Not part of the daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
        macros::{btf_tracepoint, map, raw_tracepoint},
        maps::{HashMap, PerCpuArray},
        programs::{BtfTracePointContext, RawTracePointContext},
    };

    #[derive(Clone, Copy)]
    #[repr(C)]
    pub struct Start {
        ts_ns: u64,
        tid: u32,
        tgid: u32,
    }

    #[map]
    static SLOT: PerCpuArray<Start> = PerCpuArray::with_max_entries(1, 0);

    #[map]
    static STARTS: HashMap<u32, Start> = HashMap::with_max_entries(65536, 0);

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_btf(_ctx: BtfTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tid = pid_tgid as u32;
        let ts_ns = unsafe { bpf_ktime_get_ns() };
        let Some(slot) = SLOT.get_ptr_mut(0) else {
            return 0;
        };
        if unsafe { (*slot).tid } != tid {
            claim(tid, (pid_tgid >> 32) as u32);
            unsafe {
                (*slot).tid = tid;
                (*slot).tgid = (pid_tgid >> 32) as u32;
            }
        }
        unsafe { (*slot).ts_ns = ts_ns };
        0
    }

    /// The thread's record, created on its first syscall.
    #[inline(never)]
    fn claim(tid: u32, tgid: u32) {
        if let Some(record) = STARTS.get_ptr_mut(tid) {
            unsafe { (*record).ts_ns = 0 };
            return;
        }
        let record = Start {
            ts_ns: 0,
            tid,
            tgid,
        };
        let _ = STARTS.insert(tid, record, 0);
    }

    #[raw_tracepoint(tracepoint = "sched_switch")]
    pub fn sched_switch(_ctx: RawTracePointContext) -> i32 {
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
            if let Some(record) = STARTS.get_ptr_mut(tid) {
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
            match parked(tid) {
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
    fn parked(tid: u32) -> Option<Start> {
        let record = STARTS.get_ptr_mut(tid)?;
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
    eprintln!("bench-slot is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
