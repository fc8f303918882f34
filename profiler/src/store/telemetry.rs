//! The daemon's own cost, as /metrics reports it: the drain's time, and the kernel's accounting
//! of the profiler's BPF programs (the drain reads it from the kernel layer's bpf_stats).

use std::time::Duration;

/// One of the daemon's own BPF programs, as the kernel accounts it (`BPF_ENABLE_STATS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfProgram {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// The daemon's own cost, as of the last drain.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    pub drains_timed: u64,
    pub drain_seconds_total: f64,
    pub last_drain_seconds: f64,
    /// The drain thread's CPU time, by phase ([`DrainPhase::ALL`]'s order).
    pub drain_cpu_seconds_total: [f64; DrainPhase::ALL.len()],
    pub bpf_stats_enabled: bool,
    pub bpf_programs: Vec<BpfProgram>,
    /// With `--pin-path` only.
    pub checkpoint: Option<CheckpointTelemetry>,
}

/// A part of a drain, as its CPU time is reported (`syscall_profiler_drain_cpu_seconds_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainPhase {
    /// Reading the histogram slots, comparing them with the previous drain's and ordering
    /// the deltas.
    Slots,
    /// The other maps: failures by errno, process names, calls in flight, exits, counters,
    /// failing calls' arguments.
    Maps,
    /// Adding the deltas to the store.
    Store,
    /// The checkpoint, freeing exited processes' entries, the kernel's log, our programs'
    /// run times.
    Finish,
}

impl DrainPhase {
    pub const ALL: [DrainPhase; 4] = [Self::Slots, Self::Maps, Self::Store, Self::Finish];

    /// Its `phase` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Slots => "slots",
            Self::Maps => "maps",
            Self::Store => "store",
            Self::Finish => "finish",
        }
    }
}

// A phase's value is its place in `ALL`: the drain indexes its `DrainCpu` with it.
const _: () = {
    let mut i = 0;
    while i < DrainPhase::ALL.len() {
        assert!(DrainPhase::ALL[i] as usize == i);
        i += 1;
    }
};

/// One drain's CPU time by phase, in [`DrainPhase::ALL`]'s order.
pub type DrainCpu = [Duration; DrainPhase::ALL.len()];

/// One drain's checkpoint, as the drain measured it: encoded and written, or skipped.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointCost {
    pub committed: bool,
    pub bytes: u64,
    pub took: Duration,
}

/// The checkpoints this daemon committed and skipped (failed or too large), and the last one's
/// size and cost (encoding and writing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointTelemetry {
    pub committed: u64,
    pub skipped: u64,
    pub last_bytes: u64,
    pub last_seconds: f64,
    pub seconds_total: f64,
}

impl Telemetry {
    pub fn record_drain(&mut self, took: Duration, cpu: &DrainCpu) {
        self.drains_timed += 1;
        self.drain_seconds_total += took.as_secs_f64();
        self.last_drain_seconds = took.as_secs_f64();
        for (total, phase) in self.drain_cpu_seconds_total.iter_mut().zip(cpu) {
            *total += phase.as_secs_f64();
        }
    }

    pub fn record_checkpoint(&mut self, c: CheckpointCost) {
        let t = self.checkpoint.get_or_insert_with(Default::default);
        if c.committed {
            t.committed += 1;
        } else {
            t.skipped += 1;
        }
        t.last_bytes = c.bytes;
        t.last_seconds = c.took.as_secs_f64();
        t.seconds_total += c.took.as_secs_f64();
    }
}
