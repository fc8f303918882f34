//! Facts about the machine, read once at start (the uptime too, and carried forward by the
//! monotonic clock).

use std::{ffi::CStr, time::Instant};

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub arch: &'static str,
    /// Seconds since boot when this was read, and when: the uptime at any later instant
    /// follows without reading /proc again, the same for every answer about that instant.
    #[serde(skip)]
    pub uptime_at_read: Option<(Instant, f64)>,
}

impl HostInfo {
    pub fn read() -> Self {
        // SAFETY: uname fills a caller-provided struct of fixed-size NUL-terminated arrays.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::uname(&mut uts) } == 0;
        let field = |f: &[libc::c_char]| {
            if !ok {
                return "unknown".to_string();
            }
            unsafe { CStr::from_ptr(f.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        Self {
            hostname: field(&uts.nodename),
            kernel: field(&uts.release),
            arch: std::env::consts::ARCH,
            uptime_at_read: uptime_seconds().map(|s| (Instant::now(), s)),
        }
    }

    /// Seconds since boot at `at` (the monotonic clock: time suspended after the read is not
    /// counted). None if /proc/uptime could not be read.
    pub fn uptime_seconds_at(&self, at: Instant) -> Option<f64> {
        let (read, uptime) = self.uptime_at_read?;
        let after = at.saturating_duration_since(read).as_secs_f64();
        let before = read.saturating_duration_since(at).as_secs_f64();
        Some((uptime + after - before).max(0.0))
    }
}

/// Seconds since boot, from /proc/uptime.
fn uptime_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_uptime_at_an_instant_follows_the_read_both_ways() {
        let read = Instant::now();
        let host = HostInfo {
            hostname: "h".into(),
            kernel: "k".into(),
            arch: "x86_64",
            uptime_at_read: Some((read, 100.0)),
        };
        let at = |secs: f64| host.uptime_seconds_at(read + Duration::from_secs_f64(secs));
        assert_eq!(at(2.5), Some(102.5));
        assert_eq!(at(0.0), Some(100.0));
        let before = host.uptime_seconds_at(read - Duration::from_secs(3));
        assert_eq!(
            before,
            Some(97.0),
            "an instant before the read, like the store's start"
        );
        assert_eq!(
            host.uptime_seconds_at(read + Duration::from_secs(1)),
            host.uptime_seconds_at(read + Duration::from_secs(1)),
            "the same for every answer about one instant"
        );
        let unknown = HostInfo {
            uptime_at_read: None,
            ..host
        };
        assert_eq!(unknown.uptime_seconds_at(read), None);
    }
}
