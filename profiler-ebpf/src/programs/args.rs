//! The argument behind a failing call (issue 14): at `sys_exit`, only for a call that failed
//! (the caller runs this after counting the errno: successes never get here) of a syscall
//! that takes a path or a sockaddr (`ARG_KINDS`, which the daemon fills per ABI from its
//! syscall tables, and leaves empty with `--capture-args=false`), read the argument from the
//! saved registers and count it per (process, syscall, errno, argument) in `FAILED_ARGS`.
//!
//! The user memory is still the caller's at `sys_exit` (the thread has not returned yet), so
//! the string the call failed on is what is read, except when its page is gone (unmapped, or
//! paged out: a program cannot fault it in): then the failure is counted with the
//! `ARG_UNREADABLE` flag and in `ARG_STAT_UNREADABLE`, never dropped. Bounded: 256 bytes an
//! argument, `FAILED_ARGS_MAX_ENTRIES` distinct ones an interval (full: counted), and a
//! per-CPU budget of captures per interval (beyond it: counted in `ARG_STAT_MISSED`; the
//! failure itself is counted by errno as always).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use profiler_common::{
    ArgKey, ARG_BYTES, ARG_KIND_ARG_MASK, ARG_KIND_DIRFD_SHIFT, ARG_KIND_SOCKADDR, ARG_NO_DIRFD,
    ARG_REGS_LEN, ARG_SOCKADDR, ARG_STATS_LEN, ARG_STAT_ALLOWANCE, ARG_STAT_CAPTURED,
    ARG_STAT_FULL, ARG_STAT_MISSED, ARG_STAT_UNREADABLE, ARG_TRUNCATED, ARG_UNREADABLE,
    FAILED_ARGS_MAX_ENTRIES, FILTER_SYSCALLS_PER_ABI,
};

use super::{add_u64, split::Reader};

// Set by the loader (see profiler_common::GLOBAL_ARG_REGS).
#[no_mangle]
static ARG_REGS: [u32; ARG_REGS_LEN] = [0; ARG_REGS_LEN];

#[map]
static ARG_KINDS: Array<u8> = Array::with_max_entries(2 * FILTER_SYSCALLS_PER_ABI, 0);

#[map]
static ARG_SCRATCH: PerCpuArray<ArgKey> = PerCpuArray::with_max_entries(1, 0);

#[map]
static ARG_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ARG_STATS_LEN, 0);

#[map]
static FAILED_ARGS: HashMap<ArgKey, u64> = HashMap::with_max_entries(FAILED_ARGS_MAX_ENTRIES, 0);

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// One failing call of the histogram `words` names, with `errno`, whose saved registers are at
/// `regs` (a BTF pointer for `Direct`, an address for `Probe`). Inline up to the table lookup,
/// so a failure of a syscall without a path pays a few instructions and no call.
#[inline(always)]
pub(crate) fn capture<R: Reader>(regs: *const u8, low: u64, high: u32, errno: u16) {
    let nr = high & 0xffff;
    let abi = (high >> 16) & 0xff;
    if nr >= FILTER_SYSCALLS_PER_ABI || abi > 1 {
        return;
    }
    let Some(&kind) = ARG_KINDS.get(abi * FILTER_SYSCALLS_PER_ABI + nr) else {
        return;
    };
    if kind & ARG_KIND_ARG_MASK == 0 {
        return;
    }
    capture_kind::<R>(regs, low, (high & 0xff_ffff) | u32::from(kind) << 24, errno);
}

