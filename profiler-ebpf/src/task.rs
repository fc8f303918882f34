//! The BTF way of keeping a syscall's start (the loader's first choice): in the thread's own
//! BPF task storage entry ([`TaskEntry`]), found through the task, so it survives the thread
//! leaving its CPU with nothing to do at context switches. The entry also keeps what is fixed
//! for the thread's life (its process's incarnation, whether it is the main thread, the pid
//! filter's verdict), so a call needs no pid/tgid helper and no hash: per side, the task
//! pointer, its entry and the clock; everything else is a direct load from the task.

use aya_ebpf::{
    bindings::{
        bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, seq_file, BPF_F_NO_PREALLOC,
        BPF_LOCAL_STORAGE_GET_F_CREATE,
    },
    helpers::{
        bpf_get_current_task_btf, bpf_ktime_get_ns,
        generated::{bpf_seq_write, bpf_task_storage_get},
    },
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use profiler_common::{
    slot_cache_index, Start, TaskEntry, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS, TASK_IGNORED,
    TASK_SLOT_CACHE, TASK_TRACED,
};

use crate::programs::{
    args::capture,
    bump, bump_full,
    filters::{
        cgroup_wanted, known_left_out, pid_wanted, remember_left_out, syscall_wanted, task_abi,
        task_u32,
    },
    hist::{add_timed, key_high, key_low, key_nr, latency_since, shard},
    lifecycle::{exec, process_incarnation},
    split::{self, Direct, Split},
};

/// A BTF map definition (task storage needs its key and value types in BTF), laid out as
/// aya-ebpf's `btf_maps` are: each field's pointee encodes one attribute.
#[repr(C)]
pub struct TaskStorage {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const TaskEntry,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholders the loader reads from BTF; never dereferenced.
unsafe impl Sync for TaskStorage {}

#[btf_map]
static TASKS: TaskStorage = TaskStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// The current task, as a BTF pointer the verifier lets us load from.
#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: a helper call.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// `task`'s entry, created (zeroed) if `create`; null when it has none (or, creating, when the
/// kernel could not allocate one).
#[inline(always)]
fn entry_of(task: *const u8, create: bool) -> *mut TaskEntry {
    let flags = if create {
        u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    let map = &TASKS as *const TaskStorage as *mut core::ffi::c_void;
    // SAFETY: a helper call with the map and a BTF task pointer (see "Safety" in programs/mod.rs).
    unsafe { bpf_task_storage_get(map, task as *mut _, core::ptr::null_mut(), flags).cast() }
}

/// `task`'s entry for a call to record, made on the thread's first syscall; null (counted when
/// the kernel could not allocate it) when the thread is left out for good.
#[inline(always)]
fn traced_entry(task: *const u8) -> *mut TaskEntry {
    let me = entry_of(task, true);
    if me.is_null() {
        bump_full(COUNTER_STARTS_FULL);
        return me;
    }
    // SAFETY: a task storage value pointer, checked for null.
    match unsafe { (*me).state } {
        TASK_TRACED => me,
        TASK_IGNORED => {
            remember_left_out(unsafe { (*me).key_low } as u32);
            core::ptr::null_mut()
        }
        _ => first_call(task, me),
    }
}

/// A thread's first syscall since attach: the pid filter's verdict, and if it is kept, its
/// process (recorded if new) and whether it is the main thread.
#[inline(never)]
fn first_call(task: *const u8, me: *mut TaskEntry) -> *mut TaskEntry {
    let tgid = task_u32(task, split::offset(|l| &l.tgid));
    let pid = task_u32(task, split::offset(|l| &l.pid));
    // SAFETY (this function): a task storage value pointer, checked for null by the caller.
    if !pid_wanted(tgid) {
        unsafe {
            (*me).key_low = u64::from(tgid);
            (*me).state = TASK_IGNORED;
        }
        remember_left_out(tgid);
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
    let task = current_task();
    if known_left_out(task) {
        return 0;
    }
    let me = traced_entry(task);
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
            (*me).mark = split::mark::<Direct>(task);
        }
        (*me).ts_ns = bpf_ktime_get_ns();
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let task = current_task();
    if known_left_out(task) {
        return 0;
    }
    let me = entry_of(task, false);
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
    let (mark, low, high, main) =
        unsafe { ((*me).mark, (*me).key_low, (*me).key_high, (*me).main_thread) };
    let split = if split::split_on() && split::left_cpu::<Direct>(task, &mark) {
        split::between(&mark, &split::mark::<Direct>(task), latency)
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
    let task = current_task();
    if known_left_out(task) {
        return 0;
    }
    let me = traced_entry(task);
    if me.is_null() || !cgroup_wanted() {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    // SAFETY (this function): a BTF-checked load from the saved registers; a task storage
    // value pointer, checked for null.
    let nr = unsafe {
        core::ptr::read_volatile(regs.add(crate::programs::counts::nr_offset()) as *const i32)
    };
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
    let Some(incarnation) = exec(ctx.arg::<u64>(1) as u32) else {
        return 0;
    };
    let me = entry_of(current_task(), false);
    // SAFETY: a task storage value pointer, checked for null.
    if !me.is_null() && unsafe { (*me).state } == TASK_TRACED {
        unsafe {
            (*me).key_low = key_low((*me).key_low as u32, incarnation);
            (*me).main_thread = 1;
        }
    }
    0
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
/// recorded call. Per drain, not per event.
#[no_mangle]
#[link_section = "iter/task"]
pub fn in_flight(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = ctx as *const TaskIterContext;
    // SAFETY (this function): the iterator's context, a task the kernel hands us (null at the
    // end of the walk, checked), our task storage value (checked for null), helper calls.
    let (meta, task) = unsafe { ((*ctx).meta, (*ctx).task) };
    if task.is_null() {
        return 0;
    }
    let me = entry_of(task, false);
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
        tid: task_u32(task, split::offset(|l| &l.pid)),
        abi: (me.key_high >> 16) as u8,
        ..Start::default()
    };
    let size = core::mem::size_of::<Start>() as u32;
    unsafe { bpf_seq_write((*meta).seq, &start as *const Start as *const _, size) };
    0
}
