//! `syscall-profiler`: a system-wide syscall latency profiler.
//!
//! Data flows one way, and the folders are its layers (docs/design.md, "Module layers"): kernel
//! maps → [`drain`] → [`store`] → [`views`] → [`http`] → [`cmd`]. Only the drain touches maps;
//! every view reads the store. This file declares the layers and hands over to `cmd`.

mod cmd;
mod config;
mod drain;
mod host;
mod http;
mod kernel;
mod store;
mod syscalls;
mod views;

fn main() -> std::process::ExitCode {
    cmd::main()
}
