//! The interpreter's memory: byte regions named by what they are (the context, a stack frame,
//! a map element, the current task), with pointers kept symbolically so that a pointer
//! spilled to the stack and loaded back still names its region.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// The program's context: a tracepoint's arguments, as u64s.
    Ctx,
    /// The stack frame of call depth n (0: the program's own).
    Stack(usize),
    /// A map object (struct bpf_map / bpf_array) of this id: what `ld_imm64 map[id]` gives.
    MapObject(u32),
    /// A per-CPU array's `__percpu` pointer to element `idx`, not yet made CPU-local.
    PerCpuElement(u32, u32),
    /// A per-CPU variable at this kernel address, made CPU-local.
    PerCpuVariable(u64),
    /// The value of a map entry: the map, its key's bytes, and the CPU for per-CPU maps.
    Value {
        map: u32,
        key: Vec<u8>,
        cpu: Option<u32>,
    },
    /// The task_struct of this thread id (bpf_get_current_task_btf returns the current one's).
    Task(u32),
    /// A CPU's `struct cfs_rq` and `struct rq` (a task's `se.cfs_rq`, then its `rq`).
    CfsRq(u32),
    Rq(u32),
    /// This thread's saved registers (struct pt_regs), at the top of its kernel stack.
    Regs(u32),
}

impl Region {
    /// A modelled kernel address for the region's start, for what only a pointer difference
    /// sees (the programs subtract one pointer from another to key a thread by its `pt_regs`):
    /// threads' registers 16 KiB apart, everything else at a fixed address of its own kind.
    pub fn address(&self) -> u64 {
        const VMALLOC: u64 = 0xffff_c900_0000_0000;
        const DIRECT: u64 = 0xffff_8880_0000_0000;
        match self {
            Region::Regs(tid) => VMALLOC + u64::from(*tid) * 0x4000 + 0x3f58,
            Region::Ctx => DIRECT + 0x1000,
            Region::Stack(depth) => DIRECT + 0x2000 + *depth as u64 * 0x200,
            Region::MapObject(id) => DIRECT + 0x100_0000 + u64::from(*id) * 0x1_0000,
            Region::Value { map, .. } => DIRECT + 0x1000_0000 + u64::from(*map) * 0x100_0000,
            Region::PerCpuElement(map, idx) => {
                DIRECT + 0x2000_0000 + u64::from(*map) * 0x100_0000 + u64::from(*idx) * 0x100
            }
            Region::PerCpuVariable(a) => *a,
            Region::Task(tid) => DIRECT + 0x4000_0000 + u64::from(*tid) * 0x4000,
            Region::CfsRq(cpu) => DIRECT + 0x6000_0000 + u64::from(*cpu) * 0x1000,
            Region::Rq(cpu) => DIRECT + 0x7000_0000 + u64::from(*cpu) * 0x1000,
        }
    }
}

/// A register or memory word: a number, or a region and an offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Scalar(u64),
    Ptr(Region, i64),
}

impl Val {
    pub fn scalar(&self) -> Result<u64> {
        match self {
            Val::Scalar(v) => Ok(*v),
            Val::Ptr(r, o) => bail!("a pointer ({r:?}{o:+}) where a number was expected"),
        }
    }
}

#[derive(Default)]
struct Bytes {
    data: Vec<u8>,
    /// Offset of each pointer stored here (8 bytes wide).
    ptrs: BTreeMap<i64, (Region, i64)>,
}

/// Every region's contents. Memory nobody wrote reads as zeros, as a fresh map value, stack
/// slot or zeroed task field would.
#[derive(Default)]
pub struct Memory {
    regions: HashMap<Region, Bytes>,
}

fn index(off: i64, size: usize) -> Result<usize> {
    if !(0..=1 << 24).contains(&off) {
        bail!("access at offset {off} (size {size}) outside any region the model holds");
    }
    Ok(off as usize)
}

impl Memory {
    pub fn read(&self, region: &Region, off: i64, size: usize) -> Result<Val> {
        let Some(bytes) = self.regions.get(region) else {
            return Ok(Val::Scalar(0));
        };
        if let Some((r, o)) = bytes.ptrs.get(&off) {
            if size != 8 {
                bail!("a {size}-byte load of part of a pointer in {region:?}");
            }
            return Ok(Val::Ptr(r.clone(), *o));
        }
        if bytes
            .ptrs
            .range(off - 7..off + size as i64)
            .next()
            .is_some()
        {
            bail!("a load overlapping a stored pointer in {region:?} at {off}");
        }
        let start = index(off, size)?;
        let mut v = [0u8; 8];
        for (i, b) in v.iter_mut().enumerate().take(size) {
            *b = bytes.data.get(start + i).copied().unwrap_or(0);
        }
        Ok(Val::Scalar(u64::from_le_bytes(v)))
    }

    pub fn write(&mut self, region: &Region, off: i64, size: usize, val: &Val) -> Result<()> {
        let start = index(off, size)?;
        let bytes = self.regions.entry(region.clone()).or_default();
        let stale: Vec<i64> = bytes
            .ptrs
            .range(off - 7..off + size as i64)
            .map(|(o, _)| *o)
            .collect();
        for o in stale {
            bytes.ptrs.remove(&o);
        }
        if bytes.data.len() < start + size {
            bytes.data.resize(start + size, 0);
        }
        let raw = match val {
            Val::Scalar(v) => *v,
            Val::Ptr(r, o) => {
                if size != 8 {
                    bail!("a pointer stored in {size} bytes");
                }
                bytes.ptrs.insert(off, (r.clone(), *o));
                0
            }
        };
        bytes.data[start..start + size].copy_from_slice(&raw.to_le_bytes()[..size]);
        Ok(())
    }

    /// `len` plain bytes (a helper's key or value argument).
    pub fn bytes(&self, region: &Region, off: i64, len: usize) -> Result<Vec<u8>> {
        (0..len)
            .map(|i| Ok(self.read(region, off + i as i64, 1)?.scalar()? as u8))
            .collect()
    }

    pub fn put_bytes(&mut self, region: &Region, off: i64, data: &[u8]) -> Result<()> {
        for (i, b) in data.iter().enumerate() {
            self.write(region, off + i as i64, 1, &Val::Scalar(u64::from(*b)))?;
        }
        Ok(())
    }

    /// Every region that has been written.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.keys()
    }

    /// Forgets a region (a deleted map entry, a returning call's frame).
    pub fn clear(&mut self, region: &Region) {
        self.regions.remove(region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_survive_a_spill_and_numbers_are_little_endian() {
        let mut m = Memory::default();
        let s = Region::Stack(0);
        let p = Val::Ptr(Region::Task(1), 16);
        m.write(&s, 8, 8, &p).unwrap();
        assert_eq!(m.read(&s, 8, 8).unwrap(), p);
        assert!(m.read(&s, 8, 4).is_err());
        assert!(m.read(&s, 12, 4).is_err());
        m.write(&s, 8, 4, &Val::Scalar(0x0102_0304)).unwrap();
        assert_eq!(m.read(&s, 8, 8).unwrap(), Val::Scalar(0x0102_0304));
        assert_eq!(m.read(&s, 9, 1).unwrap(), Val::Scalar(3));
        assert_eq!(m.read(&Region::Regs(1), 0, 8).unwrap(), Val::Scalar(0));
        assert!(m.write(&s, 0, 4, &p).is_err());
    }
}
