//! Kernel side: time every syscall per thread and add it to the (process, syscall) histogram.
//!
//! Per event the work is bounded and allocation-free on the hot path: at `sys_enter` one
//! pid/tgid read, the compat check, one clock read and a write of this CPU's slot; at
//! `sys_exit` a read of the same slot, one clock read, two array accesses to reach the
//! histogram (this CPU's slot cache, then the slot) and two adds, plain where the shard has a
//! single writer (plus, for failing calls, the errno in the slot's own table). The hashes
//! (STARTS, HIST_SLOTS, and ERRNOS from a slot's fifth errno) are touched only when a thread
//! comes back to a CPU, its syscall outlives its time on one, or the slot cache misses. Map inserts happen only the first time a thread, a
//! process or a (process, syscall) shard is seen. The rules and the reasons are in
//! docs/design.md.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, CgroupArray, HashMap, PerCpuArray, Queue},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use profiler_common::{
    bucket_index, ErrnoKey, Hist, HistKey, Meta, ProcInfo, ProcKey, Start, ABI_COMPAT, ABI_NATIVE,
    BUCKETS, CHECKPOINT_CHUNK, CHECKPOINT_MAX_ENTRIES, CLONE_NRS_LEN, COMPAT_DISABLED,
    COUNTERS_LEN, COUNTER_ERRNOS_FULL, COUNTER_HISTS_FULL, COUNTER_NEW_SLOTS_FULL,
    COUNTER_PROCS_FULL, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS, ERRNOS_MAX_ENTRIES,
    ERRNO_SLOTS, FILTER_PIDS_MAX_ENTRIES, FILTER_SYSCALLS_PER_ABI, HISTS_MAX_ENTRIES, HIST_SHARDS,
    NR_UNKNOWN, PROCS_MAX_ENTRIES, SLOT_CACHE_LEN, STARTS_MAX_ENTRIES, TOUCHED_ALL, TOUCH_BLOCK,
};

// Set by the loader (see profiler_common::GLOBAL_*). They live in .rodata, which the loader
// freezes, so the verifier knows their values; `read_volatile` keeps LLVM from folding in the
// defaults written here.
#[no_mangle]
static IGNORE_TGID: u32 = 0;
#[no_mangle]
static COMPAT_OFFSET: u32 = COMPAT_DISABLED;
#[no_mangle]
static COMPAT_MASK: u32 = 0;
#[no_mangle]
static NR_REG_OFFSET: u32 = 0;
#[no_mangle]
static CLONE_NRS: [u32; CLONE_NRS_LEN] = [u32::MAX; CLONE_NRS_LEN];
#[no_mangle]
static SHARD_PER_CPU: u32 = 0;
#[no_mangle]
static FILTER_PIDS_ON: u32 = 0;
#[no_mangle]
static FILTER_CGROUP_ON: u32 = 0;
#[no_mangle]
static FILTER_SYSCALLS_ON: u32 = 0;

#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_PIDS_MAX_ENTRIES, 0);

#[map]
static FILTER_CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

#[map]
static FILTER_SYSCALLS: Array<u8> = Array::with_max_entries(2 * FILTER_SYSCALLS_PER_ABI, 0);

#[map]
static CPU_SLOT: PerCpuArray<Start> = PerCpuArray::with_max_entries(1, 0);

#[map]
static STARTS: HashMap<u32, Start> = HashMap::with_max_entries(STARTS_MAX_ENTRIES, 0);

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

#[map]
static LIVE: HashMap<u32, u32> = HashMap::with_max_entries(PROCS_MAX_ENTRIES, 0);

