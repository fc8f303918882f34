//! The keys every layer above the kernel shares: a process incarnation and a syscall.

use serde::{Deserialize, Serialize};

use crate::syscalls::{self, Abi};

/// For the maps the drain updates once per entry: foldhash is several times cheaper than the
/// standard SipHash, and seeded per map too.
pub type FastMap<K, V> = foldhash::HashMap<K, V>;
pub type FastSet<K> = foldhash::HashSet<K>;

/// One process incarnation: a recycled pid is a different process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcKey {
    pub pid: u32,
    pub incarnation: u32,
}

/// Kept in the checkpoint as the kernel's (ABI byte, number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "(u8, u32)", from = "(u8, u32)")]
pub struct SyscallKey {
    pub abi: Abi,
    pub nr: u32,
}

impl From<SyscallKey> for (u8, u32) {
    fn from(k: SyscallKey) -> Self {
        (k.abi.to_kernel(), k.nr)
    }
}

impl From<(u8, u32)> for SyscallKey {
    fn from((abi, nr): (u8, u32)) -> Self {
        SyscallKey {
            abi: Abi::from_kernel(abi),
            nr,
        }
    }
}

impl SyscallKey {
    /// Whether the syscall table names this number.
    pub fn is_named(self) -> bool {
        syscalls::is_named(self.abi, self.nr)
    }

    /// The key the aggregates over processes — the /metrics groups and per-pid series, the
    /// history — keep this syscall's calls under: its own when the table names it, else its
    /// ABI's `syscalls::UNNAMED`. A program calling thousands of unallocated numbers (a fuzzer,
    /// a test) would otherwise give each aggregate thousands of entries: /metrics past its
    /// response limit for every scraper, the history over a gigabyte. The per-process and
    /// system-wide totals keep every number apart.
    pub fn or_unnamed(self) -> SyscallKey {
        if self.is_named() {
            self
        } else {
            SyscallKey {
                abi: self.abi,
                nr: syscalls::UNNAMED,
            }
        }
    }
}
