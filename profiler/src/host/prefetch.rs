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
