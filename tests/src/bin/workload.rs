//! Processes with known syscall profiles, for the end-to-end tests. Every mode prints JSON lines
//! on stdout naming the pids the test should look up.
//!
//! Where counts must be exact, the calls are made by a child created with a raw clone (glibc's
//! fork() makes syscalls of its own in the child) that makes only raw syscalls and reads the
//! vDSO clock (no syscall), then exits with exit_group (which never returns, so is never
//! counted). The parent's own start-up (dynamic loader, runtime) is not part of any assertion.
//!
//! Modes:
//!   calls [getppid=N] [enoent=N] [ebadf=N] [eagain=N] [openerrs=N] [sleep=N] [int80=N]
//!         [random=N] [--wait-go]
//!       one child: N getppid; N openat of a missing path (ENOENT); N close(-1) (EBADF);
//!       N openat failing with each of six errnos, in turn (ENOENT, ENOTDIR, EISDIR, EFAULT,
//!       ENAMETOOLONG, EINVAL: more than a histogram keeps in place);
//!       N read of an empty non-blocking pipe (EAGAIN); N nanosleep(2 ms); N getppid through
//!       `int 0x80` (the i386 ABI, x86_64 only); N getrandom of 1 MiB (work in the kernel).
//!       With --wait-go the child spins (no syscalls) until a line arrives on stdin, so a
//!       tracer can attach first.
//!       Prints {"pid", "child_pid"} then {"sleep_median_ns", "sleep_max_ns", "runtime_ns",
//!       "run_delay_ns"}: the last two the child's whole life as the scheduler accounted it
//!       (/proc/PID/schedstat, read before it is reaped).
//!   compute N BYTES   a child makes N getrandom(BYTES) calls: time spent working in the kernel,
//!       at a real-time priority (SCHED_FIFO), so other processes on a busy host do not take its
//!       CPU. Prints {"pid", "child_pid"}.
//!   contend N BYTES   like compute, with a second child that only spins in user space, both
//!       pinned to one CPU: the calls wait their turn for it. Prints {"pid", "child_pid"}.
//!   block SECS|go     a child blocks in read() on a pipe for SECS seconds, or with `go` until a
//!       line arrives on stdin (however slow the test's other steps are). Prints {"child_pid"}.
//!   threads T N [F]   a child runs T threads that each make N getppid (then F close(-1),
//!       EBADF) and exit before it does.
//!   stack-reuse R N   prints {"pid"}, waits for a line on stdin, then R times, on one CPU: a
//!       child makes 3 getppid and exits, then a new thread of this process makes N getppid
//!       (likely on the child's kernel stack). Prints {"getppid": R × N}.
//!   exec-chain D N    this process execs itself D times; each image makes N getppid.
//!   thread-exec N     a child whose second thread execs `exec-chain 0 N` (so takes the
//!       leader's tid). Prints {"pid", "child_pid"} (and the new image its {"pid"}).
//!   storm COUNT       COUNT children, one after another, each one getppid and exit.
//!   series COUNT NRS MS  COUNT children one after another, MS ms apart, each calling NRS
//!       distinct unallocated syscall numbers (1000, 1001, …: ENOSYS) once: COUNT × NRS
//!       (process, syscall) series over time. Prints {"pid", "children", "comm"}.
//!   reuse-pid PID N   like `calls getppid=N`, but the child gets pid PID (via ns_last_pid).
//!   int80-sleep N NS  a child makes N nanosleep(NS ns) through `int 0x80` (i386 ABI, x86_64
//!       only; nothing else on a host makes these, so system-wide figures are exact).
//!       Prints {"pid", "child_pid"}.
//!   live-series P N   P children, each calling N distinct unallocated syscall numbers (1100,
//!       1101, …: ENOSYS) every 100 ms: P × N live (process, syscall) series, until stdin closes.
//!       Prints {"pid", "children"} once all have made their first round.
//!   restarts NR       a controller, named `rst<pid>` (its children inherit the name), driven
//!       by commands on stdin, one per line, each answered with {"done": "<command>"} once its
//!       calls are made. Every call is of an unallocated syscall number, NR, NR + 1 or NR + 2
//!       (ENOSYS), so system-wide figures of these numbers are exactly the controller's:
//!         exit K N     K children, one after another, each make N syscall(NR) and exit
//!         hold N       a child makes N syscall(NR + 1), then waits for `release`
//!         release      every held child exits
//!         live N       the one long-lived child makes N more syscall(NR + 2)
//!       At EOF the live child exits. Prints {"pid", "comm", "live_pid"} first.

