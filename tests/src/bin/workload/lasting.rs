//! The workload's modes that last until told to stop on stdin: `restarts` and `live-series`
//! (see the top of workload.rs).

use std::{
    ffi::CString,
    io::BufRead,
    ptr,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{raw_calls_each, reap, say, shared, spawn, usage};

fn raw_calls(nr: libc::c_long, n: usize) {
    for _ in 0..n {
        unsafe { libc::syscall(nr) };
    }
}

/// A pipe's (read, write) ends.
fn pipe() -> (libc::c_int, libc::c_int) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    (fds[0], fds[1])
}

fn read_u32(fd: libc::c_int) -> Option<u32> {
    let mut b = [0u8; 4];
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 4) };
    (n == 4).then(|| u32::from_ne_bytes(b))
}

fn write_u32(fd: libc::c_int, v: u32) {
    let n = unsafe { libc::write(fd, v.to_ne_bytes().as_ptr().cast(), 4) };
    assert_eq!(n, 4, "pipe write failed");
}

pub fn restarts(exiting_nr: libc::c_long) {
    let (held_nr, live_nr) = (exiting_nr + 1, exiting_nr + 2);
    let comm = format!("rst{}", std::process::id() % 1_000_000);
    let c = CString::new(comm.clone()).unwrap();
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    // The live child: told how many calls to make, says when it has.
    let (todo_r, todo_w) = pipe();
    let (done_r, done_w) = pipe();
    let live = spawn(|| {
        // Its own copy of the write end would keep it from ever seeing EOF.
        unsafe { libc::close(todo_w) };
        while let Some(n) = read_u32(todo_r) {
            raw_calls(live_nr, n as usize);
            write_u32(done_w, n);
        }
    });
    // Held children: each says it made its calls, then waits for a byte to exit.
    let (held_r, held_w) = pipe();
    let (release_r, release_w) = pipe();
    let mut held = Vec::new();
    say(format!(
        "{{\"pid\": {}, \"comm\": \"{comm}\", \"live_pid\": {live}}}",
        std::process::id()
    ));
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| -> usize {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| usage(&format!("bad command {line}")))
        };
        match words.first().copied() {
            Some("exit") => {
                for _ in 0..arg(1) {
                    let n = arg(2);
                    reap(spawn(|| raw_calls(exiting_nr, n)));
                }
            }
            Some("hold") => {
                let n = arg(1);
                held.push(spawn(|| {
                    raw_calls(held_nr, n);
                    write_u32(held_w, 1);
                    read_u32(release_r);
                }));
                read_u32(held_r);
            }
            Some("release") => {
                for _ in &held {
                    write_u32(release_w, 1);
                }
                held.drain(..).for_each(reap);
            }
            Some("live") => {
                write_u32(todo_w, arg(1) as u32);
                read_u32(done_r);
            }
            _ => usage(&format!("unknown command {line}")),
        }
        say(format!("{{\"done\": \"{line}\"}}"));
    }
    for _ in &held {
        write_u32(release_w, 1);
    }
    held.into_iter().for_each(reap);
    unsafe { libc::close(todo_w) };
    reap(live);
}

pub fn live_series(children: usize, nrs: usize) {
    let stop = shared::<AtomicU32>(1);
    let started = shared::<AtomicU32>(1);
    let (stop_ref, started_ref) = unsafe { (&*stop, &*started) };
    let pids: Vec<libc::pid_t> = (0..children)
        .map(|_| {
            spawn(|| {
                let mut first = true;
                while stop_ref.load(Ordering::Acquire) == 0 {
                    raw_calls_each(1100, nrs);
                    if std::mem::take(&mut first) {
                        started_ref.fetch_add(1, Ordering::AcqRel);
                    }
                    let pause = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 100_000_000,
                    };
                    unsafe { libc::nanosleep(&pause, ptr::null_mut()) };
                }
            })
        })
        .collect();
    while started_ref.load(Ordering::Acquire) < children as u32 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    say(format!(
        "{{\"pid\": {}, \"children\": {children}}}",
        std::process::id()
    ));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    stop_ref.store(1, Ordering::Release);
    pids.into_iter().for_each(reap);
}
