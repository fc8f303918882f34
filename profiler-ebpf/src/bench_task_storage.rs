//! Experiment of issue 17, other side: the limit (bench_limit.rs) plus a syscall's start kept
//! in BPF task storage (`BPF_MAP_TYPE_TASK_STORAGE`, one value per thread, found through the
//! task itself): nothing to do at `sched_switch`, a `bpf_task_storage_get` call on each side
//! instead. Compared with bench_slot.rs, which does the same work the daemon's way, by
//! `cargo xtask bench --task-storage`. Not part of the daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod task_storage;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns},
        macros::{btf_map, btf_tracepoint},
        programs::BtfTracePointContext,
    };

    use crate::task_storage::TaskStorage;

    #[derive(Clone, Copy)]
    #[repr(C)]
    pub struct Start {
        ts_ns: u64,
        tgid: u32,
        pad: u32,
    }

    #[btf_map]
    static STARTS: TaskStorage<Start> = TaskStorage::new();

    #[inline(always)]
    fn current_start(create: bool) -> *mut Start {
        STARTS.get(unsafe { bpf_get_current_task_btf() }.cast(), create)
    }

    #[btf_tracepoint(function = "sys_enter")]
    pub fn sys_enter_btf(_ctx: BtfTracePointContext) -> i32 {
        // The daemon needs the process at entry anyway (its filters).
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let ts_ns = unsafe { bpf_ktime_get_ns() };
        let start = current_start(true);
        if !start.is_null() {
            unsafe {
                (*start).ts_ns = ts_ns;
                (*start).tgid = tgid;
            }
        }
        0
    }

    #[btf_tracepoint(function = "sys_exit")]
    pub fn sys_exit_btf(_ctx: BtfTracePointContext) -> i32 {
        let start = current_start(false);
        if start.is_null() || unsafe { (*start).ts_ns } == 0 {
            return 0;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        let begun = unsafe { *start };
        unsafe { (*start).ts_ns = 0 };
        // The latency and the process, as the histogram would take them.
        core::hint::black_box((now.wrapping_sub(begun.ts_ns), begun.tgid));
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("bench-task-storage is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
