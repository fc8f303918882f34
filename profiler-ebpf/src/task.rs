//! The BTF way of keeping a syscall's start (the loader's first choice): in the thread's own
//! [`TaskEntry`], found through the task, so it survives the thread leaving its CPU with
//! nothing to do at context switches. The entry also keeps what is fixed for the thread's life
//! (its process's incarnation, whether it is the main thread, the pid filter's verdict), so a
//! call needs no pid/tgid helper and no hash: per side, one call (the clock); the task is its
//! CPU's runqueue's `curr` (`running_task`), everything else a direct load from the task or
//! the inlined lookup of the entry.
//!
//! The entry is in TIDS (profiler_common::TIDS_MAP) at `tid & (TIDS_MAX_ENTRIES - 1)`, owned by
//! the task's `(pid, start_time)`; a thread whose entry there another live thread owns keeps
//! it in BPF task storage (TASKS), at the cost of a helper call per side, as all threads did
//! before (docs/performance.md, "The start in an array indexed by tid"). A thread's exit frees
//! its TIDS entry; a non-leader's exec, which takes the leader's tid, moves it.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::{
    bindings::{seq_file, BPF_F_MMAPABLE},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        generated::bpf_seq_write,
    },
    macros::{btf_map, btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use profiler_common::{
    slot_cache_index, task_offset, SplitMark, Start, TaskEntry, COUNTER_STARTS_FULL,
    COUNTER_TIDS_SHARED, COUNTER_UNMATCHED_EXITS, KFUNC_RDONLY_CAST, TASK_IGNORED, TASK_NEW,
    TASK_SLOT_CACHE, TASK_TRACED, TIDS_MAX_ENTRIES,
};

use crate::task_storage::TaskStorage;

use crate::programs::{
    args::capture,
    bump, bump_full, filters,
    filters::{
        cgroup_wanted, forget_left_out, known_left_out, pid_wanted, remember_left_out,
        syscall_wanted, task_abi, task_u32,
    },
    global,
    hist::{add_timed, key_high, key_low, key_nr, latency_since, shard},
    lifecycle::{exec, process_incarnation, thread_exit},
    split::{self, Direct, Reader, Split},
};

/// The threads' entries by tid (profiler_common::TIDS_MAP), made by the loader with
/// `TIDS_MASK + 1` entries.
#[map]
static TIDS: Array<TaskEntry> = Array::with_max_entries(TIDS_MAX_ENTRIES, BPF_F_MMAPABLE);
#[no_mangle]
static TIDS_MASK: u32 = TIDS_MAX_ENTRIES - 1;

#[btf_map]
static TASKS: TaskStorage<TaskEntry> = TaskStorage::new();

/// The current task, as a trusted BTF pointer: what task storage takes. A helper call.
#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: a helper call.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// Each CPU's runqueue (`struct rq`) address (profiler_common::RUNQUEUE_MAP), learned at the
/// first syscall a program sees on the CPU: runqueues are per-CPU variables, fixed for the
/// kernel's life.
#[map]
static RUNQUEUE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The thread a syscall program runs in, and its CPU's runqueue when the kernel lets the
/// programs find the thread through it (else null: see TaskLayout::rq_btf_id).
#[derive(Clone, Copy)]
struct Running {
    task: *const u8,
    rq: *const u8,
}

impl Running {
    /// Where the thread stands in the scheduler's accounting (split::mark), from the runqueue
    /// already in hand when there is one: two dependent loads fewer.
    #[inline(always)]
    fn mark(&self) -> SplitMark {
        if self.rq.is_null() {
            split::mark::<Direct>(self.task)
        } else {
            split::mark_on::<Direct>(self.task, self.rq)
        }
    }
}

/// The current task for the syscall programs, without a helper call where the kernel allows:
/// this CPU's runqueue's `curr` (an inlined per-CPU lookup and a load), which is the task the
/// program runs in — a program runs with migration disabled, and only this CPU's scheduler
/// changes `curr`. The pointer is untrusted BTF: loads from it are exception-handled like
/// those from the helper's (see "Safety" in programs/mod.rs), but task storage needs the
/// helper's ([`current_task`]).
#[inline(always)]
fn running_task() -> Running {
    let helper = || Running {
        task: current_task(),
        rq: core::ptr::null(),
    };
    let rq_btf_id = split::rq_btf_id();
    if rq_btf_id == 0 {
        return helper();
    }
    let Some(cached) = RUNQUEUE.get_ptr_mut(0) else {
        return helper();
    };
    // SAFETY (this function): this CPU's element of a per-CPU array; the verifier types
    // `bpf_rdonly_cast`'s result from the kernel's BTF, and loads from it as from the task.
    let mut rq = unsafe { *cached };
    if rq == 0 {
        // The task's `se.cfs_rq` is one of this CPU's: its `rq` is this CPU's runqueue.
        rq = split::runqueue_of::<Direct>(current_task()) as u64;
        if rq == 0 {
            // A load that faulted (it cannot on a running task): never a task at address 0.
            return helper();
        }
        unsafe { *cached = rq };
    }
    let rq = rdonly_cast(rq, rq_btf_id);
    Running {
        task: Direct::ptr_at(rq, task_offset!(rq_curr)),
        rq,
    }
}

/// The kernel's `bpf_rdonly_cast(obj, btf_id)`: `obj` as an untrusted pointer to the BTF type
/// `btf_id` (a constant to the verifier), through the call the loader rewrites (see
/// profiler_common::KFUNC_RDONLY_CAST). The verifier turns it into a register move.
#[inline(always)]
fn rdonly_cast(obj: u64, btf_id: u32) -> *const u8 {
    // SAFETY: a call the loader makes a kfunc call; the verifier checks it like a helper's.
    unsafe {
        let f: unsafe extern "C" fn(u64, u32) -> *const u8 =
            core::mem::transmute(KFUNC_RDONLY_CAST as usize);
        f(obj, btf_id)
    }
}

/// Who `task` is: its tid and `start_time`, which together name it even across tid reuse.
#[inline(always)]
fn identity(task: *const u8) -> (u32, u64) {
    (
        task_u32(task, task_offset!(pid)),
        Direct::u64_at(task, task_offset!(start_time)),
    )
}

/// `tid`'s TIDS entry (whoever owns it).
#[inline(always)]
fn tid_entry(tid: u32) -> Option<*mut TaskEntry> {
    TIDS.get_ptr_mut(tid & global(&TIDS_MASK))
}

/// `task`'s entry: its own in TIDS, else its task storage entry. Creating (`create`), a free
/// TIDS entry, or one a dead thread of the same tid left, becomes the task's (as new), and a
/// task whose TIDS entry another live thread owns gets a task storage entry. Null when it has
/// none (or, creating, when the kernel could not allocate one). `trusted` gives the task as
/// task storage takes it, asked for only then: the helper's for the syscall programs, whose
/// `task` is untrusted (see `running_task`).
#[inline(always)]
fn entry_of(task: *const u8, create: bool, trusted: impl FnOnce() -> *const u8) -> *mut TaskEntry {
    let (tid, born) = identity(task);
    if let Some(e) = tid_entry(tid) {
        // SAFETY (this block): a TIDS value pointer, checked for null; `owner_tid` is a u32
        // of the value, 4-byte aligned.
        let (owner, owner_born) = unsafe { ((*e).owner_tid, (*e).owner_start) };
        if owner == tid && owner_born == born {
            return e;
        }
        if create && (owner == tid || owner == 0) {
            // Claimed with a compare-and-swap: two threads whose tids share the entry may
            // find it free at once on two CPUs (the same tid is one live thread). On the u64
            // of `owner_tid`, `state`, `main_thread`, all 0 in a free entry (BPF has 32-bit
            // atomics only from cpu v3).
            let claimed = owner == tid
                || unsafe {
                    atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                        (&raw mut (*e).owner_tid).cast::<u64>(),
                        0,
                        u64::from(tid),
                    )
                }
                .1;
            if claimed {
                unsafe {
                    (*e).owner_tid = tid;
                    (*e).owner_start = born;
                    (*e).ts_ns = 0;
                    (*e).state = TASK_NEW;
                }
                return e;
            }
        }
    }
    stored_entry(trusted(), create)
}

