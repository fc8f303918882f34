//! Reading a whole BPF hash map in a few syscalls (BPF_MAP_LOOKUP_BATCH, Linux ≥ 5.6), where
//! aya's iterator makes two per entry (next key, then lookup). At 10,000 (process, syscall) pairs
//! that is the difference between 20,000 syscalls per drain and about ten.
//!
//! The buffers are kept from one read to the next, so a drain that reads the same maps every
//! interval neither allocates nor page-faults them in again.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

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

/// Room for this many more entries at least, before each call. A hash bucket holding more than
/// the room makes the kernel answer ENOSPC, and the room doubles.
const CHUNK: usize = 1024;

/// A map's keys and values as of the last [`Batch::read`], in buffers that keep their capacity,
/// so once they have grown to the map's size a read is one or two calls and no allocation.
pub struct Batch<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K: Pod, V: Pod> Default for Batch<K, V> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K: Pod, V: Pod> Batch<K, V> {
    pub fn values(&self) -> &[V] {
        &self.values
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.keys.iter().zip(&self.values)
    }

    /// Replaces the contents with every (key, value) of the map.
    pub fn read(&mut self, map: BorrowedFd<'_>) -> io::Result<()> {
        self.read_with(map, BPF_MAP_LOOKUP_BATCH)
    }

    /// Replaces the contents with every (key, value) of the map, deleting them from it as they
    /// are read (BPF_MAP_LOOKUP_AND_DELETE_BATCH, Linux ≥ 5.14: each hash bucket read and
    /// emptied under its lock).
    pub fn take(&mut self, map: BorrowedFd<'_>) -> io::Result<()> {
        self.read_with(map, BPF_MAP_LOOKUP_AND_DELETE_BATCH)
    }

    fn read_with(&mut self, map: BorrowedFd<'_>, cmd: libc::c_long) -> io::Result<()> {
        self.keys.clear();
        self.values.clear();
        // Where the next batch starts: the kernel's hash bucket index, none before the first.
        let mut cursor = None;
        while !self.append(map, &mut cursor, cmd)? {}
        Ok(())
    }

    /// Appends the entries of at least one more hash bucket after `cursor`; true once the map
    /// has been read to its end.
    fn append(
        &mut self,
        map: BorrowedFd<'_>,
        cursor: &mut Option<u32>,
        cmd: libc::c_long,
    ) -> io::Result<bool> {
        let mut want = CHUNK;
        loop {
            let len = self.keys.len();
            self.keys.reserve(want);
            self.values.reserve(want);
            // What the buffers have room for, not just `want`: fewer calls.
            let room = (self.keys.capacity() - len)
                .min(self.values.capacity() - len)
                .min(u32::MAX as usize);
            let mut token_out = 0u32;
            let mut attr = BatchAttr {
                in_batch: match cursor {
                    None => 0,
                    Some(t) => t as *mut u32 as u64,
                },
                out_batch: &mut token_out as *mut u32 as u64,
                // SAFETY (of the `add`s): `len` is within each buffer's allocation.
                keys: unsafe { self.keys.as_mut_ptr().add(len) } as u64,
                values: unsafe { self.values.as_mut_ptr().add(len) } as u64,
                count: room as u32,
                map_fd: map.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: past `len` both buffers have room for `count` keys and values of the
            // map's own sizes (checked by aya when the map was typed), and `attr` outlives the
            // call.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    cmd,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>() as libc::c_uint,
                )
            };
            let err = (ret < 0).then(io::Error::last_os_error);
            let errno = err.as_ref().and_then(io::Error::raw_os_error);
            match errno {
                // One hash bucket holds more entries than there is room for.
                Some(libc::ENOSPC) if attr.count == 0 => {
                    want = room * 2;
                    continue;
                }
                None | Some(libc::ENOENT) | Some(libc::ENOSPC) => {}
                Some(_) => return Err(err.unwrap()),
            }
            let n = (attr.count as usize).min(room);
            // SAFETY: the kernel filled the `n` keys and values after `len`, and K and V are
            // Pod: any bytes are valid values.
            unsafe {
                self.keys.set_len(len + n);
                self.values.set_len(len + n);
            }
            *cursor = Some(token_out);
            return Ok(errno == Some(libc::ENOENT));
        }
    }
}

/// Writes `keys` and their values, `values` (as many of the map's values, back to back), in one
/// call (BPF_MAP_UPDATE_BATCH, Linux ≥ 5.6). Not atomic: on error, some may be written.
pub fn update_all<K: Pod>(map: BorrowedFd<'_>, keys: &[K], values: &[u8]) -> io::Result<()> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(keys.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `keys` holds `count` keys and `values` as many values of the map's sizes (checked
    // by the caller against the typed map), and `attr` outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every (key, value) of a BPF hash map, in batches, into fresh buffers: for maps read once.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut batch = Batch::default();
    batch.read(map)?;
    Ok(batch.keys.into_iter().zip(batch.values).collect())
}
