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
    pub bpf_stats_enabled: bool,
    pub bpf_programs: Vec<BpfProgram>,
}

impl Telemetry {
    pub fn record_drain(&mut self, took: Duration) {
        self.drains_timed += 1;
        self.drain_seconds_total += took.as_secs_f64();
        self.last_drain_seconds = took.as_secs_f64();
    }
}
