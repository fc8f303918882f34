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

/// The bucket a latency of `ns` nanoseconds belongs to; always `< BUCKETS`.
#[inline(always)]
pub fn bucket_index(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    if ns >= 1 << MAX_POW {
        return OVERFLOW_BUCKET;
    }
    let pow = highest_bit(ns);
    let sub = (ns >> (pow - SUB_BUCKET_BITS)) as usize & (SUB_BUCKETS - 1);
    ((pow - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS + sub
}

/// `floor(log2(v))` for every `v` below 4096 (entry 0 unused): the highest bit of a value
/// below 2^36 in one table lookup after at most two compares (`highest_bit`). BPF has no
/// count-leading-zeros instruction; LLVM expands `leading_zeros` into ~40 dependent
/// instructions there, and halving the range took ~36.
pub static LOG2_TABLE: [u8; 4096] = {
    let mut t = [0u8; 4096];
    let mut v = 2;
    while v < 4096 {
        t[v] = t[v / 2] + 1;
        v += 1;
    }
    t
};

/// The index of the highest set bit of `x` (`0 < x < 2^MAX_POW`): 12 bits at a time, from the
/// top, then the table. Each index is masked, so the kernel's verifier sees it in bounds.
#[inline(always)]
fn highest_bit(x: u64) -> u32 {
    const _: () = assert!(MAX_POW <= 36, "three 12-bit steps cover the range");
    let (base, rest) = if x >> 24 != 0 {
        (24, x >> 24)
    } else if x >> 12 != 0 {
        (12, x >> 12)
    } else {
        (0, x)
    };
    base + u32::from(LOG2_TABLE[(rest & 4095) as usize])
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

/// Each thread's own record for the BTF programs (kernels ≥ 5.11): BPF task storage (one
/// [`TaskEntry`] per thread, found through the task itself, freed with it), so a syscall's start
/// survives its thread leaving the CPU with nothing to do at context switches. Created at the
/// thread's first syscall; bounded by the number of threads, not by a size of its own. When the
/// kernel cannot allocate one, `COUNTER_STARTS_FULL` counts the call. Not pinned: a new daemon
/// starts over, each thread's first call finding its process in [`LIVE_MAP`].
pub const TASKS_MAP: &str = "TASKS";

/// The BTF programs' first place for a thread's [`TaskEntry`]: an array indexed by
/// `tid & (TIDS_MAX_ENTRIES - 1)`, whose lookup the verifier inlines (no helper call, where
/// `bpf_task_storage_get` is one on each side of every syscall: 40-46 ns a syscall on an AMD
/// Zen 3 with retpolines, docs/performance.md). An entry is owned by `(tid, start_time)`, which
/// name a task even across tid reuse: a thread's exit frees it, an owner of the same tid but
/// another start time is a dead thread (its entry is taken over), and a thread whose entry
/// another live thread owns keeps its own in [`TASKS_MAP`] (`COUNTER_TIDS_SHARED`).
/// `BPF_F_MMAPABLE` so that the values start on a page and each 256-byte entry covers whole
/// cache lines (a plain array's values start 56 bytes into a line: neighbouring threads on two
/// CPUs would write one line). `pid_max` rounded up to a power of two, at most 32,768 entries
/// (8 MiB), preallocated; not pinned.
pub const TIDS_MAP: &str = "TIDS";
pub const TIDS_MAX_ENTRIES: u32 = 32_768;
/// `TIDS`'s length less one, a `u32` the loader sets with the length it makes the map: the
/// kernel's `pid_max` rounded up to a power of two, at most [`TIDS_MAX_ENTRIES`] (the tests
/// make it small, to have tids share entries).
pub const GLOBAL_TIDS_MASK: &str = "TIDS_MASK";

/// The BTF programs only: each CPU's runqueue (`struct rq`) address, one per-CPU `u64`
/// (8 bytes a CPU), learned at the first syscall on the CPU after a load; the programs then
/// find the current task as the runqueue's `curr` (see `TaskLayout::rq_btf_id`). Not pinned.
/// It never fills: one entry.
pub const RUNQUEUE_MAP: &str = "RUNQUEUE";

/// The raw-tracepoint fallback only (kernels that refuse the BTF programs): the syscall in
/// flight on each CPU, value [`Start`], one entry (per CPU: 56 bytes a CPU). `sys_enter` writes
/// it and `sys_exit` reads it when the thread has not left the CPU in between, which is the
/// common case and costs no hash lookup. It never fills.
pub const CPU_SLOT_MAP: &str = "CPU_SLOT";

/// The raw-tracepoint fallback only: per-thread records, keyed by thread id (`u32`), value
/// [`Start`]: the thread's process (tgid, incarnation), and its syscall start while it is parked
/// off-CPU (`sched_switch` moves it here from [`CPU_SLOT_MAP`]). The main object, whose
/// programs keep none, is loaded with it cut to one entry; not pinned (a restarted daemon's
/// threads make their records again, and calls parked across the restart are not timed). One entry per live thread that has made a syscall since
/// attach; deleted when the thread exits. When full, new threads' syscalls are not timed and
/// `COUNTER_STARTS_FULL` counts each of them.
pub const STARTS_MAP: &str = "STARTS";
pub const STARTS_MAX_ENTRIES: u32 = 65_536;

/// Latency histograms: an array of [`Hist`] indexed by slot, preallocated and mmap-able
/// (`BPF_F_MMAPABLE`), so `sys_exit` reaches a histogram with an array access and the drain
/// reads them all through one mapping without copying. A slot holds its key ([`HistHead::key`];
/// tgid 0 = free). When no slot is left, events of new keys are dropped and counted in
/// `COUNTER_HISTS_FULL`; the daemon frees the slots of exited processes.
pub const HISTS_MAP: &str = "HISTS";
pub const HISTS_MAX_ENTRIES: u32 = 32_768;

/// The slots the kernel has handed out since the daemon last looked: a queue of `u32`, pushed
/// once the slot holds its key, popped by the daemon, which so learns of new histograms
/// without listing HIST_SLOTS. As long as HISTS: a slot is queued again only after the daemon
/// has freed it, so the queue cannot fill; should a push fail anyway, `COUNTER_NEW_SLOTS_FULL`
/// counts it and the daemon finds the slot by reading every slot's key.
pub const NEW_SLOTS_MAP: &str = "NEW_SLOTS";

/// Which [`HISTS_MAP`] slot holds each key: hash [`HistKey`] → `u32`, preallocated, as many
/// entries as there are slots (so it is never fuller than HISTS). Consulted only when the
/// per-CPU [`SLOT_CACHE_MAP`] misses.
pub const HIST_SLOTS_MAP: &str = "HIST_SLOTS";

/// The free slots of HISTS, for the kernel to hand out: a queue of `u32` as long as HISTS. The
/// daemon fills it with every slot when the maps are created and gives back the slots of
/// retired processes.
pub const FREE_SLOTS_MAP: &str = "FREE_SLOTS";

/// The raw-tracepoint programs' per-CPU cache in front of [`HIST_SLOTS_MAP`]: `u32` by
/// [`slot_cache_index`], the slot of the last key with that syscall number seen on this CPU
/// (the BTF programs keep one per thread: [`TaskEntry::slots`]). The slot's own key says whether it
/// is the wanted one (a slot since recycled, or of another key with the same `nr % 64`, is not).
pub const SLOT_CACHE_MAP: &str = "SLOT_CACHE";
pub const SLOT_CACHE_LEN: u32 = 64;

/// Failures per errno, keyed by [`ErrnoKey`], value `u32` (wrapping, like histogram counts).
/// Touched only by failing calls. When full, a new (process, syscall, errno) triple is not
/// broken down (its calls still count in [`HistHead::errors`]) and `COUNTER_ERRNOS_FULL` counts it.
pub const ERRNOS_MAP: &str = "ERRNOS";
pub const ERRNOS_MAX_ENTRIES: u32 = 16_384;

/// The incarnation of every live process, keyed by tgid (`u32`), value `u32`: created at the
/// process's first syscall, deleted when its last thread exits, so that a recycled pid starts a
/// new incarnation. When full, `COUNTER_PROCS_FULL` counts each process that could not be
/// recorded; its calls are still counted, under incarnation 0.
pub const LIVE_MAP: &str = "LIVE";

/// Process names and exits keyed by [`ProcKey`], value [`ProcInfo`]: written when a process is
/// first seen, renamed after a successful exec, stamped when its last thread exits; deleted by
/// the daemon once it has read the process for the last time. Keyed by incarnation, so a pid
/// recycled before the daemon's next read cannot overwrite its predecessor's name. When full,
/// `COUNTER_PROCS_FULL` counts each name not recorded (the daemon falls back to /proc).
pub const PROCS_MAP: &str = "PROCS";
/// Entries of both LIVE and PROCS.
pub const PROCS_MAX_ENTRIES: u32 = 16_384;

/// Written only by the daemon, and only with `--pin-path` (no program touches it): the
/// daemon's checkpoint, in two halves of up to `CHECKPOINT_CHUNKS_PER_HALF` chunks of
/// `CHECKPOINT_CHUNK` bytes, hash `u32` (`half << 16 | chunk`) → `[u8; CHECKPOINT_CHUNK]`,
/// allocated as used (`BPF_F_NO_PREALLOC`). Each drain writes the inactive half, then flips
/// [`META_MAP`]'s record to it in one update: a restarted daemon — also after `kill -9` —
/// resumes from the last complete checkpoint. Without `--pin-path` the daemon sizes it to one
/// entry at load and never writes it. A checkpoint larger than a half is not committed (counted).
///
/// A chunk is a page less the kernel's own header for the element (a few dozen bytes; 128 is
/// room to spare), so each takes one 4 KiB allocation. The kernel's allocator for such maps
/// keeps a spare element on every CPU from the start, and up to 6 of this size (3 of 16 KiB
/// and more) on a CPU that freed some: 4 KiB and 24 KiB a CPU, where 64 KiB chunks would cost
/// 64 KiB and 192 KiB (and a chunk just over 64 KiB a 128 KiB allocation each).
pub const CHECKPOINT_MAP: &str = "CHECKPOINT";
pub const CHECKPOINT_CHUNK: usize = 4096 - 128;
/// 16 MiB a half.
pub const CHECKPOINT_CHUNKS_PER_HALF: u32 = (16 << 20) / CHECKPOINT_CHUNK as u32;
pub const CHECKPOINT_MAX_ENTRIES: u32 = 2 * CHECKPOINT_CHUNKS_PER_HALF;

/// `record`'s exec boundary: tgid (`u32`) → `u32`. `record`'s child writes its own tgid with 0
/// ("count from my next exec") just before it execs the command; `sched_process_exec`, for a
/// tgid marked 0, ends the process's incarnation (its set-up before the exec is left in it),
/// starts a new one and writes it into the mark, so `record` knows which incarnation is the
/// command's. Each `record` loads its own maps and marks one process; `serve` marks none, so
/// every exec costs one lookup in an empty hash. Not pinned.
pub const EXEC_MARKS_MAP: &str = "EXEC_MARKS";
pub const EXEC_MARKS_MAX_ENTRIES: u32 = 64;

/// One record at index 0, [`Meta`]: the layout fingerprint of the pinned maps (see
/// `LAYOUT_VERSION`), so a daemon never reads maps pinned by an incompatible build, and which
/// half of [`CHECKPOINT_MAP`] holds the committed checkpoint.
pub const META_MAP: &str = "META";
/// Bumped whenever a record's layout or a map's meaning changes, and whenever a type the
/// checkpoint serializes changes (the daemon's store totals too).
pub const LAYOUT_VERSION: u64 = 6;

/// [`META_MAP`]'s record. `fingerprint` first and 0 until the daemon has prepared new maps.
/// `generation` counts commits (0: no checkpoint yet); the committed checkpoint is `len` bytes in
/// `half`, whose CRC-32 is `checksum`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub fingerprint: u64,
    pub generation: u64,
    pub len: u64,
    pub half: u32,
    pub checksum: u32,
}

/// Every map the daemon pins with `--pin-path`.
pub const PINNED_MAPS: &[&str] = &[
    HISTS_MAP,
    HIST_SLOTS_MAP,
    FREE_SLOTS_MAP,
    NEW_SLOTS_MAP,
    ERRNOS_MAP,
    LIVE_MAP,
    PROCS_MAP,
    COUNTERS_MAP,
    CHECKPOINT_MAP,
    META_MAP,
];

/// In-kernel filters, decided at `sys_enter` before any map is written: only allowlisted
/// processes (tgid → `u8`, any value), only processes under the cgroup at index 0 of
/// `FILTER_CGROUP` (a cgroup v2 directory fd, descendants included), only allowlisted syscalls
/// (index `abi * FILTER_SYSCALLS_PER_ABI + nr` → non-zero). Each filter is on when its global
/// `FILTER_*_ON` is 1. Sizes: 4,096 pids; one cgroup; every syscall number below 1,024 of both
/// ABIs.
pub const FILTER_PIDS_MAP: &str = "FILTER_PIDS";
pub const FILTER_PIDS_MAX_ENTRIES: u32 = 4_096;
pub const FILTER_CGROUP_MAP: &str = "FILTER_CGROUP";
pub const FILTER_SYSCALLS_MAP: &str = "FILTER_SYSCALLS";
pub const FILTER_SYSCALLS_PER_ABI: u32 = 1_024;
pub const GLOBAL_FILTER_PIDS_ON: &str = "FILTER_PIDS_ON";
pub const GLOBAL_FILTER_CGROUP_ON: &str = "FILTER_CGROUP_ON";
pub const GLOBAL_FILTER_SYSCALLS_ON: &str = "FILTER_SYSCALLS_ON";

/// Per-CPU `u64` counters indexed by the `COUNTER_*` constants.
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const COUNTER_HISTS_FULL: u32 = 0;
pub const COUNTER_PROCS_FULL: u32 = 1;
pub const COUNTER_STARTS_FULL: u32 = 2;
/// A `sys_exit` with no recorded `sys_enter`: a new thread's first return (from the clone or
/// fork its parent made, which the parent's own exit already counts), a syscall that was in
/// flight at attach time, or one whose start could not be recorded.
pub const COUNTER_UNMATCHED_EXITS: u32 = 3;
pub const COUNTER_ERRNOS_FULL: u32 = 4;
/// See [`NEW_SLOTS_MAP`].
pub const COUNTER_NEW_SLOTS_FULL: u32 = 5;
/// Threads whose [`TIDS_MAP`] entry another live thread held (their tids equal modulo its
/// length): their calls are kept in [`TASKS_MAP`] instead. Counted once a thread.
pub const COUNTER_TIDS_SHARED: u32 = 6;
pub const COUNTERS_LEN: u32 = 7;

// ---- Failing calls' arguments (issue 14) ------------------------------------------------------

/// What each syscall's failing calls have worth capturing, at index
/// `abi * FILTER_SYSCALLS_PER_ABI + nr`: a kind byte (`ARG_KIND_*`; 0: nothing, the call is not looked at further). Filled by
/// the daemon from its syscall tables; left empty with `--capture-args=false`, which turns
/// capture off in the kernel.
pub const ARG_KINDS_MAP: &str = "ARG_KINDS";
/// Bits 0..3 of a kind: which argument (1..=6; 0: none) holds the path, or the sockaddr.
pub const ARG_KIND_ARG_MASK: u8 = 0x7;
/// Bits 3..6: which argument (1..=6; 0: none) is the directory fd a relative path is read from.
pub const ARG_KIND_DIRFD_SHIFT: u8 = 3;
/// The argument is a `struct sockaddr *` (connect), not a path.
pub const ARG_KIND_SOCKADDR: u8 = 0x40;

/// The bytes of an argument kept: a path is cut at 255 bytes (and flagged `ARG_TRUNCATED`), a
/// sockaddr fits.
pub const ARG_BYTES: usize = 256;

/// Failing calls' arguments, keyed by [`ArgKey`], value `u64` (the count). Touched only by
/// failing calls of syscalls [`ARG_KINDS_MAP`] names; the daemon empties it at every drain
/// (lookup-and-delete), so it holds one interval's distinct arguments. When full, the
/// argument is not captured and `ARG_STAT_FULL` counts it (the failure still counts by errno).
pub const FAILED_ARGS_MAP: &str = "FAILED_ARGS";
pub const FAILED_ARGS_MAX_ENTRIES: u32 = 4_096;
/// Per-CPU scratch for building an [`ArgKey`] (too big for the BPF stack's comfort).
pub const ARG_SCRATCH_MAP: &str = "ARG_SCRATCH";
/// Per-CPU `u64`s: the `ARG_STAT_*` counters (written by the programs) and, at
/// `ARG_STAT_ALLOWANCE`, how far `ARG_STAT_CAPTURED` may go (written by the daemon at every
/// drain: what it read plus the per-interval budget). A failure beyond it is counted by errno
/// as always, and in `ARG_STAT_MISSED`.
pub const ARG_STATS_MAP: &str = "ARG_STATS";
pub const ARG_STAT_CAPTURED: u32 = 0;
pub const ARG_STAT_MISSED: u32 = 1;
pub const ARG_STAT_UNREADABLE: u32 = 2;
pub const ARG_STAT_FULL: u32 = 3;
pub const ARG_STAT_ALLOWANCE: u32 = 4;
pub const ARG_STATS_LEN: u32 = 5;
/// Captures per CPU per drain interval.
pub const ARG_BUDGET_PER_CPU: u64 = 1_000;

/// [`ArgKey::flags`]: the path was longer than `ARG_BYTES - 1` bytes (or exactly that long).
pub const ARG_TRUNCATED: u8 = 1;
/// The argument's user memory could not be read (unmapped, or paged out: programs cannot fault
/// pages in): the failure is counted here with no bytes, and in `ARG_STAT_UNREADABLE`.
pub const ARG_UNREADABLE: u8 = 2;
/// `bytes` hold a sockaddr: family (native endian u16) then the address as the kernel got it
/// (AF_INET: port and address, network order; AF_INET6: port, flow info, address; AF_UNIX: the
/// path, NUL-terminated, or for an abstract socket a NUL then the name).
pub const ARG_SOCKADDR: u8 = 4;
/// [`ArgKey::dirfd`] when the syscall takes none.
pub const ARG_NO_DIRFD: i32 = i32::MIN;

/// One failing call's argument: whose, which syscall and errno, and the bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgKey {
    pub tgid: u32,
    pub incarnation: u32,
    pub nr: u16,
    pub abi: u8,
    pub flags: u8,
    pub errno: u16,
    /// Bytes of a path (without its NUL).
    pub len: u16,
    pub dirfd: i32,
    pub _pad: u32,
    pub bytes: [u8; ARG_BYTES],
}

/// Where the saved registers (`struct pt_regs`) hold a syscall's arguments 1..=6: native then
/// compat, 6 each, byte offsets. Set by the loader.
pub const GLOBAL_ARG_REGS: &str = "ARG_REGS";
pub const ARG_REGS_LEN: usize = 12;

// ---- Globals the loader sets before the programs are verified --------------------------------

/// tgid whose syscalls are not recorded (the daemon's own); 0 records everything.
pub const GLOBAL_IGNORE_TGID: &str = "IGNORE_TGID";
/// Whether the current task's syscall is a 32-bit compat one: the bit to test in the `u32` at
/// `TaskLayout::compat`. A mask of 0 turns the check off (no BTF): every call then counts as
/// native.
pub const GLOBAL_COMPAT_MASK: &str = "COMPAT_MASK";
/// 1 when every possible CPU has a histogram shard of its own (at most `HIST_SHARDS` CPUs): the
/// kernel side then adds to shards without atomic instructions (see `HistKey::shard`).
pub const GLOBAL_SHARD_PER_CPU: &str = "SHARD_PER_CPU";
/// Counts-only mode: the numbers of clone, clone3, fork and vfork in the host ABI, then in the
/// compat ABI (`u32::MAX` where an ABI lacks one). A new task's first return from one of them
/// (value 0) is the parent's call, already counted there, as strace counts it.
pub const GLOBAL_CLONE_NRS: &str = "CLONE_NRS";
pub const CLONE_NRS_LEN: usize = 8;
/// A [`TaskLayout`] from the kernel's BTF. The programs read only its flags from this global
/// (`split`, `rq_btf_id`): its offsets reach them written into their instructions (see
/// [`task_offset!`]).
pub const GLOBAL_TASK_LAYOUT: &str = "TASK_LAYOUT";

/// Byte offsets of the fields the programs read from the scheduler's own accounting, from the
/// kernel's BTF at load time (`task_struct` unless said otherwise). `split` is 1 when every
/// field was found: the programs then split each call's time (see [`SplitMark`]); 0 leaves the
/// split out (the verifier removes its code). `pid` and `tgid` are always set when the kernel
/// has BTF (the BTF programs load them instead of calling a helper). All `u32`, in this order:
/// a field's place is its mark's (see [`task_offset!`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    pub pid: u32,
    pub tgid: u32,
    pub split: u32,
    /// `__state`: whether a thread switched out was blocking (the fallback's `sched_switch`).
    pub state: u32,
    /// `se.exec_start`; `se.sum_exec_runtime` follows it (the programs read it 8 bytes on, and
    /// the loader leaves the split off on a kernel where it does not).
    pub exec_start: u32,
    pub sum_exec_runtime: u32,
    /// `sched_info.run_delay` (CONFIG_SCHED_INFO).
    pub run_delay: u32,
    /// `nvcsw`; `nivcsw` follows it, read 8 bytes on likewise.
    pub nvcsw: u32,
    pub nivcsw: u32,
    /// `se.cfs_rq`, then `struct cfs_rq`'s `rq`, then `struct rq`'s `clock` and `clock_task`.
    pub cfs_rq: u32,
    pub rq_of_cfs_rq: u32,
    pub rq_clock: u32,
    pub rq_clock_task: u32,
    /// `start_time`: with `pid`, the owner of a [`TIDS_MAP`] entry.
    pub start_time: u32,
    /// The current task without a helper call: `struct rq`'s BTF type id and the offset of its
    /// `curr`. The BTF syscall programs learn their CPU's runqueue once (from the task's
    /// `se.cfs_rq`), then load `curr` from it through `bpf_rdonly_cast` (see
    /// [`KFUNC_RDONLY_CAST`]). 0: the kernel lacks one of them, and they call
    /// `bpf_get_current_task_btf`.
    pub rq_btf_id: u32,
    pub rq_curr: u32,
    /// The `u32` whose `GLOBAL_COMPAT_MASK` bit says the current syscall is a 32-bit compat one
    /// (x86: `thread_info.status`, `TS_COMPAT`).
    pub compat: u32,
    /// `struct pt_regs`' syscall number (x86: `orig_ax`), which counts-only mode reads at
    /// `sys_exit` from the saved registers, 32 bits little-endian. Set in that mode only.
    pub nr_reg: u32,
}

