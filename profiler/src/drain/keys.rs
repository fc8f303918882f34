//! The kernel's records' keys as the store's.

use profiler_common::HistKey;

use crate::{
    store::{ProcKey, SyscallKey},
    syscalls::Abi,
};

pub(super) fn proc_key(k: &HistKey) -> ProcKey {
    ProcKey {
        pid: k.tgid,
        incarnation: k.incarnation,
    }
}

pub(super) fn syscall_key(abi: u8, nr: u32) -> SyscallKey {
    SyscallKey {
        abi: Abi::from_kernel(abi),
        nr,
    }
}
