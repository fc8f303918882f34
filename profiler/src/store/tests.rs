//! The store's tests: its totals, expiry and in-flight lists, and (in `metrics`) the /metrics
//! aggregates it keeps as the drain adds to it.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use super::*;
use crate::syscalls::{self, Abi, Category};

const P1: ProcKey = ProcKey {
    pid: 1,
    incarnation: 10,
};
const P2: ProcKey = ProcKey {
    pid: 2,
    incarnation: 20,
};
const GETPID: SyscallKey = SyscallKey {
    abi: Abi::Native,
    nr: 39,
};

fn delta(bucket: usize, n: u64, total: u64, errors: u64) -> Delta {
    Delta {
        errors,
        total_ns: total,
        split: Default::default(),
        buckets: vec![(bucket, n)],
    }
}

#[test]
fn totals_accumulate_per_process_and_system_wide() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    s.add(P1, GETPID, &delta(100, 2, 500, 0));
    s.add(P1, GETPID, &delta(101, 3, 700, 1));
    s.add(P2, GETPID, &delta(100, 1, 100, 1));
    let p1 = &s.processes[&P1].syscalls[&GETPID].hist;
    assert_eq!((p1.count, p1.errors, p1.total_ns), (5, 1, 1200));
    let sys = &s.system[&GETPID].hist;
    assert_eq!((sys.count, sys.errors, sys.total_ns), (6, 2, 1300));
    let cat = s.processes[&P1].categories()[&Category::Process];
    assert_eq!((cat.count, cat.errors, cat.total_ns), (5, 1, 1200));
    assert_eq!(s.processes[&P1].total, cat);
}

#[test]
fn a_recycled_pid_is_a_different_process() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    let reborn = ProcKey {
        pid: 1,
        incarnation: 99,
    };
    s.add(P1, GETPID, &delta(1, 5, 5, 0));
    s.add(reborn, GETPID, &delta(1, 2, 2, 0));
    assert_eq!(s.processes[&P1].total.count, 5);
    assert_eq!(s.processes[&reborn].total.count, 2);
}

#[test]
fn errnos_add_up_per_process_and_system_wide() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    s.add_errno(P1, GETPID, 2, 3);
    s.add_errno(P1, GETPID, 2, 4);
    s.add_errno(P2, GETPID, 9, 1);
    s.add_errno(P2, GETPID, 9, 0);
    assert_eq!(
        s.processes[&P1].syscalls[&GETPID].errnos,
        [(2, 7)].into_iter().collect()
    );
    assert_eq!(
        s.system[&GETPID].errnos,
        [(2, 7), (9, 1)].into_iter().collect()
    );
}

#[test]
fn exited_processes_leave_after_retention_but_system_totals_stay() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    s.add(P1, GETPID, &delta(50, 4, 400, 0));
    s.add(P2, GETPID, &delta(50, 1, 100, 0));
    let t0 = Instant::now();
    let wall = SystemTime::now();
    s.mark_exited(P1, (t0, wall));
    // A second exit notice does not restart the clock.
    s.mark_exited(P1, (t0 + Duration::from_secs(30), wall));
    s.finish_drain((t0 + Duration::from_secs(59), wall));
    assert!(s.processes.contains_key(&P1));
    s.finish_drain((t0 + Duration::from_secs(60), wall));
    assert!(!s.processes.contains_key(&P1));
    assert!(
        s.processes.contains_key(&P2),
        "running processes never expire"
    );
    assert_eq!(s.system[&GETPID].hist.count, 5);
    assert_eq!(s.drains, 2);
}

