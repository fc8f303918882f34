//! The kernel's histogram slots (HISTS, a `BPF_F_MMAPABLE` array) mapped into the daemon, so
//! the drain reads them in place instead of copying ~1.1 KiB per entry out through bpf(2): a
//! slot's header, then only the blocks of buckets its `touched` bits name. It also wipes the
//! slots the drain frees. Only the drain holds one (design rule 3).

use std::{
    mem::{offset_of, size_of},
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use profiler_common::{Hist, HistKey, BUCKETS, ERRNO_SLOTS, TOUCHED_ALL, TOUCH_BLOCK};

/// A slot's counters other than its buckets (see [`Hist`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHead {
    pub key: HistKey,
    pub errors: u32,
    pub total_ns: u64,
    pub touched: u32,
    pub errno_counts: [u32; ERRNO_SLOTS],
    pub errnos: [u16; ERRNO_SLOTS],
}

pub struct HistArena {
    /// The map the mapping is of, kept alive as long as it (None: memory of the tests' own).
    map: Option<MapData>,
    base: NonNull<u8>,
    mapped: usize,
    stride: usize,
    slots: u32,
}

// SAFETY: the mapping is plain shared memory, valid until Drop, and every access goes through
// volatile reads and writes.
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
            map: Some(map),
            base: NonNull::new(addr.cast()).context("mapping HISTS: null mapping")?,
            mapped,
            stride,
            slots,
        })
    }

    /// An arena over memory the caller leaks to it, laid out like the kernel's.
    #[cfg(test)]
    pub fn of(slots: &'static mut [Hist]) -> Self {
        const { assert!(size_of::<Hist>().is_multiple_of(8)) };
        Self {
            map: None,
            base: NonNull::new(slots.as_mut_ptr().cast()).unwrap(),
            mapped: 0,
            stride: size_of::<Hist>(),
            slots: slots.len() as u32,
        }
    }

    fn slot_ptr(&self, slot: u32) -> Option<*mut u8> {
        (slot < self.slots).then(|| {
            // SAFETY: slot < slots, so the slot lies inside the mapping.
            unsafe { self.base.as_ptr().add(slot as usize * self.stride) }
        })
    }

    /// The field at byte `offset` of `slot`, read whole with one volatile load (aligned: never
    /// torn, so no counter is read half old, half new).
    ///
    /// SAFETY: `p` is a slot's start and `offset` that of a `T` field of `Hist`.
    unsafe fn load<T: Copy>(p: *mut u8, offset: usize) -> T {
        p.add(offset).cast::<T>().read_volatile()
    }

    /// `slot`'s header, as the kernel is updating it: each counter is read whole, but counters
    /// may be a few events apart (the next drain catches up, like with a map lookup).
    pub fn head(&self, slot: u32) -> Option<SlotHead> {
        let p = self.slot_ptr(slot)?;
        // SAFETY: every offset is that of a field of the type read.
        unsafe {
            let key_at = offset_of!(Hist, key);
            let low: u64 = Self::load(p, key_at);
            let high: u32 = Self::load(p, key_at + 8);
            let mut errno_counts = [0; ERRNO_SLOTS];
            let mut errnos = [0; ERRNO_SLOTS];
            for i in 0..ERRNO_SLOTS {
                errno_counts[i] = Self::load(p, offset_of!(Hist, errno_counts) + 4 * i);
                errnos[i] = Self::load(p, offset_of!(Hist, errnos) + 2 * i);
            }
            Some(SlotHead {
                key: HistKey {
                    tgid: low as u32,
                    incarnation: (low >> 32) as u32,
                    nr: high as u16,
                    abi: (high >> 16) as u8,
                    shard: (high >> 24) as u8,
                },
                errors: Self::load(p, offset_of!(Hist, errors)),
                total_ns: Self::load(p, offset_of!(Hist, total_ns)),
                touched: Self::load(p, offset_of!(Hist, touched)),
                errno_counts,
                errnos,
            })
        }
    }

    /// Appends the non-zero buckets of `slot`'s blocks named by `touched`, as (bucket, count) by
    /// bucket. Buckets outside them are zero: the kernel sets a block's bit before the drain
    /// can need it (a count it has not marked yet is read by a later drain).
    pub fn nonzero_buckets(&self, slot: u32, touched: u32, into: &mut Vec<(u16, u32)>) {
        let Some(p) = self.slot_ptr(slot) else {
            return;
        };
        for block in blocks(touched) {
            let first = block * TOUCH_BLOCK;
            for i in first..(first + TOUCH_BLOCK).min(BUCKETS) {
                // SAFETY: i < BUCKETS, a u32 of the buckets array.
                let n: u32 = unsafe { Self::load(p, offset_of!(Hist, buckets) + 4 * i) };
                if n != 0 {
                    into.push((i as u16, n));
                }
            }
        }
    }

    /// Asks the CPU to start loading `slot`'s header into its caches.
    pub fn prefetch_head(&self, slot: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            prefetch(p);
        }
    }

    /// Asks the CPU to start loading `slot`'s blocks named by `touched`.
    pub fn prefetch_blocks(&self, slot: u32, touched: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            for block in blocks(touched) {
                let at = offset_of!(Hist, buckets) + 4 * block * TOUCH_BLOCK;
                // SAFETY: inside the slot; a block may straddle two cache lines.
                unsafe {
                    prefetch(p.add(at));
                    prefetch(p.add(at + 4 * TOUCH_BLOCK - 4));
                }
            }
        }
    }

    /// Every slot that holds a key, ascending: how a daemon finds the histograms of maps it did
    /// not create (pinned by its predecessor).
    pub fn scan(&self) -> Vec<u32> {
        (0..self.slots)
            .filter(|&slot| self.head(slot).is_some_and(|h| h.key.tgid != 0))
            .collect()
    }

    /// Zeroes `slot`, its key included, before it goes back to the kernel's free queue.
    pub fn clear(&mut self, slot: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            // SAFETY: as in `head`; all-zero bytes are a valid (empty) Hist.
            unsafe { p.cast::<Hist>().write_volatile(std::mem::zeroed()) };
        }
    }
}

/// The block numbers whose bits are set in `touched`, ascending (blocks past the last
/// ignored).
fn blocks(touched: u32) -> impl Iterator<Item = usize> {
    let mut touched = touched & TOUCHED_ALL;
    std::iter::from_fn(move || {
        (touched != 0).then(|| {
            let block = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            block
        })
    })
}

fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Drop for HistArena {
    fn drop(&mut self) {
        if self.map.is_some() {
            // SAFETY: exactly the mapping made in `new`.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped) };
        }
    }
}
