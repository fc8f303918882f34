//! The kernel's records' keys as the store's.

use profiler_common::{HistKey, ABI_COMPAT, ABI_NATIVE};

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

pub(super) fn abi_byte(abi: Abi) -> u8 {
    match abi {
        Abi::Native => ABI_NATIVE,
        Abi::Compat => ABI_COMPAT,
    }
}

pub(super) fn syscall_key(abi: u8, nr: u32) -> SyscallKey {
    SyscallKey {
        abi: Abi::from_kernel(abi),
        nr,
    }
}
