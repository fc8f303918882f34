//! The raw-tracepoint way of keeping a syscall's start, for kernels that refuse the BTF
//! programs of task.rs: a per-CPU slot, written at `sys_enter` and read at `sys_exit` when the
//! thread kept its CPU (no hash on that path); `sched_switch` parks the start of a thread that
//! leaves its CPU in the middle of a call in the thread's STARTS record. The split's marks are
//! taken at the park (the call was on its CPU until then) and at the parked call's exit,
//! through probe-read helpers: a call that keeps its CPU pays nothing for the split.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use profiler_common::{
    task_offset, Start, COUNTER_STARTS_FULL, COUNTER_UNMATCHED_EXITS, STARTS_MAX_ENTRIES,
};

use super::{
    args::capture,
    bump, bump_full,
    filters::{cgroup_wanted, current_abi, pid_wanted, syscall_wanted},
    hist::{add_timed, cpu_cached_slot, key_high, key_low, key_nr, latency_since, shard},
    lifecycle::process_incarnation,
    split::{self, Probe, Reader, Split},
};

#[map]
pub(crate) static CPU_SLOT: PerCpuArray<Start> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub(crate) static STARTS: HashMap<u32, Start> = HashMap::with_max_entries(STARTS_MAX_ENTRIES, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if nr < 0 || !pid_wanted(tgid) || !cgroup_wanted() {
        return 0;
    }
    let abi = current_abi();
    if !syscall_wanted(nr as u32, abi) {
        return 0;
    }
    // SAFETY (this function): a helper call, and this CPU's slot (see "Safety" in mod.rs).
    let ts_ns = unsafe { bpf_ktime_get_ns() };
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
        // SAFETY: a STARTS value pointer, checked for null.
        unsafe {
            // A start parked there belongs to a syscall that has returned: enter and exit
            // alternate, so it could only be left by an exit this side never saw.
            (*record).ts_ns = 0;
            return i64::from((*record).incarnation);
        }
    }
    let incarnation = process_incarnation(tgid);
    let record = Start {
        tgid,
        incarnation,
        tid,
        ..Start::default()
    };
    if STARTS.insert(tid, record, 0).is_err() {
        bump_full(COUNTER_STARTS_FULL);
        return -1;
    }
    i64::from(incarnation)
}

/// Context switch (`current` is the thread leaving the CPU): park its syscall in flight, if
/// any, in its STARTS record, and free the slot. A blocking syscall pays this once per block;
/// a thread that keeps its CPU never does.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(cpu) = CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY (this function): this CPU's slot (see "Safety" in mod.rs).
    if unsafe { (*cpu).tid } != tid {
        return 0;
    }
    let start = unsafe { *cpu };
    unsafe {
        (*cpu).tid = 0;
        (*cpu).ts_ns = 0;
    }
    if start.ts_ns != 0 {
        // arg 0: whether the thread is being preempted (else it called schedule() itself).
        park(&start, ctx.arg::<u64>(0) & 0xff != 0);
    }
    0
}

/// Moves `start` into the thread's STARTS record, with the split's mark as of just before this
/// switch (the call was on its CPU since it started).
#[inline(never)]
fn park(start: &Start, preempted: bool) {
    let Some(record) = STARTS.get_ptr_mut(start.tid) else {
        return;
    };
    // SAFETY: a STARTS value pointer, checked for null.
    unsafe {
        (*record).nr = start.nr;
        (*record).abi = start.abi;
        (*record).ts_ns = start.ts_ns;
    }
    if !split::split_on() {
        return;
    }
    // SAFETY: a helper call; the task is read only through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut mark = split::mark::<Probe>(task);
    // The switch counts already include this switch: blocking if the thread chose to go and
    // is not runnable, as the scheduler counts it.
    let state = Probe::u64_at(task, task_offset!(state)) as u32;
    if !preempted && state != 0 {
        mark.voluntary -= 1;
    } else {
        mark.involuntary -= 1;
    }
    // SAFETY: as above.
    unsafe { (*record).mark = mark };
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(cpu) = CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY (this function): this CPU's slot (see "Safety" in mod.rs), a helper call.
    let (start, parked) = if unsafe { (*cpu).tid == tid && (*cpu).ts_ns != 0 } {
        let start = unsafe { *cpu };
        unsafe { (*cpu).ts_ns = 0 };
        (start, false)
    } else {
        match parked_start() {
            Some(start) => (start, true),
            None => return 0,
        }
    };
    let latency = latency_since(start.ts_ns, unsafe { bpf_ktime_get_ns() });
    // A start from the slot never left the CPU: all on-CPU.
    let split = if parked && split::split_on() {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        split::between(&start.mark, &split::mark::<Probe>(task), latency)
    } else {
        Split::default()
    };
    let nr = key_nr(start.nr);
    let words = (
        key_low(start.tgid, start.incarnation),
        key_high(nr, start.abi, shard(start.tid == start.tgid)),
    );
    let Some(cached) = cpu_cached_slot(nr) else {
        return 0;
    };
    // arg 1 is the return value; -4095..-1 are errnos.
    add_timed(
        words,
        cached,
        latency,
        ctx.arg(1),
        split,
        |(low, high), errno| capture::<Probe>(ctx.arg::<u64>(0) as *const u8, low, high, errno),
    );
    0
}

/// The start of a syscall whose thread left the CPU while in it (or whose exit runs on another
/// CPU), taken out of the thread's STARTS record. None when there is none: the process is
/// filtered out (checked first: with a pid or cgroup filter, most exits here are of processes
/// left out), the entry was skipped (number -1, a filtered syscall), or never seen (counted).
#[inline(never)]
fn parked_start() -> Option<Start> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pid_wanted((pid_tgid >> 32) as u32) || !cgroup_wanted() {
        return None;
    }
    let Some(record) = STARTS.get_ptr_mut(pid_tgid as u32) else {
        bump(COUNTER_UNMATCHED_EXITS);
        return None;
    };
    // SAFETY: a STARTS value pointer, checked for null.
    let start = unsafe { *record };
    if start.ts_ns == 0 {
        return None;
    }
    unsafe { (*record).ts_ns = 0 };
    Some(start)
}
