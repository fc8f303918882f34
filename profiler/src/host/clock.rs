//! The clocks the daemon reads besides `Instant`: the kernel's monotonic clock as nanoseconds
//! (the clock `bpf_ktime_get_ns` and /proc's start times count on), and a thread's own CPU time.

use std::time::Duration;

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let t = read(libc::CLOCK_MONOTONIC);
    t.as_secs() * 1_000_000_000 + u64::from(t.subsec_nanos())
}

/// The calling thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`): what it ran, not the time
/// that passed, so a drain preempted by the host's processes is not charged for their turns.
pub fn thread_cpu() -> Duration {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; both clocks always exist, for any
    // thread.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clocks_move_forward() {
        let (m, c) = (monotonic_ns(), thread_cpu());
        let mut spin = 0u64;
        while monotonic_ns() < m + 2_000_000 {
            spin = std::hint::black_box(spin + 1);
        }
        assert!(thread_cpu() > c, "2 ms of spinning took no CPU time");
    }
}
