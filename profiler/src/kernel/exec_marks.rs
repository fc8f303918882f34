//! `record`'s exec boundary (profiler_common::EXEC_MARKS_MAP): the command's process marks
//! itself just before it execs the command, and the kernel's `sched_process_exec` starts the
//! command's own process incarnation at that exec, leaving the set-up in the old one.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::{
    maps::{HashMap, Map, MapData, MapError},
    Ebpf,
};
use profiler_common::EXEC_MARKS_MAP;

use super::error::Error;

/// The marks of one loaded object. Each `record` loads its own programs and maps, so only its
/// own command is ever marked in them.
pub struct ExecMarks {
    map: HashMap<MapData, u32, u32>,
    /// The map's descriptor, for [`ExecMarks::mark_self`]. Like every BPF descriptor it is
    /// close-on-exec: the command never inherits it.
    fd: RawFd,
}

/// `union bpf_attr` as `BPF_MAP_UPDATE_ELEM` reads it.
#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

impl ExecMarks {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<ExecMarks, Error> {
        let map = ebpf
            .take_map(EXEC_MARKS_MAP)
            .ok_or_else(|| Error::MissingMap(EXEC_MARKS_MAP.to_string()))?;
        let fd = match &map {
            Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => -1,
        };
        let map = HashMap::try_from(map).map_err(|source| Error::Map {
            name: EXEC_MARKS_MAP.to_string(),
            source,
        })?;
        Ok(ExecMarks { map, fd })
    }

    /// A hook that marks the calling process "count from my next exec", for
    /// `CommandExt::pre_exec`, which runs it in the child of a fork of a multi-threaded
    /// program: one bpf() system call, nothing allocated or locked (async-signal-safe). The
    /// hook holds the map's descriptor number: it is for a child forked while these marks live.
    pub fn self_marker(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let fd = self.fd;
        move || mark_self(fd)
    }
    /// What the kernel wrote into `pid`'s mark: once the marked process has exec'd, the
    /// incarnation its exec started (0 when the kernel could not record the process: its
    /// process maps were full, `procs_full`; its calls then count under incarnation 0). None
    /// when `pid` is not marked.
    pub fn incarnation(&self, pid: u32) -> Result<Option<u32>, Error> {
        match self.map.get(&pid, 0) {
            Ok(incarnation) => Ok(Some(incarnation)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::ReadMap(EXEC_MARKS_MAP, e)),
        }
    }
}

/// See [`ExecMarks::self_marker`].
fn mark_self(map_fd: RawFd) -> std::io::Result<()> {
    // SAFETY: getpid cannot fail; bpf() reads the attribute we pass, of the size we pass, and
    // the key and value it points to, which live until it returns.
    unsafe {
        let key = libc::getpid() as u32;
        let value = 0u32;
        let attr = MapUpdateAttr {
            map_fd: map_fd as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        let ret = libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapUpdateAttr,
            std::mem::size_of::<MapUpdateAttr>(),
        );
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
