//! Adding a timed (or, in counts-only mode, counted) call to its (process, syscall) histogram
//! shard: finding the shard's slot, the bucket, the sums, the split and the errno.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, Queue},
};
use profiler_common::{
    bucket_index, slot_cache_index, ErrnoKey, Hist, HistKey, ABI_COMPAT, BUCKETS, CLONE_NRS_LEN,
    COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL, COUNTER_NEW_SLOTS_FULL, ERRNOS_MAX_ENTRIES,
    ERRNO_SLOTS, HISTS_MAX_ENTRIES, HIST_SHARDS, NR_UNKNOWN, SLOT_CACHE_LEN, TOUCHED_ALL,
    TOUCH_BLOCK,
};

use super::{add_u32, add_u64, bump_full, global, split::Split};

// Set by the loader (see profiler_common::GLOBAL_*).
#[no_mangle]
static CLONE_NRS: [u32; CLONE_NRS_LEN] = [u32::MAX; CLONE_NRS_LEN];
#[no_mangle]
static SHARD_PER_CPU: u32 = 0;

#[map]
static HISTS: Array<Hist> = Array::with_max_entries(HISTS_MAX_ENTRIES, BPF_F_MMAPABLE);

#[map]
static HIST_SLOTS: HashMap<HistKey, u32> = HashMap::with_max_entries(HISTS_MAX_ENTRIES, 0);

#[map]
static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(HISTS_MAX_ENTRIES, 0);

#[map]
static NEW_SLOTS: Queue<u32> = Queue::with_max_entries(HISTS_MAX_ENTRIES, 0);

#[map]
static SLOT_CACHE: PerCpuArray<u32> = PerCpuArray::with_max_entries(SLOT_CACHE_LEN, 0);

#[map]
static ERRNOS: HashMap<ErrnoKey, u32> = HashMap::with_max_entries(ERRNOS_MAX_ENTRIES, 0);

/// A histogram key as the two words it is compared by (see `key_words`).
pub(crate) type Words = (u64, u32);

/// One timed call of the histogram `words` name that took `latency` ns (at least 1: see
/// `latency_since`), returned `ret` and spent `split` off its CPU. `cached` holds the slot the
/// histogram was last found in (the thread's or this CPU's cache, updated on a miss).
/// `on_error` runs for a failure only, after its errno is counted (args.rs' capture).
#[inline(always)]
pub(crate) fn add_timed(
    words: Words,
    cached: *mut u32,
    latency: u64,
    ret: i64,
    split: Split,
    on_error: impl FnOnce(Words, u16),
) {
    let Some(hist) = hist_of(words, cached) else {
        return;
    };
    // Keep the bound where the verifier sees it: the index comes out of a long ALU sequence,
    // after which it can lose track of the range.
    let idx = core::hint::black_box(bucket_index(latency));
    if idx >= BUCKETS {
        return;
    }
    let plain = single_writer(words);
    count_in_bucket(hist, idx, plain);
    // SAFETY (this block): `hist` points into HISTS (see "Safety" in mod.rs).
    let head = unsafe { core::ptr::addr_of_mut!((*hist).head) };
    unsafe { add_u64(plain, core::ptr::addr_of_mut!((*head).total_ns), latency) };
    if split.runq_ns != 0 {
        unsafe {
            add_u64(
                plain,
                core::ptr::addr_of_mut!((*head).runq_ns),
                split.runq_ns,
            )
        };
    }
    if split.blocked {
        unsafe {
            add_u64(
                plain,
                core::ptr::addr_of_mut!((*head).blocked_ns),
                split.blocked_ns,
            );
            add_u32(plain, core::ptr::addr_of_mut!((*head).blocked_calls), 1);
        }
    }
    count_if_error(hist, words, plain, ret, on_error);
}

/// Counts-only mode: one call of the histogram `words` name in bucket 0, and its errno.
#[inline(always)]
pub(crate) fn add_counted(
    words: Words,
    cached: *mut u32,
    ret: i64,
    on_error: impl FnOnce(Words, u16),
) {
    let Some(hist) = hist_of(words, cached) else {
        return;
    };
    let plain = single_writer(words);
    count_in_bucket(hist, 0, plain);
    count_if_error(hist, words, plain, ret, on_error);
}

/// This CPU's cached slot for syscall `nr` (the raw-tracepoint programs' cache; the BTF ones
/// keep one per thread).
#[inline(always)]
pub(crate) fn cpu_cached_slot(nr: u16) -> Option<*mut u32> {
    SLOT_CACHE.get_ptr_mut(slot_cache_index(nr, SLOT_CACHE_LEN as usize) as u32)
}