/// How many `u32` a [`TaskLayout`] has.
pub const TASK_LAYOUT_LEN: usize = core::mem::size_of::<TaskLayout>() / 4;

impl TaskLayout {
    /// Its fields in order, indexed as their marks are (see [`task_offset!`]).
    pub fn fields(&self) -> [u32; TASK_LAYOUT_LEN] {
        // SAFETY: `TaskLayout` is `repr(C)` and all `u32`: exactly TASK_LAYOUT_LEN of them,
        // with no padding.
        unsafe { core::mem::transmute(*self) }
    }
}

/// Field offsets as immediates (aya emits no CO-RE relocations): a program loads a
/// [`TaskLayout`] field at offset `task_offset!(field)`, a mark in
/// `TASK_OFFSET_MARKS..TASK_OFFSET_MARKS + TASK_LAYOUT_LEN * TASK_OFFSET_SPAN`, one window of
/// `TASK_OFFSET_SPAN` bytes per field (what is read a few bytes past a field, like
/// `sum_exec_runtime` 8 bytes past `exec_start`, stays in its window), and the loader writes the
/// field's real offset (plus the bytes past it) into every instruction holding a mark before
/// loading: the offset of a load, or the immediate of an add or a move. A load at a constant
/// offset is one instruction; one at an offset read from `.rodata` took three (the address,
/// the offset, the add) and a cache line of `.rodata`. The marks are above any offset the
/// programs use otherwise (their largest map value is a few KiB), and below `i16::MAX`, as a
/// load's offset is 16 bits.
pub const TASK_OFFSET_MARKS: u32 = 0x7800;
pub const TASK_OFFSET_SPAN: u32 = 32;
const _: () = assert!(
    TASK_OFFSET_MARKS as usize + TASK_LAYOUT_LEN * TASK_OFFSET_SPAN as usize <= i16::MAX as usize
);

