//! `syscall-profiler`: a system-wide syscall latency profiler.
//!
//! Data flows one way: kernel maps → [`drain`] → [`store`] → views ([`api`]). Only the drain
//! touches maps; every view reads the store.

mod aggregates;
mod api;
mod bpf;
mod bpf_stats;
mod caps;
mod cgroups;
mod cli;
mod config;
mod drain;
mod fatal;
mod histogram;
mod host;
mod http;
mod kernel_btf;
mod map_batch;
mod pin;
mod serve;
mod store;
mod syscalls;
mod webconfig;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("syscall-profiler: error: {fatal}");
            ExitCode::from(fatal.exit_code())
        }
    }
}