#[map]
static PROCS: HashMap<ProcKey, ProcInfo> = HashMap::with_max_entries(PROCS_MAX_ENTRIES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

// Maps of the daemon's own, declared here so they are created (and pinned) with the others;
// no program touches them.
#[map]
static CHECKPOINT: HashMap<u32, [u8; CHECKPOINT_CHUNK]> =
    HashMap::with_max_entries(CHECKPOINT_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static META: Array<Meta> = Array::with_max_entries(1, 0);

#[inline(always)]
fn global(v: &u32) -> u32 {
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // Per-CPU slot: no other CPU writes it, so a plain add is exact.
        unsafe { *c += 1 };
    }
}

/// Adds `v` to a counter (wrapping): a plain add when `plain` says nothing else can be adding
/// to it at the same time (see `single_writer`), an atomic one otherwise.
#[inline(always)]
fn add_u32(plain: bool, dst: *mut u32, v: u32) {
    if plain {
        unsafe { *dst = (*dst).wrapping_add(v) };
    } else {
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(dst, v) };
    }
}

/// [`add_u32`] for a 64-bit counter.
#[inline(always)]
fn add_u64(plain: bool, dst: *mut u64, v: u64) {
    if plain {
        unsafe { *dst = (*dst).wrapping_add(v) };
    } else {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
    }
}

/// Whether the current syscall is a 32-bit compat one. The kernel flags it per syscall in the
/// task (x86: `thread_info.status & TS_COMPAT`, also set for `int 0x80` from 64-bit code), so
/// this is exact where the pt_regs code segment would not be. `read` loads the `u32` at a byte
/// offset of the current task.
#[inline(always)]
fn compat_flag(read: impl FnOnce(usize) -> Option<u32>) -> u8 {
    let offset = global(&COMPAT_OFFSET);
    if offset == COMPAT_DISABLED {
        return ABI_NATIVE;
    }
    match read(offset as usize) {
        Some(w) if w & global(&COMPAT_MASK) != 0 => ABI_COMPAT,
        _ => ABI_NATIVE,
    }
}

/// [`compat_flag`] for raw tracepoints: the task is an untyped address, read with a helper.
#[inline(always)]
fn current_abi() -> u8 {
    compat_flag(|offset| {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        unsafe { bpf_probe_read_kernel(task.add(offset) as *const u32) }.ok()
    })
}

/// [`compat_flag`] for BTF programs, where the task is a typed pointer the verifier lets us
/// load from directly.
#[inline(always)]
fn current_abi_btf() -> u8 {
    compat_flag(|offset| {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        Some(unsafe { core::ptr::read_volatile(task.add(offset) as *const u32) })
    })
}

/// The current thread's pid/tgid and the call's ABI when syscall `nr` of the current process is
/// one to record: the filters, cheapest first, before any map work. -1 means "no syscall"
/// (e.g. a ptrace-cancelled one).
#[inline(always)]
fn wanted_call(nr: i64, abi: fn() -> u8) -> Option<(u64, u8)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_wanted((pid_tgid >> 32) as u32) || nr < 0 {
        return None;
    }
    let abi = abi();
    syscall_wanted(nr as u32, abi).then_some((pid_tgid, abi))
}

/// Whether the process passes the pid and cgroup filters (the loader turns each on; with a
/// filter off, its branch is dead code the verifier removes).
#[inline(always)]
fn process_wanted(tgid: u32) -> bool {
    if tgid == global(&IGNORE_TGID) {
        return false;
    }
    if global(&FILTER_PIDS_ON) != 0 && FILTER_PIDS.get_ptr(tgid).is_none() {
        return false;
    }
    if global(&FILTER_CGROUP_ON) != 0 && FILTER_CGROUP.current_task_under_cgroup(0) != Ok(true) {
        return false;
    }
    true
}

#[inline(always)]
fn syscall_wanted(nr: u32, abi: u8) -> bool {
    if global(&FILTER_SYSCALLS_ON) == 0 {
        return true;
    }
    if nr >= FILTER_SYSCALLS_PER_ABI {
        return false;
    }
    let index = abi as u32 * FILTER_SYSCALLS_PER_ABI + nr;
    matches!(FILTER_SYSCALLS.get(index), Some(&wanted) if wanted != 0)
}

/// `sys_enter` as a BTF tracepoint: the same as [`sys_enter`] but the compat flag is a direct
/// load from the current task, no probe-read helper. The loader prefers it when the kernel has
/// BTF (which the compat check needs anyway).
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    syscall_entered(nr, current_abi_btf)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    syscall_entered(nr, current_abi)
}

