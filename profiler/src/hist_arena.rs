//! The kernel's histogram slots (HISTS, a `BPF_F_MMAPABLE` array) mapped into the daemon, so
//! the drain reads them in place instead of copying ~1 KiB per entry out through bpf(2), and
//! wipes the slots it frees. Only the drain holds one (design rule 3).

use std::{
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use profiler_common::Hist;

pub struct HistArena {
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
    base: NonNull<u8>,
    mapped: usize,
    stride: usize,
    slots: u32,
}

// SAFETY: the mapping is plain shared memory, valid until Drop, and every access goes through
// volatile reads and writes of whole slots.
unsafe impl Send for HistArena {}
unsafe impl Sync for HistArena {}

impl HistArena {
    pub fn new(map: MapData) -> Result<Self> {
        let info = map.info().context("reading HISTS' map info")?;
        let value_size = info.value_size() as usize;
        if value_size != size_of::<Hist>() {
            bail!(
                "HISTS holds {value_size}-byte values, this build expects {}",
                size_of::<Hist>()
            );
        }
        // The kernel lays array elements out 8-byte aligned, from the start of the mapping.
        let stride = value_size.next_multiple_of(8);
        let slots = info.max_entries();
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mapped = (stride * slots as usize).next_multiple_of(page);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's fd; nothing else aliases it in Rust.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            bail!("mapping HISTS: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            _map: map,
            base: NonNull::new(addr.cast()).context("mapping HISTS: null mapping")?,
            mapped,
            stride,
            slots,
        })
    }

    fn slot_ptr(&self, slot: u32) -> Option<*mut Hist> {
        (slot < self.slots).then(|| {
            // SAFETY: slot < slots, so the slot lies inside the mapping.
            unsafe { self.base.as_ptr().add(slot as usize * self.stride).cast() }
        })
    }

    /// A copy of `slot`, as the kernel is updating it: each counter is read whole, but counters
    /// may be from a few events apart (the next drain catches up, like with a map lookup).
    pub fn read(&self, slot: u32) -> Option<Hist> {
        const WORDS: usize = size_of::<Hist>() / 8;
        const _: () = assert!(size_of::<Hist>().is_multiple_of(8));
        let p = self.slot_ptr(slot)? as *const u64;
        // Aligned 8-byte loads: never torn, so no 32-bit counter is read half old, half new;
        // half as many as reading field by field, which dominated the drain's time.
        let mut words = [0u64; WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            // SAFETY: in bounds and 8-aligned (stride is a multiple of 8, the mapping
            // page-aligned).
            *w = unsafe { p.add(i).read_volatile() };
        }
        // SAFETY: Hist is plain integers, size_of::<Hist>() bytes, any bit pattern valid.
        Some(unsafe { std::mem::transmute::<[u64; WORDS], Hist>(words) })
    }

    /// Asks the CPU to start loading `slot` into its caches (a hint: no effect elsewhere than
    /// x86_64).
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = self.slot_ptr(slot) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for line in (0..self.stride).step_by(64) {
                // SAFETY: a prefetch never faults, and the address is inside the mapping.
                unsafe { _mm_prefetch::<_MM_HINT_T0>((p as *const i8).add(line)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Zeroes `slot`, its key included, before it goes back to the kernel's free queue.
    pub fn clear(&mut self, slot: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            // SAFETY: as in `read`; all-zero bytes are a valid (empty) Hist.
            unsafe { p.write_volatile(std::mem::zeroed()) };
        }
    }
}

impl Drop for HistArena {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped) };
    }
}
