//! The daemon's eBPF programs without task storage (programs/ alone, no task.rs): the object
//! the loader takes on kernels that cannot create a task storage map (before 5.11), where the
//! main object (main.rs) would not load at all, and whenever the BTF programs are left out. Its
//! maps are the main object's, pinned alike. What task.rs alone uses is dead code here.
#![cfg_attr(
    target_arch = "bpf",
    no_std,
    no_main,
    feature(core_intrinsics),
    allow(internal_features, dead_code)
)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("profiler-slot is built for the BPF target by `cargo xtask build-ebpf`");
    std::process::exit(1);
}