#[path = "workload/lasting.rs"]
mod lasting;

use std::{
    ffi::CString,
    io::{BufRead, Write},
    process::exit,
    ptr,
    sync::atomic::{AtomicU32, Ordering},
};

const MAX_SLEEPS: usize = 4096;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn usage(msg: &str) -> ! {
    eprintln!("workload: {msg} (see the top of tests/src/bin/workload.rs)");
    exit(2)
}

fn num(s: Option<&String>) -> usize {
    s.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage("expected a number"))
}

/// Memory shared with the child: written without syscalls on either side.
fn shared<T>(len: usize) -> *mut T {
    // SAFETY: anonymous shared mapping, checked for failure.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len * std::mem::size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p.cast()
}

/// A raw clone: the child runs `child` and exits; the parent gets the pid.
fn spawn(child: impl FnOnce()) -> libc::pid_t {
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    match pid {
        -1 => panic!("clone failed: {}", std::io::Error::last_os_error()),
        0 => {
            child();
            unsafe { libc::syscall(libc::SYS_exit_group, 0) };
            unreachable!()
        }
        pid => pid as libc::pid_t,
    }
}

/// The scheduler's accounting of exited child `pid`'s life, (run time, run delay) in ns from
/// /proc/PID/schedstat, read while it is a zombie; then reaps it.
fn reap_with_schedstat(pid: libc::pid_t) -> (u64, u64) {
    // SAFETY: waitid fills the siginfo we pass; WNOWAIT leaves the child to reap.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT;
    let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/schedstat: {e}"));
    let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    let (runtime, run_delay) = (fields.next().unwrap(), fields.next().unwrap());
    reap(pid);
    (runtime, run_delay)
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} failed: status {status}"
    );
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[derive(Default)]
struct Calls {
    getppid: usize,
    enoent: usize,
    ebadf: usize,
    eagain: usize,
    openerrs: usize,
    sleep: usize,
    int80: usize,
    random: usize,
    wait_go: bool,
}

fn parse_calls(args: &[String]) -> Calls {
    let mut c = Calls::default();
    for a in args {
        if a == "--wait-go" {
            c.wait_go = true;
            continue;
        }
        let (k, v) = a
            .split_once('=')
            .unwrap_or_else(|| usage(&format!("bad argument {a}")));
        let n: usize = v
            .parse()
            .unwrap_or_else(|_| usage(&format!("bad count in {a}")));
        match k {
            "getppid" => c.getppid = n,
            "enoent" => c.enoent = n,
            "ebadf" => c.ebadf = n,
            "eagain" => c.eagain = n,
            "openerrs" => c.openerrs = n,
            "sleep" => c.sleep = n,
            "int80" => c.int80 = n,
            "random" => c.random = n,
            _ => usage(&format!("unknown call kind {k}")),
        }
    }
    if c.sleep > MAX_SLEEPS {
        usage("too many sleeps");
    }
    c
}