#[test]
fn exited_processes_beyond_the_cap_leave_oldest_first() {
    let mut s = Store::for_test(Duration::from_secs(3600), 2);
    let t0 = s.started.0;
    let wall = SystemTime::now();
    let keys: Vec<ProcKey> = (1..=4)
        .map(|pid| ProcKey {
            pid,
            incarnation: 1,
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        s.add(*k, GETPID, &delta(1, 1, 1, 0));
        s.mark_exited(*k, (t0 + Duration::from_secs(i as u64), wall));
    }
    s.add(P1, GETPID, &delta(1, 1, 1, 0));
    s.finish_drain((t0 + Duration::from_secs(10), wall));
    let mut left: Vec<u32> = s.processes.keys().map(|k| k.pid).collect();
    left.sort();
    // pid 1 here is P1, alive; the exited pids 1 and 2 left first.
    assert_eq!(left, vec![1, 3, 4]);
    assert!(s.processes.contains_key(&P1));
    assert_eq!(s.evicted_early, 2);
    assert_eq!(
        s.system[&GETPID].hist.count, 5,
        "system totals keep evicted processes' calls"
    );
}

#[test]
fn a_process_new_in_a_drain_is_last_seen_no_earlier_than_first_seen() {
    // The drain takes its time before it adds, and the store stamps a new process when it
    // adds its first calls: later.
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    let drain_began = (Instant::now(), SystemTime::now() - Duration::from_millis(5));
    s.add(P1, GETPID, &delta(100, 2, 500, 0));
    s.finish_drain(drain_began);
    let p = &s.processes[&P1];
    assert!(p.first_seen > drain_began.1);
    assert_eq!(p.last_seen, p.first_seen);
}

#[test]
fn time_share_covers_the_last_interval_only() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    let t0 = s.started.0;
    let wall = SystemTime::now();
    // 600 ms of syscall time in a 1 s interval.
    s.add(P1, GETPID, &delta(200, 1, 600_000_000, 0));
    s.finish_drain((t0 + Duration::from_secs(1), wall));
    assert!((s.processes[&P1].syscall_time_share - 0.6).abs() < 1e-9);
    s.finish_drain((t0 + Duration::from_secs(2), wall));
    assert_eq!(s.processes[&P1].syscall_time_share, 0.0);
}

#[test]
fn category_share_of_syscall_time() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    let futex = SyscallKey {
        abi: Abi::Native,
        nr: syscalls_nr("futex"),
    };
    s.add(P1, futex, &delta(200, 1, 600, 0));
    s.add(P1, GETPID, &delta(200, 1, 400, 0));
    let p = &s.processes[&P1];
    let cats = p.categories();
    assert!((p.share_of_time(&cats[&Category::Sync]) - 0.6).abs() < 1e-9);
    assert!((p.share_of_time(&cats[&Category::Process]) - 0.4).abs() < 1e-9);
    assert!(
        !cats.contains_key(&Category::Network),
        "no calls, no category"
    );
}

fn syscalls_nr(name: &str) -> u32 {
    (0..1000)
        .find(|&nr| syscalls::name(Abi::Native, nr) == name)
        .unwrap()
}

#[test]
fn in_flight_snapshot_replaces_the_previous_one() {
    let mut s = Store::for_test(Duration::from_secs(60), 1000);
    s.add(P1, GETPID, &delta(1, 1, 1, 0));
    let read = SyscallKey {
        abi: Abi::Native,
        nr: 0,
    };
    let one = InFlight {
        syscall: read,
        count: 1,
        oldest_age_ns: 5,
    };
    s.set_in_flight(HashMap::from([(P1, vec![one]), (P2, vec![one])]));
    assert_eq!(s.processes[&P1].in_flight, vec![one]);
    assert_eq!(
        s.processes[&P2].in_flight,
        vec![one],
        "listed with no completed calls"
    );
    s.set_in_flight(HashMap::new());
    assert!(s.processes[&P1].in_flight.is_empty());
}

#[test]
fn names_follow_execve() {
    let mut s = Store::for_test(Duration::ZERO, 1000);
    s.add(P1, GETPID, &delta(1, 1, 1, 0));
    s.identify(P1, "bash", 42);
    s.identify(P1, "ls", 0);
    assert_eq!(s.processes[&P1].comm, "ls");
    assert_eq!(
        s.processes[&P1].cgroup_id, 42,
        "an unknown id does not erase a known one"
    );
}

