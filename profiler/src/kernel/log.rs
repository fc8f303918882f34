//! The kernel programs' own log lines, forwarded into the daemon's log.
//!
//! The programs log through aya-log on rare paths only: a map found full for the first time on
//! a CPU (its counter was 0) and states that should not happen (profiler-ebpf's `bump_full`).
//! The records wait in the object's AYA_LOGS ring buffer (128 KiB, not pinned) until the drain
//! forwards them, once per interval, under the `kernel` target at the level the program chose.
//! Bounded by construction: at most one record per such counter and CPU, well under the ring's
//! size; should the ring be full anyway, aya-log drops the record (its counter still counts).

use aya::Ebpf;
use aya_log::EbpfLogger;
use tracing::{debug, error, info, trace, warn};

use super::error::Error;

/// The daemon's end of AYA_LOGS.
pub struct KernelLog(EbpfLogger<Forward>);

impl KernelLog {
    /// Takes AYA_LOGS out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<KernelLog, Error> {
        EbpfLogger::init_with_logger(ebpf, Forward)
            .map(KernelLog)
            .map_err(|e| Error::MissingMap(format!("AYA_LOGS (aya-log: {e})")))
    }

    /// Logs whatever the programs wrote since the last call.
    pub fn forward(&mut self) {
        self.0.flush();
    }
}

/// aya-log formats records for the `log` crate; this hands them to `tracing`.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = record.args();
        match record.level() {
            log::Level::Error => error!(target: "kernel", "{line}"),
            log::Level::Warn => warn!(target: "kernel", "{line}"),
            log::Level::Info => info!(target: "kernel", "{line}"),
            log::Level::Debug => debug!(target: "kernel", "{line}"),
            log::Level::Trace => trace!(target: "kernel", "{line}"),
        }
    }

    fn flush(&self) {}
}
