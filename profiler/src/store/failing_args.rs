//! The arguments behind failing calls (issue 14): per (process, syscall, errno), each distinct
//! path or address a failing call named and how many failing calls named it, exactly, as the
//! kernel captured them (within its per-CPU budget: /stats marks a list sampled when its counts
//! add up to fewer than the errno's). Bounded: at most `PER_CALL` arguments per (process,
//! syscall, errno), `PER_PROCESS` per process and `GLOBAL` in all. Past a bound the most
//! frequent stay listed: a new argument takes the place of its call's least frequent one when
//! it failed at least as often in its drain (that one's failures go to the call's `other`
//! count), else it is folded into `other` itself. So a program that names many paths at
//! start-up, then fails on one again and again, has that one listed. Entries go with their
//! process.

use serde::Serialize;

use super::keys::{FastMap, ProcKey, SyscallKey};

/// Distinct arguments kept per (process, syscall, errno).
pub const PER_CALL: usize = 16;
/// Distinct arguments kept per process.
pub const PER_PROCESS: usize = 256;
/// Distinct arguments kept in all.
pub const GLOBAL: usize = 20_000;

/// What a failing call named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Arg {
    /// The path as the call gave it (lossy UTF-8), or the address (`127.0.0.1:9`,
    /// `[::1]:9`, `unix:/run/x.sock`, `unix:@abstract`); empty when unreadable.
    pub text: String,
    /// A relative path resolved against the process's working directory (AT_FDCWD), read by
    /// the drain from /proc/PID/cwd while the process lived.
    pub resolved: Option<String>,
    /// The directory fd a relative path was given against, when not AT_FDCWD (not resolved).
    pub dirfd: Option<i32>,
    /// `path` or `address`.
    pub kind: ArgKind,
    /// Cut at the kernel's 255 bytes.
    pub truncated: bool,
    /// The user memory could not be read (a page gone): counted, with no text.
    pub unreadable: bool,
}

