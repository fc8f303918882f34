//! Reading a whole BPF hash map in a few syscalls (BPF_MAP_LOOKUP_BATCH, Linux ≥ 5.6), where
//! aya's iterator makes two per entry (next key, then lookup). At 10,000 (process, syscall) pairs
//! that is the difference between 20,000 syscalls per drain and about ten.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per call to start with; a hash bucket holding more than this makes the kernel answer
/// ENOSPC, and the chunk doubles.
const CHUNK: usize = 1024;

/// Every (key, value) of a BPF hash map, in batches.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    // The batch token is the kernel's hash bucket index: a u32.
    let mut token_in = 0u32;
    let mut token_out = 0u32;
    let mut first = true;
    loop {
        let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
        let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values of the map's own sizes (checked by
        // aya when the map was typed), and `attr` outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            Some(libc::ENOSPC) if attr.count == 0 => {
                chunk *= 2;
                continue;
            }
            None | Some(libc::ENOENT) | Some(libc::ENOSPC) => {}
            Some(_) => return Err(err.unwrap()),
        }
        let n = attr.count as usize;
        // SAFETY: the kernel filled the first `n` keys and values.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(
            keys.into_iter()
                .zip(values)
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        if matches!(
            err.as_ref().and_then(io::Error::raw_os_error),
            Some(libc::ENOENT)
        ) {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}
