//! Who the processes are and what they are waiting in: names and cgroups from PROCS (or
//! /proc), and the syscalls in flight grouped per process.

use std::collections::HashMap;

use profiler_common::{ProcInfo, Start};

use super::keys::syscall_key;
use crate::{
    host::procfs,
    store::{FastMap, FastSet, InFlight, ProcKey, Store, SyscallKey},
};

/// Names every process with data or a syscall in flight.
pub(super) fn identify(
    store: &mut Store,
    procs: &FastMap<ProcKey, ProcInfo>,
    with_data: impl Iterator<Item = ProcKey>,
    starts: &[Start],
) {
    let mut named: FastSet<ProcKey> = FastSet::default();
    for key in with_data.chain(starts.iter().map(|s| ProcKey {
        pid: s.tgid,
        incarnation: s.incarnation,
    })) {
        if !named.insert(key) {
            continue;
        }
        match procs.get(&key) {
            Some(info) => store.identify(key, &comm_string(&info.comm), info.cgroup_id),
            None => {
                if let Some(comm) = procfs::comm(key.pid) {
                    store.identify(key, &comm, 0);
                }
            }
        }
    }
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Groups threads' in-flight syscalls per process and syscall: how many, and the oldest's age.
pub(super) fn in_flight(starts: &[Start], now_ns: u64) -> HashMap<ProcKey, Vec<InFlight>> {
    let mut grouped: HashMap<(ProcKey, SyscallKey), (u32, u64)> = HashMap::new();
    for s in starts.iter().filter(|s| s.ts_ns != 0) {
        let key = (
            ProcKey {
                pid: s.tgid,
                incarnation: s.incarnation,
            },
            syscall_key(s.abi, s.nr),
        );
        let e = grouped.entry(key).or_default();
        e.0 += 1;
        e.1 = e.1.max(now_ns.saturating_sub(s.ts_ns));
    }
    let mut out: HashMap<ProcKey, Vec<InFlight>> = HashMap::new();
    for ((p, syscall), (count, oldest_age_ns)) in grouped {
        out.entry(p).or_default().push(InFlight {
            syscall,
            count,
            oldest_age_ns,
        });
    }
    for list in out.values_mut() {
        list.sort_by_key(|f| std::cmp::Reverse(f.oldest_age_ns));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(b"bash");
        assert_eq!(comm_string(&c), "bash");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }

    fn start(tgid: u32, nr: u32, ts_ns: u64) -> Start {
        Start {
            ts_ns,
            nr,
            tgid,
            incarnation: 7,
            tid: tgid,
            abi: 0,
            ..Start::default()
        }
    }

    #[test]
    fn in_flight_groups_threads_and_keeps_the_oldest() {
        let starts = [
            start(10, 0, 1_000),
            start(10, 0, 4_000),
            start(10, 202, 9_000),
            start(11, 0, 0), // not in a syscall
        ];
        let got = in_flight(&starts, 10_000);
        let p10 = &got[&ProcKey {
            pid: 10,
            incarnation: 7,
        }];
        assert_eq!(p10.len(), 2);
        assert_eq!(
            (p10[0].syscall.nr, p10[0].count, p10[0].oldest_age_ns),
            (0, 2, 9_000)
        );
        assert_eq!(
            (p10[1].syscall.nr, p10[1].count, p10[1].oldest_age_ns),
            (202, 1, 1_000)
        );
        assert!(!got.keys().any(|k| k.pid == 11));
    }
}
