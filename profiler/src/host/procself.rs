//! The daemon's own process as /proc sees it: CPU time, memory, file descriptors and start time,
//! for /metrics' standard `process_*` families (the names every Prometheus client library's
//! process collector uses, so existing dashboards and alerts find them).

use std::io;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSelf {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open files (RLIMIT_NOFILE); u64::MAX when unlimited.
    pub max_fds: u64,
    /// Unix time.
    pub start_time_seconds: f64,
}

impl ProcSelf {
    pub fn read() -> io::Result<ProcSelf> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let boot_time = boot_time_seconds()?;
        let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        parse_stat(
            &stat,
            boot_time,
            sysconf(libc::_SC_CLK_TCK),
            sysconf(libc::_SC_PAGESIZE),
        )
        .map(|s| ProcSelf {
            open_fds,
            max_fds: max_fds(),
            ..s
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat"))
    }
}

/// The fields of `/proc/self/stat` this needs; fds are left at 0 for the caller.
fn parse_stat(
    stat: &str,
    boot_time: f64,
    ticks_per_second: u64,
    page_size: u64,
) -> Option<ProcSelf> {
    // The fields after the parenthesised name, which may itself contain ") ": the first of them
    // is field 3 (state), so field n is at n - 3.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = ticks_per_second.max(1) as f64;
    Some(ProcSelf {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: boot_time + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
        open_fds: 0,
        max_fds: 0,
    })
}

/// When the machine booted, Unix time (`btime` in /proc/stat).
fn boot_time_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))
}

fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf reads a constant of the C library; -1 means unknown.
    u64::try_from(unsafe { libc::sysconf(name) }).unwrap_or(0)
}

fn max_fds() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_a_tricky_name_parses() {
        // Field 14/15 utime/stime in ticks, 22 starttime in ticks since boot, 23 vsize in
        // bytes, 24 rss in pages.
        let stat = "4242 (a) (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1000 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let s = parse_stat(stat, 1_700_000_000.0, 100, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789);
        assert_eq!(s.resident_bytes, 2000 * 4096);
        assert_eq!(parse_stat("4242 (x) S 1 2", 0.0, 100, 4096), None);
    }

    #[test]
    fn our_own_process_reads_sensibly() {
        let s = ProcSelf::read().unwrap();
        // This test process has run, holds memory and files, and started after boot and
        // before now.
        assert!(
            s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
            "{s:?}"
        );
        assert!(s.open_fds >= 3 && s.max_fds >= s.open_fds, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds > 1e9 && s.start_time_seconds <= now + 1.0,
            "{s:?}"
        );
        assert!(s.cpu_seconds >= 0.0);
    }
}
