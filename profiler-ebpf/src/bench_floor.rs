//! Benchmark reference point "floor": an empty raw_tracepoint pair on sys_enter + sys_exit.
//!
//! Attaching any syscall tracepoint moves every syscall onto the kernel's slow path; this pair
//! does nothing else, so its cost is the least any syscall tracer can add. `cargo xtask bench`
//! loads it; it is not part of the daemon.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

    #[raw_tracepoint(tracepoint = "sys_enter")]
    pub fn sys_enter(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn sys_exit(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("bench-floor is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