/// [`capture`] for a syscall whose kind (in bits 24.. of `high`, where the shard was) says
/// what to read.
#[inline(never)]
fn capture_kind<R: Reader>(regs: *const u8, low: u64, high: u32, errno: u16) {
    let nr = high & 0xffff;
    let abi = (high >> 16) & 0xff;
    let kind = (high >> 24) as u8;
    let arg = kind & ARG_KIND_ARG_MASK;
    // SAFETY (this function): this CPU's elements of per-CPU arrays (see "Safety" in mod.rs),
    // helper calls whose user addresses the helpers check.
    let (Some(captured), Some(allowance)) = (
        ARG_STATS.get_ptr_mut(ARG_STAT_CAPTURED),
        ARG_STATS.get_ptr(ARG_STAT_ALLOWANCE),
    ) else {
        return;
    };
    if unsafe { *captured >= *allowance } {
        stat(ARG_STAT_MISSED);
        return;
    }
    unsafe { *captured += 1 };
    let Some(key) = ARG_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let key = unsafe { &mut *key };
    // The whole key is hashed: no bytes of the previous capture may stay behind.
    let words = key.bytes.as_mut_ptr() as *mut u64;
    for i in 0..ARG_BYTES / 8 {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    key.tgid = low as u32;
    key.incarnation = (low >> 32) as u32;
    key.nr = nr as u16;
    key.abi = abi as u8;
    key.errno = errno;
    key.flags = 0;
    key.len = 0;
    key._pad = 0;
    let dirfd = (kind >> ARG_KIND_DIRFD_SHIFT) & ARG_KIND_ARG_MASK;
    key.dirfd = if dirfd == 0 {
        ARG_NO_DIRFD
    } else {
        reg_arg::<R>(regs, abi, dirfd) as i32
    };
    let ptr = reg_arg::<R>(regs, abi, arg) as *const core::ffi::c_void;
    let dst = key.bytes.as_mut_ptr() as *mut core::ffi::c_void;
    let readable = if kind & ARG_KIND_SOCKADDR != 0 {
        key.flags = ARG_SOCKADDR;
        read_sockaddr(dst, ptr)
    } else {
        let n = unsafe { bpf_probe_read_user_str(dst, ARG_BYTES as u32, ptr) };
        if n == ARG_BYTES as i64 {
            key.flags = ARG_TRUNCATED;
        }
        key.len = if n > 0 { (n - 1) as u16 } else { 0 };
        n >= 0
    };
    if !readable {
        key.flags |= ARG_UNREADABLE;
        stat(ARG_STAT_UNREADABLE);
    }
    let key: &ArgKey = key;
    if let Some(c) = FAILED_ARGS.get_ptr_mut(key) {
        add_u64(false, c, 1);
        return;
    }
    if FAILED_ARGS.insert(key, 1, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    match FAILED_ARGS.get_ptr_mut(key) {
        Some(c) => add_u64(false, c, 1),
        None => stat(ARG_STAT_FULL),
    }
}

/// A connect's sockaddr into `dst`: the family, then as many bytes as the family has (a fixed
/// number, so a shorter buffer's neighbours never make two keys of one address). False when
/// the memory could not be read.
#[inline(always)]
fn read_sockaddr(dst: *mut core::ffi::c_void, ptr: *const core::ffi::c_void) -> bool {
    // SAFETY (this function): helper calls into the scratch key's bytes, in bounds.
    if unsafe { bpf_probe_read_user(dst, 2, ptr) } < 0 {
        return false;
    }
    let family = unsafe { *(dst as *const u16) };
    let bytes = dst as *mut u8;
    match family {
        AF_INET => unsafe { bpf_probe_read_user(dst, 8, ptr) >= 0 },
        AF_INET6 => unsafe { bpf_probe_read_user(dst, 24, ptr) >= 0 },
        AF_UNIX => {
            let path = unsafe { bytes.add(2) } as *mut core::ffi::c_void;
            let from = unsafe { (ptr as *const u8).add(2) } as *const core::ffi::c_void;
            let n = unsafe { bpf_probe_read_user_str(path, 108, from) };
            if n == 1 {
                // An abstract socket: a NUL, then the name.
                let path = unsafe { bytes.add(3) } as *mut core::ffi::c_void;
                let from = unsafe { (ptr as *const u8).add(3) } as *const core::ffi::c_void;
                return unsafe { bpf_probe_read_user_str(path, 107, from) } >= 0;
            }
            n >= 0
        }
        // The family alone.
        _ => true,
    }
}

/// Argument `n` (1..=6) of a call of ABI `abi`, from the saved registers.
#[inline(always)]
fn reg_arg<R: Reader>(regs: *const u8, abi: u32, n: u8) -> u64 {
    // Constant offsets per arm (globals the verifier knows), so BTF programs load directly.
    let base = if abi == 1 { 6 } else { 0 };
    // A 32-bit call's registers: the low halves.
    let mask = if abi == 1 { 0xffff_ffff } else { u64::MAX };
    let at = |i: usize| R::u64_at(regs, super::global(&ARG_REGS[i]) as usize) & mask;
    match (base, n) {
        (0, 1) => at(0),
        (0, 2) => at(1),
        (0, 3) => at(2),
        (0, 4) => at(3),
        (0, 5) => at(4),
        (0, 6) => at(5),
        (_, 1) => at(6),
        (_, 2) => at(7),
        (_, 3) => at(8),
        (_, 4) => at(9),
        (_, 5) => at(10),
        (_, 6) => at(11),
        _ => 0,
    }
}

#[inline(always)]
fn stat(i: u32) {
    if let Some(c) = ARG_STATS.get_ptr_mut(i) {
        // SAFETY: this CPU's element of a per-CPU array.
        unsafe { *c += 1 };
    }
}
