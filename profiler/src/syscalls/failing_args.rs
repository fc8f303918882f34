//! Which argument of a syscall names what it failed on: a path (and the directory fd it is
//! relative to), or for connect a sockaddr. The kernel side captures it for failing calls
//! (issue 14); the numbers come from the generated tables per ABI, by name, so a name one
//! ABI lacks (stat64 on x86_64) is simply absent there.

use profiler_common::{ARG_KIND_DIRFD_SHIFT, ARG_KIND_SOCKADDR};

use super::{numbers_of, Abi};

/// (name, the path's argument 1..=6, the dirfd's argument or 0).
const PATHS: &[(&str, u8, u8)] = &[
    ("open", 1, 0),
    ("openat", 2, 1),
    ("openat2", 2, 1),
    ("creat", 1, 0),
    ("stat", 1, 0),
    ("lstat", 1, 0),
    ("newfstatat", 2, 1),
    ("statx", 2, 1),
    ("access", 1, 0),
    ("faccessat", 2, 1),
    ("faccessat2", 2, 1),
    ("execve", 1, 0),
    ("execveat", 2, 1),
    ("readlink", 1, 0),
    ("readlinkat", 2, 1),
    ("unlink", 1, 0),
    ("unlinkat", 2, 1),
    ("mkdir", 1, 0),
    ("mkdirat", 2, 1),
    ("rmdir", 1, 0),
    ("rename", 1, 0),
    ("renameat", 2, 1),
    ("renameat2", 2, 1),
    ("link", 1, 0),
    ("linkat", 2, 1),
    // The new link's path: the target need not exist.
    ("symlink", 2, 0),
    ("symlinkat", 3, 2),
    ("chdir", 1, 0),
    ("chroot", 1, 0),
    ("chmod", 1, 0),
    ("fchmodat", 2, 1),
    ("fchmodat2", 2, 1),
    ("chown", 1, 0),
    ("lchown", 1, 0),
    ("fchownat", 2, 1),
    ("truncate", 1, 0),
    ("mknod", 1, 0),
    ("mknodat", 2, 1),
    ("utimensat", 2, 1),
    ("utime", 1, 0),
    ("utimes", 1, 0),
    ("futimesat", 2, 1),
    ("setxattr", 1, 0),
    ("lsetxattr", 1, 0),
    ("getxattr", 1, 0),
    ("lgetxattr", 1, 0),
    ("listxattr", 1, 0),
    ("llistxattr", 1, 0),
    ("removexattr", 1, 0),
    ("lremovexattr", 1, 0),
    ("inotify_add_watch", 2, 0),
    ("fanotify_mark", 5, 4),
    ("name_to_handle_at", 2, 1),
    // The mount point: the source need not be a path.
    ("mount", 2, 0),
    ("umount2", 1, 0),
    ("statfs", 1, 0),
    ("swapon", 1, 0),
    ("swapoff", 1, 0),
    ("acct", 1, 0),
    ("pivot_root", 1, 0),
    ("uselib", 1, 0),
    ("open_tree", 2, 1),
    ("fspick", 2, 1),
    // The 32-bit ABIs' own.
    ("stat64", 1, 0),
    ("lstat64", 1, 0),
    ("fstatat64", 2, 1),
    ("oldstat", 1, 0),
    ("oldlstat", 1, 0),
    ("truncate64", 1, 0),
    ("chown32", 1, 0),
    ("lchown32", 1, 0),
    ("umount", 1, 0),
    ("statfs64", 1, 0),
];

/// Every (ABI, number, kind byte) the kernel side's ARG_KINDS holds.
pub fn kinds() -> Vec<(Abi, u32, u8)> {
    let mut out = Vec::new();
    for &(name, path, dirfd) in PATHS {
        for (abi, nr) in numbers_of(name) {
            out.push((abi, nr, path | dirfd << ARG_KIND_DIRFD_SHIFT));
        }
    }
    for (abi, nr) in numbers_of("connect") {
        out.push((abi, nr, 2 | ARG_KIND_SOCKADDR));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_abis_have_the_common_paths_and_connect() {
        let kinds = kinds();
        for name in ["openat", "connect", "execve", "unlink"] {
            for (abi, nr) in numbers_of(name) {
                assert!(
                    kinds.iter().any(|k| (k.0, k.1) == (abi, nr)),
                    "{name} {abi:?}"
                );
            }
            assert_eq!(numbers_of(name).len(), 2, "{name} in both ABIs");
        }
        let newfstatat = numbers_of("newfstatat")[0];
        let k = kinds.iter().find(|k| (k.0, k.1) == newfstatat).unwrap();
        assert_eq!(k.2, 2 | 1 << ARG_KIND_DIRFD_SHIFT);
        assert!(numbers_of("stat64")
            .iter()
            .all(|(abi, _)| *abi == Abi::Compat));
    }
}
