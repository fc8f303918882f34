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

/// When a running (not zombie) process started, in CLOCK_MONOTONIC ns (the clock the kernel
/// side stamps): /proc's start time counts since boot in clock ticks, including time suspended,
/// which CLOCK_MONOTONIC leaves out.
pub fn started_monotonic_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state.starts_with('Z') || state.starts_with('X') {
        return None;
    }
    // After the state (field 3), the start time is field 22.
    let ticks: u64 = fields.nth(18)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let since_boot = ticks * 1_000_000_000 / per_second.max(1);
    let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
    let suspended = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(monotonic);
    Some(since_boot.saturating_sub(suspended))
}

/// Whether thread `tid` of process `tgid` exists.
pub fn thread_exists(tgid: u32, tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{tgid}/task/{tid}")).exists()
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_is_in_the_past() {
        let started = started_monotonic_ns(std::process::id()).unwrap();
        assert!(started <= clock_ns(libc::CLOCK_MONOTONIC));
        assert!(thread_exists(std::process::id(), std::process::id()));
        assert!(!thread_exists(std::process::id(), 4_000_000));
        assert_eq!(started_monotonic_ns(4_000_000), None);
    }
}