impl Arg {
    /// The entry the folded failures are listed under.
    pub fn other() -> Arg {
        Arg {
            text: String::new(),
            resolved: None,
            dirfd: None,
            kind: ArgKind::Path,
            truncated: false,
            unreadable: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    Path,
    Address,
}

/// One (process, syscall, errno)'s arguments.
#[derive(Clone, Debug, Default)]
pub struct CallArgs {
    /// Count per argument.
    pub args: FastMap<Arg, u64>,
    /// Failures whose argument is not listed: past a bound, or given way to a more frequent one.
    pub other: u64,
}

impl CallArgs {
    /// Every failure counted here, named or folded.
    pub fn total(&self) -> u64 {
        self.args.values().sum::<u64>() + self.other
    }

    /// The `n` most frequent arguments, most frequent first (ties by argument).
    pub fn top(&self, n: usize) -> Vec<(&Arg, u64)> {
        let mut all: Vec<(&Arg, u64)> = self.args.iter().map(|(a, &c)| (a, c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.truncate(n);
        all
    }
}

/// The kernel's capture counters (see profiler_common's ARG_STAT_*), as of the last drain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounters {
    pub captured: u64,
    /// Failures past a CPU's budget: counted by errno, their argument not captured.
    pub missed: u64,
    pub unreadable: u64,
    /// Arguments FAILED_ARGS had no room for.
    pub full: u64,
}

#[derive(Debug, Default)]
pub struct FailingArgs {
    calls: FastMap<(ProcKey, SyscallKey, u32), CallArgs>,
    per_process: FastMap<ProcKey, usize>,
    held: usize,
    /// Arguments folded into `other` because of a bound.
    pub folded: u64,
    pub kernel: CaptureCounters,
}

impl FailingArgs {
    /// `n` more failures of (process, syscall, errno) that named `arg`.
    pub fn add(&mut self, p: ProcKey, sc: SyscallKey, errno: u32, arg: Arg, n: u64) {
        let call = self.calls.entry((p, sc, errno)).or_default();
        if let Some(c) = call.args.get_mut(&arg) {
            *c += n;
            return;
        }
        let in_process = self.per_process.entry(p).or_default();
        if call.args.len() < PER_CALL && *in_process < PER_PROCESS && self.held < GLOBAL {
            call.args.insert(arg, n);
            *in_process += 1;
            self.held += 1;
            return;
        }
        // Full: the call's least frequent argument (the greatest, of equals: deterministic)
        // gives way to this one if it is not more frequent, which keeps every bound.
        let least = call
            .args
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(a, &c)| (a.clone(), c));
        let folded = match least {
            Some((least, c)) if c <= n => {
                call.args.remove(&least);
                call.args.insert(arg, n);
                c
            }
            _ => n,
        };
        call.other += folded;
        self.folded += folded;
    }

    /// The arguments of `p`'s failing calls of `sc`, by errno.
    pub fn of(&self, p: ProcKey, sc: SyscallKey, errno: u32) -> Option<&CallArgs> {
        self.calls.get(&(p, sc, errno))
    }

    /// Drops the arguments of processes no longer held.
    pub fn retain(&mut self, keep: impl Fn(&ProcKey) -> bool) {
        self.calls.retain(|(p, _, _), _| keep(p));
        self.per_process.retain(|p, _| keep(p));
        self.held = self.calls.values().map(|c| c.args.len()).sum();
    }

    /// Distinct arguments held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Abi;

    const P: ProcKey = ProcKey {
        pid: 1,
        incarnation: 0,
    };

    fn native(nr: u32) -> SyscallKey {
        SyscallKey {
            abi: Abi::Native,
            nr,
        }
    }

    fn path(s: &str) -> Arg {
        Arg {
            text: s.into(),
            resolved: None,
            dirfd: None,
            kind: ArgKind::Path,
            truncated: false,
            unreadable: false,
        }
    }

    #[test]
    fn counts_add_and_a_full_call_folds_into_other() {
        let (p, sc) = (P, native(257));
        let mut f = FailingArgs::default();
        for i in 0..PER_CALL + 3 {
            f.add(p, sc, 2, path(&format!("/x{i}")), 2);
        }
        f.add(p, sc, 2, path("/x0"), 5);
        let call = f.of(p, sc, 2).unwrap();
        assert_eq!(call.args.len(), PER_CALL);
        assert_eq!(call.other, 6);
        assert_eq!(call.total(), 2 * (PER_CALL as u64 + 3) + 5);
        assert_eq!(call.top(1), vec![(&path("/x0"), 7)]);
        f.retain(|_| false);
        assert_eq!(f.held(), 0);
        assert!(f.of(p, sc, 2).is_none());
    }

    /// What a program does at start-up (many paths, once each), then in its loop (one path,
    /// again and again): the loop's path is listed, its count exact from its first drain, the
    /// total exact, the bounds kept.
    #[test]
    fn a_path_failing_often_after_many_others_takes_the_least_frequents_place() {
        let (p, sc) = (P, native(262));
        let mut f = FailingArgs::default();
        for i in 0..PER_CALL + 24 {
            f.add(p, sc, 2, path(&format!("/usr/lib/python3/x{i}")), 1);
        }
        f.add(p, sc, 2, path("/usr/lib/python3/x0"), 1);
        // Drain by drain: 900, then 1,000 more.
        f.add(p, sc, 2, path("/etc/app/config.yaml"), 900);
        f.add(p, sc, 2, path("/etc/app/config.yaml"), 1000);
        let call = f.of(p, sc, 2).unwrap();
        assert_eq!(call.top(2)[0], (&path("/etc/app/config.yaml"), 1900));
        assert_eq!(call.top(2)[1], (&path("/usr/lib/python3/x0"), 2));
        assert_eq!(call.args.len(), PER_CALL);
        assert_eq!(call.total(), (PER_CALL as u64 + 24) + 1 + 1900);
        assert_eq!(f.held(), PER_CALL);
        // A newcomer less frequent than every listed one is folded, not listed.
        f.add(p, sc, 2, path("/etc/app/config.yaml"), 5);
        for i in 0..PER_CALL {
            f.add(p, sc, 2, path(&format!("/usr/lib/python3/x{i}")), 10);
        }
        let before = f.of(p, sc, 2).unwrap().args.clone();
        f.add(p, sc, 2, path("/tmp/rare"), 1);
        let call = f.of(p, sc, 2).unwrap();
        assert_eq!(call.args, before);
        assert_eq!(
            call.total(),
            (PER_CALL as u64 + 24) + 1 + 1905 + 10 * PER_CALL as u64 + 1
        );
    }
}