/// The mark a program uses as the byte offset of [`TaskLayout`] field `$field` (see
/// [`TASK_OFFSET_MARKS`]).
#[macro_export]
macro_rules! task_offset {
    ($field:ident) => {
        $crate::TASK_OFFSET_MARKS as usize
            + core::mem::offset_of!($crate::TaskLayout, $field) / 4
                * $crate::TASK_OFFSET_SPAN as usize
    };
}

/// What the kernel programs call `bpf_rdonly_cast` by: a helper call with this number, which the
/// loader turns into a call of the kernel function (its BTF id from the kernel's BTF) before
/// loading, as libbpf does for a declared kfunc (aya cannot declare one). The verifier then
/// replaces the call by a register move: it costs nothing at run time. On a kernel without it
/// the calls are linked to id 0, libbpf's way for a weak kfunc it could not resolve: the
/// verifier accepts such a call only in code it removes as dead, which it is there
/// (`TaskLayout::rq_btf_id` is then 0).
pub const KFUNC_RDONLY_CAST: u32 = 0x4b46_0001;

// ---- Records ----------------------------------------------------------------------------------

/// Syscall ABIs: the host's own, and 32-bit compat (ia32 on x86_64, AArch32 on aarch64), whose
/// numbers mean different calls.
pub const ABI_NATIVE: u8 = 0;
pub const ABI_COMPAT: u8 = 1;

