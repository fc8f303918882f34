//! The commands (`serve`, `record`, `top`) and the command line's root. Errors end here:
//! `exit.rs` is the one place they become an exit code.

pub mod exit;
pub mod record;
pub mod serve;
pub mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{
    args::ServeArgs,
    parse::{clip, clip_to},
};

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e),
    };
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

/// `--help` and `--version` print as clap prints them; any other command-line error is one line
/// like every other error, exit 2.
fn command_line_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let commands: Vec<String> = <Cli as clap::CommandFactory>::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .filter(|name| name != "help")
                .collect();
            eprintln!(
                "syscall-profiler: error: no command given (one of {}); see --help",
                commands.join(", ")
            );
            ExitCode::from(2)
        }
        _ => {
            eprintln!("syscall-profiler: error: {}", one_line(e));
            ExitCode::from(2)
        }
    }
}

/// clap's message without the usage and the help footer, its lines joined by "; ", every quoted
/// value clipped.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let parts: Vec<String> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| {
            let l = l.strip_prefix("error: ").unwrap_or(l);
            clip_quoted(l.trim_start_matches('[').trim_end_matches(']'))
        })
        .collect();
    // Quotes that do not pair (a value with a quote in it) could leave a long value unclipped.
    clip_to(&format!("{}; see --help", parts.join("; ")), 512)
}

/// `line` with the text between each pair of single quotes clipped.
fn clip_quoted(line: &str) -> String {
    line.split('\'')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                clip(part)
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("'")
}
