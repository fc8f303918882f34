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

/// Running, not a zombie: a zombie has made its last syscall, and its parent may take a while
/// to reap it.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised name, which may itself contain ") ".
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}