/// The child's calls; raw syscalls only.
fn make_calls(
    c: &Calls,
    missing: &CString,
    empty_pipe: libc::c_int,
    durations: *mut u64,
    random_buf: &mut [u8],
) {
    unsafe {
        for _ in 0..c.getppid {
            libc::syscall(libc::SYS_getppid);
        }
        for _ in 0..c.enoent {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                missing.as_ptr(),
                libc::O_RDONLY,
            );
        }
        for _ in 0..c.ebadf {
            libc::syscall(libc::SYS_close, -1);
        }
        let mut byte = 0u8;
        for _ in 0..c.eagain {
            libc::syscall(libc::SYS_read, empty_pipe, &mut byte as *mut u8, 1);
        }
        let too_long = CString::new("x".repeat(libc::PATH_MAX as usize + 1)).unwrap();
        let failing_opens: [(*const libc::c_char, libc::c_int); 6] = [
            (missing.as_ptr(), libc::O_RDONLY),
            (c"/proc/self/status/x".as_ptr(), libc::O_RDONLY),
            (c"/".as_ptr(), libc::O_WRONLY),
            // Address 1: no page is mapped there (EFAULT).
            (ptr::dangling::<libc::c_char>(), libc::O_RDONLY),
            (too_long.as_ptr(), libc::O_RDONLY),
            (c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDONLY),
        ];
        for _ in 0..c.openerrs {
            for (path, flags) in failing_opens {
                libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path, flags);
            }
        }
        let two_ms = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        for i in 0..c.sleep {
            let t0 = now_ns();
            libc::syscall(
                libc::SYS_nanosleep,
                &two_ms,
                ptr::null_mut::<libc::timespec>(),
            );
            *durations.add(i) = now_ns() - t0;
        }
        for _ in 0..c.int80 {
            int80_getppid();
        }
    }
    for _ in 0..c.random {
        getrandom(random_buf);
    }
}

/// One getrandom(2) filling `buf`: the kernel generates it, on the caller's CPU.
fn getrandom(buf: &mut [u8]) {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0) };
    assert!(n > 0, "getrandom: {}", std::io::Error::last_os_error());
}

/// getppid through the 32-bit entry point: i386 syscall 64, from 64-bit code.
#[cfg(target_arch = "x86_64")]
fn int80_getppid() {
    let mut eax: u32 = 64;
    unsafe { std::arch::asm!("int 0x80", inout("eax") eax, options(nostack)) };
    std::hint::black_box(eax);
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_getppid() {
    usage("int80 exists on x86_64 only")
}

fn calls(args: &[String]) {
    let c = parse_calls(args);
    let missing = CString::new("/nonexistent/syscall-profiler-workload").unwrap();
    let durations = shared::<u64>(MAX_SLEEPS);
    let go = shared::<AtomicU32>(1);
    let mut pipe = [0; 2];
    unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK) };
    // Tight timers, so 2 ms sleeps take close to 2 ms.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let go_ref = unsafe { &*go };
    // Allocated here: the child makes no calls but the ones it is asked for.
    let mut random_buf = vec![0u8; if c.random > 0 { 1 << 20 } else { 0 }];
    let child = spawn(|| {
        if c.wait_go {
            while go_ref.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
        }
        make_calls(&c, &missing, pipe[0], durations, &mut random_buf);
    });
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
    if c.wait_go {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
        go_ref.store(1, Ordering::Release);
    }
    let (runtime, run_delay) = reap_with_schedstat(child);
    let mut d: Vec<u64> = (0..c.sleep).map(|i| unsafe { *durations.add(i) }).collect();
    d.sort_unstable();
    let median = if d.is_empty() {
        0
    } else {
        d[d.len().div_ceil(2) - 1]
    };
    let max = d.last().copied().unwrap_or(0);
    say(format!(
        "{{\"sleep_median_ns\": {median}, \"sleep_max_ns\": {max}, \"runtime_ns\": {runtime}, \
         \"run_delay_ns\": {run_delay}}}"
    ));
}

fn compute(n: usize, bytes: usize) {
    let mut buf = vec![0u8; bytes];
    let child = spawn(|| {
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets this (child) process's own policy; the parameter outlives the call.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) };
        assert_eq!(
            r,
            0,
            "SCHED_FIFO (needs root): {}",
            std::io::Error::last_os_error()
        );
        for _ in 0..n {
            getrandom(&mut buf);
        }
    });
    reap(child);
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
}

