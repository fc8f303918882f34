//! Failing calls' arguments: taken out of FAILED_ARGS at every drain (the map then holds one
//! interval's), decoded into the store's form, with relative paths resolved against the
//! process's working directory while it lives.

use std::{collections::HashMap, net::Ipv4Addr, net::Ipv6Addr, path::Path};

use profiler_common::{ArgKey, ARG_NO_DIRFD, ARG_SOCKADDR, ARG_TRUNCATED, ARG_UNREADABLE};

use crate::store::{
    failing_args::{Arg, ArgKind},
    ProcKey, SyscallKey,
};

/// The `dirfd` that means "the working directory".
const AT_FDCWD: i32 = -100;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// One decoded entry: (process, syscall, errno, argument, count).
pub(super) type Entry = (ProcKey, SyscallKey, u32, Arg, u64);

/// Decodes what the kernel captured. `cwds` caches each pid's working directory for this
/// drain (None: the process is gone, or /proc hides it).
pub(super) fn decode(key: &ArgKey, n: u64, cwds: &mut HashMap<u32, Option<String>>) -> Entry {
    let p = ProcKey {
        pid: key.tgid,
        incarnation: key.incarnation,
    };
    let sc = SyscallKey::from((key.abi, u32::from(key.nr)));
    let unreadable = key.flags & ARG_UNREADABLE != 0;
    let truncated = key.flags & ARG_TRUNCATED != 0;
    let arg = if key.flags & ARG_SOCKADDR != 0 {
        Arg {
            text: if unreadable {
                String::new()
            } else {
                sockaddr(&key.bytes)
            },
            resolved: None,
            dirfd: None,
            kind: ArgKind::Address,
            truncated: false,
            unreadable,
        }
    } else {
        let text = String::from_utf8_lossy(until_nul(&key.bytes)).into_owned();
        let relative = !unreadable && !text.is_empty() && !text.starts_with('/');
        let at_cwd = key.dirfd == ARG_NO_DIRFD || key.dirfd == AT_FDCWD;
        let resolved = (relative && at_cwd)
            .then(|| {
                cwds.entry(key.tgid)
                    .or_insert_with(|| cwd_of(key.tgid))
                    .as_ref()
                    .map(|cwd| Path::new(cwd).join(&text).to_string_lossy().into_owned())
            })
            .flatten();
        Arg {
            text,
            resolved,
            dirfd: (relative && !at_cwd).then_some(key.dirfd),
            kind: ArgKind::Path,
            truncated,
            unreadable,
        }
    };
    (p, sc, u32::from(key.errno), arg, n)
}

fn cwd_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn until_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A sockaddr as the kernel side keeps it (see profiler_common's ARG_SOCKADDR).
fn sockaddr(b: &[u8]) -> String {
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        AF_INET => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            format!("{ip}:{port}")
        }
        AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            format!("[{}]:{port}", Ipv6Addr::from(octets))
        }
        AF_UNIX if b[2] == 0 => {
            format!("unix:@{}", String::from_utf8_lossy(until_nul(&b[3..])))
        }
        AF_UNIX => format!("unix:{}", String::from_utf8_lossy(until_nul(&b[2..]))),
        other => format!("family {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_people_write_them() {
        let mut b = [0u8; 256];
        b[..2].copy_from_slice(&2u16.to_ne_bytes());
        b[2..4].copy_from_slice(&9u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr(&b), "127.0.0.1:9");
        let mut b = [0u8; 256];
        b[..2].copy_from_slice(&1u16.to_ne_bytes());
        b[2..10].copy_from_slice(b"/run/x\0\0");
        assert_eq!(sockaddr(&b), "unix:/run/x");
        b[2] = 0;
        b[3..6].copy_from_slice(b"abc");
        b[6] = 0;
        assert_eq!(sockaddr(&b), "unix:@abc");
    }
}
