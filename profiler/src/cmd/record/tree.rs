//! Which processes belong to the recorded process tree, and whether any of them still runs.
//!
//! The kernel side keys processes by (pid, incarnation) and does not record parents, and a
//! child that forks, works and exits between two drains is gone from /proc before anyone can
//! read its parent. So we listen to the kernel's process events (the netlink proc connector,
//! `CONFIG_PROC_EVENTS`): every fork and exit arrives, in order, with a monotonic timestamp.
//! Membership is then decided per incarnation: the incarnation is the µs of the process's first
//! syscall (same clock), which comes after its fork, so "the last fork of this pid before the
//! incarnation began, and was its parent a member then" is exact even when pids are recycled
//! during the run. A command `record` runs has its own incarnation from its exec on (the kernel
//! starts it there, kernel/exec_marks.rs); the incarnation before, record's set-up of the
//! child, is not a member.
//!
//! The events also say when the tree is gone: a member's exit event is sent after its last
//! syscall, and after the fork events of every child it made, so once every member's exit has
//! been read, so has every fork that could add one, and the kernel maps hold all their calls.

use std::{
    collections::{HashMap, HashSet},
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
};

use anyhow::{bail, Context, Result};

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
/// Where an event's fields sit after the netlink and connector headers.
const EV: usize = NLMSG_HDRLEN + CN_MSG_LEN;

/// One fork: at `at_us` (monotonic µs), process `parent` created this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fork {
    at_us: u32,
    parent: u32,
}

/// Fork history of the whole host since recording began, the tree's roots, and its members
/// that have not exited.
#[derive(Debug, Default)]
pub struct Forks {
    roots: Vec<u32>,
    /// The command record runs: its pid and the incarnation its exec started. Its earlier
    /// incarnation (record's set-up in the child) is not a member.
    command: Option<(u32, u32)>,
    /// Per child pid, its forks in arrival (= time) order; more than one if the pid was reused.
    by_child: HashMap<u32, Vec<Fork>>,
    /// Members forked since recording began whose exit has not been read yet.
    running: HashSet<u32>,
}

/// Monotonic µs truncated to 32 bits, as the kernel's incarnations are. Comparisons wrap, which
/// is right for anything within ±35 minutes.
fn after_or_at(t: u32, since: u32) -> bool {
    (t.wrapping_sub(since) as i32) >= 0
}

impl Forks {
    pub fn add_root(&mut self, pid: u32) {
        self.roots.push(pid);
    }

    /// From its exec on, process `pid` is the command, in incarnation `incarnation`. A root
    /// too: a member even if its fork event went missing.
    pub fn set_command(&mut self, pid: u32, incarnation: u32) {
        self.command = Some((pid, incarnation));
        self.roots.push(pid);
    }

    /// Whether a member forked since recording began has not exited yet (as far as the events
    /// read so far tell).
    pub fn any_running(&self) -> bool {
        !self.running.is_empty()
    }

    fn record(&mut self, parent: u32, child: u32, at_ns: u64) {
        let at_us = (at_ns >> 10) as u32;
        self.by_child
            .entry(child)
            .or_default()
            .push(Fork { at_us, parent });
        if self.member(child, at_us) {
            self.running.insert(child);
        }
    }

    fn exited(&mut self, pid: u32) {
        self.running.remove(&pid);
    }

    /// Whether `at_us` falls in the command's set-up: its process before its exec. (An
    /// incarnation is a µs with its low bit set, so the exec began at that µs or the one before.)
    /// A command in incarnation 0 (the kernel's maps were full) has no known exec time, and its
    /// set-up counts as its own: "before 0" would be half of the clock's 32-bit range.
    fn in_setup(&self, pid: u32, at_us: Option<u32>) -> bool {
        match (self.command, at_us) {
            (Some((command, since)), Some(at)) if since != 0 => {
                pid == command && !after_or_at(at, since & !1)
            }
            _ => false,
        }
    }

    /// Was the process `pid` that was running at `at_us` part of the tree? Incarnation 0 (the
    /// kernel's map was full) has no time: the pid's latest fork decides.
    pub fn member(&self, pid: u32, at_us: u32) -> bool {
        let mut pid = pid;
        let mut at = (at_us != 0).then_some(at_us);
        // Each step goes to an earlier fork, so this ends; the bound is for corrupt input.
        for _ in 0..100_000 {
            if self.in_setup(pid, at) {
                return false;
            }
            let fork = self.by_child.get(&pid).and_then(|forks| {
                forks
                    .iter()
                    .rev()
                    .find(|f| at.is_none_or(|t| after_or_at(t, f.at_us)))
            });
            match fork {
                // Forked during the run: a member if its parent was one at that moment.
                Some(f) => {
                    pid = f.parent;
                    at = Some(f.at_us);
                }
                // Existed before the run began: a member only if it is a root.
                None => return self.roots.contains(&pid),
            }
        }
        false
    }
}