/// Pins this thread (and what it starts from now on) to the last CPU.
fn pin_to_last_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in its bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn contend(n: usize, bytes: usize) {
    // Both children inherit the mask: one CPU, the last, for the two of them.
    pin_to_last_cpu();
    let stop = shared::<AtomicU32>(1);
    let stop_ref = unsafe { &*stop };
    let spinner = spawn(|| {
        while stop_ref.load(Ordering::Relaxed) == 0 {
            std::hint::spin_loop();
        }
    });
    let mut buf = vec![0u8; bytes];
    let child = spawn(|| {
        for _ in 0..n {
            getrandom(&mut buf);
        }
    });
    reap(child);
    stop_ref.store(1, Ordering::Relaxed);
    reap(spinner);
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
}

/// How long `block` holds its child's read.
enum Release {
    After(std::time::Duration),
    OnStdinLine,
}

fn block(release: Release) {
    let mut pipe = [0; 2];
    unsafe { libc::pipe(pipe.as_mut_ptr()) };
    let child = spawn(|| unsafe {
        let mut byte = 0u8;
        libc::syscall(libc::SYS_read, pipe[0], &mut byte as *mut u8, 1);
    });
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
    match release {
        Release::After(d) => std::thread::sleep(d),
        Release::OnStdinLine => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
        }
    }
    unsafe { libc::write(pipe[1], b"x".as_ptr().cast(), 1) };
    reap(child);
    say("{\"released\": true}".to_string());
}