/// `task`'s task storage entry, for a thread whose TIDS entry another live thread owns (or had
/// when the thread's entry was made): counted once a thread when made.
#[inline(never)]
fn stored_entry(task: *const u8, create: bool) -> *mut TaskEntry {
    let me = TASKS.get(task, create);
    // SAFETY: a task storage value pointer, checked for null.
    if create && !me.is_null() && unsafe { (*me).state } == TASK_NEW {
        bump(COUNTER_TIDS_SHARED);
    }
    me
}

/// `task`'s entry for a call to record, made on the thread's first syscall; null (counted when
/// the kernel could not allocate it) when the thread is left out for good. `regs`: the
/// tracepoint's saved registers, the thread's key in the pid filter's left-out cache.
#[inline(always)]
fn traced_entry(task: *const u8, regs: *const u8) -> *mut TaskEntry {
    let me = entry_of(task, true, current_task);
    if me.is_null() {
        bump_full(COUNTER_STARTS_FULL);
        return me;
    }
    // SAFETY: a task storage value pointer, checked for null.
    match unsafe { (*me).state } {
        TASK_TRACED => me,
        TASK_IGNORED => {
            // Its cache entry was taken by another thread (or it is the daemon's own thread).
            unsafe { (*me).left_out = remember_left_out(regs) };
            core::ptr::null_mut()
        }
        _ => first_call(task, regs, me),
    }
}