/// The work of `sys_enter` for syscall `nr` (arg 1 of the tracepoint); `abi` reads the ABI of
/// the current syscall.
#[inline(always)]
fn syscall_entered(nr: i64, abi: fn() -> u8) -> i32 {
    let Some((pid_tgid, abi)) = wanted_call(nr, abi) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let tid = pid_tgid as u32;
    let Some(cpu) = CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    // The slot still names this thread when it has not left the CPU since its last syscall:
    // then its process is already there, and this is a plain write.
    if unsafe { (*cpu).tid } != tid {
        let Ok(incarnation) = u32::try_from(claim_cpu_slot(tid, tgid)) else {
            return 0;
        };
        unsafe {
            (*cpu).tid = tid;
            (*cpu).tgid = tgid;
            (*cpu).incarnation = incarnation;
        }
    }
    unsafe {
        (*cpu).nr = nr as u32;
        (*cpu).abi = abi;
        (*cpu).ts_ns = ts_ns;
    }
    0
}

/// A thread takes over its CPU's slot: its process incarnation from its STARTS record, which is
/// created on the thread's first syscall since attach. -1 (counted) when STARTS is full.
#[inline(never)]
fn claim_cpu_slot(tid: u32, tgid: u32) -> i64 {
    if let Some(record) = STARTS.get_ptr_mut(tid) {
        // A start parked there belongs to a syscall that has returned: enter and exit
        // alternate, so it could only be left by an exit this side never saw.
        unsafe { (*record).ts_ns = 0 };
        return i64::from(unsafe { (*record).incarnation });
    }
    let incarnation = process_incarnation(tgid);
    let record = Start {
        tgid,
        incarnation,
        tid,
        ..Start::default()
    };
    if STARTS.insert(tid, record, 0).is_err() {
        bump(COUNTER_STARTS_FULL);
        return -1;
    }
    i64::from(incarnation)
}

/// Context switch (`current` is the thread leaving the CPU): park its syscall in flight, if
/// any, in its STARTS record, and free the slot. A blocking syscall pays this once per block;
/// a thread that keeps its CPU never does.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(_ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(cpu) = CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    if unsafe { (*cpu).tid } != tid {
        return 0;
    }
    let start = unsafe { *cpu };
    unsafe {
        (*cpu).tid = 0;
        (*cpu).ts_ns = 0;
    }
    if start.ts_ns != 0 {
        park(&start);
    }
    0
}

#[inline(never)]
fn park(start: &Start) {
    if let Some(record) = STARTS.get_ptr_mut(start.tid) {
        unsafe {
            (*record).nr = start.nr;
            (*record).abi = start.abi;
            (*record).ts_ns = start.ts_ns;
        }
    }
}

/// The incarnation of process `tgid`, recording the process (and its name) if it is new. A pid
/// whose previous owner has exited has no LIVE entry any more, so a recycled pid starts a new
/// incarnation and never inherits its predecessor's numbers.
#[inline(always)]
fn process_incarnation(tgid: u32) -> u32 {
    if let Some(incarnation) = LIVE.get_ptr(tgid) {
        return unsafe { *incarnation };
    }
    // ~µs since boot, never 0 (0 means "not recorded").
    let fresh = (unsafe { bpf_ktime_get_ns() } >> 10) as u32 | 1;
    if LIVE.insert(tgid, fresh, BPF_NOEXIST as u64).is_err() {
        // Another thread of the process recorded it first, or the map is full.
        return match LIVE.get_ptr(tgid) {
            Some(incarnation) => unsafe { *incarnation },
            None => {
                bump(COUNTER_PROCS_FULL);
                0
            }
        };
    }
    let info = ProcInfo {
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        exit_ns: 0,
    };
    let key = ProcKey {
        tgid,
        incarnation: fresh,
    };
    if PROCS.insert(key, info, 0).is_err() {
        bump(COUNTER_PROCS_FULL);
    }
    fresh
}

