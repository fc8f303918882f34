//! Experiment of issue 17, third side: bench_slot.rs (the daemon's per-CPU slot, parked at
//! `sched_switch`) with the parked starts in BPF task storage instead of a hash by thread id:
//! the fast path of a thread that keeps its CPU is bench_slot.rs's, and the switch paths find
//! the thread's record through its task (the switched-out task is an argument of the BTF
//! tracepoint) instead of hashing its id. `cargo xtask bench --task-storage`. Not part of the
//! daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{
            bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, BPF_F_NO_PREALLOC,
            BPF_LOCAL_STORAGE_GET_F_CREATE,
        },
        helpers::{
            bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
            generated::bpf_task_storage_get,
        },
        macros::{btf_map, btf_tracepoint, map, raw_tracepoint},
        maps::PerCpuArray,
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

    /// See bench_task_storage.rs.
    #[repr(C)]
    pub struct TaskStorage {
        r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
        key: *const i32,
        value: *const Start,
        max_entries: *const [i32; 0],
        map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    }

    // Placeholders the loader reads from BTF; never dereferenced.
    unsafe impl Sync for TaskStorage {}

    #[btf_map]
    static STARTS: TaskStorage = TaskStorage {
        r#type: core::ptr::null(),
        key: core::ptr::null(),
        value: core::ptr::null(),
        max_entries: core::ptr::null(),
        map_flags: core::ptr::null(),
    };

    #[inline(always)]
    fn record_of(task: *mut core::ffi::c_void, create: bool) -> *mut Start {
        let flags = if create {
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        let map = &STARTS as *const TaskStorage as *mut core::ffi::c_void;
        unsafe { bpf_task_storage_get(map, task.cast(), core::ptr::null_mut(), flags).cast() }
    }

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
            let record = record_of(unsafe { bpf_get_current_task_btf() }.cast(), true);
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
            let record = record_of(ctx.arg(1), false);
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
        let record = record_of(unsafe { bpf_get_current_task_btf() }.cast(), false);
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