#[test]
fn empty_deltas_create_nothing() {
    let mut s = Store::for_test(Duration::ZERO, 1000);
    s.add(P1, GETPID, &Delta::default());
    assert!(s.processes.is_empty());
    assert!(s.system.is_empty());
}

/// The aggregates, through the store that feeds them.
mod metrics {
    use std::time::{Duration, SystemTime};

    use super::super::{
        aggregates::{MetricsConfig, OTHER},
        histogram::Delta,
        ProcKey, Store, StoreConfig, SyscallKey,
    };
    use crate::syscalls::Abi;

    const GETPID: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 39,
    };

    fn key(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            incarnation: 1,
        }
    }

    fn delta(n: u64, total_ns: u64) -> Delta {
        Delta {
            errors: 0,
            total_ns,
            split: Default::default(),
            buckets: vec![(100, n)],
        }
    }

    fn store(config: MetricsConfig) -> Store {
        Store::new(StoreConfig {
            retention: Duration::from_secs(60),
            max_exited: 1000,
            latency: true,
            time_split: true,
            metrics: config,
            bpf_stats_enabled: false,
        })
    }

    fn group_count(s: &Store, comm: &str) -> u64 {
        s.metrics
            .groups
            .iter()
            .filter(|(k, _)| k.comm == comm)
            .map(|(_, g)| g.syscalls[&GETPID].hist.count)
            .sum()
    }

    #[test]
    fn groups_stay_monotonic_when_processes_expire() {
        let mut s = store(MetricsConfig::default());
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.identify(key(1), "nginx", 0);
        s.identify(key(2), "nginx", 0);
        s.add(key(1), GETPID, &delta(3, 30));
        s.add(key(2), GETPID, &delta(4, 40));
        s.add_errno(key(2), GETPID, 2, 1);
        s.mark_exited(key(1), (t0, wall));
        s.finish_drain((t0 + Duration::from_secs(61), wall));
        assert!(!s.processes.contains_key(&key(1)), "process expired");
        assert_eq!(group_count(&s, "nginx"), 7, "its calls stay in the group");
        let g = s.metrics.groups.values().next().unwrap();
        assert_eq!(g.syscalls[&GETPID].errnos[&2], 1);
        assert_eq!(g.syscalls[&GETPID].hist.total_ns, 70);
    }

    #[test]
    fn a_group_leaves_after_retention_once_no_process_of_it_runs() {
        let mut s = store(MetricsConfig::default());
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.identify(key(1), "cron", 0);
        s.add(key(1), GETPID, &delta(1, 1));
        s.finish_drain((t0, wall));
        // Alive and idle well past retention: kept, so its counters never restart.
        s.finish_drain((t0 + Duration::from_secs(600), wall));
        assert_eq!(group_count(&s, "cron"), 1);
        s.mark_exited(key(1), (t0 + Duration::from_secs(600), wall));
        s.finish_drain((t0 + Duration::from_secs(601), wall));
        assert_eq!(
            group_count(&s, "cron"),
            1,
            "exited, idle: still within retention"
        );
        s.finish_drain((t0 + Duration::from_secs(700), wall));
        assert!(s.metrics.groups.is_empty(), "exited and idle for retention");
    }

    #[test]
    fn groups_past_the_cap_fold_into_other() {
        let mut s = store(MetricsConfig {
            max_groups: 2,
            ..MetricsConfig::default()
        });
        for (pid, comm) in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "a")] {
            s.identify(key(pid), comm, 0);
            s.add(key(pid), GETPID, &delta(1, 1));
        }
        assert_eq!(group_count(&s, "a"), 2);
        assert_eq!(group_count(&s, "b"), 1);
        assert_eq!(group_count(&s, OTHER), 2, "c and d");
        assert_eq!(s.metrics.groups.len(), 3, "the cap plus the fold");
    }

    /// The groups' and the system's totals and the history after two batches of many
    /// processes of a few groups, some syscalls failing, with at most `groups` (group,
    /// syscall) and `syscalls` syscall sums a batch.
    fn totals_after_batches(groups: usize, syscalls: usize) -> (Vec<String>, Vec<String>, String) {
        use super::super::{histogram::DeltaRef, Gain};
        let config = MetricsConfig {
            per_pid: true,
            top_pids: 6,
            ..MetricsConfig::default()
        };
        let mut s = store(config).with_drain_sums(groups, syscalls);
        let comms = ["nginx", "cron", "sshd"];
        for batch in 0..2u64 {
            let mut gains = Vec::new();
            for pid in 1..=12u32 {
                s.identify(key(pid), comms[pid as usize % 3], 0);
                for nr in [0, 1, 39, 257, 1000, 2000] {
                    gains.push((
                        key(pid),
                        SyscallKey {
                            abi: Abi::Native,
                            nr,
                        },
                        pid as u64 + batch,
                    ));
                }
            }
            let buckets: Vec<Vec<(usize, u64)>> = gains
                .iter()
                .map(|&(_, sc, n)| vec![(sc.nr as usize % 7, n), (60 + sc.nr as usize % 5, 1)])
                .collect();
            let failed = [(2u32, 1u64)];
            s.add_batch(gains.iter().zip(&buckets).map(|(&(proc, sc, n), b)| Gain {
                proc,
                sc,
                delta: DeltaRef {
                    errors: u64::from(sc.nr == 257),
                    total_ns: n * 10,
                    split: Default::default(),
                    buckets: b,
                },
                errnos: if sc.nr == 257 { &failed } else { &[] },
            }));
        }
        // Each map stayed sorted with the unnamed key among the named (it is walked by cursor).
        let maps = s.metrics.groups.values().map(|g| &g.syscalls);
        for m in maps
            .chain(s.metrics.promoted.values())
            .chain([&s.metrics.other])
        {
            let keys: Vec<&SyscallKey> = m.iter().map(|(k, _)| k).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
            assert_eq!(keys.len(), 5, "4 named syscalls and the unnamed: {keys:?}");
        }
        let mut groups: Vec<String> = s
            .metrics
            .groups
            .iter()
            .flat_map(|(k, g)| {
                g.syscalls
                    .iter()
                    .map(move |(sc, t)| format!("{} {sc:?} {t:?}", k.comm))
            })
            .collect();
        groups.sort();
        let system = s
            .system()
            .iter()
            .map(|(sc, t)| format!("{sc:?} {t:?}"))
            .collect();
        (groups, system, format!("{:?}", s.history()))
    }

    #[test]
    fn totals_and_history_are_the_same_summed_densely_or_not() {
        let sparse = totals_after_batches(0, 0);
        // Unallocated 1000 and 2000 are one unnamed syscall in the groups and the history,
        // two in the system totals.
        assert_eq!(
            sparse.0.len(),
            15,
            "3 groups of 4 named syscalls and the unnamed"
        );
        assert_eq!(
            sparse.0.iter().filter(|g| g.contains("nr: 65535")).count(),
            3
        );
        assert_eq!(sparse.1.len(), 6, "6 syscalls");
        assert!(sparse.2.contains("errnos: {2: 24}"), "{}", sparse.2);
        assert!(sparse.2.contains("nr: 65535"), "{}", sparse.2);
        assert!(!sparse.2.contains("nr: 1000"), "{}", sparse.2);
        let all = (super::super::MAX_GROUP_SUMS, super::super::MAX_SYSCALL_SUMS);
        for (groups, syscalls) in [(1, 0), (0, 1), (5, 2), (1, 3), (5, all.1), (all.0, 0), all] {
            assert_eq!(
                totals_after_batches(groups, syscalls),
                sparse,
                "{groups} dense group sums, {syscalls} dense syscall sums"
            );
        }
    }

    #[test]
    fn top_k_processes_get_series_the_rest_fold_into_other() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 2,
            max_groups: 1000,
        });
        let t0 = s.started.0;
        let wall = SystemTime::now();
        // While there is room, a new process is promoted at once: all its calls are its own.
        s.add(key(1), GETPID, &delta(1, 100));
        s.add(key(2), GETPID, &delta(1, 200));
        s.add(key(3), GETPID, &delta(5, 900));
        assert_eq!(s.metrics.promoted[&key(1)][&GETPID].hist.count, 1);
        assert_eq!(s.metrics.promoted[&key(2)][&GETPID].hist.count, 1);
        assert!(!s.metrics.promoted.contains_key(&key(3)));
        assert_eq!(s.metrics.other[&GETPID].hist.count, 5);
        // Re-ranked by syscall time: 3 (900) and 2 (200) are the top 2; 1 drops out.
        s.finish_drain((t0 + Duration::from_secs(1), wall));
        let mut top: Vec<u32> = s.metrics.promoted.keys().map(|k| k.pid).collect();
        top.sort();
        assert_eq!(top, vec![2, 3]);
        // 3 counts from its promotion; 1's new calls go to other. Other never shrinks.
        s.add(key(3), GETPID, &delta(2, 10));
        s.add(key(1), GETPID, &delta(4, 10));
        assert_eq!(s.metrics.promoted[&key(3)][&GETPID].hist.count, 2);
        assert_eq!(s.metrics.other[&GETPID].hist.count, 9);
        // Every call counted exactly once across pid series and other.
        let all: u64 = s
            .metrics
            .promoted
            .values()
            .map(|t| t[&GETPID].hist.count)
            .sum::<u64>()
            + s.metrics.other[&GETPID].hist.count;
        assert_eq!(all, 1 + 2 + 9);
        assert_eq!(
            all + 1,
            s.system[&GETPID].hist.count,
            "1's first call left with its series"
        );
    }

    #[test]
    fn a_recycled_pid_has_one_series() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 10,
            max_groups: 1000,
        });
        let wall = SystemTime::now();
        let reborn = ProcKey {
            pid: 1,
            incarnation: 2,
        };
        s.add(key(1), GETPID, &delta(1, 100));
        s.processes.get_mut(&key(1)).unwrap().first_seen = wall - Duration::from_secs(5);
        s.mark_exited(key(1), (s.started.0, wall));
        s.add(reborn, GETPID, &delta(1, 1));
        s.finish_drain((s.started.0, wall));
        let promoted: Vec<ProcKey> = s.metrics.promoted.keys().copied().collect();
        assert_eq!(promoted, vec![reborn]);
    }

    #[test]
    fn an_exited_process_series_expires_with_it() {
        let mut s = store(MetricsConfig {
            per_pid: true,
            top_pids: 10,
            max_groups: 1000,
        });
        let t0 = s.started.0;
        let wall = SystemTime::now();
        s.add(key(1), GETPID, &delta(1, 100));
        s.add(key(2), GETPID, &delta(1, 100));
        s.mark_exited(key(1), (t0, wall));
        s.finish_drain((t0 + Duration::from_secs(59), wall));
        assert!(
            s.metrics.promoted.contains_key(&key(1)),
            "kept for retention"
        );
        s.finish_drain((t0 + Duration::from_secs(60), wall));
        assert!(
            !s.metrics.promoted.contains_key(&key(1)),
            "gone with the process"
        );
        assert!(s.metrics.promoted.contains_key(&key(2)));
    }
}

