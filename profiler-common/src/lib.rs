//! The contract between the kernel programs and the daemon: the `#[repr(C)]` records both sides
//! read, the map names and sizes, and the histogram's bucket layout. Both sides compile this one
//! file, so the layouts cannot drift apart.
#![no_std]

// ---- Histogram layout -------------------------------------------------------------------------
//
// Log-linear buckets over nanoseconds: values below 8 ns each have a bucket of their own; above
// that every power of two [2^k, 2^(k+1)) is split into 8 equal sub-buckets. A bucket's width is
// at most 1/8 of its lower bound, so any quantile reported as a bucket midpoint is within 6.25%
// of the true value. Values of 2^36 ns (68.7 s) and more land in one overflow bucket.

/// log2 of the number of sub-buckets per power of two.
pub const SUB_BUCKET_BITS: u32 = 3;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values at or above `1 << MAX_POW` nanoseconds go to the overflow bucket.
pub const MAX_POW: u32 = 36;
/// Index of the overflow bucket (the last one).
pub const OVERFLOW_BUCKET: usize = SUB_BUCKETS + (MAX_POW - SUB_BUCKET_BITS) as usize * SUB_BUCKETS;
/// Buckets per histogram.
pub const BUCKETS: usize = OVERFLOW_BUCKET + 1;

/// The bucket a latency of `ns` nanoseconds belongs to. Branch-light so the kernel side can use
/// it per event; always `< BUCKETS`.
#[inline(always)]
pub fn bucket_index(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    let pow = 63 - ns.leading_zeros();
    if pow >= MAX_POW {
        return OVERFLOW_BUCKET;
    }
    let sub = (ns >> (pow - SUB_BUCKET_BITS)) as usize & (SUB_BUCKETS - 1);
    ((pow - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS + sub
}

/// The smallest value that lands in bucket `index` (`index < BUCKETS`).
pub const fn bucket_lower_ns(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let pow = (index / SUB_BUCKETS) as u32 + SUB_BUCKET_BITS - 1;
    let sub = (index % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub) << (pow - SUB_BUCKET_BITS)
}

/// One past the largest value that lands in bucket `index`; `u64::MAX` for the overflow bucket.
pub const fn bucket_upper_ns(index: usize) -> u64 {
    if index >= OVERFLOW_BUCKET {
        u64::MAX
    } else {
        bucket_lower_ns(index + 1)
    }
}

// ---- Maps -------------------------------------------------------------------------------------
//
// Every map has a fixed size and a stated behaviour when full; see docs/design.md.

/// Per-thread syscall start state, keyed by thread id (`u32`), value [`Start`]. One entry per
/// live thread that has made a syscall since attach; deleted when the thread exits. When full,
/// new threads' syscalls are not timed and `COUNTER_STARTS_FULL` counts each of them.
pub const STARTS_MAP: &str = "STARTS";
pub const STARTS_MAX_ENTRIES: u32 = 65_536;

/// Latency histograms keyed by [`HistKey`], value [`Hist`]. Not preallocated: memory grows with
/// the (process, syscall) pairs actually seen. When full, events of new pairs are dropped and
/// counted in `COUNTER_HISTS_FULL`; the daemon deletes the pairs of exited processes.
pub const HISTS_MAP: &str = "HISTS";
pub const HISTS_MAX_ENTRIES: u32 = 16_384;

/// Process names keyed by tgid (`u32`), value [`ProcInfo`], written when a process is first
/// seen and again after a successful execve. When full, `COUNTER_PROCS_FULL` counts each
/// process whose name was not recorded.
pub const PROCS_MAP: &str = "PROCS";
pub const PROCS_MAX_ENTRIES: u32 = 16_384;

/// Per-CPU `u64` counters indexed by the `COUNTER_*` constants.
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const COUNTER_HISTS_FULL: u32 = 0;
pub const COUNTER_PROCS_FULL: u32 = 1;
pub const COUNTER_STARTS_FULL: u32 = 2;
/// A `sys_exit` with no recorded `sys_enter`: the syscall was already in flight at attach time,
/// or its start was not recorded because `STARTS` was full.
pub const COUNTER_UNMATCHED_EXITS: u32 = 3;
pub const COUNTERS_LEN: u32 = 4;

// ---- Globals the loader sets before the programs are verified --------------------------------

/// tgid whose syscalls are not recorded (the daemon's own); 0 records everything.
pub const GLOBAL_IGNORE_TGID: &str = "IGNORE_TGID";
/// The host ABI's execve and execveat numbers: a successful one renames the process.
pub const GLOBAL_EXECVE_NR: &str = "EXECVE_NR";
pub const GLOBAL_EXECVEAT_NR: &str = "EXECVEAT_NR";

// ---- Records ----------------------------------------------------------------------------------

/// When the thread's current syscall entered the kernel; `ts_ns == 0` when it is not in one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Start {
    pub ts_ns: u64,
    pub nr: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub tgid: u32,
    pub nr: u32,
}

/// Cumulative since the entry was created. The 32-bit counts wrap; the daemon reads them at
/// least every few seconds and adds the wrapping difference to 64-bit totals, which halves the
/// kernel memory per (process, syscall) pair at no cost per event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hist {
    pub total_ns: u64,
    pub errors: u32,
    pub _pad: u32,
    pub buckets: [u32; BUCKETS],
}

