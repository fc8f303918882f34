//! The progress line on stderr: redrawn each drain on a terminal, one line a second in a log,
//! and at the end the final numbers (in a log) or nothing (a terminal's line is cleared).

use std::{
    cell::Cell,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use crate::store::Process;

pub struct Progress {
    tty: bool,
    duration: Option<Duration>,
    last_line: Cell<Option<Instant>>,
}

/// "1 call", "2 calls".
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// "12 calls, 1 error, 3 processes" of `members`.
fn totals(members: &[&Process]) -> String {
    let calls: u64 = members.iter().map(|p| p.total.count).sum();
    let errors: u64 = members.iter().map(|p| p.total.errors).sum();
    let processes = members.iter().filter(|p| p.total.count > 0).count() as u64;
    format!(
        "{}, {}, {}",
        count(calls, "call"),
        count(errors, "error"),
        if processes == 1 {
            "1 process".to_string()
        } else {
            format!("{processes} processes")
        }
    )
}

impl Progress {
    /// Says the programs are attached and what is recorded: a script (and a user) waiting on
    /// stderr knows the recording has begun.
    pub fn start(duration: Option<Duration>, what: &str) -> Self {
        let p = Self {
            tty: std::io::stderr().is_terminal(),
            duration,
            last_line: Cell::new(Some(Instant::now())),
        };
        p.write(&format!("recording {what}"));
        p
    }

    /// The numbers so far: each call on a terminal, at most once a second in a log.
    pub fn show(&self, elapsed: Duration, members: &[&Process]) {
        if !self.tty
            && self
                .last_line
                .get()
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_line.set(Some(Instant::now()));
        let of = self
            .duration
            .map_or(String::new(), |d| format!(" / {:.1}s", d.as_secs_f64()));
        self.write(&format!(
            "recording {:.1}s{of}: {}",
            elapsed.as_secs_f64(),
            totals(members)
        ));
    }

    /// After the last drain: a log gets the final numbers, which the report's total repeats; a
    /// terminal's line is cleared, as the report follows.
    pub fn finish(&self, elapsed: Duration, members: &[&Process]) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K")
        } else {
            writeln!(
                err,
                "recorded {:.3}s: {}",
                elapsed.as_secs_f64(),
                totals(members)
            )
        };
    }

    fn write(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(count(0, "call"), "0 calls");
        assert_eq!(count(1, "error"), "1 error");
        assert_eq!(count(29, "call"), "29 calls");
        assert_eq!(totals(&[]), "0 calls, 0 errors, 0 processes");
    }
}
