//! What /proc says about one process, for the processes the kernel's maps could not name.

/// A process's name (`/proc/PID/comm`), if the process is still there.
pub fn comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// Whether `/proc/PID` exists: a running process, or a zombie not yet reaped.
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