/// The process's name as the kernel saw it (`comm`, NUL-padded), and when its leader exited
/// (`exit_ns`, 0 while it runs; CLOCK_MONOTONIC ns).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub comm: [u8; 16],
    pub exit_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for super::Start {}
    unsafe impl aya::Pod for super::HistKey {}
    unsafe impl aya::Pod for super::Hist {}
    unsafe impl aya::Pod for super::ProcInfo {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..16u64 {
            let i = bucket_index(v);
            assert_eq!(bucket_lower_ns(i), v);
            assert_eq!(bucket_upper_ns(i), v + 1);
        }
    }

    #[test]
    fn every_bucket_contains_its_bounds_and_nothing_else() {
        for i in 0..OVERFLOW_BUCKET {
            let (lo, hi) = (bucket_lower_ns(i), bucket_upper_ns(i));
            assert!(lo < hi, "bucket {i}");
            assert_eq!(bucket_index(lo), i, "lower bound of {i}");
            assert_eq!(bucket_index(hi - 1), i, "last value of {i}");
            assert_eq!(
                bucket_index(hi),
                i + 1,
                "upper bound of {i} starts the next"
            );
        }
    }

    #[test]
    fn relative_width_is_at_most_one_eighth() {
        for i in SUB_BUCKETS..OVERFLOW_BUCKET {
            let (lo, hi) = (bucket_lower_ns(i), bucket_upper_ns(i));
            assert!((hi - lo) * 8 <= lo, "bucket {i}: [{lo}, {hi})");
        }
    }

    #[test]
    fn overflow_bucket_takes_everything_from_2_pow_36() {
        assert_eq!(bucket_lower_ns(OVERFLOW_BUCKET), 1 << MAX_POW);
        assert_eq!(bucket_index((1 << MAX_POW) - 1), OVERFLOW_BUCKET - 1);
        assert_eq!(bucket_index(1 << MAX_POW), OVERFLOW_BUCKET);
        assert_eq!(bucket_index(u64::MAX), OVERFLOW_BUCKET);
        assert_eq!(bucket_upper_ns(OVERFLOW_BUCKET), u64::MAX);
    }

    #[test]
    fn known_values() {
        // 2 ms = 2_000_000 ns: 2^20 = 1_048_576 <= v < 2^21; sub = (v >> 17) & 7 = 15 & 7 = 7.
        let i = bucket_index(2_000_000);
        assert_eq!(i, (20 - 3 + 1) * 8 + 7);
        assert_eq!(bucket_lower_ns(i), 15 << 17);
        assert_eq!(bucket_upper_ns(i), 16 << 17);
    }
}