/// Kernel stacks passed from threads of other processes to this one's: on one CPU, whose
/// cache of freed stacks the next new thread takes from, each round a child process makes a
/// few getppid and exits, then a new thread of this process makes `n`.
fn stack_reuse(rounds: usize, n: usize) {
    say(format!("{{\"pid\": {}}}", std::process::id()));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    pin_to_last_cpu();
    for _ in 0..rounds {
        reap(spawn(|| {
            for _ in 0..3 {
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        }));
        std::thread::spawn(move || {
            for _ in 0..n {
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        })
        .join()
        .unwrap();
    }
    say(format!("{{\"getppid\": {}}}", rounds * n));
}

fn threads(count: usize, n: usize, failing: usize) {
    // A child process, so the test can look it up by pid; its threads exit before it does.
    let child = spawn(|| {
        let handles: Vec<_> = (0..count)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..n {
                        unsafe { libc::syscall(libc::SYS_getppid) };
                    }
                    for _ in 0..failing {
                        unsafe { libc::syscall(libc::SYS_close, -1) };
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    reap(child);
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
}

fn exec_chain(depth: usize, n: usize) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    if depth == 0 {
        say(format!("{{\"pid\": {}}}", std::process::id()));
        return;
    }
    exec_self(&["exec-chain".into(), (depth - 1).to_string(), n.to_string()])
}

/// A child whose second thread (not the leader) execs `exec-chain 0 N`: the thread takes the
/// leader's tid in the exec, and its execve returns into the new image.
fn thread_exec(n: usize) {
    let child = spawn(|| {
        let exec = std::thread::spawn(move || {
            exec_self(&["exec-chain".into(), "0".into(), n.to_string()]);
        });
        exec.join().unwrap();
    });
    reap(child);
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
}

/// Execs this binary as `workload ARGS…`, with an empty environment.
fn exec_self(args: &[String]) -> ! {
    let exe = CString::new(
        std::env::current_exe()
            .unwrap()
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let args: Vec<CString> = std::iter::once("workload")
        .chain(args.iter().map(String::as_str))
        .map(|a| CString::new(a).unwrap())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let envp: [*const libc::c_char; 1] = [ptr::null()];
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    panic!("execve failed: {}", std::io::Error::last_os_error());
}

fn storm(count: usize) {
    // A name of its own, which the children inherit, so the test can find exactly them.
    let comm = format!("storm{}", std::process::id() % 1_000_000);
    let c = CString::new(comm.clone()).unwrap();
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    for _ in 0..count {
        let child = spawn(|| unsafe {
            libc::syscall(libc::SYS_getppid);
        });
        reap(child);
    }
    say(format!(
        "{{\"pid\": {}, \"children\": {count}, \"comm\": \"{comm}\"}}",
        std::process::id()
    ));
}

fn series(count: usize, nrs: usize, pause_ms: usize) {
    let comm = format!("series{}", std::process::id() % 1_000_000);
    let c = CString::new(comm.clone()).unwrap();
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    for _ in 0..count {
        reap(spawn(|| raw_calls_each(1000, nrs)));
        std::thread::sleep(std::time::Duration::from_millis(pause_ms as u64));
    }
    say(format!(
        "{{\"pid\": {}, \"children\": {count}, \"comm\": \"{comm}\"}}",
        std::process::id()
    ));
}

/// One call of each of `n` syscall numbers from `first`.
fn raw_calls_each(first: libc::c_long, n: usize) {
    for nr in first..first + n as libc::c_long {
        unsafe { libc::syscall(nr) };
    }
}

fn reuse_pid(pid: usize, n: usize) {
    // ns_last_pid names the pid handed out before the next one; another process forking in
    // between takes it, so try a few times.
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .unwrap_or_else(|e| usage(&format!("writing ns_last_pid (needs root): {e}")));
        let want = pid as libc::pid_t;
        let child = spawn(|| {
            if unsafe { libc::syscall(libc::SYS_getpid) } as libc::pid_t == want {
                for _ in 0..n {
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
            }
        });
        reap(child);
        if child == want {
            say(format!(
                "{{\"pid\": {}, \"child_pid\": {child}}}",
                std::process::id()
            ));
            return;
        }
    }
    usage(&format!("could not get pid {pid}"));
}

/// nanosleep through the 32-bit entry point: i386 syscall 162, whose pointers are 32 bits.
#[cfg(target_arch = "x86_64")]
fn int80_sleep(n: usize, ns: usize) {
    // SAFETY: an anonymous private page below 4 GiB, checked for failure.
    let page = unsafe {
        libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED, "mmap below 4 GiB failed");
    let ts = page.cast::<i32>();
    unsafe {
        *ts = (ns / 1_000_000_000) as i32;
        *ts.add(1) = (ns % 1_000_000_000) as i32;
    }
    let addr = ts as u64;
    let child = spawn(|| {
        for _ in 0..n {
            let mut eax: u32 = 162;
            // rbx is reserved by LLVM, so the argument is swapped in and out around the call.
            unsafe {
                std::arch::asm!(
                    "xchg {arg}, rbx",
                    "int 0x80",
                    "xchg {arg}, rbx",
                    arg = inout(reg) addr => _,
                    inout("eax") eax,
                    in("ecx") 0u32,
                )
            };
            std::hint::black_box(eax);
        }
    });
    say(format!(
        "{{\"pid\": {}, \"child_pid\": {child}}}",
        std::process::id()
    ));
    reap(child);
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_sleep(_: usize, _: usize) {
    usage("int80-sleep exists on x86_64 only")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("calls") => calls(&args[2..]),
        Some("block") => block(match args.get(2).map(String::as_str) {
            Some("go") => Release::OnStdinLine,
            _ => Release::After(std::time::Duration::from_secs(num(args.get(2)) as u64)),
        }),
        Some("threads") => {
            let failing = args.get(4).map_or(0, |f| num(Some(f)));
            threads(num(args.get(2)), num(args.get(3)), failing)
        }
        Some("stack-reuse") => stack_reuse(num(args.get(2)), num(args.get(3))),
        Some("exec-chain") => exec_chain(num(args.get(2)), num(args.get(3))),
        Some("thread-exec") => thread_exec(num(args.get(2))),
        Some("storm") => storm(num(args.get(2))),
        Some("series") => series(num(args.get(2)), num(args.get(3)), num(args.get(4))),
        Some("reuse-pid") => reuse_pid(num(args.get(2)), num(args.get(3))),
        Some("int80-sleep") => int80_sleep(num(args.get(2)), num(args.get(3))),
        Some("live-series") => lasting::live_series(num(args.get(2)), num(args.get(3))),
        Some("restarts") => lasting::restarts(num(args.get(2)) as libc::c_long),
        Some("compute") => compute(num(args.get(2)), num(args.get(3))),
        Some("contend") => contend(num(args.get(2)), num(args.get(3))),
        _ => usage("unknown mode"),
    }
}