/// A thread's first syscall since attach: the pid filter's verdict, and if it is kept, its
/// process (recorded if new) and whether it is the main thread.
#[inline(never)]
fn first_call(task: *const u8, regs: *const u8, me: *mut TaskEntry) -> *mut TaskEntry {
    let tgid = task_u32(task, task_offset!(tgid));
    let pid = task_u32(task, task_offset!(pid));
    // SAFETY (this function): a task storage value pointer, checked for null by the caller.
    if !pid_wanted(tgid) {
        unsafe {
            (*me).key_low = u64::from(tgid);
            (*me).state = TASK_IGNORED;
            (*me).left_out = remember_left_out(regs);
        }
        return core::ptr::null_mut();
    }
    unsafe {
        (*me).key_low = key_low(tgid, process_incarnation(tgid));
        (*me).main_thread = u8::from(pid == tgid);
        (*me).state = TASK_TRACED;
    }
    me
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    // arg 0: the saved registers.
    let regs: *const u8 = ctx.arg(0);
    if known_left_out(regs) {
        return 0;
    }
    let running = running_task();
    let task = running.task;
    let me = traced_entry(task, regs);
    if me.is_null() {
        return 0;
    }
    let nr: i64 = ctx.arg(1);
    // SAFETY (this function): a task storage value pointer, checked for null; a helper call.
    // -1: no syscall (e.g. one ptrace cancelled). A skipped call leaves no start behind.
    if nr < 0 || !cgroup_wanted() {
        unsafe { (*me).ts_ns = 0 };
        return 0;
    }
    let abi = task_abi(task);
    if !syscall_wanted(nr as u32, abi) {
        unsafe { (*me).ts_ns = 0 };
        return 0;
    }
    unsafe {
        (*me).key_high = key_high(key_nr(nr as u32), abi, 0);
        if split::split_on() {
            (*me).mark = running.mark();
        }
        (*me).ts_ns = bpf_ktime_get_ns();
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    if known_left_out(ctx.arg(0)) {
        return 0;
    }
    let running = running_task();
    let task = running.task;
    let me = entry_of(task, false, current_task);
    // A thread whose first event is an exit: a new thread's first return, or a call in flight
    // at attach.
    if me.is_null() {
        bump(COUNTER_UNMATCHED_EXITS);
        return 0;
    }
    // SAFETY (this function): a task storage value pointer, checked for null; a helper call.
    let start = unsafe { (*me).ts_ns };
    if start == 0 {
        return 0;
    }
    unsafe { (*me).ts_ns = 0 };
    let latency = latency_since(start, unsafe { bpf_ktime_get_ns() });
    let (low, high, main) = unsafe { ((*me).key_low, (*me).key_high, (*me).main_thread) };
    // The start's mark by reference: read only for a call that left its CPU (a copy made
    // here was four loads and two spills on every call).
    let mark = unsafe { &raw const (*me).mark };
    let split = if split::split_on() && split::left_cpu::<Direct>(task, mark) {
        split::between(mark, &running.mark(), latency)
    } else {
        Split::default()
    };
    let words = (low, high | u32::from(shard(main != 0)) << 24);
    // arg 1 is the return value; -4095..-1 are errnos.
    add_timed(
        words,
        cached_slot(me, high),
        latency,
        ctx.arg(1),
        split,
        |(low, high), errno| capture::<Direct>(ctx.arg(0), low, high, errno),
    );
    0
}

/// The thread's cached HISTS slot for syscall number `nr` (bits 0..16 of `nr`; see
/// TaskEntry::slots).
#[inline(always)]
fn cached_slot(me: *mut TaskEntry, nr: u32) -> *mut u32 {
    let at = slot_cache_index(nr as u16, TASK_SLOT_CACHE);
    // SAFETY: a task storage value pointer, checked for null by the caller; `at` in bounds.
    unsafe { core::ptr::addr_of_mut!((*me).slots[at]) }
}

/// Counts-only mode: no `sys_enter`, so no start and no latency; the syscall number comes from
/// the saved registers (arg 0) and every call lands in bucket 0 (the daemon knows the mode).
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_counts_btf(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    if known_left_out(regs) {
        return 0;
    }
    let task = running_task().task;
    let me = traced_entry(task, regs);
    if me.is_null() || !cgroup_wanted() {
        return 0;
    }
    // SAFETY (this function): a BTF-checked load from the saved registers; a task storage
    // value pointer, checked for null.
    let nr = unsafe { core::ptr::read_volatile(regs.add(task_offset!(nr_reg)) as *const i32) };
    let (low, main) = unsafe { ((*me).key_low, (*me).main_thread) };
    let high = |abi| key_high(key_nr(nr as u32), abi, shard(main != 0));
    let cached = cached_slot(me, nr as u32);
    crate::programs::counts::count(
        nr,
        ctx.arg(1),
        task_abi(task),
        |abi| (low, high(abi)),
        cached,
        |(low, high), errno| capture::<Direct>(regs, low, high, errno),
    );
    0
}

/// A successful exec, for the BTF programs: what the raw-tracepoint program does
/// (lifecycle::exec), and where `record`'s command begins, this thread's entry moves to the
/// command's new incarnation, so the execve in flight returns into it. The thread is the
/// process's only one now, and its leader.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    // arg 1: the pid the thread had before the exec.
    let old_tid = ctx.arg::<u64>(1) as u32;
    let task = current_task();
    move_entry(task, old_tid);
    let Some(incarnation) = exec(old_tid) else {
        return 0;
    };
    let me = entry_of(task, false, || task);
    // SAFETY: a task storage value pointer, checked for null.
    if !me.is_null() && unsafe { (*me).state } == TASK_TRACED {
        unsafe {
            (*me).key_low = key_low((*me).key_low as u32, incarnation);
            (*me).main_thread = 1;
        }
    }
    0
}

