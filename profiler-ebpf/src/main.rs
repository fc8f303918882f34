//! The daemon's eBPF programs, the main object: everything in programs/ (the raw-tracepoint
//! programs and what they share) and task.rs (the BTF programs that keep syscall starts in task
//! storage). main_slot.rs builds the same without task.rs, for kernels that lack task storage.
//! They only build for the BPF target, through `cargo xtask build-ebpf`; on any other target
//! this crate is an empty binary, so that `cargo build --workspace` and `cargo clippy
//! --workspace` still work.
#![cfg_attr(
    target_arch = "bpf",
    no_std,
    no_main,
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod task;
#[cfg(target_arch = "bpf")]
mod task_storage;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("profiler-ebpf is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