/// A syscall start: the value of a CPU's [`CPU_SLOT_MAP`] entry (the syscall in flight on that
/// CPU) and of a thread's [`STARTS_MAP`] record (a syscall parked there when its thread was
/// switched out), and what the in-flight iterator reports for a thread of the BTF programs.
/// `ts_ns == 0` when none is in flight; `tgid` and `incarnation` are fixed when the thread's
/// record is created (threads never change process). `mark` is set when the start is parked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Start {
    pub ts_ns: u64,
    pub nr: u32,
    pub tgid: u32,
    pub incarnation: u32,
    pub tid: u32,
    pub abi: u8,
    pub _pad: [u8; 7],
    pub mark: SplitMark,
}

/// Where a thread stood in the scheduler's accounting when its syscall started, to split the
/// call's time at its exit (docs/design.md, "Where the time went"):
/// - `off_cpu_ns`: `se.exec_start + (rq clock − rq clock_task) − se.sum_exec_runtime`, the
///   thread's time off its CPUs up to a constant. `exec_start` is in its CPU's task clock,
///   which runs behind the CPU's clock by the time spent on interrupts and stolen by a
///   hypervisor (with IRQ time or steal accounting), a lag that differs from CPU to CPU; adding
///   the lag moves it to the clock all CPUs share, so a call that migrated compares right.
/// - `run_delay_ns`: `sched_info.run_delay`, the time spent runnable on a runqueue.
/// - `voluntary`, `involuntary`: `nvcsw` and `nivcsw`, the thread's switches out while
///   blocking and while runnable (preempted).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitMark {
    pub off_cpu_ns: u64,
    pub run_delay_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// A thread's [`TIDS_MAP`] (or [`TASKS_MAP`]) entry: its owner (`owner_tid`, `owner_start`:
