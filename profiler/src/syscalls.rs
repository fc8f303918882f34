//! Syscall names of the host ABI, from the `syscalls` crate's tables, which are generated from
//! the kernel's own syscall tables (complete, not hand-typed).

#[cfg(target_arch = "x86_64")]
use ::syscalls::x86_64::Sysno;

#[cfg(target_arch = "aarch64")]
use ::syscalls::aarch64::Sysno;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("syscall-profiler supports x86_64 and aarch64 hosts");

/// The name of syscall `nr`, or `syscall_<nr>` when the table has none.
pub fn name(nr: u32) -> String {
    match Sysno::new(nr as usize) {
        Some(s) => s.name().to_string(),
        None => format!("syscall_{nr}"),
    }
}

/// The number of a syscall given by name (`openat`), by `syscall_<nr>`, or by number.
pub fn lookup(s: &str) -> Option<u32> {
    if let Ok(nr) = s.parse::<u32>() {
        return Some(nr);
    }
    if let Some(nr) = s.strip_prefix("syscall_").and_then(|n| n.parse().ok()) {
        return Some(nr);
    }
    s.parse::<Sysno>().ok().map(|s| s.id() as u32)
}

pub fn execve_nr() -> u32 {
    Sysno::execve.id() as u32
}

pub fn execveat_nr() -> u32 {
    Sysno::execveat.id() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_table() {
        assert_eq!(name(0), "read");
        assert_eq!(name(39), "getpid");
        assert_eq!(name(59), "execve");
        assert_eq!(name(110), "getppid");
        assert_eq!(name(202), "futex");
        assert_eq!(name(257), "openat");
        assert_eq!(name(262), "newfstatat");
        assert_eq!(name(322), "execveat");
        assert_eq!(name(435), "clone3");
        assert_eq!(execve_nr(), 59);
        assert_eq!(execveat_nr(), 322);
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_table() {
        assert_eq!(name(63), "read");
        assert_eq!(name(173), "getppid");
        assert_eq!(name(221), "execve");
        assert_eq!(execve_nr(), 221);
        assert_eq!(execveat_nr(), 281);
    }

    #[test]
    fn both_tables_are_complete() {
        // Every number up to the newest syscall either has a name or is a known hole.
        assert!(::syscalls::x86_64::Sysno::count() >= 370);
        assert!(::syscalls::aarch64::Sysno::count() >= 300);
        assert_eq!(
            ::syscalls::aarch64::Sysno::new(173).unwrap().name(),
            "getppid"
        );
        assert_eq!(
            ::syscalls::x86_64::Sysno::new(110).unwrap().name(),
            "getppid"
        );
    }

    #[test]
    fn unknown_numbers_and_lookups() {
        assert_eq!(name(100_000), "syscall_100000");
        assert_eq!(lookup("syscall_100000"), Some(100_000));
        assert_eq!(lookup(&name(3)), Some(3));
        assert_eq!(lookup("7"), Some(7));
        assert_eq!(lookup("no_such_call"), None);
    }
}
