//! The keys every layer above the kernel shares: a process incarnation and a syscall.

use crate::syscalls::Abi;

/// For the maps the drain updates once per entry: foldhash is several times cheaper than the
/// standard SipHash, and seeded per map too.
pub type FastMap<K, V> = foldhash::HashMap<K, V>;
pub type FastSet<K> = foldhash::HashSet<K>;

/// One process incarnation: a recycled pid is a different process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    pub incarnation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    pub abi: Abi,
    pub nr: u32,
}
