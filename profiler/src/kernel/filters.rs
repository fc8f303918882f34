//! The in-kernel filters (`--filter-pids`, `--filter-cgroup`, `--filter-syscalls`) and the
//! syscall numbers the programs must know, written into the object before attaching.

use std::os::fd::AsRawFd;

use aya::{
    maps::{Array, CgroupArray, HashMap, MapData},
    Ebpf,
};
use profiler_common::{
    CLONE_NRS_LEN, FILTER_CGROUP_MAP, FILTER_PIDS_MAP, FILTER_SYSCALLS_MAP, FILTER_SYSCALLS_PER_ABI,
};

use super::error::Error;
use crate::{config::Filter, syscalls};

/// See profiler_common::GLOBAL_CLONE_NRS.
pub(super) fn clone_numbers() -> [u32; CLONE_NRS_LEN] {
    let mut nrs = [u32::MAX; CLONE_NRS_LEN];
    for (i, name) in ["clone", "clone3", "fork", "vfork"].iter().enumerate() {
        for (abi, nr) in syscalls::numbers_of(name) {
            nrs[i + if abi == syscalls::Abi::Compat { 4 } else { 0 }] = nr;
        }
    }
    nrs
}

pub(super) fn fill(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), Error> {
    let failed = |what| move |source| Error::Filter { what, source };
    fn map<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut aya::maps::Map, Error> {
        ebpf.map_mut(name)
            .ok_or_else(|| Error::MissingMap(name.to_string()))
    }
    if !filter.pids.is_empty() {
        let mut pids: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map(ebpf, FILTER_PIDS_MAP)?).map_err(failed("pid"))?;
        for &pid in &filter.pids {
            pids.insert(pid, 1, 0).map_err(failed("pid"))?;
        }
    }
    if let Some(dir) = &filter.cgroup {
        let fd = std::fs::File::open(dir).map_err(|source| Error::FilterCgroup {
            dir: dir.clone(),
            source,
        })?;
        let mut cgroups: CgroupArray<&mut MapData> =
            CgroupArray::try_from(map(ebpf, FILTER_CGROUP_MAP)?).map_err(failed("cgroup"))?;
        cgroups
            .set(0, fd.as_raw_fd(), 0)
            .map_err(|cause| Error::NotCgroupV2 {
                dir: dir.clone(),
                cause,
            })?;
    }
    if !filter.syscalls.is_empty() {
        let mut wanted: Array<&mut MapData, u8> =
            Array::try_from(map(ebpf, FILTER_SYSCALLS_MAP)?).map_err(failed("syscall"))?;
        for name in &filter.syscalls {
            for (abi, nr) in syscalls::numbers_of(name) {
                if nr >= FILTER_SYSCALLS_PER_ABI {
                    continue;
                }
                let index = u32::from(abi == syscalls::Abi::Compat) * FILTER_SYSCALLS_PER_ABI + nr;
                wanted.set(index, 1, 0).map_err(failed("syscall"))?;
            }
        }
    }
    Ok(())
}