/// The second key word: syscall number, ABI, shard.
#[inline(always)]
pub(crate) fn key_high(nr: u16, abi: u8, shard: u8) -> u32 {
    u32::from(nr) | u32::from(abi) << 16 | u32::from(shard) << 24
}

/// The first key word: the process.
#[inline(always)]
pub(crate) fn key_low(tgid: u32, incarnation: u32) -> u64 {
    u64::from(tgid) | u64::from(incarnation) << 32
}

/// The time since `start`, at least 1 ns, so every timed call moves the sum: the drain skips
/// slots whose header has not changed. (One compare; `saturating_sub` then `max` took three.)
#[inline(always)]
pub(crate) fn latency_since(start: u64, now: u64) -> u64 {
    if now > start {
        now - start
    } else {
        1
    }
}

#[inline(always)]
pub(crate) fn key_nr(nr: u32) -> u16 {
    if nr >= NR_UNKNOWN as u32 {
        NR_UNKNOWN
    } else {
        nr as u16
    }
}

/// Which shard of the histogram a thread adds to (see `HistKey::shard`): a process's main
/// thread never contends with itself, so only its other threads spread by CPU.
#[inline(always)]
pub(crate) fn shard(main_thread: bool) -> u8 {
    if main_thread {
        return 0;
    }
    cpu_shard()
}

/// A non-main thread's shard on this CPU.
#[inline(always)]
pub(crate) fn cpu_shard() -> u8 {
    // SAFETY: a helper call (the verifier inlines it).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    1 + (cpu & (HIST_SHARDS - 1)) as u8
}

/// Whether only one thing can be adding to this histogram shard at a time, so plain adds are
/// exact and the locked ones (tens of cycles each, and a cache line bouncing between CPUs) can
/// go: shard 0 is the main thread's alone; another shard is one CPU's alone when every CPU has
/// its own (the loader knows), and a CPU runs one `sys_exit` at a time.
#[inline(always)]
fn single_writer((_, high): Words) -> bool {
    high >> 24 == 0 || global(&SHARD_PER_CPU) != 0
}

/// Whether `nr` is clone, clone3, fork or vfork of ABI `abi`: a new task's first return from
/// one of them (0) is its parent's call, counted there.
#[inline(always)]
pub(crate) fn is_clone(nr: u32, abi: u8) -> bool {
    // SAFETY: our own .rodata (see "Safety" in mod.rs).
    let nrs = unsafe { core::ptr::read_volatile(&CLONE_NRS) };
    let base = if abi == ABI_COMPAT { 4 } else { 0 };
    nr == nrs[base] || nr == nrs[base + 1] || nr == nrs[base + 2] || nr == nrs[base + 3]
}

/// The histogram `words` name, given a slot on its first event; None (counted) when HISTS is
/// full. The common case is one array access: the slot `cached` names, whose own key says
/// whether it is still the key's (a slot the daemon recycled has another key or none).
#[inline(always)]
fn hist_of(words: Words, cached: *mut u32) -> Option<*mut Hist> {
    // SAFETY (this function): map value pointers (see "Safety" in mod.rs).
    if let Some(hist) = HISTS.get_ptr_mut(unsafe { *cached }) {
        if unsafe { stored_key_words(&(*hist).head.key) } == words {
            return Some(hist);
        }
    }
    let slot = u32::try_from(slot_of(words)).ok()?;
    unsafe { *cached = slot };
    HISTS.get_ptr_mut(slot)
}

/// The key whose words these are: its bytes 0..8 and 8..12, little-endian, so comparing keys
/// is two compares instead of five field by field.
#[inline(always)]
fn key_of_words((low, high): Words) -> HistKey {
    HistKey {
        tgid: low as u32,
        incarnation: (low >> 32) as u32,
        nr: high as u16,
        abi: (high >> 16) as u8,
        shard: (high >> 24) as u8,
    }
}

/// The words of a key stored at the start of a map value (map values are 8-byte aligned,
/// and so is `Hist`'s key within them).
#[inline(always)]
unsafe fn stored_key_words(key: *const HistKey) -> Words {
    (
        core::ptr::read_volatile(key as *const u64),
        core::ptr::read_volatile((key as *const u8).add(8) as *const u32),
    )
}

