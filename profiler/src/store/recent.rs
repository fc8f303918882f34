//! What each process did in the last few seconds: its current rates, which its totals since it
//! was first seen cannot give (a process that failed 10,000 calls a second and exited minutes
//! ago must not look like it still does).
//!
//! Not a second history: the store keeps per-process totals anyway, so what a process did since
//! an instant is its totals now less its totals then. Every `EPOCH` the store snapshots the sums
//! of every live process (`rotate`); the window is from the second-to-last snapshot until now,
//! `EPOCH` to twice it. A process first seen inside the window needs no snapshot: all of its
//! calls are in it. Memory: two snapshots of each live (process, syscall) — no histogram, about
//! 64 bytes each; one, shared, for a process idle since the older — and none of exited or
//! short-lived processes; /history keeps the system-wide per-second view. A process whose
//! change count equals its snapshot's made no call since: its activity is none, found without
//! building a snapshot (most of a busy host's processes, most of the time).

use std::time::{Duration, Instant, SystemTime};

use super::{histogram::TimeSplit, keys::SyscallKey};

/// How often live processes are snapshotted; the window of current rates is one to two of it.
pub const EPOCH: Duration = Duration::from_secs(5);

/// Sums of one process's calls of one syscall: enough for rates and shares of wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub split: TimeSplit,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.count += o.count;
        self.errors += o.errors;
        self.total_ns += o.total_ns;
        self.split.add(o.split);
    }

    fn less(&self, o: &Sums) -> Sums {
        Sums {
            count: self.count.saturating_sub(o.count),
            errors: self.errors.saturating_sub(o.errors),
            total_ns: self.total_ns.saturating_sub(o.total_ns),
            split: TimeSplit {
                runq_ns: self.split.runq_ns.saturating_sub(o.split.runq_ns),
                blocked_ns: self.split.blocked_ns.saturating_sub(o.split.blocked_ns),
                blocked_calls: self
                    .split
                    .blocked_calls
                    .saturating_sub(o.split.blocked_calls),
            },
        }
    }

    pub fn on_cpu_ns(&self) -> u64 {
        self.split.on_cpu_ns(self.total_ns)
    }

    pub fn is_zero(&self) -> bool {
        *self == Sums::default()
    }
}

/// A process's sums at an instant, sorted by key (`Process::snapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The process's `changes` when it was taken.
    pub changes: u64,
    pub sums: Vec<(SyscallKey, Sums)>,
    pub errnos: Vec<((SyscallKey, u32), u64)>,
    /// Its calls in flight then: when each syscall's oldest began (`Process::window_overhang`).
    pub in_flight: Vec<(SyscallKey, Instant)>,
}

/// What one process did in the window: sums and failures by errno, per syscall (non-zero only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub sums: Vec<(SyscallKey, Sums)>,
    pub errnos: Vec<((SyscallKey, u32), u64)>,
}

impl Snapshot {
    /// What was added between `then` and this later snapshot of the same process.
    pub fn since(&self, then: &Snapshot) -> Activity {
        let mut out = Activity::default();
        for (k, now) in &self.sums {
            let was = then
                .sums
                .binary_search_by_key(k, |e| e.0)
                .map_or(Sums::default(), |i| then.sums[i].1);
            let d = now.less(&was);
            if !d.is_zero() {
                out.sums.push((*k, d));
            }
        }
        for (k, n) in &self.errnos {
            let was = then
                .errnos
                .binary_search_by_key(k, |e| e.0)
                .map_or(0, |i| then.errnos[i].1);
            if *n > was {
                out.errnos.push((*k, n - was));
            }
        }
        out
    }
}

/// The instants of the last two snapshots.
#[derive(Clone, Copy, Debug)]
pub struct Epochs {
    /// Where the window starts: the older snapshot, or the store's start.
    pub start: (Instant, SystemTime),
    pub last: (Instant, SystemTime),
}

impl Epochs {
    pub fn new(started: (Instant, SystemTime)) -> Self {
        Self {
            start: started,
            last: started,
        }
    }

    /// Whether the last snapshot is `EPOCH` old; if so, `now` is the next one's instant and the
    /// last one's becomes the window's start (the store then snapshots every live process).
    pub fn advance(&mut self, now: (Instant, SystemTime)) -> bool {
        if now.0.saturating_duration_since(self.last.0) < EPOCH {
            return false;
        }
        self.start = self.last;
        self.last = now;
        true
    }
}
