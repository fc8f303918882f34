//! Syscall names and categories. Names come from the `syscalls` crate's tables, which are
//! generated from the kernel's own syscall tables (complete, not hand-typed): the host ABI's,
//! and for 32-bit compat calls the matching 32-bit ABI's (i386 on x86_64, arm on aarch64).

pub mod failing_args;

use profiler_common::{ABI_COMPAT, ABI_NATIVE, NR_UNKNOWN};
use serde::Serialize;

#[cfg(target_arch = "x86_64")]
mod tables {
    pub use ::syscalls::x86::Sysno as Compat;
    pub use ::syscalls::x86_64::Sysno as Native;
    pub const NATIVE: &str = "x86_64";
    pub const COMPAT: &str = "i386";
}

#[cfg(target_arch = "aarch64")]
mod tables {
    pub use ::syscalls::aarch64::Sysno as Native;
    pub use ::syscalls::arm::Sysno as Compat;
    pub const NATIVE: &str = "aarch64";
    pub const COMPAT: &str = "arm";
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("syscall-profiler supports x86_64 and aarch64 hosts");

/// A syscall ABI, as the kernel side tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Abi {
    Native,
    Compat,
}

impl Abi {
    pub fn from_kernel(abi: u8) -> Abi {
        if abi == ABI_COMPAT {
            Abi::Compat
        } else {
            debug_assert_eq!(abi, ABI_NATIVE);
            Abi::Native
        }
    }

    /// The kernel side's number for it (`profiler_common::ABI_*`).
    pub fn to_kernel(self) -> u8 {
        match self {
            Abi::Native => ABI_NATIVE,
            Abi::Compat => ABI_COMPAT,
        }
    }

    /// The ABI's usual name: `x86_64`/`i386` or `aarch64`/`arm`.
    pub fn name(self) -> &'static str {
        match self {
            Abi::Native => tables::NATIVE,
            Abi::Compat => tables::COMPAT,
        }
    }
}

impl Serialize for Abi {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

fn table_name(abi: Abi, nr: u32) -> Option<&'static str> {
    match abi {
        Abi::Native => tables::Native::new(nr as usize).map(|s| s.name()),
        Abi::Compat => tables::Compat::new(nr as usize).map(|s| s.name()),
    }
}

/// Where calls of numbers without a name are counted together: the kernel side counts every
/// number from `NR_UNKNOWN` up there, and the /metrics aggregates and the history every number
/// the table does not name (`SyscallKey::or_unnamed`).
pub const UNNAMED: u32 = NR_UNKNOWN as u32;

/// The name of syscall `nr` in `abi`'s table, `unnamed` for [`UNNAMED`], or `syscall_<nr>`
/// when the table has none.
pub fn name(abi: Abi, nr: u32) -> String {
    match table_name(abi, nr) {
        Some(name) => name.to_string(),
        None if nr == UNNAMED => "unnamed".to_string(),
        None => format!("syscall_{nr}"),
    }
}

/// Numbers past every table's end: they have no name, so no category.
const TABLE_LIMIT: usize = 1024;

/// Per ABI and number below `TABLE_LIMIT`: its category if the table names it. Built once,
/// because the store asks for every (process, syscall) delta of every drain and `Category::of`
/// matches names.
fn known(abi: Abi, nr: u32) -> Option<Category> {
    static TABLES: std::sync::OnceLock<[Vec<Option<Category>>; 2]> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        [Abi::Native, Abi::Compat].map(|abi| {
            (0..TABLE_LIMIT as u32)
                .map(|nr| table_name(abi, nr).map(Category::of))
                .collect()
        })
    });
    let table = &tables[usize::from(abi == Abi::Compat)];
    table.get(nr as usize).copied().flatten()
}

/// Whether `abi`'s table names `nr`. Those it does not are unallocated (their calls fail with
/// ENOSYS) or newer than the table.
pub fn is_named(abi: Abi, nr: u32) -> bool {
    known(abi, nr).is_some()
}

/// The category of syscall `nr` in `abi` (`Other` for a number without a name).
pub fn category(abi: Abi, nr: u32) -> Category {
    known(abi, nr).unwrap_or(Category::Other)
}

/// The symbolic name of a positive errno (`ENOENT`), or `E<n>` when it has none. Errno numbers
/// are the same in every ABI the profiler supports.
pub fn errno_name(errno: u32) -> String {
    ::syscalls::Errno::new(errno as i32)
        .name()
        .map_or_else(|| format!("E{errno}"), str::to_string)
}