/// The PROCS entry of the current process.
#[inline(always)]
fn current_process(tgid: u32) -> Option<*mut ProcInfo> {
    let incarnation = unsafe { *LIVE.get_ptr(tgid)? };
    PROCS.get_ptr_mut(ProcKey { tgid, incarnation })
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(cpu) = CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    let start = if unsafe { (*cpu).tid == tid && (*cpu).ts_ns != 0 } {
        let start = unsafe { *cpu };
        unsafe { (*cpu).ts_ns = 0 };
        start
    } else {
        match parked_start() {
            Some(start) => start,
            None => return 0,
        }
    };
    // At least 1 ns, so every timed call moves the sum: the drain skips slots whose header has
    // not changed. (One compare; `saturating_sub` then `max` took three.)
    let now = unsafe { bpf_ktime_get_ns() };
    let latency = if now > start.ts_ns {
        now - start.ts_ns
    } else {
        1
    };
    // arg 1 is the return value; -4095..-1 are errnos.
    let ret: i64 = ctx.arg(1);

    let key = HistKey {
        tgid: start.tgid,
        incarnation: start.incarnation,
        nr: key_nr(start.nr),
        abi: start.abi,
        shard: shard(start.tid, start.tgid),
    };
    let Some(hist) = hist_of(&key) else {
        return 0;
    };
    // Keep the bound where the verifier sees it: the index comes out of a long ALU sequence
    // (BPF has no count-leading-zeros), after which it can lose track of the range.
    let idx = core::hint::black_box(bucket_index(latency));
    if idx >= BUCKETS {
        return 0;
    }
    let plain = single_writer(&key);
    count_in_bucket(hist, idx, plain);
    unsafe {
        add_u64(
            plain,
            core::ptr::addr_of_mut!((*hist).head.total_ns),
            latency,
        )
    };
    count_if_error(hist, &key, plain, ret);
    0
}

/// The start of a syscall whose thread left the CPU while in it (or whose exit runs on another
/// CPU), taken out of the thread's STARTS record. None when there is none: the process is
/// filtered out (checked first: with a pid or cgroup filter, most exits here are of processes
/// left out), the entry was skipped (number -1, a filtered syscall), or never seen (counted).
#[inline(never)]
fn parked_start() -> Option<Start> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_wanted((pid_tgid >> 32) as u32) {
        return None;
    }
    let Some(record) = STARTS.get_ptr_mut(pid_tgid as u32) else {
        bump(COUNTER_UNMATCHED_EXITS);
        return None;
    };
    let start = unsafe { *record };
    if start.ts_ns == 0 {
        return None;
    }
    unsafe { (*record).ts_ns = 0 };
    Some(start)
}

/// Counts-only mode: `sys_enter` is not attached, so there are no start times and no latency;
/// the syscall number comes from the saved registers. Every call lands in bucket 0 (the daemon
/// knows the mode and reports counts and errors only).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_counts(ctx: RawTracePointContext) -> i32 {
    let regs = ctx.arg::<u64>(0) as *const u8;
    let offset = global(&NR_REG_OFFSET) as usize;
    let Ok(nr) = (unsafe { bpf_probe_read_kernel(regs.add(offset) as *const i32) }) else {
        return 0;
    };
    syscall_counted(nr, ctx.arg(1), current_abi)
}

/// [`sys_exit_counts`] as a BTF tracepoint: the syscall number and the compat flag are direct
/// loads, no probe-read helpers. Preferred by the loader when the kernel has BTF.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_counts_btf(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let offset = global(&NR_REG_OFFSET) as usize;
    let nr = unsafe { core::ptr::read_volatile(regs.add(offset) as *const i32) };
    syscall_counted(nr, ctx.arg(1), current_abi_btf)
}

