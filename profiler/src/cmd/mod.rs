//! The commands (`serve`, `record`, `top`) and the command line's root. Errors end here:
//! `exit.rs` is the one place they become an exit code.

pub mod exit;
pub mod record;
pub mod serve;
pub mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::args::ServeArgs;

#[derive(Parser)]
#[command(
    name = "syscall-profiler",
    version,
    about = "System-wide syscall latency profiler (eBPF)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach to every syscall on the host and serve the totals over HTTP.
    Serve(Box<ServeArgs>),
    /// Record syscalls for a while (or of a command) without a daemon; print an strace -c table.
    Record(record::RecordArgs),
    /// A live terminal view of a running daemon's /stats.
    Top(top::TopArgs),
}

/// Runs the command the command line names. A failure is one line on stderr and an exit code
/// that tells its kind (exit.rs).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args).map(|()| 0),
        Command::Record(args) => record::run(args),
        Command::Top(args) => top::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("syscall-profiler: error: {}", fatal.one_line());
            ExitCode::from(fatal.exit_code())
        }
    }
}
