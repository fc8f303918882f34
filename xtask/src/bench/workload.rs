//! The workloads. Each runs in a child process (`xtask bench-worker …`, the harness re-executing
//! itself) so that nothing the harness does — loading programs, reading a daemon's output — sits
//! on the timed path, and each measurement starts from a fresh process the way real traffic does.

use std::{
    ffi::CString,
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Barrier,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

/// A timed syscall workload of the alternated rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One thread calling getppid(), about the cheapest real syscall, in a tight loop.
    Getppid,
    /// The same on every CPU at once, one thread per CPU in one process: every thread updates
    /// the same (process, syscall) entry, so contention on shared counters shows here.
    GetppidAllCpus,
    /// Small pipe writes and reads, /dev/zero reads and writes, and an open() of a missing file.
    MixedIo,
    /// Two processes on one CPU passing a byte back and forth through two pipes: per round trip
    /// four syscalls (a write and a read on each side) and two context switches, each read
    /// sleeping until the other side writes.
    PipePingPong,
    /// Two threads of one process on one CPU taking turns on a futex word: per round trip each
    /// thread wakes the other and waits for its turn, so two context switches and three or four
    /// futex calls (a wait whose turn already came is skipped).
    FutexPingPong,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Getppid,
        Workload::GetppidAllCpus,
        Workload::MixedIo,
        Workload::PipePingPong,
        Workload::FutexPingPong,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid, 1 thread",
            Workload::GetppidAllCpus => "getppid, all CPUs",
            Workload::MixedIo => "mixed I/O",
            Workload::PipePingPong => "pipe ping-pong",
            Workload::FutexPingPong => "futex ping-pong",
        }
    }

    /// What one measured operation is: the unit of the workload's figures.
    pub fn unit(self) -> &'static str {
        if self.is_ping_pong() {
            "round trip"
        } else {
            "syscall"
        }
    }

    /// Whether the workload measures context switches (round trips between two tasks on one
    /// CPU) rather than syscalls of a thread that keeps its CPU.
    pub fn is_ping_pong(self) -> bool {
        matches!(self, Workload::PipePingPong | Workload::FutexPingPong)
    }

    fn arg(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid",
            Workload::GetppidAllCpus => "getppid-all-cpus",
            Workload::MixedIo => "mixed-io",
            Workload::PipePingPong => "pipe-ping-pong",
            Workload::FutexPingPong => "futex-ping-pong",
        }
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub job: Job,
}

#[derive(Subcommand, Debug)]
pub enum Job {
    /// Run a workload and print `wall_ns_per_op=<float>` and `cpu_ns_per_op=<float>`.
    Time {
        #[arg(long, value_enum)]
        workload: Workload,
        /// Operations to time: syscalls (per thread for getppid-all-cpus), or round trips for
        /// the ping-pong workloads.
        #[arg(long)]
        ops: u64,
    },
    /// Keep `count` (process, syscall) series alive: call the first `count` of
    /// `FAILING_CALLS` in turn, every `period_ms`, until `max_secs` pass or the harness kills
    /// this process.
    Series {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        period_ms: u64,
        #[arg(long)]
        max_secs: u64,
    },
}

/// The child side of `bench-worker`.
pub fn worker_main(args: WorkerArgs) -> Result<()> {
    match args.job {
        Job::Time { workload, ops } => {
            anyhow::ensure!(ops > 0, "--ops must be at least 1");
            let ns = match workload {
                Workload::Getppid => time_per_call(ops, |n| {
                    getppid_loop(n);
                    Ok(())
                })?,
                Workload::GetppidAllCpus => getppid_all_cpus(ops)?,
                Workload::MixedIo => mixed_io(ops)?,
                Workload::PipePingPong => super::pingpong::pipe_ping_pong(ops)?,
                Workload::FutexPingPong => super::pingpong::futex_ping_pong(ops)?,
            };
            println!("wall_ns_per_op={}", ns.wall);
            println!("cpu_ns_per_op={}", ns.cpu);
            Ok(())
        }
        Job::Series {
            count,
            period_ms,
            max_secs,
        } => series(count, period_ms, max_secs),
    }
}

/// The cost of one operation (a syscall, or a round trip of a ping-pong workload) by two clocks.
/// `wall` is CLOCK_MONOTONIC (`Instant`, read through
/// the vDSO, so the clock adds no syscall of its own): what the program experiences, including
/// any time the scheduler gave its CPU to someone else. `cpu` is CLOCK_THREAD_CPUTIME_ID: the
/// time the thread was on a CPU, user and kernel (tracing programs run in the thread's own
/// context, so they count; a ping-pong's is the sum over both of its tasks). On an idle machine
/// the two agree; on a shared one only `cpu` keeps other processes out of the figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub wall: f64,
    pub cpu: f64,
}

