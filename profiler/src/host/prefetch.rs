//! A hint to the CPU: start loading the cache line at an address that is about to be read.
//! The drain reads thousands of kernel slots and store histograms once each per interval;
//! where the next one is known, asking for it early overlaps the waits for memory.

/// Asks the CPU to load the cache line holding `p`. Any address will do: a prefetch never
/// faults. A no-op off x86-64.
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Bytes in a cache line on the CPUs the daemon runs on (x86-64, arm64 servers).
const LINE: usize = 64;

/// Asks the CPU to load every cache line holding part of the `len` values from `p`: one hint a
/// line, wherever in its first line the range starts (values need not be line-aligned, so a
/// 72-byte header may span two lines and a 104-byte map entry three).
pub fn prefetch_lines<T>(p: *const T, len: usize) {
    let bytes = len * size_of::<T>();
    if bytes == 0 {
        return;
    }
    let skew = p as usize % LINE;
    let line = p.cast::<u8>().wrapping_sub(skew);
    for offset in lines(skew, bytes) {
        prefetch(line.wrapping_add(offset));
    }
}

/// The start of each line `bytes` bytes from `skew` bytes into a line touch, from that line's.
fn lines(skew: usize, bytes: usize) -> impl Iterator<Item = usize> {
    (0..skew + bytes).step_by(LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(skew: usize, bytes: usize) -> Vec<usize> {
        lines(skew, bytes).collect()
    }

    #[test]
    fn one_hint_for_each_line_a_range_touches() {
        assert_eq!(of(0, 64), [0]);
        assert_eq!(of(56, 72), [0, 64], "a header 8 bytes before a line's end");
        assert_eq!(of(40, 104), [0, 64, 128], "an entry over three lines");
        assert_eq!(of(0, 65), [0, 64]);
        assert_eq!(of(63, 1), [0]);
        assert_eq!(of(63, 2), [0, 64]);
        // The function itself, on ranges that end anywhere (a hint never faults).
        let buf = [0u64; 40];
        for len in 0..40 {
            prefetch_lines(buf.as_ptr(), len);
        }
    }
}