/// the task's `pid` and `start_time`; `owner_tid` 0 is a free entry; unused in task storage,
/// which is the task's own), its syscall in flight (`ts_ns`, 0 when none; `key_high`,
/// `mark`) and what is fixed for the thread's life, set at its first syscall: its process
/// (`key_low`), whether it is the process's main thread, and whether the filters keep it
/// (`state`). The key comes as the two words the histogram's key is compared by (bytes 0..8
/// and 8..12 of [`HistKey`], little-endian): `tgid | incarnation << 32`, and
/// `nr | abi << 16` (the shard, `<< 24`, is added at the exit: another thread's depends on
/// the CPU). `slots` caches, by `nr % TASK_SLOT_CACHE`, the HISTS slot of the thread's last
/// key with that number, which the slot's own key confirms: unlike a per-CPU cache, two
/// processes that take turns on a CPU do not evict each other's. `left_out`: with the pid
/// filter on, the thread's key in the kernel side's `LEFT_OUT` cache when the filter leaves it
/// out (0 otherwise), which its exit forgets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskEntry {
    pub owner_start: u64,
    pub owner_tid: u32,
    pub state: u8,
    pub main_thread: u8,
    pub _pad: [u8; 2],
    pub ts_ns: u64,
    pub key_low: u64,
    pub key_high: u32,
    pub _pad2: u32,
    pub mark: SplitMark,
    pub slots: [u32; TASK_SLOT_CACHE],
    pub left_out: u64,
    /// To 256 bytes: a [`TIDS_MAP`] entry covers whole cache lines.
    pub _pad3: [u64; 6],
}