/// The work of the counts-only `sys_exit` for syscall `nr` returning `ret`.
#[inline(always)]
fn syscall_counted(nr: i32, ret: i64, abi: fn() -> u8) -> i32 {
    let Some((pid_tgid, abi)) = wanted_call(i64::from(nr), abi) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    if ret == 0 && is_clone(nr as u32, abi) {
        return 0;
    }
    let key = HistKey {
        tgid,
        incarnation: process_incarnation(tgid),
        nr: key_nr(nr as u32),
        abi,
        shard: shard(pid_tgid as u32, tgid),
    };
    let Some(hist) = hist_of(&key) else {
        return 0;
    };
    let plain = single_writer(&key);
    count_in_bucket(hist, 0, plain);
    count_if_error(hist, &key, plain, ret);
    0
}

#[inline(always)]
fn key_nr(nr: u32) -> u16 {
    if nr >= NR_UNKNOWN as u32 {
        NR_UNKNOWN
    } else {
        nr as u16
    }
}

/// Which shard of the histogram a thread adds to (see `HistKey::shard`): a single-threaded
/// process never contends with itself, so only its other threads spread by CPU.
#[inline(always)]
fn shard(tid: u32, tgid: u32) -> u8 {
    if tid == tgid {
        return 0;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    1 + (cpu & (HIST_SHARDS - 1)) as u8
}

/// Whether only one thing can be adding to this histogram shard at a time, so plain adds are
/// exact and the locked ones (tens of cycles each, and a cache line bouncing between CPUs) can
/// go: shard 0 is the main thread's alone; another shard is one CPU's alone when every CPU has
/// its own (the loader knows), and a CPU runs one `sys_exit` at a time.
#[inline(always)]
fn single_writer(key: &HistKey) -> bool {
    key.shard == 0 || global(&SHARD_PER_CPU) != 0
}

#[inline(always)]
fn is_clone(nr: u32, abi: u8) -> bool {
    let nrs = unsafe { core::ptr::read_volatile(&CLONE_NRS) };
    let base = if abi == ABI_COMPAT { 4 } else { 0 };
    nr == nrs[base] || nr == nrs[base + 1] || nr == nrs[base + 2] || nr == nrs[base + 3]
}

/// The histogram of `key`, given a slot on its first event; None (counted) when HISTS is full.
/// The common case is two array accesses: this CPU's cached slot for the syscall number, and
/// the slot itself, whose own key says whether it is the key's.
#[inline(always)]
fn hist_of(key: &HistKey) -> Option<*mut Hist> {
    let cached = SLOT_CACHE.get_ptr_mut(u32::from(key.nr) & (SLOT_CACHE_LEN - 1))?;
    if let Some(hist) = HISTS.get_ptr_mut(unsafe { *cached }) {
        if unsafe { stored_key_words(&(*hist).head.key) } == key_words(key) {
            return Some(hist);
        }
    }
    let slot = u32::try_from(slot_of(key_words(key))).ok()?;
    unsafe { *cached = slot };
    HISTS.get_ptr_mut(slot)
}

/// A key as two words (its bytes 0..8 and 8..12, little-endian), so comparing keys is two
/// compares instead of five field by field.
#[inline(always)]
fn key_words(key: &HistKey) -> (u64, u32) {
    (
        u64::from(key.tgid) | u64::from(key.incarnation) << 32,
        u32::from(key.nr) | u32::from(key.abi) << 16 | u32::from(key.shard) << 24,
    )
}

/// The key whose [`key_words`] these are.
#[inline(always)]
fn key_of_words((low, high): (u64, u32)) -> HistKey {
    HistKey {
        tgid: low as u32,
        incarnation: (low >> 32) as u32,
        nr: high as u16,
        abi: (high >> 16) as u8,
        shard: (high >> 24) as u8,
    }
}

/// [`key_words`] of a key stored at the start of a map value (map values are 8-byte aligned,
/// and so is `Hist`'s key within them).
#[inline(always)]
unsafe fn stored_key_words(key: *const HistKey) -> (u64, u32) {
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
fn slot_of(words: (u64, u32)) -> i64 {
    let key = &key_of_words(words);
    if let Some(slot) = unsafe { HIST_SLOTS.get(key) } {
        return i64::from(*slot);
    }
    let Ok(Some(slot)) = FREE_SLOTS.pop() else {
        bump(COUNTER_HISTS_FULL);
        return -1;
    };
    // NOEXIST: another CPU may have given the key a slot meanwhile; then use theirs and give
    // this one back.
    if HIST_SLOTS.insert(key, slot, BPF_NOEXIST as u64).is_err() {
        let _ = FREE_SLOTS.push(slot, 0);
        return match unsafe { HIST_SLOTS.get(key) } {
            Some(slot) => i64::from(*slot),
            None => {
                bump(COUNTER_HISTS_FULL);
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
        bump(COUNTER_NEW_SLOTS_FULL);
    }
    i64::from(slot)
}

/// One more call in bucket `idx` (< BUCKETS), and the bucket's block marked touched the first
/// time (see `HistHead::touched`). With a single writer the bucket's old value says when: one
/// compare per event. With several, a plain `|=` could lose another writer's bit, so the first
/// event marks every block, a value all writers store alike.
#[inline(always)]
fn count_in_bucket(hist: *mut Hist, idx: usize, plain: bool) {
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
fn count_if_error(hist: *mut Hist, key: &HistKey, plain: bool, ret: i64) {
    if (-4095..0).contains(&ret) {
        unsafe { add_u32(plain, core::ptr::addr_of_mut!((*hist).head.errors), 1) };
        let errno = (-ret) as u16;
        if !(plain && count_errno_in_place(hist, errno)) {
            count_errno(key_words(key), u32::from(errno));
        }
    }
}

/// Counts `errno` in the histogram's errno table, claiming a free entry for a new one; false
/// when the table is full of other errnos. Single writer only: the claim is a plain store.
#[inline(always)]
fn count_errno_in_place(hist: *mut Hist, errno: u16) -> bool {
    for i in 0..ERRNO_SLOTS {
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
fn count_errno(words: (u64, u32), errno: u32) {
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
        None => bump(COUNTER_ERRNOS_FULL),
    }
}

/// A successful exec: the process has a new name. If a non-leader thread exec'd, it took over
/// the leader's pid: move its slot from its old thread id (arg 1) so the execve's own exit pairs
/// with its enter and the old slot does not leak.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let old_tid = ctx.arg::<u64>(1) as u32;
    if old_tid != tid {
        if let Some(record) = STARTS.get_ptr(old_tid) {
            let start = Start {
                tid,
                ..unsafe { *record }
            };
            let _ = STARTS.insert(tid, start, 0);
            let _ = STARTS.remove(old_tid);
        }
        if let Some(cpu) = CPU_SLOT.get_ptr_mut(0) {
            if unsafe { (*cpu).tid } == old_tid {
                unsafe { (*cpu).tid = tid };
            }
        }
    }
    if let Some(info) = current_process(tgid) {
        if let Ok(comm) = bpf_get_current_comm() {
            unsafe { (*info).comm = comm };
        }
    }
    0
}

/// A thread exits: free its slot. When the whole process is gone (arg 1, `group_dead`, on
/// kernels since 6.16), stamp its exit so the daemon retires it, and forget its incarnation so a
/// recycled pid starts a new one.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let group_dead = ctx.arg::<u64>(1) & 0xff != 0;
    thread_exit(group_dead)
}

/// The same for kernels whose tracepoint has no `group_dead`: the leader's exit stands in for
/// the process's (a leader that exits before its other threads retires the process early; its
/// later calls then start new entries).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_leader(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    thread_exit(pid_tgid as u32 == (pid_tgid >> 32) as u32)
}

#[inline(always)]
fn thread_exit(process_gone: bool) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let _ = STARTS.remove(tid);
    // A thread that dies in a syscall (exit, exit_group) leaves its start in the slot; its id
    // may be reused by a thread of another process.
    if let Some(cpu) = CPU_SLOT.get_ptr_mut(0) {
        if unsafe { (*cpu).tid } == tid {
            unsafe {
                (*cpu).tid = 0;
                (*cpu).ts_ns = 0;
            }
        }
    }
    if process_gone {
        if let Some(info) = current_process(tgid) {
            unsafe { (*info).exit_ns = bpf_ktime_get_ns() };
        }
        let _ = LIVE.remove(tgid);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
