//! Processes: their incarnation and name when first seen, a new name at exec, their exit, and
//! `record`'s exec boundary. These run per exec and per thread exit, not per syscall.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};
use profiler_common::{
    ProcInfo, ProcKey, Start, COUNTER_PROCS_FULL, EXEC_MARKS_MAX_ENTRIES, PROCS_MAX_ENTRIES,
};

use super::{
    bump_full,
    slot::{CPU_SLOT, STARTS},
};

#[map]
static LIVE: HashMap<u32, u32> = HashMap::with_max_entries(PROCS_MAX_ENTRIES, 0);

#[map]
static PROCS: HashMap<ProcKey, ProcInfo> = HashMap::with_max_entries(PROCS_MAX_ENTRIES, 0);

#[map]
static EXEC_MARKS: HashMap<u32, u32> = HashMap::with_max_entries(EXEC_MARKS_MAX_ENTRIES, 0);

/// The incarnation of process `tgid`, recording the process (and its name) if it is new. A pid
/// whose previous owner has exited has no LIVE entry any more, so a recycled pid starts a new
/// incarnation and never inherits its predecessor's numbers.
#[inline(always)]
pub(crate) fn process_incarnation(tgid: u32) -> u32 {
    // SAFETY (this function): map value pointers (see "Safety" in mod.rs) and helper calls.
    if let Some(incarnation) = LIVE.get_ptr(tgid) {
        return unsafe { *incarnation };
    }
    start_incarnation(tgid, 0)
}

/// Records process `tgid` under a new incarnation (any but `previous`), with its current name.
#[inline(always)]
fn start_incarnation(tgid: u32, previous: u32) -> u32 {
    // SAFETY (this function): map value pointers (see "Safety" in mod.rs) and helper calls.
    // ~µs since boot, never 0 (0 means "not recorded").
    let mut fresh = (unsafe { bpf_ktime_get_ns() } >> 10) as u32 | 1;
    if fresh == previous {
        fresh = fresh.wrapping_add(2);
    }
    if LIVE.insert(tgid, fresh, BPF_NOEXIST as u64).is_err() {
        // Another thread of the process recorded it first, or the map is full.
        return match LIVE.get_ptr(tgid) {
            Some(incarnation) => unsafe { *incarnation },
            None => {
                bump_full(COUNTER_PROCS_FULL);
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
        bump_full(COUNTER_PROCS_FULL);
    }
    fresh
}

/// The PROCS entry of the current process.
#[inline(always)]
fn current_process(tgid: u32) -> Option<*mut ProcInfo> {
    // SAFETY: a LIVE value pointer, checked for null.
    let incarnation = unsafe { *LIVE.get_ptr(tgid)? };
    PROCS.get_ptr_mut(ProcKey { tgid, incarnation })
}

/// A successful exec, in the raw-tracepoint way (task.rs has the BTF programs' own): see
/// [`exec`].
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    exec(ctx.arg::<u64>(1) as u32);
    0
}

/// A successful exec by the thread that was `old_tid` (arg 1 of the tracepoint): the process
/// has a new name. If a non-leader thread exec'd, it took over the leader's pid: move its
/// STARTS record (the fallback's) from its old thread id so the execve's own exit pairs with
/// its enter and the old record does not leak. (A task storage entry belongs to the task and
/// follows it; it keeps the shard of a non-main thread, which is safe for the process's one
/// thread left.) For a process `record` marked, the exec is also where the command begins:
/// see [`exec_boundary`]. Returns the command's new incarnation, if so.
#[inline(always)]
pub(crate) fn exec(old_tid: u32) -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if old_tid != tid {
        // SAFETY (this block): map value pointers, checked for null.
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
    let boundary = exec_boundary(tgid);
    if let Some(incarnation) = boundary {
        // The execve in flight returns into the new incarnation: its start, in this thread's
        // STARTS record or (not yet parked) this CPU's slot, names the process it counts for.
        if let Some(record) = STARTS.get_ptr_mut(tid) {
            // SAFETY: a STARTS value pointer, checked for null.
            unsafe { (*record).incarnation = incarnation };
        }
        if let Some(cpu) = CPU_SLOT.get_ptr_mut(0) {
            // SAFETY: this CPU's slot (see "Safety" in mod.rs).
            unsafe {
                if (*cpu).tid == tid {
                    (*cpu).incarnation = incarnation;
                }
            }
        }
    } else if let Some(info) = current_process(tgid) {
        if let Ok(comm) = bpf_get_current_comm() {
            // SAFETY: a PROCS value pointer, checked for null.
            unsafe { (*info).comm = comm };
        }
    }
    boundary
}

/// `record`'s exec boundary (profiler_common::EXEC_MARKS_MAP): for a process marked 0, end
/// the incarnation that made the set-up calls (stamped exited, so the drain retires it like
/// any other) and start the command's, named as it is now, and write it into the mark.
/// Every other exec costs this one lookup.
#[inline(always)]
fn exec_boundary(tgid: u32) -> Option<u32> {
    let mark = EXEC_MARKS.get_ptr_mut(tgid)?;
    // SAFETY (this function): map value pointers, checked for null; helper calls.
    if unsafe { *mark } != 0 {
        return None;
    }
    let previous = match LIVE.get_ptr(tgid) {
        Some(incarnation) => unsafe { *incarnation },
        None => 0,
    };
    if let Some(info) = PROCS.get_ptr_mut(ProcKey {
        tgid,
        incarnation: previous,
    }) {
        unsafe { (*info).exit_ns = bpf_ktime_get_ns() };
    }
    let _ = LIVE.remove(tgid);
    let incarnation = start_incarnation(tgid, previous);
    unsafe { *mark = incarnation };
    Some(incarnation)
}

/// A thread exits: free its STARTS record (its task storage entry goes with the task). When
/// the whole process is gone (arg 1, `group_dead`, on kernels since 6.16), stamp its exit so
/// the daemon retires it, and forget its incarnation so a recycled pid starts a new one.
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
pub(crate) fn thread_exit(process_gone: bool) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let _ = STARTS.remove(tid);
    // A thread that dies in a syscall (exit, exit_group) leaves its start in the slot; its id
    // may be reused by a thread of another process.
    if let Some(cpu) = CPU_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot (see "Safety" in mod.rs).
        unsafe {
            if (*cpu).tid == tid {
                (*cpu).tid = 0;
                (*cpu).ts_ns = 0;
            }
        }
    }
    if process_gone {
        if let Some(info) = current_process(tgid) {
            // SAFETY: a PROCS value pointer, checked for null; a helper call.
            unsafe { (*info).exit_ns = bpf_ktime_get_ns() };
        }
        let _ = LIVE.remove(tgid);
    }
    0
}