/// The slot of `key` from HIST_SLOTS, taking a free one from FREE_SLOTS on the key's first
/// event (the daemon fills the queue with every slot at creation and gives back the slots of
/// exited processes). -1 (counted) when none is left. The key comes as its words, in two
/// registers: a key passed by reference would be written to the stack on every event, for this
/// rare call.
#[inline(never)]
fn slot_of(words: Words) -> i64 {
    let key = &key_of_words(words);
    // SAFETY (this function): map value pointers (see "Safety" in mod.rs).
    if let Some(slot) = unsafe { HIST_SLOTS.get(key) } {
        return i64::from(*slot);
    }
    let Ok(Some(slot)) = FREE_SLOTS.pop() else {
        bump_full(COUNTER_HISTS_FULL);
        return -1;
    };
    // NOEXIST: another CPU may have given the key a slot meanwhile; then use theirs and give
    // this one back.
    if HIST_SLOTS.insert(key, slot, BPF_NOEXIST as u64).is_err() {
        let _ = FREE_SLOTS.push(slot, 0);
        return match unsafe { HIST_SLOTS.get(key) } {
            Some(slot) => i64::from(*slot),
            None => {
                bump_full(COUNTER_HISTS_FULL);
                -1
            }
        };
    }
    // The key goes into the slot only once the slot is the key's: the drain reads keys from
    // the slots, and must never see one twice.
    if let Some(hist) = HISTS.get_ptr_mut(slot) {
        unsafe { (*hist).head.key = *key };
    }
    if NEW_SLOTS.push(&slot, 0).is_err() {
        bump_full(COUNTER_NEW_SLOTS_FULL);
    }
    i64::from(slot)
}

/// One more call in bucket `idx` (< BUCKETS), and the bucket's block marked touched the first
/// time (see `HistHead::touched`). With a single writer the bucket's old value says when: one
/// compare per event. With several, a plain `|=` could lose another writer's bit, so the first
/// event marks every block, a value all writers store alike.
#[inline(always)]
fn count_in_bucket(hist: *mut Hist, idx: usize, plain: bool) {
    // SAFETY: `hist` points into HISTS, `idx < BUCKETS` (see "Safety" in mod.rs).
    unsafe {
        let bucket = core::ptr::addr_of_mut!((*hist).buckets[idx]);
        if plain {
            let old = *bucket;
            *bucket = old.wrapping_add(1);
            if old == 0 {
                (*hist).head.touched |= 1 << (idx / TOUCH_BLOCK);
            }
        } else {
            add_u32(false, bucket, 1);
            if (*hist).head.touched != TOUCHED_ALL {
                (*hist).head.touched = TOUCHED_ALL;
            }
        }
    }
}

/// A return value of -4095..-1 is an errno: count the failure and which errno it was, in the
/// histogram's own errno table when it has a single writer and room, in ERRNOS otherwise.
#[inline(always)]
fn count_if_error(
    hist: *mut Hist,
    words: Words,
    plain: bool,
    ret: i64,
    on_error: impl FnOnce(Words, u16),
) {
    if (-4095..0).contains(&ret) {
        // SAFETY: `hist` points into HISTS.
        unsafe { add_u32(plain, core::ptr::addr_of_mut!((*hist).head.errors), 1) };
        let errno = (-ret) as u16;
        if !(plain && count_errno_in_place(hist, errno)) {
            count_errno(words, u32::from(errno));
        }
        on_error(words, errno);
    }
}

/// Counts `errno` in the histogram's errno table, claiming a free entry for a new one; false
/// when the table is full of other errnos. Single writer only: the claim is a plain store.
#[inline(always)]
fn count_errno_in_place(hist: *mut Hist, errno: u16) -> bool {
    for i in 0..ERRNO_SLOTS {
        // SAFETY: `hist` points into HISTS, `i < ERRNO_SLOTS`.
        unsafe {
            let e = (*hist).head.errnos[i];
            if e == 0 {
                (*hist).head.errnos[i] = errno;
            } else if e != errno {
                continue;
            }
            (*hist).head.errno_counts[i] = (*hist).head.errno_counts[i].wrapping_add(1);
        }
        return true;
    }
    false
}

/// Errno counts are not sharded: every thread of the process adds to the same entry, so the
/// adds are atomic. The key comes as its words, like [`slot_of`]'s.
#[inline(never)]
fn count_errno(words: Words, errno: u32) {
    let ekey = ErrnoKey {
        hist: HistKey {
            shard: 0,
            ..key_of_words(words)
        },
        errno,
    };
    if let Some(c) = ERRNOS.get_ptr_mut(&ekey) {
        add_u32(false, c, 1);
        return;
    }
    if ERRNOS.insert(&ekey, 1, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    match ERRNOS.get_ptr_mut(&ekey) {
        Some(c) => add_u32(false, c, 1),
        None => bump_full(COUNTER_ERRNOS_FULL),
    }
}
