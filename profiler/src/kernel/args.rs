//! Failing calls' arguments (profiler-ebpf programs/args.rs): the table of syscalls whose
//! failing calls are looked at, where the saved registers keep the arguments, and the drain's
//! read of what was captured, which empties the map and renews each CPU's budget.

use std::os::fd::AsFd;

use aya::{
    maps::{Array, HashMap, IterableMap, MapData, PerCpuArray, PerCpuValues},
    Ebpf,
};
use profiler_common::{
    ArgKey, ARG_BUDGET_PER_CPU, ARG_KINDS_MAP, ARG_REGS_LEN, ARG_STAT_ALLOWANCE, ARG_STAT_CAPTURED,
    ARG_STAT_FULL, ARG_STAT_MISSED, ARG_STAT_UNREADABLE, FILTER_SYSCALLS_PER_ABI,
};

use super::{batch::Batch, error::Error};
use crate::syscalls::{failing_args, Abi};

/// Byte offsets in `struct pt_regs` of a syscall's arguments 1..=6, native then compat. The
/// layout is the ptrace ABI's (`user_regs_struct`), which never changes.
#[cfg(target_arch = "x86_64")]
pub(super) fn arg_regs() -> [u32; ARG_REGS_LEN] {
    // x86-64: rdi rsi rdx r10 r8 r9; i386: ebx ecx edx esi edi ebp.
    [112, 104, 96, 56, 72, 64, 40, 88, 96, 104, 112, 32]
}

#[cfg(target_arch = "aarch64")]
pub(super) fn arg_regs() -> [u32; ARG_REGS_LEN] {
    // regs[0..6], in both ABIs (arm's r0..r5 are the low halves of x0..x5).
    [0, 8, 16, 24, 32, 40, 0, 8, 16, 24, 32, 40]
}

/// Fills ARG_KINDS, unless capture is off (then it stays empty: no call is looked at).
pub(super) fn fill_kinds(ebpf: &mut Ebpf, off: bool) -> Result<(), Error> {
    if off {
        return Ok(());
    }
    let failed = |source| Error::Filter {
        what: "failing-argument",
        source,
    };
    let map = ebpf
        .map_mut(ARG_KINDS_MAP)
        .ok_or_else(|| Error::MissingMap(ARG_KINDS_MAP.to_string()))?;
    let mut kinds: Array<&mut MapData, u8> = Array::try_from(map).map_err(failed)?;
    for (abi, nr, kind) in failing_args::kinds() {
        if nr >= FILTER_SYSCALLS_PER_ABI {
            continue;
        }
        let index = u32::from(abi == Abi::Compat) * FILTER_SYSCALLS_PER_ABI + nr;
        kinds.set(index, kind, 0).map_err(failed)?;
    }
    Ok(())
}

/// The kernel's capture counters, summed over the CPUs since the programs were loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgStats {
    pub captured: u64,
    pub missed: u64,
    pub unreadable: u64,
    pub full: u64,
}

/// FAILED_ARGS and ARG_STATS, for the drain.
pub struct ArgMaps {
    pub failed: HashMap<MapData, ArgKey, u64>,
    pub stats: PerCpuArray<MapData, u64>,
    read: Batch<ArgKey, u64>,
}

impl ArgMaps {
    pub fn new(failed: HashMap<MapData, ArgKey, u64>, stats: PerCpuArray<MapData, u64>) -> Self {
        Self {
            failed,
            stats,
            read: Batch::default(),
        }
    }

    /// Renews every CPU's budget: `ARG_BUDGET_PER_CPU` captures from what it has captured so
    /// far. At load (before the first drain) and at every drain.
    pub fn renew_budget(&mut self) -> anyhow::Result<ArgStats> {
        let get = |i| self.stats.get(&i, 0);
        let captured = get(ARG_STAT_CAPTURED)?;
        let sum = |v: PerCpuValues<u64>| v.iter().sum::<u64>();
        let stats = ArgStats {
            captured: captured.iter().sum(),
            missed: sum(get(ARG_STAT_MISSED)?),
            unreadable: sum(get(ARG_STAT_UNREADABLE)?),
            full: sum(get(ARG_STAT_FULL)?),
        };
        let allowance: Vec<u64> = captured
            .iter()
            .map(|c| c.saturating_add(ARG_BUDGET_PER_CPU))
            .collect();
        let allowance = PerCpuValues::try_from(allowance)?;
        self.stats.set(ARG_STAT_ALLOWANCE, allowance, 0)?;
        Ok(stats)
    }

    /// Every argument captured since the last call, taken out of the map.
    pub fn take(&mut self) -> std::io::Result<impl Iterator<Item = (&ArgKey, &u64)>> {
        self.read.take(self.failed.map().fd().as_fd())?;
        Ok(self.read.iter())
    }
}
