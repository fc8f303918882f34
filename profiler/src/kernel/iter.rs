//! The syscalls in flight of the BPF programs that keep starts in task storage, which user
//! space cannot list: the `in_flight` task iterator (profiler-ebpf task.rs) writes a `Start` for
//! each thread inside a recorded call, and each read runs it once over every thread
//! (BPF_ITER_CREATE, Linux ≥ 5.8). aya 0.14 hands out no link fd to create iterators from, so
//! the link is made here (BPF_LINK_CREATE).

use std::{
    io::{self, Read},
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use profiler_common::Start;

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
/// enum bpf_attach_type's BPF_TRACE_ITER.
const BPF_TRACE_ITER: u32 = 28;

/// The `link_create` member of `union bpf_attr`, as far as a task iterator needs it (the
/// kernel takes the zeroed rest as "every task").
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is the union member `cmd` reads, and its size is passed along.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both commands return a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The iterator's link: dropping it detaches the program.
pub struct InFlightIter {
    link: OwnedFd,
}

impl InFlightIter {
    /// Links the loaded iterator program `prog`.
    pub fn link(prog: BorrowedFd<'_>) -> io::Result<Self> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..Default::default()
        };
        Ok(Self {
            link: bpf(BPF_LINK_CREATE, &mut attr)?,
        })
    }

    /// Replaces `out` with every thread's syscall in flight, as of this walk.
    pub fn read(&self, out: &mut Vec<Start>, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut attr = IterCreateAttr {
            link_fd: self.link.as_fd().as_raw_fd() as u32,
            flags: 0,
        };
        let iter = bpf(BPF_ITER_CREATE, &mut attr)?;
        buf.clear();
        std::fs::File::from(iter).read_to_end(buf)?;
        out.clear();
        out.extend(buf.chunks_exact(size_of::<Start>()).map(|record| {
            // SAFETY: `Start` is plain data (aya::Pod) and the chunk is exactly its size;
            // read_unaligned because the buffer is only byte-aligned.
            unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<Start>()) }
        }));
        Ok(())
    }
}