/// Listens to fork events on a thread of its own until dropped.
pub struct Tracker {
    forks: Arc<Mutex<Forks>>,
    /// Reads that failed: events the kernel dropped because we read too slowly (ENOBUFS), or
    /// any other error.
    pub lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Subscribes before returning, so every fork after this call is seen.
    pub fn start() -> Result<Tracker> {
        let sock = subscribe().context(
            "listening to process events (netlink proc connector; needs root and a kernel with \
             CONFIG_PROC_EVENTS, in the initial pid namespace)",
        )?;
        let forks = Arc::new(Mutex::new(Forks::default()));
        let lost = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (forks, lost, stop) = (forks.clone(), lost.clone(), stop.clone());
            thread::Builder::new()
                .name("proc-events".into())
                .spawn(move || listen(&sock, &forks, &lost, &stop))
                .context("starting the process-event thread")?
        };
        Ok(Tracker {
            forks,
            lost,
            stop,
            thread: Some(thread),
        })
    }
}

impl Tracker {
    pub fn forks(&self) -> MutexGuard<'_, Forks> {
        self.forks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        bail!("{what}: {}", io::Error::last_os_error());
    }
    Ok(())
}

fn subscribe() -> Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor we own; every struct passed is fully initialised.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_CONNECTOR,
        );
        check(fd, "socket(AF_NETLINK, NETLINK_CONNECTOR)")?;
        let sock = OwnedFd::from_raw_fd(fd);
        // A fork storm can outrun us; a large buffer (root may exceed rmem_max) makes loss rare.
        let size: libc::c_int = 8 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        // Wake up now and then to notice we were asked to stop.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        check(
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            ),
            "setting the receive timeout",
        )?;
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        check(
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ),
            "binding to the proc connector",
        )?;

        let mut msg = [0u8; NLMSG_HDRLEN + CN_MSG_LEN + 4];
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        msg[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
        msg[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg[32..34].copy_from_slice(&4u16.to_ne_bytes());
        msg[36..40].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        let sent = libc::send(fd, msg.as_ptr().cast(), msg.len(), 0);
        if sent < 0 {
            bail!("subscribing: {}", io::Error::last_os_error());
        }
        Ok(sock)
    }
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// A process event; threads are not processes.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// (parent tgid, child tgid, timestamp ns).
    Fork(u32, u32, u64),
    /// The process's main thread exited (tgid).
    Exit(u32),
}

fn parse_event(msg: &[u8]) -> Option<Event> {
    match u32_at(msg, EV)? {
        PROC_EVENT_FORK => {
            let ts = u64::from_ne_bytes(msg.get(EV + 8..EV + 16)?.try_into().ok()?);
            let parent_tgid = u32_at(msg, EV + 20)?;
            let child_pid = u32_at(msg, EV + 24)?;
            let child_tgid = u32_at(msg, EV + 28)?;
            (child_pid == child_tgid).then_some(Event::Fork(parent_tgid, child_tgid, ts))
        }
        PROC_EVENT_EXIT => {
            let pid = u32_at(msg, EV + 16)?;
            let tgid = u32_at(msg, EV + 20)?;
            (pid == tgid).then_some(Event::Exit(tgid))
        }
        _ => None,
    }
}

