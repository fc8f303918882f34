//! Everything that talks to the kernel's BPF side: loading the programs (load.rs) and
//! choosing which to attach (attach.rs), the maps' handles (maps.rs) and their in-place mapping
//! (arena.rs), batch reads (batch.rs), the calls in flight (iter.rs), record's exec boundary
//! (exec_marks.rs), the programs' log lines (log.rs), what is written into their instructions
//! before loading (link.rs: kfunc calls, task field offsets), pinning (pin.rs), the kernel's BTF
//! (btf.rs), capabilities (caps.rs) and the programs' own run time (bpf_stats.rs). Only the
//! drain, and the commands that set it up, use it.

pub mod arena;
pub mod args;
pub mod attach;
pub mod batch;
pub mod bpf_stats;
pub mod btf;
pub mod caps;
pub mod error;
pub mod exec_marks;
pub mod filters;
pub mod iter;
pub mod link;
pub mod load;
pub mod log;
pub mod maps;
pub mod pin;

pub use error::Error;
pub use exec_marks::ExecMarks;
pub use load::{load_and_attach, maps_readable_unprivileged, Probes};
pub use maps::{CheckpointMaps, Maps};
