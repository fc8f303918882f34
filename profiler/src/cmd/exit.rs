//! Errors that end the process: one line for the operator and a distinct exit code per kind, so
//! scripts and systemd can tell "fix the config" from "fix the host".

use std::fmt;

#[derive(Debug)]
pub enum Fatal {
    /// A bad setting in a flag, the environment or a config file. Exit 2, like a bad command
    /// line: the operator has to fix what they asked for.
    Config(String),
    /// The process may not load BPF programs (not root, or missing capabilities). Exit 3.
    Privileges(String),
    /// The kernel lacks something the programs need. Exit 4.
    Kernel(String),
    /// The HTTP listener could not be set up (address in use, bad address). Exit 5.
    Listen(String),
    /// `--pin-path` cannot be used: no bpf filesystem there, or maps pinned by an incompatible
    /// build. Exit 6.
    Pin(String),
    /// Anything else. Exit 1.
    Other(anyhow::Error),
}

impl Fatal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Other(_) => 1,
            Fatal::Config(_) => 2,
            Fatal::Privileges(_) => 3,
            Fatal::Kernel(_) => 4,
            Fatal::Listen(_) => 5,
            Fatal::Pin(_) => 6,
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Config(m)
            | Fatal::Privileges(m)
            | Fatal::Kernel(m)
            | Fatal::Listen(m)
            | Fatal::Pin(m) => f.write_str(m),
            // `{:#}` prints the whole cause chain on one line.
            Fatal::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(e: anyhow::Error) -> Self {
        Fatal::Other(e)
    }
}
