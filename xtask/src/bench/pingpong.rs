//! The context-switch workloads: two tasks pinned to one CPU hand a token back and forth, so
//! every hand-over is a context switch, and the task switched out is always in a syscall (the
//! read or futex wait it sleeps in). Under a profiler this is the `sched_switch` path with a
//! syscall in flight, and a `sys_exit` whose start was parked: what a server that switches
//! constantly pays, where the tight getppid loop never switches at all.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::workload::{allowed_cpus, pin_to, thread_cpu_ns, Cost};

/// Untimed round trips before the timed ones: the tasks' first syscalls allocate tracer state.
fn warm_up(round_trips: u64) -> u64 {
    (round_trips / 10).max(1)
}

/// A file descriptor closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

/// (read end, write end) of a new pipe.
fn pipe() -> Result<(Fd, Fd)> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    Ok((Fd(fds[0]), Fd(fds[1])))
}

fn write_all(fd: &Fd, buf: &[u8]) -> Result<()> {
    let n = unsafe { libc::write(fd.0, buf.as_ptr().cast(), buf.len()) };
    if n != buf.len() as isize {
        bail!("pipe write: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn read_exact(fd: &Fd, buf: &mut [u8]) -> Result<()> {
    let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => bail!("the other side of the ping-pong closed its pipe (it exited)"),
        n if n == buf.len() as isize => Ok(()),
        _ => bail!("pipe read: {}", std::io::Error::last_os_error()),
    }
}

/// `count` round trips: send a byte on `out`, wait for it to come back on `back`.
fn serve(out: &Fd, back: &Fd, count: u64) -> Result<()> {
    let mut b = [0u8; 1];
    for _ in 0..count {
        write_all(out, &b)?;
        read_exact(back, &mut b)?;
    }
    Ok(())
}

/// `count` round trips seen from the other side: wait for a byte on `inbox`, send it back.
fn echo(inbox: &Fd, out: &Fd, count: u64) -> Result<()> {
    let mut b = [0u8; 1];
    for _ in 0..count {
        read_exact(inbox, &mut b)?;
        write_all(out, &b)?;
    }
    Ok(())
}

/// A parent and a forked child on one CPU, passing a byte through two pipes. The on-CPU time
/// is both processes' (the child reports its own over a third pipe).
pub fn pipe_ping_pong(round_trips: u64) -> Result<Cost> {
    let warm = warm_up(round_trips);
    // Before the fork: the child inherits the affinity.
    pin_to(allowed_cpus()?[0])?;
    let (ping_r, ping_w) = pipe()?;
    let (pong_r, pong_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // The child: this process is single-threaded, so it may go on in Rust; it leaves by
        // _exit, never returning into the parent's code.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        drop((ping_w, pong_r, report_r));
        let child = || -> Result<()> {
            echo(&ping_r, &pong_w, warm)?;
            let c0 = thread_cpu_ns()?;
            echo(&ping_r, &pong_w, round_trips)?;
            let c1 = thread_cpu_ns()?;
            write_all(&report_w, &((c1 - c0) as u64).to_le_bytes())
        };
        unsafe { libc::_exit(i32::from(child().is_err())) };
    }
    // The parent keeps only its ends, so the child's death is an end of file here, not a hang.
    drop((ping_r, pong_w, report_w));
    let parent = || -> Result<Cost> {
        serve(&ping_w, &pong_r, warm)?;
        let (t0, c0) = (Instant::now(), thread_cpu_ns()?);
        serve(&ping_w, &pong_r, round_trips)?;
        let (c1, t1) = (thread_cpu_ns()?, Instant::now());
        let mut child_cpu = [0u8; 8];
        read_exact(&report_r, &mut child_cpu).context("reading the child's CPU time")?;
        let cpu = (c1 - c0) as f64 + u64::from_le_bytes(child_cpu) as f64;
        Ok(Cost {
            wall: (t1 - t0).as_nanos() as f64 / round_trips as f64,
            cpu: cpu / round_trips as f64,
        })
    };
    let result = parent();
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let cost = result?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("the ping-pong child failed (wait status {status:#x})");
    }
    Ok(cost)
}

fn futex(word: &AtomicU32, op: i32, val: u32) {
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// `count` turns of thread `me` (0 or 1) on `turn`: wait until it is `me`'s, hand it over,
/// wake the other thread.
fn take_turns(turn: &AtomicU32, me: u32, count: u64) {
    for _ in 0..count {
        loop {
            let now = turn.load(Ordering::Acquire);
            if now == me {
                break;
            }
            // Returns at once if the word is no longer `now`: no lost wake-up.
            futex(turn, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, now);
        }
        turn.store(1 - me, Ordering::Release);
        futex(turn, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
}

/// Two threads of this process on one CPU taking turns on a futex word. The wall time is the
/// first thread's; the on-CPU time is both threads'.
pub fn futex_ping_pong(round_trips: u64) -> Result<Cost> {
    let warm = warm_up(round_trips);
    // Threads inherit the affinity of the thread that creates them: pinned before any exists,
    // neither can fail to pin and leave the other waiting for ever.
    pin_to(allowed_cpus()?[0])?;
    let turn = AtomicU32::new(0);
    let side = |me: u32| -> Result<(f64, f64)> {
        take_turns(&turn, me, warm);
        let (t0, c0) = (Instant::now(), thread_cpu_ns()?);
        take_turns(&turn, me, round_trips);
        let (c1, t1) = (thread_cpu_ns()?, Instant::now());
        Ok(((t1 - t0).as_nanos() as f64, (c1 - c0) as f64))
    };
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| side(0));
        let second = s.spawn(|| side(1));
        (first.join(), second.join())
    });
    let joined = |r: std::thread::Result<Result<(f64, f64)>>| {
        r.unwrap_or_else(|_| bail!("a ping-pong thread panicked"))
    };
    let ((wall, cpu0), (_, cpu1)) = (joined(first)?, joined(second)?);
    Ok(Cost {
        wall: wall / round_trips as f64,
        cpu: (cpu0 + cpu1) / round_trips as f64,
    })
}
