//! A process with a known syscall profile, for the end-to-end tests.
//!
//! `workload GETPPID ENOENT SLEEPS` forks a child that makes exactly GETPPID getppid() calls,
//! ENOENT openat() calls on a missing path (each failing with ENOENT) and SLEEPS nanosleep(2 ms)
//! calls, through raw syscalls and nothing else, then exits. The child's own timing of each sleep
//! (clock_gettime, served by the vDSO, so no syscall) goes to memory shared with the parent. The
//! parent waits for it and prints `{"child_pid": …, "sleep_median_ns": …}`.
//!
//! A child is used because the parent's own start-up (dynamic loader, runtime) makes syscalls we
//! do not control; a freshly forked child makes none but ours.

use std::{ffi::CString, process::exit, ptr};

const MAX_SLEEPS: usize = 4096;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn arg(args: &[String], i: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: workload GETPPID ENOENT SLEEPS (SLEEPS <= {MAX_SLEEPS})");
        exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (getppids, enoents, sleeps) = (arg(&args, 1), arg(&args, 2), arg(&args, 3));
    if sleeps > MAX_SLEEPS {
        eprintln!("SLEEPS must be at most {MAX_SLEEPS}");
        exit(2);
    }
    let missing = CString::new("/nonexistent/syscall-profiler-workload").unwrap();
    let len = MAX_SLEEPS * std::mem::size_of::<u64>();
    // SAFETY: anonymous shared mapping, checked for failure, sized for MAX_SLEEPS u64s.
    let shared = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(shared, libc::MAP_FAILED, "mmap failed");
    let durations = shared as *mut u64;
    // Tight timers, so 2 ms sleeps take close to 2 ms.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };

    // A raw clone, not glibc's fork(): that one makes syscalls of its own in the child
    // (set_robust_list). The child only makes raw syscalls and reads the vDSO clock.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    match pid as libc::pid_t {
        -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
        0 => unsafe {
            for _ in 0..getppids {
                libc::syscall(libc::SYS_getppid);
            }
            for _ in 0..enoents {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    missing.as_ptr(),
                    libc::O_RDONLY,
                );
            }
            let two_ms = libc::timespec {
                tv_sec: 0,
                tv_nsec: 2_000_000,
            };
            for i in 0..sleeps {
                let t0 = now_ns();
                libc::syscall(
                    libc::SYS_nanosleep,
                    &two_ms,
                    ptr::null_mut::<libc::timespec>(),
                );
                *durations.add(i) = now_ns() - t0;
            }
            libc::syscall(libc::SYS_exit_group, 0);
            unreachable!();
        },
        child => {
            let mut status = 0;
            unsafe { libc::waitpid(child, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child failed: status {status}"
            );
            let mut d: Vec<u64> = (0..sleeps).map(|i| unsafe { *durations.add(i) }).collect();
            d.sort_unstable();
            let median = if d.is_empty() {
                0
            } else {
                d[d.len().div_ceil(2) - 1]
            };
            println!("{{\"child_pid\": {child}, \"sleep_median_ns\": {median}}}");
        }
    }
}
