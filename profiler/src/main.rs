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
mod hist_arena;
mod histogram;
mod history;
mod host;
mod http;
mod insights;
mod kernel_btf;
mod map_batch;
mod pin;
mod record;
mod serve;
mod store;
mod syscalls;
mod top;
mod webconfig;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args).map(|()| 0),
        cli::Command::Record(args) => record::run(args),
        cli::Command::Top(args) => top::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("syscall-profiler: error: {fatal}");
            ExitCode::from(fatal.exit_code())
        }
    }
}
