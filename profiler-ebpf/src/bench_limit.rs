//! Benchmark reference point "limit": the floor (bench_floor.rs) plus one `bpf_ktime_get_ns()`
//! on each side.
//!
//! Two clock reads are the least a latency profiler must do per syscall, so no design can get
//! below this. `cargo xtask bench` loads it; it is not part of the daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext,
    };

    // black_box: the reading is unused, and the point is that the helper call stays.
    #[raw_tracepoint(tracepoint = "sys_enter")]
    pub fn sys_enter(_ctx: RawTracePointContext) -> i32 {
        core::hint::black_box(unsafe { bpf_ktime_get_ns() });
        0
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn sys_exit(_ctx: RawTracePointContext) -> i32 {
        core::hint::black_box(unsafe { bpf_ktime_get_ns() });
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("bench-limit is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
