//! The kernel's histogram slots (HISTS, a `BPF_F_MMAPABLE` array) mapped into the daemon, so
//! the drain reads them in place instead of copying ~1.1 KiB per entry out through bpf(2): a
//! slot's header, then only the blocks of buckets its `touched` bits name. It also wipes the
//! slots the drain frees. Only the drain holds one (design rule 3).

use std::{
    mem::{offset_of, size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use profiler_common::{Hist, HistHead, BUCKETS, TOUCHED_ALL, TOUCH_BLOCK};

use crate::host::prefetch::prefetch_lines;

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

    /// `slot`'s header, as the kernel is updating it: read as aligned 8-byte words, so no
    /// counter is read half old, half new, but counters may be a few events apart (the next
    /// drain catches up, like with a map lookup).
    pub fn head(&self, slot: u32) -> Option<HistHead> {
        const WORDS: usize = size_of::<HistHead>() / 8;
        const _: () = assert!(size_of::<HistHead>().is_multiple_of(8));
        const _: () = assert!(offset_of!(Hist, head) == 0);
        let p = self.slot_ptr(slot)?.cast::<u64>();
        let mut words = [0u64; WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            // SAFETY: in bounds and 8-aligned (stride is a multiple of 8, the mapping
            // page-aligned).
            *w = unsafe { p.add(i).read_volatile() };
        }
        // SAFETY: HistHead is plain integers, size_of::<HistHead>() bytes, any bit pattern
        // valid.
        Some(unsafe { std::mem::transmute::<[u64; WORDS], HistHead>(words) })
    }

    /// `slot`'s `touched` mask alone (0 for a slot out of range): which blocks to prefetch.
    pub fn touched(&self, slot: u32) -> u32 {
        let Some(p) = self.slot_ptr(slot) else {
            return 0;
        };
        // SAFETY: a u32 of the header, inside the slot and 4-aligned.
        unsafe {
            p.add(offset_of!(HistHead, touched))
                .cast::<u32>()
                .read_volatile()
        }
    }

    /// Appends the non-zero buckets of `slot`'s blocks named by `touched`, as (bucket, count) by
    /// bucket. Buckets outside them are zero: the kernel sets a block's bit before the drain
    /// can need it (a count it has not marked yet is read by a later drain).
    pub fn nonzero_buckets(&self, slot: u32, touched: u32, into: &mut Vec<(u16, u32)>) {
        let Some(p) = self.slot_ptr(slot) else {
            return;
        };
        // SAFETY: the buckets array lies inside the slot.
        let buckets = unsafe { p.add(offset_of!(Hist, buckets)).cast::<u32>() };
        for block in blocks(touched) {
            let first = block * TOUCH_BLOCK;
            let len = TOUCH_BLOCK.min(BUCKETS - first);
            // SAFETY: `len` counts from `first`, inside the buckets array.
            let (counts, mut nonzero) = unsafe {
                match len {
                    TOUCH_BLOCK => read_block(buckets.add(first)),
                    _ => read_counts(buckets.add(first), len),
                }
            };
            // Written into the reserved room with the length in a register, set once a
            // block: `push` kept the vector's length in memory, a store and a reload per
            // bucket, and each bucket waited for the previous one's (perf, Intel).
            into.reserve(len);
            let kept = into.len();
            let spare = &mut into.spare_capacity_mut()[..len];
            let mut written = 0;
            while nonzero != 0 {
                let i = nonzero.trailing_zeros() as usize;
                spare[written] = MaybeUninit::new(((first + i) as u16, counts[i]));
                written += 1;
                nonzero &= nonzero - 1;
            }
            // SAFETY: the first `written` entries past `kept` were written just now (at most
            // `len`: `nonzero` has a bit per count), in the room `reserve` made.
            unsafe { into.set_len(kept + written) };
        }
    }

    /// Asks the CPU to start loading `slot`'s header into its caches: the two lines a header
    /// (72 bytes, slots 8-byte aligned) always spans.
    pub fn prefetch_head(&self, slot: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            prefetch_lines(p.cast::<HistHead>(), 1);
        }
    }

    /// Asks the CPU to start loading `slot`'s blocks named by `touched`.
    pub fn prefetch_blocks(&self, slot: u32, touched: u32) {
        if let Some(p) = self.slot_ptr(slot) {
            for block in blocks(touched) {
                // The lines of its buckets, one or two (the last block is short).
                let first = block * TOUCH_BLOCK;
                let len = TOUCH_BLOCK.min(BUCKETS - first);
                // SAFETY: first < BUCKETS, inside the slot.
                let at = unsafe { p.add(offset_of!(Hist, buckets) + 4 * first) };
                prefetch_lines(at.cast::<u32>(), len);
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

/// One block's counts and a mask of the non-zero ones (bit `i` for count `i`). A block's counts
/// are mostly zero and which are not differs from slot to slot: testing them one by one, a
/// branch each, was about 45% of `HistReadings::read`'s samples (perf, Intel). Here the test is
/// four vector compares and the caller's loop runs once per non-zero count.
///
/// # Safety
/// `at` points to `TOUCH_BLOCK` readable, 4-aligned counts.
#[cfg(target_arch = "x86_64")]
unsafe fn read_block(at: *const u32) -> ([u32; TOUCH_BLOCK], u32) {
    use std::arch::x86_64::{
        __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
        _mm_setzero_si128, _mm_storeu_si128,
    };
    let mut counts = [0u32; TOUCH_BLOCK];
    let mut zero_mask = 0u32;
    for quad in 0..TOUCH_BLOCK / 4 {
        // SAFETY: inside the block (the caller's promise); SSE2 is part of x86-64. The kernel
        // writes these counts as we read them: one load instruction reads each 4-aligned count
        // whole (x86 splits wide loads, if at all, at 8-byte boundaries), so a count is old or
        // new, never torn, as with the volatile reads of the header.
        unsafe {
            let v = _mm_loadu_si128(at.add(4 * quad).cast::<__m128i>());
            _mm_storeu_si128(counts.as_mut_ptr().add(4 * quad).cast::<__m128i>(), v);
            let zeros = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(v, _mm_setzero_si128())));
            zero_mask |= (zeros as u32) << (4 * quad);
        }
    }
    (counts, !zero_mask & ((1 << TOUCH_BLOCK) - 1))
}

/// [`read_block`] off x86-64.
///
/// # Safety
/// `at` points to `TOUCH_BLOCK` readable, 4-aligned counts.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn read_block(at: *const u32) -> ([u32; TOUCH_BLOCK], u32) {
    // SAFETY: the caller's promise.
    unsafe { read_counts(at, TOUCH_BLOCK) }
}

/// [`read_block`] a count at a time, for the first `len` counts (the rest zero): the last,
/// short block, and whole blocks off x86-64.
///
/// # Safety
/// `at` points to `len` (at most `TOUCH_BLOCK`) readable, 4-aligned counts.
unsafe fn read_counts(at: *const u32, len: usize) -> ([u32; TOUCH_BLOCK], u32) {
    let mut counts = [0u32; TOUCH_BLOCK];
    let mut nonzero = 0u32;
    for (i, c) in counts.iter_mut().enumerate().take(len) {
        // SAFETY: i < len (the caller's promise); read whole, as the header's words are.
        *c = unsafe { at.add(i).read_volatile() };
        nonzero |= u32::from(*c != 0) << i;
    }
    (counts, nonzero)
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

impl Drop for HistArena {
    fn drop(&mut self) {
        if self.map.is_some() {
            // SAFETY: exactly the mapping made in `new`.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reads_as_its_counts_and_their_nonzero_mask() {
        let patterns: [[u32; TOUCH_BLOCK]; 4] = [
            [0; TOUCH_BLOCK],
            [u32::MAX; TOUCH_BLOCK],
            std::array::from_fn(|i| if i % 5 == 0 { 1 << 31 } else { 0 }),
            std::array::from_fn(|i| if i == TOUCH_BLOCK - 1 { 7 } else { 0 }),
        ];
        for counts in patterns {
            // Unaligned to 16 bytes, as a slot's buckets are (8 bytes into a line and on).
            let mut buf = [0u32; TOUCH_BLOCK + 2];
            buf[2..].copy_from_slice(&counts);
            // SAFETY: TOUCH_BLOCK counts from buf[2].
            let (read, nonzero) = unsafe { read_block(buf.as_ptr().add(2)) };
            assert_eq!(read, counts);
            let want = (0..TOUCH_BLOCK).fold(0, |m, i| m | u32::from(counts[i] != 0) << i);
            assert_eq!(nonzero, want, "{counts:?}");
            // One by one, all of them or the first few (the last block is short).
            for len in [TOUCH_BLOCK, 5, 1] {
                // SAFETY: len <= TOUCH_BLOCK counts from buf[2].
                let (read, nonzero) = unsafe { read_counts(buf.as_ptr().add(2), len) };
                let mut first = [0; TOUCH_BLOCK];
                first[..len].copy_from_slice(&counts[..len]);
                assert_eq!(read, first);
                assert_eq!(nonzero, want & ((1 << len) - 1), "{counts:?}, {len}");
            }
        }
    }

    #[test]
    fn a_slots_nonzero_buckets_come_by_bucket_after_what_the_list_held() {
        let mut hist = Hist {
            head: HistHead::default(),
            buckets: [0; BUCKETS],
        };
        // Six counts in seven non-zero, in every block, the short last one included.
        for i in 0..BUCKETS {
            hist.buckets[i] = match i % 7 {
                0 => 0,
                r => (i as u32) << r,
            };
        }
        hist.buckets[BUCKETS - 1] = 9;
        let arena = HistArena::of(Box::leak(Box::new([hist])));
        let everything = (0..BUCKETS)
            .filter(|&i| hist.buckets[i] != 0)
            .map(|i| (i as u16, hist.buckets[i]));
        for touched in [TOUCHED_ALL, 0b101, 1 << (BUCKETS / TOUCH_BLOCK), 0] {
            let mut into = vec![(7, 7)];
            arena.nonzero_buckets(0, touched, &mut into);
            let want: Vec<_> = [(7, 7)]
                .into_iter()
                .chain(
                    everything
                        .clone()
                        .filter(|&(i, _)| touched & 1 << (i as usize / TOUCH_BLOCK) != 0),
                )
                .collect();
            assert_eq!(into, want, "touched {touched:#b}");
        }
    }
}
