//! `syscall-profiler`: a system-wide syscall latency profiler.
//!
//! Data flows one way: kernel maps → [`drain`] → [`store`] → views ([`api`]). Only the drain
//! touches maps; every view reads the store.

mod cmd;
mod config;
mod drain;
mod host;
mod http;
mod kernel;
mod store;
mod syscalls;
mod views;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = config::args::Cli::parse();
    let result = match cli.command {
        config::args::Command::Serve(args) => cmd::serve::run(*args).map(|()| 0),
        config::args::Command::Record(args) => cmd::record::run(args),
        config::args::Command::Top(args) => cmd::top::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("syscall-profiler: error: {fatal}");
            ExitCode::from(fatal.exit_code())
        }
    }
}