const _: () = assert!(core::mem::size_of::<TaskEntry>() == 256);

/// See [`TaskEntry::slots`] (a power of two).
pub const TASK_SLOT_CACHE: usize = 32;

/// Where syscall `nr`'s slot is cached in a cache of `len` entries (a power of two): by its
/// low bits, with bit 8 and up folded in so that `openat` (257 on x86_64) and `write` (1) do
/// not share an entry.
#[inline(always)]
pub fn slot_cache_index(nr: u16, len: usize) -> usize {
    (nr as usize + (nr as usize >> 8)) & (len - 1)
}

/// [`TaskEntry::state`]: created, not yet looked at (the kernel zeroes new entries).
pub const TASK_NEW: u8 = 0;
/// Its process is recorded and kept by the pid filter.
pub const TASK_TRACED: u8 = 1;
/// Left out for good: the daemon's own threads, or a process the pid filter leaves out.
pub const TASK_IGNORED: u8 = 2;

/// One (process incarnation, ABI, syscall) shard. `incarnation` tells apart processes that had
/// the same pid: it is the time (µs, truncated to 32 bits) the kernel side first saw the
/// process. `shard` is 0 for a process's main thread and `1 + cpu % HIST_SHARDS` for its other
/// threads, so threads running on different CPUs do not add into one shared cache line; the
/// drain sums the shards.
///
/// 12 bytes, no padding: the kernel hashes the key on every event, and 12 bytes hash in one
/// step less than 16. Syscall numbers from `NR_UNKNOWN` up (none is allocated; a program can
/// still pass any number to syscall(2)) are counted as `NR_UNKNOWN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct HistKey {
    pub tgid: u32,
    pub incarnation: u32,
    pub nr: u16,
    pub abi: u8,
    pub shard: u8,
}

