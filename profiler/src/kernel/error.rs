//! What can go wrong in the kernel layer, with the error that caused it. cmd/exit.rs turns each
//! kind into the process's exit code.

use std::{io, path::PathBuf};

use aya::maps::MapError;
use profiler_common::FREE_SLOTS_MAP;

use super::pin;

/// A cause of any type, kept for the one-line message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The effective capabilities cannot load BPF programs.
    #[error(
        "not permitted to load eBPF programs: run as root, or with CAP_BPF and CAP_PERFMON \
         (effective capabilities: {cap_eff:#x})"
    )]
    NotPermitted { cap_eff: u64 },
    #[error("reading /proc/self/status")]
    Status(#[source] io::Error),
    /// bpf() said EPERM or EACCES.
    #[error("{what} (needs root, or CAP_BPF and CAP_PERFMON, and no LSM or seccomp profile denying bpf(): in a container, seccomp=unconfined, see docs/deploy.md)")]
    Denied {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The kernel lacks something the programs need.
    #[error("{what} (needs Linux >= 5.8 with BPF raw tracepoints and the bpf() syscall enabled)")]
    Refused {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("setting the failing-argument capture budget: {0}")]
    Budget(String),
    /// A test knob's value the daemon cannot use (config/declare.rs' OTHER_VARIABLES).
    #[error("{name}={value:?}: {expected}")]
    BadVariable {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("counts_only needs the kernel's BTF to find the syscall number")]
    NoBtf(#[source] BoxError),
    #[error("no program left for tracepoint {tracepoint}: {why}")]
    NoProgramLeft {
        tracepoint: &'static str,
        why: String,
    },
    /// The embedded object cannot be linked (link.rs).
    #[error("{0}")]
    Object(String),
    #[error("program {0} missing from object")]
    MissingProgram(String),
    #[error("program {0} is neither a raw nor a BTF tracepoint")]
    NotATracepoint(String),
    #[error("map {0} missing from object")]
    MissingMap(String),
    #[error("map {name}")]
    Map {
        name: String,
        #[source]
        source: MapError,
    },
    #[error("map {0} is not an array")]
    NotAnArray(&'static str),
    #[error("reading {0}")]
    ReadMap(&'static str, #[source] MapError),
    #[error("filling {FREE_SLOTS_MAP} (slot {slot})")]
    FreeSlots {
        slot: u32,
        #[source]
        source: MapError,
    },
    /// Mapping HISTS into the daemon.
    #[error(transparent)]
    Arena(anyhow::Error),
    #[error("setting up the {what} filter")]
    Filter {
        what: &'static str,
        #[source]
        source: MapError,
    },
    /// `--filter-cgroup` names no directory the daemon can open.
    #[error("filter_cgroup {}", dir.display())]
    FilterCgroup {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("filter_cgroup {}: not a cgroup v2 directory ({cause})", dir.display())]
    NotCgroupV2 { dir: PathBuf, cause: MapError },
    #[error(transparent)]
    Pin(#[from] pin::Error),
    /// The maps could not be read as they would be once every capability is gone.
    #[error("reading the maps with no capabilities")]
    Unprivileged(#[source] MapError),
    /// The thread that tries that could not be set up.
    #[error("{0}")]
    Probe(String),
}

/// What `what` failed with, as a privileges error (EPERM, EACCES) or a kernel that refuses.
pub(super) fn load_error(what: impl Into<String>, e: impl Into<BoxError>) -> Error {
    let (what, source) = (what.into(), e.into());
    if is_permission_error(&*source) {
        Error::Denied { what, source }
    } else {
        Error::Refused { what, source }
    }
}

/// Whether `e` or one of its causes is EPERM or EACCES.
pub fn is_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