/// Every (ABI, number) that `name` has: one or two (`unnamed`: each ABI's [`UNNAMED`]), or none
/// for an unknown name.
pub fn numbers_of(name: &str) -> Vec<(Abi, u32)> {
    if name == "unnamed" {
        return vec![(Abi::Native, UNNAMED), (Abi::Compat, UNNAMED)];
    }
    let mut out = Vec::new();
    if let Ok(s) = name.parse::<tables::Native>() {
        out.push((Abi::Native, s.id() as u32));
    }
    if let Ok(s) = name.parse::<tables::Compat>() {
        out.push((Abi::Compat, s.id() as u32));
    }
    out
}

/// What a syscall is for, so "this process spends 60% of its syscall time in sync" is one
/// lookup. Assigned by name, so both ABIs share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    FileIo,
    Process,
    Memory,
    Network,
    Signals,
    Ipc,
    Sync,
    Multiplexing,
    Time,
    Other,
}

impl Category {
    pub fn of(name: &str) -> Category {
        category_by_name(name)
            .or_else(|| category_by_name(name.strip_suffix("_time64")?))
            .or_else(|| category_by_name(name.strip_suffix("64")?))
            .unwrap_or(Category::Other)
    }
}

fn category_by_name(name: &str) -> Option<Category> {
    use Category::*;
    Some(match name {
        "read" | "write" | "open" | "openat" | "openat2" | "creat" | "close" | "close_range"
        | "stat" | "fstat" | "lstat" | "newfstatat" | "fstatat" | "statx" | "oldstat"
        | "oldfstat" | "oldlstat" | "lseek" | "_llseek" | "llseek" | "pread" | "pwrite"
        | "readv" | "writev" | "preadv" | "pwritev" | "preadv2" | "pwritev2" | "access"
        | "faccessat" | "faccessat2" | "dup" | "dup2" | "dup3" | "fcntl" | "flock" | "fsync"
        | "fdatasync" | "sync" | "syncfs" | "sync_file_range" | "truncate" | "ftruncate"
        | "getdents" | "readdir" | "getcwd" | "chdir" | "fchdir" | "rename" | "renameat"
        | "renameat2" | "mkdir" | "mkdirat" | "rmdir" | "link" | "linkat" | "unlink"
        | "unlinkat" | "symlink" | "symlinkat" | "readlink" | "readlinkat" | "chmod" | "fchmod"
        | "fchmodat" | "fchmodat2" | "chown" | "fchown" | "lchown" | "fchownat" | "chown32"
        | "fchown32" | "lchown32" | "umask" | "utime" | "utimes" | "utimensat" | "futimesat"
        | "mknod" | "mknodat" | "statfs" | "fstatfs" | "ustat" | "sendfile" | "splice"
        | "vmsplice" | "tee" | "copy_file_range" | "fallocate" | "fadvise" | "readahead"
        | "ioctl" | "name_to_handle_at" | "open_by_handle_at" | "inotify_init"
        | "inotify_init1" | "inotify_add_watch" | "inotify_rm_watch" | "fanotify_init"
        | "fanotify_mark" | "setxattr" | "lsetxattr" | "fsetxattr" | "getxattr" | "lgetxattr"
        | "fgetxattr" | "listxattr" | "llistxattr" | "flistxattr" | "removexattr"
        | "lremovexattr" | "fremovexattr" | "setxattrat" | "getxattrat" | "listxattrat"
        | "removexattrat" | "io_setup" | "io_destroy" | "io_submit" | "io_cancel"
        | "io_getevents" | "io_pgetevents" | "io_uring_setup" | "io_uring_enter"
        | "io_uring_register" | "file_getattr" | "file_setattr" => FileIo,

        "fork"
        | "vfork"
        | "clone"
        | "clone3"
        | "execve"
        | "execveat"
        | "exit"
        | "exit_group"
        | "wait4"
        | "waitid"
        | "waitpid"
        | "getpid"
        | "getppid"
        | "gettid"
        | "getuid"
        | "geteuid"
        | "getgid"
        | "getegid"
        | "setuid"
        | "setgid"
        | "setreuid"
        | "setregid"
        | "setresuid"
        | "setresgid"
        | "getresuid"
        | "getresgid"
        | "setfsuid"
        | "setfsgid"
        | "getgroups"
        | "setgroups"
        | "getuid32"
        | "geteuid32"
        | "getgid32"
        | "getegid32"
        | "setuid32"
        | "setgid32"
        | "setreuid32"
        | "setregid32"
        | "setresuid32"
        | "setresgid32"
        | "getresuid32"
        | "getresgid32"
        | "setfsuid32"
        | "setfsgid32"
        | "getgroups32"
        | "setgroups32"
        | "setsid"
        | "getsid"
        | "setpgid"
        | "getpgid"
        | "getpgrp"
        | "prctl"
        | "arch_prctl"
        | "set_tid_address"
        | "capget"
        | "capset"
        | "getrlimit"
        | "setrlimit"
        | "ugetrlimit"
        | "prlimit"
        | "getrusage"
        | "sched_yield"
        | "sched_setaffinity"
        | "sched_getaffinity"
        | "sched_setparam"
        | "sched_getparam"
        | "sched_setscheduler"
        | "sched_getscheduler"
        | "sched_get_priority_max"
        | "sched_get_priority_min"
        | "sched_rr_get_interval"
        | "sched_setattr"
        | "sched_getattr"
        | "getpriority"
        | "setpriority"
        | "nice"
        | "uname"
        | "olduname"
        | "oldolduname"
        | "sysinfo"
        | "personality"
        | "pidfd_open"
        | "pidfd_getfd"
        | "ptrace"
        | "seccomp"
        | "unshare"
        | "setns"
        | "set_robust_list"
        | "get_robust_list"
        | "rseq"
        | "chroot"
        | "pivot_root"
        | "getcpu"
        | "kcmp"
        | "set_thread_area"
        | "get_thread_area"
        | "modify_ldt"
        | "acct"
        | "landlock_create_ruleset"
        | "landlock_add_rule"
        | "landlock_restrict_self" => Process,

        "mmap"
        | "mmap2"
        | "old_mmap"
        | "munmap"
        | "mprotect"
        | "pkey_mprotect"
        | "mremap"
        | "brk"
        | "madvise"
        | "process_madvise"
        | "mlock"
        | "mlock2"
        | "munlock"
        | "mlockall"
        | "munlockall"
        | "mincore"
        | "msync"
        | "mbind"
        | "set_mempolicy"
        | "get_mempolicy"
        | "set_mempolicy_home_node"
        | "migrate_pages"
        | "move_pages"
        | "membarrier"
        | "memfd_create"
        | "memfd_secret"
        | "pkey_alloc"
        | "pkey_free"
        | "remap_file_pages"
        | "userfaultfd"
        | "process_vm_readv"
        | "process_vm_writev"
        | "process_mrelease"
        | "map_shadow_stack"
        | "mseal" => Memory,

        "socket" | "socketpair" | "bind" | "listen" | "accept" | "accept4" | "connect"
        | "getsockname" | "getpeername" | "send" | "recv" | "sendto" | "recvfrom" | "sendmsg"
        | "recvmsg" | "sendmmsg" | "recvmmsg" | "shutdown" | "setsockopt" | "getsockopt"
        | "socketcall" => Network,

        "rt_sigaction" | "rt_sigprocmask" | "rt_sigreturn" | "rt_sigsuspend" | "rt_sigpending"
        | "rt_sigtimedwait" | "rt_sigqueueinfo" | "rt_tgsigqueueinfo" | "sigaction"
        | "sigprocmask" | "sigreturn" | "signal" | "sigsuspend" | "sigpending" | "sgetmask"
        | "ssetmask" | "sigaltstack" | "kill" | "tkill" | "tgkill" | "pause" | "signalfd"
        | "signalfd4" | "pidfd_send_signal" | "restart_syscall" => Signals,

        "pipe" | "pipe2" | "msgget" | "msgsnd" | "msgrcv" | "msgctl" | "semget" | "semop"
        | "semtimedop" | "semctl" | "shmget" | "shmat" | "shmdt" | "shmctl" | "mq_open"
        | "mq_unlink" | "mq_timedsend" | "mq_timedreceive" | "mq_notify" | "mq_getsetattr"
        | "eventfd" | "eventfd2" | "ipc" => Ipc,

        "futex" | "futex_waitv" | "futex_wake" | "futex_wait" | "futex_requeue" => Sync,

        "poll" | "ppoll" | "select" | "_newselect" | "pselect6" | "epoll_create"
        | "epoll_create1" | "epoll_ctl" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => {
            Multiplexing
        }

        "clock_gettime" | "clock_settime" | "clock_getres" | "clock_nanosleep" | "nanosleep"
        | "gettimeofday" | "settimeofday" | "time" | "stime" | "times" | "alarm" | "getitimer"
        | "setitimer" | "timer_create" | "timer_settime" | "timer_gettime" | "timer_getoverrun"
        | "timer_delete" | "timerfd_create" | "timerfd_settime" | "timerfd_gettime"
        | "adjtimex" | "clock_adjtime" => Time,

        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_and_i386_tables() {
        assert_eq!(name(Abi::Native, 0), "read");
        assert_eq!(name(Abi::Native, 39), "getpid");
        assert_eq!(name(Abi::Native, 59), "execve");
        assert_eq!(name(Abi::Native, 110), "getppid");
        assert_eq!(name(Abi::Native, 202), "futex");
        assert_eq!(name(Abi::Native, 257), "openat");
        assert_eq!(name(Abi::Native, 262), "newfstatat");
        assert_eq!(name(Abi::Native, 435), "clone3");
        // The same numbers mean other calls in the 32-bit ABI.
        assert_eq!(name(Abi::Compat, 3), "read");
        assert_eq!(name(Abi::Compat, 4), "write");
        assert_eq!(name(Abi::Compat, 20), "getpid");
        assert_eq!(name(Abi::Compat, 64), "getppid");
        assert_eq!(name(Abi::Compat, 240), "futex");
        assert_eq!(name(Abi::Compat, 295), "openat");
        assert_eq!(Abi::Native.name(), "x86_64");
        assert_eq!(Abi::Compat.name(), "i386");
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_and_arm_tables() {
        assert_eq!(name(Abi::Native, 63), "read");
        assert_eq!(name(Abi::Native, 173), "getppid");
        assert_eq!(name(Abi::Native, 221), "execve");
        assert_eq!(name(Abi::Compat, 64), "getppid");
    }

    #[test]
    fn tables_are_complete() {
        assert!(::syscalls::x86_64::Sysno::count() >= 370);
        assert!(::syscalls::aarch64::Sysno::count() >= 300);
        assert!(::syscalls::x86::Sysno::count() >= 420);
        assert!(::syscalls::arm::Sysno::count() >= 400);
    }

    #[test]
    fn unknown_numbers() {
        assert_eq!(name(Abi::Native, 100_000), "syscall_100000");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn numbers_in_both_abis() {
        assert_eq!(
            numbers_of("getppid"),
            vec![(Abi::Native, 110), (Abi::Compat, 64)]
        );
        assert_eq!(numbers_of("newfstatat"), vec![(Abi::Native, 262)]);
        assert!(numbers_of("no_such_call").is_empty());
        for abi in [Abi::Native, Abi::Compat] {
            assert!(numbers_of(&name(abi, UNNAMED)).contains(&(abi, UNNAMED)));
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(9), "EBADF");
        assert_eq!(errno_name(11), "EAGAIN");
        assert_eq!(errno_name(4000), "E4000");
    }

    #[test]
    fn category_table_agrees_with_names() {
        for abi in [Abi::Native, Abi::Compat] {
            for nr in 0..TABLE_LIMIT as u32 + 10 {
                assert_eq!(
                    category(abi, nr),
                    Category::of(&name(abi, nr)),
                    "{abi:?} {nr}"
                );
            }
        }
        assert!(::syscalls::x86_64::Sysno::table_size() <= TABLE_LIMIT);
        assert!(::syscalls::x86::Sysno::table_size() <= TABLE_LIMIT);
        assert!(::syscalls::aarch64::Sysno::table_size() <= TABLE_LIMIT);
        assert!(::syscalls::arm::Sysno::table_size() <= TABLE_LIMIT);
    }

    #[test]
    fn categories() {
        assert_eq!(Category::of("futex"), Category::Sync);
        assert_eq!(Category::of("futex_time64"), Category::Sync);
        assert_eq!(Category::of("epoll_wait"), Category::Multiplexing);
        assert_eq!(Category::of("openat"), Category::FileIo);
        assert_eq!(Category::of("fstat64"), Category::FileIo);
        assert_eq!(Category::of("pread64"), Category::FileIo);
        assert_eq!(Category::of("mmap"), Category::Memory);
        assert_eq!(Category::of("recvfrom"), Category::Network);
        assert_eq!(Category::of("rt_sigaction"), Category::Signals);
        assert_eq!(Category::of("pipe2"), Category::Ipc);
        assert_eq!(Category::of("clock_nanosleep"), Category::Time);
        assert_eq!(Category::of("nanosleep"), Category::Time);
        assert_eq!(Category::of("getppid"), Category::Process);
        assert_eq!(Category::of("syscall_9999"), Category::Other);
        assert_eq!(Category::of("bpf"), Category::Other);
    }

    /// Every name in the host table resolves to a category without panicking, and most real
    /// syscalls are not "other".
    #[test]
    fn most_host_syscalls_have_a_category() {
        let all: Vec<String> = (0..1000)
            .map(|nr| name(Abi::Native, nr))
            .filter(|n| !n.starts_with("syscall_"))
            .collect();
        let other = all
            .iter()
            .filter(|n| Category::of(n) == Category::Other)
            .count();
        assert!(
            other * 4 < all.len(),
            "{other} of {} uncategorised",
            all.len()
        );
    }
}
