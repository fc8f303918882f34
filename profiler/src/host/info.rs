//! Facts about the machine, read once at start (uptime is read per request).

use std::ffi::CStr;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub arch: &'static str,
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
        }
    }
}

/// Seconds since boot, from /proc/uptime.
pub fn uptime_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
