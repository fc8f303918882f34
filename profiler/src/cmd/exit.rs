//! Errors that end the process: one line for the operator and a distinct exit code per kind, so
//! scripts and systemd can tell "fix the config" from "fix the host". Each layer returns its own
//! error type, with the error that caused it; this is the one place they become exit codes.

use std::error::Error as _;

use crate::{config, http, kernel, kernel::pin};

/// Boxed: the layers' errors carry their causes, and every function up to `main` returns this.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error(transparent)]
    Config(Box<config::Error>),
    #[error(transparent)]
    Kernel(Box<kernel::Error>),
    #[error(transparent)]
    Http(Box<http::Error>),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<config::Error> for Fatal {
    fn from(e: config::Error) -> Self {
        Fatal::Config(Box::new(e))
    }
}

impl From<kernel::Error> for Fatal {
    fn from(e: kernel::Error) -> Self {
        Fatal::Kernel(Box::new(e))
    }
}

impl From<http::Error> for Fatal {
    fn from(e: http::Error) -> Self {
        Fatal::Http(Box::new(e))
    }
}

impl Fatal {
    /// 1 anything else, 2 a bad setting (flag, environment, config or web config file), 3 not
    /// permitted to load BPF programs, 4 the kernel refuses them, 5 cannot listen, 6
    /// `--pin-path` unusable.
    pub fn exit_code(&self) -> u8 {
        use kernel::Error as K;
        match self {
            Fatal::Other(_) => 1,
            Fatal::Config(_) => 2,
            Fatal::Kernel(e) => match **e {
                K::FilterCgroup { .. }
                | K::NotCgroupV2 { .. }
                | K::BadVariable { .. }
                | K::Pin(pin::Error::Relative(_)) => 2,
                K::NotPermitted { .. } | K::Denied { .. } => 3,
                K::Refused { .. } | K::NoBtf(_) => 4,
                K::Pin(_) => 6,
                K::Status(_)
                | K::NoProgramLeft { .. }
                | K::Object(_)
                | K::MissingProgram(_)
                | K::NotATracepoint(_)
                | K::MissingMap(_)
                | K::Map { .. }
                | K::NotAnArray(_)
                | K::ReadMap(..)
                | K::FreeSlots { .. }
                | K::Arena(_)
                | K::Filter { .. }
                | K::Unprivileged(_)
                | K::Budget(_)
                | K::Probe(_) => 1,
            },
            Fatal::Http(e) => match **e {
                http::Error::Listen { .. } => 5,
                http::Error::Configure(_) | http::Error::LocalAddr(_) => 1,
            },
        }
    }

    /// The error and what caused it, on one line: each cause after ": ".
    pub fn one_line(&self) -> String {
        let mut line = self.to_string();
        let mut cause = self.source();
        while let Some(e) = cause {
            line.push_str(": ");
            line.push_str(&e.to_string());
            cause = e.source();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use anyhow::Context;

    use super::*;

    #[test]
    fn each_kind_has_its_exit_code() {
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let cases: Vec<(Fatal, u8)> = vec![
            (anyhow::anyhow!("x").into(), 1),
            (
                config::Error::Invalid {
                    place: "--interval".into(),
                    why: "no".into(),
                }
                .into(),
                2,
            ),
            (
                kernel::Error::FilterCgroup {
                    dir: PathBuf::from("/x"),
                    source: io(),
                }
                .into(),
                2,
            ),
            (
                kernel::Error::from(pin::Error::Relative("x".into())).into(),
                2,
            ),
            (kernel::Error::NotPermitted { cap_eff: 0 }.into(), 3),
            (
                kernel::Error::Denied {
                    what: "x".into(),
                    source: io().into(),
                }
                .into(),
                3,
            ),
            (
                kernel::Error::Refused {
                    what: "x".into(),
                    source: io().into(),
                }
                .into(),
                4,
            ),
            (
                http::Error::Listen {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: io(),
                }
                .into(),
                5,
            ),
            (
                kernel::Error::from(pin::Error::NotBpffs("/tmp".into())).into(),
                6,
            ),
            (
                kernel::Error::NoProgramLeft {
                    tracepoint: "sys_enter",
                    why: "x".into(),
                }
                .into(),
                1,
            ),
        ];
        for (fatal, code) in cases {
            assert_eq!(fatal.exit_code(), code, "{fatal:?}");
        }
    }

    #[test]
    fn causes_are_on_the_same_line() {
        let in_use = || io::Error::from_raw_os_error(libc::EADDRINUSE);
        let listen: Fatal = http::Error::Listen {
            addr: "127.0.0.1:9760".parse().unwrap(),
            source: in_use(),
        }
        .into();
        assert_eq!(
            listen.one_line(),
            format!("cannot listen on 127.0.0.1:9760: {}", in_use())
        );
        let other: Fatal = Err::<(), _>(in_use())
            .context("reading x")
            .context("starting")
            .unwrap_err()
            .into();
        assert_eq!(
            other.one_line(),
            format!("starting: reading x: {}", in_use())
        );
    }
}