fn listen(sock: &OwnedFd, forks: &Mutex<Forks>, lost: &AtomicU64, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                // ENOBUFS: the kernel dropped events we read too slowly. Anything else is as
                // bad, and must not end the listening silently: counted, so the report warns.
                _ => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            continue;
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32_at(rest, 0).unwrap_or(0) as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                break;
            }
            if let Some(event) = parse_event(&rest[..len]) {
                let mut forks = forks.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Event::Fork(parent, child, ts) => forks.record(parent, child, ts),
                    Event::Exit(pid) => forks.exited(pid),
                }
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(us: u32) -> u64 {
        u64::from(us) << 10
    }

    #[test]
    fn descendants_of_a_root_are_members() {
        let mut f = Forks::default();
        f.add_root(100);
        f.record(100, 200, at(10));
        f.record(200, 300, at(20));
        f.record(999, 400, at(30));
        assert!(f.member(100, 5));
        assert!(f.member(200, 11));
        assert!(f.member(300, 21));
        assert!(!f.member(400, 31));
        assert!(
            !f.member(555, 40),
            "never forked during the run, not a root"
        );
    }

    #[test]
    fn a_recycled_pid_belongs_by_its_own_fork() {
        let mut f = Forks::default();
        f.add_root(100);
        // 200 existed before the run (an outsider), then is reused by the tree, then by an
        // outsider again.
        f.record(100, 200, at(50));
        f.record(7, 200, at(90));
        assert!(!f.member(200, 40), "the incarnation from before the run");
        assert!(f.member(200, 51));
        assert!(!f.member(200, 91));
        assert!(
            !f.member(200, 0),
            "no incarnation time: the latest fork decides"
        );
        let mut g = Forks::default();
        g.add_root(100);
        g.record(100, 200, at(50));
        assert!(g.member(200, 0));
    }

    #[test]
    fn membership_follows_the_parent_at_fork_time() {
        let mut f = Forks::default();
        f.add_root(100);
        // 300 was forked by 200 at t=20, when 200 was an outsider; 200 later became a member.
        f.record(8, 200, at(10));
        f.record(200, 300, at(20));
        f.record(100, 200, at(30));
        f.record(200, 301, at(40));
        assert!(!f.member(300, 25));
        assert!(f.member(301, 45));
    }

    #[test]
    fn time_comparisons_wrap() {
        assert!(after_or_at(5, u32::MAX - 5));
        assert!(!after_or_at(u32::MAX - 5, 5));
        assert!(after_or_at(7, 7));
    }

    #[test]
    fn the_commands_setup_is_not_a_member_nor_what_it_forked() {
        let mut f = Forks::default();
        f.add_root(100);
        f.record(100, 200, at(10));
        f.set_command(200, 51);
        f.record(200, 300, at(40));
        f.record(200, 301, at(60));
        assert!(!f.member(200, 11), "the set-up before the exec");
        assert!(f.member(200, 51), "the command from its exec on");
        assert!(!f.member(300, 41), "forked during the set-up");
        assert!(f.member(301, 61));
    }

    #[test]
    fn a_command_in_incarnation_0_has_no_setup() {
        // Whatever the clock reads: in the first or the second half of its 32-bit range.
        for t in [40, 1 << 31, u32::MAX - 20] {
            let mut f = Forks::default();
            f.add_root(100);
            f.record(100, 200, at(t));
            f.set_command(200, 0);
            f.record(200, 300, at(t.wrapping_add(10)));
            assert!(f.member(200, t.wrapping_add(5)), "{t}");
            assert!(f.member(300, t.wrapping_add(11)), "{t}");
        }
    }

    #[test]
    fn members_run_until_their_exit_is_read() {
        let mut f = Forks::default();
        f.add_root(100);
        f.record(100, 200, at(10));
        f.record(200, 300, at(20));
        f.record(7, 400, at(30));
        assert!(f.any_running());
        f.exited(200);
        f.exited(400);
        assert!(f.any_running(), "300 still runs");
        f.exited(300);
        assert!(!f.any_running());
    }

    fn event(what: u32) -> Vec<u8> {
        let mut msg = vec![0u8; EV + 40];
        msg[EV..EV + 4].copy_from_slice(&what.to_ne_bytes());
        msg[EV + 8..EV + 16].copy_from_slice(&123_456u64.to_ne_bytes());
        msg
    }

    fn put(msg: &mut [u8], at: usize, v: u32) {
        msg[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn fork_events_parse_and_threads_are_skipped() {
        let mut msg = event(PROC_EVENT_FORK);
        put(&mut msg, EV + 20, 10);
        put(&mut msg, EV + 24, 11);
        put(&mut msg, EV + 28, 11);
        assert_eq!(parse_event(&msg), Some(Event::Fork(10, 11, 123_456)));
        put(&mut msg, EV + 28, 10);
        assert_eq!(parse_event(&msg), None, "a thread");
        assert_eq!(parse_event(&msg[..EV + 10]), None, "truncated");
    }

    #[test]
    fn exit_events_parse_and_threads_are_skipped() {
        let mut msg = event(PROC_EVENT_EXIT);
        put(&mut msg, EV + 16, 12);
        put(&mut msg, EV + 20, 12);
        assert_eq!(parse_event(&msg), Some(Event::Exit(12)));
        put(&mut msg, EV + 16, 13);
        assert_eq!(parse_event(&msg), None, "a thread");
        assert_eq!(parse_event(&event(2)), None, "an exec event");
    }
}
