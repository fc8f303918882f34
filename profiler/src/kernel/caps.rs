//! Giving up privileges once the programs are attached.
//!
//! Loading and attaching needs CAP_BPF and CAP_PERFMON; afterwards the daemon only reads and
//! deletes map entries through file descriptors it already holds, which the kernel (≥ 6.5)
//! checks against the fd's mode, not the caller's capabilities. So a compromised HTTP handler
//! is left with nothing: no capabilities in any set, and `no_new_privs` so that no execve can
//! bring any back.
//!
//! Capabilities belong to threads, not processes: this must run before any other thread is
//! started (the drain thread and the async runtime inherit the emptied sets).

use caps::{CapSet, Capability};

/// The capability sets of the calling thread, as the kernel reports them (hex masks from
/// /proc/thread-self/status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl Sets {
    pub fn read() -> Result<Sets, String> {
        let status = std::fs::read_to_string("/proc/thread-self/status")
            .map_err(|e| format!("reading /proc/thread-self/status: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .ok_or_else(|| format!("no {name} line in /proc/thread-self/status"))
        };
        Ok(Sets {
            inheritable: field("CapInh:")?,
            permitted: field("CapPrm:")?,
            effective: field("CapEff:")?,
            bounding: field("CapBnd:")?,
            ambient: field("CapAmb:")?,
        })
    }
}

/// Which capabilities the daemon keeps after attaching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing at all: map access through held fds needs no capability.
    Nothing,
    /// CAP_BPF only, for kernels older than 6.5 that check it on every bpf() call while
    /// `kernel.unprivileged_bpf_disabled` is set.
    Bpf,
}

/// Sets `no_new_privs`, empties the bounding set (when CAP_SETPCAP allows it), the ambient and
/// inheritable sets, and the permitted and effective sets except for what `keep` names.
/// Returns the sets as the kernel reports them afterwards.
pub fn drop_all(keep: Keep) -> Result<Sets, String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "setting no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Dropping from the bounding set needs CAP_SETPCAP, so it goes first. Without CAP_SETPCAP
    // (e.g. a service whose unit already narrowed the bounding set) the set stays as it was
    // given; with no_new_privs set and nothing permitted, nothing can be regained from it.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| format!("clearing the bounding set: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing the ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("clearing the inheritable set: {e}"))?;
    let kept: caps::CapsHashSet = match keep {
        Keep::Nothing => Default::default(),
        Keep::Bpf => [Capability::CAP_BPF].into_iter().collect(),
    };
    // Effective must shrink before permitted: the kernel refuses an effective set that is not a
    // subset of the permitted one.
    caps::set(None, CapSet::Effective, &kept)
        .map_err(|e| format!("clearing the effective set: {e}"))?;
    caps::set(None, CapSet::Permitted, &kept)
        .map_err(|e| format!("clearing the permitted set: {e}"))?;
    let after = Sets::read()?;
    let want = match keep {
        Keep::Nothing => 0,
        Keep::Bpf => 1 << Capability::CAP_BPF.index(),
    };
    // Read back from the kernel rather than trusting the library's list of capabilities: one
    // added after it was written would otherwise survive silently.
    if after.effective != want
        || after.permitted != want
        || after.inheritable != 0
        || after.ambient != 0
    {
        return Err(format!(
            "capabilities remain after dropping them: {after:x?}"
        ));
    }
    Ok(after)
}

/// Runs `probe` on a short-lived thread whose effective set is empty, leaving the calling
/// thread's capabilities alone: tells whether map access works without privileges before the
/// whole process gives them up for good.
pub fn works_unprivileged<T: Send>(probe: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            caps::clear(None, CapSet::Effective)
                .map_err(|e| format!("clearing the probe thread's effective set: {e}"))?;
            Ok(probe())
        })
        .join()
        .map_err(|_| "the capability probe thread panicked".to_string())?
    })
}
