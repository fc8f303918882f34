//! The store's memory, counted: a test build's allocator counts what each thread holds, so the
//! tests can state what a process, a series and the store as a whole cost in heap bytes.

#[cfg(test)]
pub mod counting {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };

    /// The system allocator, counting the bytes each thread has allocated and not freed.
    pub struct Counting;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: every call is the system allocator's; the counting only reads the layout.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = HELD.try_with(|h| h.set(h.get() + layout.size() as isize));
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = HELD.try_with(|h| h.set(h.get() - layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let grown = new_size as isize - layout.size() as isize;
            let _ = HELD.try_with(|h| h.set(h.get() + grown));
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes this thread holds (allocated minus freed) since it started.
    pub fn held() -> isize {
        HELD.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::counting::held;
    use crate::{
        store::{histogram::Delta, ProcKey, Store, SyscallKey},
        syscalls::Abi,
    };

    /// A short-lived process's calls: `syscalls` distinct syscalls, each with `buckets`
    /// latencies and a failure.
    fn calls(s: &mut Store, pid: u32, syscalls: u32, buckets: usize) {
        let key = ProcKey {
            pid,
            incarnation: 1,
        };
        s.identify(key, "sh", 7);
        for nr in 0..syscalls {
            let sc = SyscallKey {
                abi: Abi::Native,
                nr,
            };
            let d = Delta {
                errors: 1,
                total_ns: 1000,
                split: Default::default(),
                buckets: (0..buckets).map(|b| (40 + 3 * b, 2)).collect(),
            };
            s.add(key, sc, &d);
            s.add_errno(key, sc, 2, 1);
        }
    }

    fn now() -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }

    /// What an exited process of 20 syscalls, each with 5 latency buckets and a failure, holds:
    /// 9,868 bytes when its syscalls and errnos were B-trees, 4,260 as sorted vectors, 5,185
    /// once each histogram and category also summed where its time went (24 bytes each), 4,864
    /// since a syscall's one errno is kept in its map, not in an allocation of its own.
    #[test]
    fn an_exited_process_of_20_syscalls_holds_under_5_5_kib() {
        let mut s = Store::for_test(Duration::from_secs(300), 100_000);
        let before = held();
        for pid in 1..=1000 {
            calls(&mut s, pid, 20, 5);
            s.mark_exited(
                ProcKey {
                    pid,
                    incarnation: 1,
                },
                now(),
            );
        }
        s.finish_drain(now());
        let per_process = (held() - before) / 1000;
        assert!(
            (3_000..5_500).contains(&per_process),
            "{per_process} B a process"
        );
    }

    /// The store's share of the daemon's bound (docs/performance.md): --max-exited's 10,000
    /// exited processes as above, and 10,000 live series (100 processes of 100 syscalls).
    #[test]
    fn a_full_store_holds_under_54_mib() {
        let mut s = Store::for_test(Duration::from_secs(300), 10_000);
        let before = held();
        for pid in 1..=12_000 {
            calls(&mut s, pid, 20, 5);
            s.mark_exited(
                ProcKey {
                    pid,
                    incarnation: 1,
                },
                now(),
            );
            if pid % 1000 == 0 {
                s.finish_drain(now());
            }
        }
        for pid in 20_001..=20_100 {
            calls(&mut s, pid, 100, 5);
        }
        s.finish_drain(now());
        assert_eq!(s.processes().len(), 10_100);
        let mib = (held() - before) as f64 / f64::from(1 << 20);
        eprintln!("a full store: {mib:.1} MiB");
        assert!(mib < 54.0, "{mib:.1} MiB");
    }
}