/// See [`HistKey`].
pub const NR_UNKNOWN: u16 = u16::MAX;

/// Shards of a multi-threaded process's histogram (a power of two): at most `1 + HIST_SHARDS`
/// HISTS entries per (process, syscall). Errno counts are not sharded.
pub const HIST_SHARDS: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct ErrnoKey {
    pub hist: HistKey,
    /// Positive errno (ENOENT = 2).
    pub errno: u32,
}

/// A [`HISTS_MAP`] slot: one (process, syscall) shard's counters. Cumulative since the slot was
/// handed out. The 32-bit counts wrap; the daemon reads them at least every few seconds and
/// adds the wrapping difference to 64-bit totals, which halves the kernel memory per (process,
/// syscall) pair at no cost per event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hist {
    pub head: HistHead,
    pub buckets: [u32; BUCKETS],
}

/// Everything of a [`Hist`] but its buckets: what the drain reads first, then only the blocks of
/// buckets `touched` names.
///
/// `key` is the slot's own: written by the kernel when it hands out the slot, zeroed by the
/// daemon when it frees it.
///
/// `touched` has bit `b` set once a bucket of block `b` (buckets `b * TOUCH_BLOCK ..`) has
/// counted something; a shard with several writers sets every bit (see `TOUCHED_ALL`).
/// `errnos`/`errno_counts` break failures down by errno for the first `ERRNO_SLOTS` errnos of a
/// single-writer shard (an `errnos` entry of 0 is unused); other failures go to ERRNOS.
///
/// Where `total_ns` went (see [`SplitMark`]): `runq_ns` runnable on a runqueue (preempted, or
/// woken and waiting for a CPU), `blocked_ns` asleep; the rest of `total_ns` on a CPU. A call
/// that never left its CPU adds to neither, so the split costs it nothing. `blocked_calls`
/// counts the calls that blocked at least once. All three stay 0 when the split is off (no BTF,
/// counts-only mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct HistHead {
    pub key: HistKey,
    pub errors: u32,
    pub total_ns: u64,
    pub touched: u32,
    pub blocked_calls: u32,
    pub runq_ns: u64,
    pub blocked_ns: u64,
    pub errno_counts: [u32; ERRNO_SLOTS],
    pub errnos: [u16; ERRNO_SLOTS],
}