/// A thread that execs while not its process's leader takes the leader's tid (and the kernel
/// gives it the leader's `start_time`): its TIDS entry, at the index of `old_tid`, moves to its
/// new tid's (the dead leader's, freed at its exit or taken over here), or into task storage
/// when another live thread owns that one, so the execve in flight keeps its start.
#[inline(never)]
fn move_entry(task: *const u8, old_tid: u32) {
    let (tid, born) = identity(task);
    if tid == old_tid {
        return;
    }
    let Some(to_tid) = tid_entry(tid) else {
        return;
    };
    // SAFETY (this function): TIDS and task storage value pointers, checked for null.
    let to_owner = unsafe { (*to_tid).owner_tid };
    if to_owner == tid {
        // The dead leader's, if it is still there: not this thread's.
        unsafe { free(to_tid) };
    }
    let Some(from) = tid_entry(old_tid) else {
        return;
    };
    // No entry in TIDS: the thread's is in task storage, which goes with the task.
    if unsafe { (*from).owner_tid } != old_tid {
        return;
    }
    let to = if to_owner == tid || to_owner == 0 {
        to_tid
    } else {
        let stored = TASKS.get(task, true);
        if stored.is_null() {
            bump_full(COUNTER_STARTS_FULL);
            unsafe { free(from) };
            return;
        }
        bump(COUNTER_TIDS_SHARED);
        stored
    };
    unsafe {
        (*to).ts_ns = (*from).ts_ns;
        (*to).mark = (*from).mark;
        (*to).key_low = (*from).key_low;
        (*to).key_high = (*from).key_high;
        (*to).main_thread = (*from).main_thread;
        (*to).state = (*from).state;
        (*to).left_out = (*from).left_out;
        (*to).owner_start = born;
        (*to).owner_tid = tid;
        free(from);
    }
}