/// Current rates (recent.rs): totals less the older snapshot.
mod recent {
    use std::sync::Arc;

    use super::*;
    use crate::store::recent::Activity;

    const READ: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 0,
    };

    fn key(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            incarnation: 1,
        }
    }

    fn reads(s: &mut Store, pid: u32, n: u64, failed: u64) {
        s.add(
            key(pid),
            READ,
            &Delta {
                errors: failed,
                total_ns: n * 10,
                split: Default::default(),
                buckets: vec![(40, n)],
            },
        );
        if failed > 0 {
            s.add_errno(key(pid), READ, 11, failed);
        }
    }

    fn at(s: &Store, secs: u64) -> (Instant, SystemTime) {
        let d = Duration::from_secs(secs);
        (s.started().0 + d, s.started().1 + d)
    }

    fn activity(s: &Store, pid: u32) -> Option<Activity> {
        s.processes()[&key(pid)].activity_since(s.epochs().start.1)
    }

    #[test]
    fn the_window_holds_what_happened_since_the_older_snapshot() {
        let mut s = Store::for_test(Duration::from_secs(600), 100);
        reads(&mut s, 1, 100, 10);
        s.finish_drain(at(&s, 1));
        // No snapshot yet: the window is since the daemon started.
        assert_eq!(activity(&s, 1).unwrap().sums[0].1.count, 100);
        s.finish_drain(at(&s, 5));
        reads(&mut s, 1, 7, 1);
        s.finish_drain(at(&s, 10));
        // Snapshots at 5 s (100 calls) and 10 s: the window is from 5 s.
        let a = activity(&s, 1).unwrap();
        assert_eq!((a.sums[0].1.count, a.sums[0].1.errors), (7, 1));
        assert_eq!(a.errnos, [((READ, 11), 1)]);
        s.finish_drain(at(&s, 15));
        assert_eq!(
            activity(&s, 1).unwrap(),
            Activity::default(),
            "idle since 10 s"
        );
    }

    #[test]
    fn an_idle_process_shares_one_snapshot_and_wakes_exactly() {
        let mut s = Store::for_test(Duration::from_secs(600), 100);
        reads(&mut s, 1, 100, 10);
        s.finish_drain(at(&s, 5));
        s.finish_drain(at(&s, 10));
        let p = &s.processes()[&key(1)];
        let (base, next) = (p.base.clone().unwrap(), p.next_base.clone().unwrap());
        assert!(Arc::ptr_eq(&base, &next), "idle: one snapshot for both");
        assert_eq!(activity(&s, 1).unwrap(), Activity::default());
        // A call after the shared snapshot: the window sees it, and the next snapshot is new.
        reads(&mut s, 1, 3, 2);
        let a = activity(&s, 1).unwrap();
        assert_eq!((a.sums[0].1.count, a.sums[0].1.errors), (3, 2));
        s.finish_drain(at(&s, 15));
        let p = &s.processes()[&key(1)];
        assert!(!Arc::ptr_eq(
            p.base.as_ref().unwrap(),
            p.next_base.as_ref().unwrap()
        ));
        assert_eq!(activity(&s, 1).unwrap().sums[0].1.count, 3);
    }

    #[test]
    fn a_process_that_exited_before_the_window_has_no_activity() {
        let mut s = Store::for_test(Duration::from_secs(600), 100);
        reads(&mut s, 1, 100, 100);
        s.mark_exited(key(1), at(&s, 1));
        s.finish_drain(at(&s, 1));
        s.finish_drain(at(&s, 5));
        // Exited inside the window [0, now]: what it did counts.
        assert_eq!(activity(&s, 1).unwrap().sums[0].1.errors, 100);
        s.finish_drain(at(&s, 10));
        assert_eq!(
            activity(&s, 1),
            None,
            "exited before the window began at 5 s"
        );
        reads(&mut s, 2, 3, 0);
        s.processes.get_mut(&key(2)).unwrap().first_seen = at(&s, 11).1;
        s.finish_drain(at(&s, 12));
        assert_eq!(
            activity(&s, 2).unwrap().sums[0].1.count,
            3,
            "first seen inside it"
        );
        assert!(s.processes()[&key(1)].next_base.is_none());
    }
}