/// Buckets per bit of [`HistHead::touched`]: 64 bytes of counts.
pub const TOUCH_BLOCK: usize = 16;
/// Every block of [`HistHead::touched`].
pub const TOUCHED_ALL: u32 = (1 << BUCKETS.div_ceil(TOUCH_BLOCK)) - 1;
/// Errnos a [`HistHead`] counts in place.
pub const ERRNO_SLOTS: usize = 4;

/// A process incarnation (see [`HistKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub tgid: u32,
    pub incarnation: u32,
}

/// The process's name as the kernel saw it (`comm`, NUL-padded), its cgroup v2 id when first
/// seen (the inode number of its directory under /sys/fs/cgroup), and when its last thread
/// exited (`exit_ns`, 0 while it runs; CLOCK_MONOTONIC).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
    pub exit_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for super::Start {}
    unsafe impl aya::Pod for super::TaskLayout {}
    unsafe impl aya::Pod for super::HistKey {}
    unsafe impl aya::Pod for super::Hist {}
    unsafe impl aya::Pod for super::ProcInfo {}
    unsafe impl aya::Pod for super::ProcKey {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::ErrnoKey {}
    unsafe impl aya::Pod for super::ArgKey {}
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
    fn the_table_finds_the_highest_bit_of_every_power_and_its_neighbours() {
        for pow in 0..MAX_POW {
            let v = 1u64 << pow;
            assert_eq!(highest_bit(v), pow, "2^{pow}");
            assert_eq!(highest_bit(v | (v - 1)), pow, "2^({pow} + 1) - 1");
            if pow > 0 {
                assert_eq!(highest_bit(v + 1), pow, "2^{pow} + 1");
            }
        }
        assert_eq!(highest_bit((1 << MAX_POW) - 1), MAX_POW - 1);
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