/// Frees a TIDS entry: no owner, no call in flight, and `owner_tid`'s u64 all 0 for the next
/// claim's compare-and-swap (see [`entry_of`]).
///
/// # Safety
///
/// `e` is a TIDS value pointer.
#[inline(always)]
unsafe fn free(e: *mut TaskEntry) {
    unsafe {
        (*e).ts_ns = 0;
        (*e).left_out = 0;
        (*e).state = TASK_NEW;
        (*e).main_thread = 0;
        (*e).owner_tid = 0;
    }
}

/// A thread exits: what the raw-tracepoint program does (lifecycle::thread_exit), and its
/// TIDS entry is freed for the next thread whose tid falls on it (task storage frees itself),
/// and the pid filter's left-out cache forgets it (its stack may go to the next thread).
/// Arg 1 is `group_dead` (kernels since 6.16).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(ctx: BtfTracePointContext) -> i32 {
    free_entry(current_task());
    thread_exit(ctx.arg::<u64>(1) & 0xff != 0)
}

/// The same for kernels whose tracepoint has no `group_dead` (see
/// lifecycle::sched_process_exit_leader).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_leader_btf(_ctx: BtfTracePointContext) -> i32 {
    free_entry(current_task());
    let pid_tgid = bpf_get_current_pid_tgid();
    thread_exit(pid_tgid as u32 == (pid_tgid >> 32) as u32)
}

/// Frees `task`'s TIDS entry, if it owns one, and forgets the thread in the pid filter's
/// left-out cache (from its task storage entry if it had one there).
#[inline(always)]
fn free_entry(task: *const u8) {
    let (tid, born) = identity(task);
    if let Some(e) = tid_entry(tid) {
        // SAFETY: a TIDS value pointer, checked for null.
        unsafe {
            if (*e).owner_tid == tid && (*e).owner_start == born {
                forget_left_out((*e).left_out);
                free(e);
                return;
            }
        }
    }
    if filters::pids_filtered() {
        let stored = TASKS.get(task, false);
        // SAFETY: a task storage value pointer, checked for null.
        if !stored.is_null() {
            forget_left_out(unsafe { (*stored).left_out });
        }
    }
}

/// The context of a task iterator program (`struct bpf_iter__task`).
#[repr(C)]
struct TaskIterContext {
    meta: *const IterMeta,
    task: *const u8,
}

/// The head of `struct bpf_iter_meta`.
#[repr(C)]
struct IterMeta {
    seq: *mut seq_file,
}

/// The syscalls in flight, for the drain (task storage has no user-space iteration): run over
/// every thread on each read of the iterator, it writes a [`Start`] for each one inside a
/// recorded call, from the thread's own TIDS entry, else its task storage entry. Per drain,
/// not per event.
#[no_mangle]
#[link_section = "iter/task"]
pub fn in_flight(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = ctx as *const TaskIterContext;
    // SAFETY (this function): the iterator's context, a task the kernel hands us (null at the
    // end of the walk, checked), our TIDS or task storage value (checked for null), helper
    // calls.
    let (meta, task) = unsafe { ((*ctx).meta, (*ctx).task) };
    if task.is_null() {
        return 0;
    }
    let me = entry_of(task, false, || task);
    if me.is_null() {
        return 0;
    }
    let me = unsafe { &*me };
    if me.ts_ns == 0 || me.state != TASK_TRACED {
        return 0;
    }
    let start = Start {
        ts_ns: me.ts_ns,
        nr: me.key_high & 0xffff,
        tgid: me.key_low as u32,
        incarnation: (me.key_low >> 32) as u32,
        tid: task_u32(task, task_offset!(pid)),
        abi: (me.key_high >> 16) as u8,
        ..Start::default()
    };
    let size = core::mem::size_of::<Start>() as u32;
    unsafe { bpf_seq_write((*meta).seq, &start as *const Start as *const _, size) };
    0
}