pub(super) fn thread_cpu_ns() -> Result<u128> {
    let ns = super::load::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
        .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")?;
    Ok(u128::from(ns))
}

/// Times `f(n)` on both clocks of [`Cost`], after an untimed `f(n / 10)`: a thread's first
/// syscalls allocate tracer state, and caches warm.
fn time_per_call(n: u64, f: impl Fn(u64) -> Result<()>) -> Result<Cost> {
    f((n / 10).max(1))?;
    let (t0, c0) = (Instant::now(), thread_cpu_ns()?);
    f(n)?;
    let (c1, t1) = (thread_cpu_ns()?, Instant::now());
    Ok(Cost {
        wall: (t1 - t0).as_nanos() as f64 / n as f64,
        cpu: (c1 - c0) as f64 / n as f64,
    })
}

fn getppid_loop(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

fn getppid_all_cpus(n: u64) -> Result<Cost> {
    let cpus = allowed_cpus()?;
    let barrier = Barrier::new(cpus.len());
    let per_thread: Vec<Result<Cost>> = std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let barrier = &barrier;
                s.spawn(move || {
                    pin_to(cpu)?;
                    // Start together so the loops overlap for their whole length.
                    barrier.wait();
                    time_per_call(n, |n| {
                        getppid_loop(n);
                        Ok(())
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a worker thread panicked"))
            })
            .collect()
    });
    let per_thread = per_thread.into_iter().collect::<Result<Vec<Cost>>>()?;
    // The cost one syscall sees while all CPUs run the loop.
    let k = per_thread.len() as f64;
    Ok(Cost {
        wall: per_thread.iter().map(|p| p.wall).sum::<f64>() / k,
        cpu: per_thread.iter().map(|p| p.cpu).sum::<f64>() / k,
    })
}

pub(super) fn allowed_cpus() -> Result<Vec<usize>> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    anyhow::ensure!(!cpus.is_empty(), "no CPU in this process's affinity mask");
    Ok(cpus)
}

