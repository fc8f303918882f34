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

use crate::{cmd::exit::Fatal, config::Filter, syscalls};

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

pub(super) fn fill(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), Fatal> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Fatal::Other(anyhow::anyhow!("setting up the {what} filter: {e}"))
    };
    fn map<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut aya::maps::Map, Fatal> {
        ebpf.map_mut(name)
            .ok_or_else(|| Fatal::Other(anyhow::anyhow!("map {name} missing from object")))
    }
    if !filter.pids.is_empty() {
        let mut pids: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map(ebpf, FILTER_PIDS_MAP)?).map_err(|e| failed("pid", &e))?;
        for &pid in &filter.pids {
            pids.insert(pid, 1, 0).map_err(|e| failed("pid", &e))?;
        }
    }
    if let Some(dir) = &filter.cgroup {
        let fd = std::fs::File::open(dir)
            .map_err(|e| Fatal::Config(format!("filter_cgroup {}: {e}", dir.display())))?;
        let mut cgroups: CgroupArray<&mut MapData> =
            CgroupArray::try_from(map(ebpf, FILTER_CGROUP_MAP)?)
                .map_err(|e| failed("cgroup", &e))?;
        cgroups.set(0, fd.as_raw_fd(), 0).map_err(|e| {
            Fatal::Config(format!(
                "filter_cgroup {}: not a cgroup v2 directory ({e})",
                dir.display()
            ))
        })?;
    }
    if !filter.syscalls.is_empty() {
        let mut wanted: Array<&mut MapData, u8> =
            Array::try_from(map(ebpf, FILTER_SYSCALLS_MAP)?).map_err(|e| failed("syscall", &e))?;
        for name in &filter.syscalls {
            for (abi, nr) in syscalls::numbers_of(name) {
                if nr >= FILTER_SYSCALLS_PER_ABI {
                    continue;
                }
                let index = u32::from(abi == syscalls::Abi::Compat) * FILTER_SYSCALLS_PER_ABI + nr;
                wanted.set(index, 1, 0).map_err(|e| failed("syscall", &e))?;
            }
        }
    }
    Ok(())
}