pub(super) fn pin_to(cpu: usize) -> Result<()> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        bail!(
            "pinning a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Syscalls per iteration of the mixed workload.
const MIXED_SYSCALLS: u64 = 5;

fn mixed_io(syscalls: u64) -> Result<Cost> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    let zero = CString::new("/dev/zero").unwrap();
    let zfd = unsafe { libc::open(zero.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if zfd < 0 {
        bail!("opening /dev/zero: {}", std::io::Error::last_os_error());
    }
    let missing = CString::new("/nonexistent/syscall-profiler-bench").unwrap();
    let mut buf = [0u8; 64];
    let len = buf.len();
    let b = buf.as_mut_ptr();
    // `n` syscalls, rounded up to whole iterations.
    let run = |n: u64| -> Result<()> {
        for _ in 0..n.div_ceil(MIXED_SYSCALLS) {
            let ok = unsafe {
                libc::syscall(libc::SYS_write, fds[1], b, len) == len as i64
                    && libc::syscall(libc::SYS_read, fds[0], b, len) == len as i64
                    && libc::syscall(libc::SYS_read, zfd, b, len) == len as i64
                    && libc::syscall(libc::SYS_write, zfd, b, len) == len as i64
                    && libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        missing.as_ptr(),
                        libc::O_RDONLY,
                    ) == -1
            };
            if !ok {
                bail!(
                    "a mixed-I/O syscall did not do what was expected: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(())
    };
    time_per_call(syscalls.div_ceil(MIXED_SYSCALLS) * MIXED_SYSCALLS, run)
}

/// Named syscalls that fail at once, without effect, given -1 and zeros: a bad file descriptor,
/// pid, clock or size (EBADF, ESRCH, EINVAL, EFAULT). Named, so that /metrics and the history
/// keep a series of each, as a host's own syscalls are (unallocated numbers share one
/// `unnamed`); none is a syscall whose failing argument the daemon records (a path, an address).
/// 101, so that `SERIES_PER_PROCESS` (100) of them fit; `series` checks that each one fails.
const FAILING_CALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_ioctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_sendfile,
    libc::SYS_accept,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchown,
    libc::SYS_fstatfs,
    libc::SYS_readahead,
    libc::SYS_fsetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_fremovexattr,
    libc::SYS_getdents64,
    libc::SYS_fadvise64,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_inotify_rm_watch,
    libc::SYS_sync_file_range,
    libc::SYS_vmsplice,
    libc::SYS_fallocate,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_accept4,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_recvmmsg,
    libc::SYS_syncfs,
    libc::SYS_sendmmsg,
    libc::SYS_copy_file_range,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_madvise,
    libc::SYS_epoll_pwait2,
    libc::SYS_quotactl_fd,
    libc::SYS_process_mrelease,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_kcmp,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_get_robust_list,
    libc::SYS_ioprio_get,
    libc::SYS_capget,
    libc::SYS_pidfd_open,
    libc::SYS_prlimit64,
    libc::SYS_sendto,
    libc::SYS_bind,
    libc::SYS_open_by_handle_at,
    libc::SYS_landlock_add_rule,
    libc::SYS_waitid,
    libc::SYS_getpriority,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_getrlimit,
    libc::SYS_getitimer,
    libc::SYS_clock_getres,
    libc::SYS_getgroups,
    libc::SYS_syslog,
    libc::SYS_membarrier,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
];

fn series(count: usize, period_ms: u64, max_secs: u64) -> Result<()> {
    anyhow::ensure!(
        (1..=FAILING_CALLS.len()).contains(&count),
        "--count must be 1 to {}",
        FAILING_CALLS.len()
    );
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    while Instant::now() < deadline {
        for &nr in &FAILING_CALLS[..count] {
            let r = unsafe { libc::syscall(nr, -1i64, 0i64, 0i64, 0i64, 0i64, 0i64) };
            if r != -1 {
                bail!("syscall {nr} returned {r} given -1 and zeros instead of failing");
            }
        }
        std::thread::sleep(Duration::from_millis(period_ms));
    }
    Ok(())
}

/// A `bench-worker` command line for the harness to spawn.
fn worker_command(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("bench-worker");
    die_with_parent(&mut cmd, libc::SIGKILL);
    cmd
}

/// Makes the child get `signal` when the harness dies, so an interrupted run leaves no load
/// generator, daemon or tracer behind.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
}

/// Runs one workload in a child and returns its cost per operation.
pub fn time_workload(exe: &Path, workload: Workload, ops: u64) -> Result<Cost> {
    let out = worker_command(exe)
        .args(["time", "--workload", workload.arg()])
        .args(["--ops", &ops.to_string()])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running the {} workload", workload.label()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "the {} workload failed ({}): {}",
            workload.label(),
            out.status,
            stderr.lines().last().unwrap_or("")
        );
    }
    parse_worker_output(&stdout).with_context(|| {
        format!(
            "the {} workload did not print its two costs: {stdout:?}",
            workload.label()
        )
    })
}

pub fn parse_worker_output(stdout: &str) -> Option<Cost> {
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    Some(Cost {
        wall: field("wall_ns_per_op")?,
        cpu: field("cpu_ns_per_op")?,
    })
}

/// Processes that each keep `per_process` series alive; killed when dropped.
pub struct SeriesLoad {
    children: Vec<Child>,
}

impl SeriesLoad {
    pub fn start(
        exe: &Path,
        processes: usize,
        per_process: usize,
        period: Duration,
        max: Duration,
    ) -> Result<SeriesLoad> {
        let mut load = SeriesLoad {
            children: Vec::with_capacity(processes),
        };
        for _ in 0..processes {
            let child = worker_command(exe)
                .arg("series")
                .args(["--count", &per_process.to_string()])
                .args(["--period-ms", &period.as_millis().to_string()])
                .args(["--max-secs", &max.as_secs().max(1).to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("spawning a series process")?;
            load.children.push(child);
        }
        Ok(load)
    }

    /// Fails if any series process has exited already (it would have said why on stderr).
    pub fn check_alive(&mut self) -> Result<()> {
        for child in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!(
                    "a series process exited early ({status}): {}",
                    err.lines().last().unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

impl Drop for SeriesLoad {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_worker_lines() {
        let both = |w, c| Some(Cost { wall: w, cpu: c });
        assert_eq!(
            parse_worker_output("wall_ns_per_op=87.5\ncpu_ns_per_op=86\n"),
            both(87.5, 86.0)
        );
        assert_eq!(
            parse_worker_output("noise\ncpu_ns_per_op=1\nwall_ns_per_op=2\n"),
            both(2.0, 1.0)
        );
        assert_eq!(parse_worker_output("wall_ns_per_op=87.5\n"), None);
        assert_eq!(
            parse_worker_output("wall_ns_per_op=NaN\ncpu_ns_per_op=1"),
            None
        );
        assert_eq!(
            parse_worker_output("wall_ns_per_op=-3\ncpu_ns_per_op=1"),
            None
        );
        assert_eq!(parse_worker_output(""), None);
    }
}
