//! Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to find struct member offsets and
//! type ids, so the kernel programs can read a task field at the right place on any kernel
//! build, without kernel headers. Format: Documentation/bpf/btf.rst. `cargo xtask bpf-cost`
//! compiles this file too (xtask/src/bpfcost/mod.rs), so its model of the kernel puts every
//! field where this tells the programs it is.

use anyhow::{bail, ensure, Context, Result};
use profiler_common::TaskLayout;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

pub struct Btf {
    data: Vec<u8>,
    /// Where each type's 12-byte header is in `data`, by type id less one (ids count from 1).
    headers: Vec<usize>,
    strings: std::ops::Range<usize>,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes(b.try_into().unwrap()))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        Self::parse(std::fs::read(path).with_context(|| format!("reading {path}"))?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        ensure!(data.len() >= 24, "BTF shorter than its header");
        ensure!(
            u16::from_le_bytes([data[0], data[1]]) == BTF_MAGIC,
            "not little-endian BTF (bad magic)"
        );
        let hdr_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        ensure!(
            types.end <= data.len() && strings.end <= data.len(),
            "BTF sections out of bounds"
        );
        let mut headers = Vec::new();
        let mut at = types.start;
        while at < types.end {
            let info = u32_at(&data, at + 4)?;
            headers.push(at);
            at += 12 + trailing_len((info >> 24) & 0x1f, (info & 0xffff) as usize)?;
        }
        Ok(Self {
            data,
            headers,
            strings,
        })
    }

    /// Type `id`'s header offset and kind.
    fn header(&self, id: u32) -> Result<(usize, u32)> {
        let at = *id
            .checked_sub(1)
            .and_then(|i| self.headers.get(i as usize))
            .with_context(|| format!("BTF type {id} out of range"))?;
        Ok((at, (u32_at(&self.data, at + 4)? >> 24) & 0x1f))
    }

    fn name(&self, off: u32) -> Result<&str> {
        let start = self.strings.start + off as usize;
        let bytes = self
            .data
            .get(start..self.strings.end)
            .context("BTF name out of bounds")?;
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .context("unterminated BTF name")?;
        std::str::from_utf8(&bytes[..end]).context("BTF name is not UTF-8")
    }

    /// The id and header offset of the type `name` of kind `kind`.
    fn find(&self, name: &str, kind: u32) -> Result<(u32, usize)> {
        for id in 1..=self.headers.len() as u32 {
            let (at, k) = self.header(id)?;
            if k == kind && self.name(u32_at(&self.data, at)?)? == name {
                return Ok((id, at));
            }
        }
        bail!("no {} {name} in the kernel's BTF", kind_name(kind))
    }

    /// The BTF id of `struct name`.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        Ok(self.find(name, KIND_STRUCT)?.0)
    }

    /// The BTF id of the kernel function `name` (a kfunc a program may call).
    pub fn func_id(&self, name: &str) -> Result<u32> {
        Ok(self.find(name, KIND_FUNC)?.0)
    }

    /// Byte offset of `member` in `struct name`, looking into its anonymous unions and structs.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let (_, at) = self.find(name, KIND_STRUCT)?;
        self.member_in(at, member)?
            .with_context(|| format!("struct {name} has no member {member}"))
    }

    /// `member`'s byte offset in the struct or union whose header is at `at`, if it has one.
    fn member_in(&self, at: usize, member: &str) -> Result<Option<u32>> {
        let d = &self.data;
        let info = u32_at(d, at + 4)?;
        let (vlen, kind_flag) = ((info & 0xffff) as usize, info >> 31 == 1);
        for m in 0..vlen {
            let rec = at + 12 + m * 12;
            let mut bits = u32_at(d, rec + 8)?;
            if kind_flag {
                // High byte is the bitfield size; the rest is the bit offset.
                bits &= 0x00ff_ffff;
            }
            let name = self.name(u32_at(d, rec)?)?;
            let found = if name == member {
                Some(0)
            } else if name.is_empty() {
                match self.header_of(u32_at(d, rec + 4)?)? {
                    Some(inner) => self.member_in(inner, member)?,
                    None => None,
                }
            } else {
                None
            };
            if let Some(inner_off) = found {
                ensure!(bits % 8 == 0, "{member} is a bitfield");
                return Ok(Some(bits / 8 + inner_off));
            }
        }
        Ok(None)
    }

    /// The header offset of type `id` when it is a struct or union.
    fn header_of(&self, id: u32) -> Result<Option<usize>> {
        let (at, kind) = self.header(id)?;
        Ok((kind == KIND_STRUCT || kind == KIND_UNION).then_some(at))
    }
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_STRUCT => "struct",
        KIND_FUNC => "function",
        _ => "type",
    }
}

/// Size of the data that follows a type's 12-byte header, by kind.
fn trailing_len(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        1 => 4,                                      // INT
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG
        3 => 12,                                     // ARRAY
        4 | 5 => 12 * vlen,                          // STRUCT UNION
        6 => 8 * vlen,                               // ENUM
        13 => 8 * vlen,                              // FUNC_PROTO
        14 => 4,                                     // VAR
        15 => 12 * vlen,                             // DATASEC
        17 => 4,                                     // DECL_TAG
        19 => 12 * vlen,                             // ENUM64
        k => bail!("unknown BTF kind {k}"),
    })
}

/// Where a task says its current syscall is a 32-bit compat one: (byte offset of a `u32` in
/// `struct task_struct`, bit mask).
pub fn compat_flag(btf: &Btf) -> Result<(u32, u32)> {
    let thread_info = btf.member_offset("task_struct", "thread_info")?;
    #[cfg(target_arch = "x86_64")]
    {
        // TS_COMPAT in thread_info.status, set on entry of every ia32 syscall (including int
        // 0x80 from 64-bit code) and cleared on return to user space.
        const TS_COMPAT: u32 = 0x0002;
        Ok((
            thread_info + btf.member_offset("thread_info", "status")?,
            TS_COMPAT,
        ))
    }
    #[cfg(target_arch = "aarch64")]
    {
        // TIF_32BIT in thread_info.flags (bit 22, in the low word: little-endian).
        const TIF_32BIT: u32 = 22;
        Ok((
            thread_info + btf.member_offset("thread_info", "flags")?,
            1 << TIF_32BIT,
        ))
    }
}

/// Where the BTF programs load a task's pid and tgid, and the fields the time split reads
/// (profiler_common::TaskLayout). Errs when pid or tgid is missing; the split is left off
/// (`split: 0`, and the reason) when one of its fields is.
pub fn task_layout(btf: &Btf) -> Result<(TaskLayout, Option<String>)> {
    let task = |m| btf.member_offset("task_struct", m);
    let mut layout = TaskLayout {
        pid: task("pid")?,
        tgid: task("tgid")?,
        start_time: task("start_time")?,
        ..TaskLayout::default()
    };
    match split_fields(btf, &mut layout) {
        Ok(()) => {
            layout.split = 1;
            // Learning the runqueue takes the split's `se.cfs_rq` and `cfs_rq.rq`.
            if let Ok((id, curr)) = runqueue(btf) {
                (layout.rq_btf_id, layout.rq_curr) = (id, curr);
            }
            Ok((layout, None))
        }
        Err(e) => Ok((layout, Some(format!("{e:#}")))),
    }
}

/// `struct rq`'s id and where its `curr` is (see TaskLayout::rq_btf_id; the loader also needs
/// the kfunc `bpf_rdonly_cast` to load through it: [`rdonly_cast_id`]).
fn runqueue(btf: &Btf) -> Result<(u32, u32)> {
    Ok((btf.struct_id("rq")?, btf.member_offset("rq", "curr")?))
}

/// The BTF id of the kfunc `bpf_rdonly_cast` (kernels since 6.2).
pub fn rdonly_cast_id(btf: &Btf) -> Result<u32> {
    btf.func_id("bpf_rdonly_cast")
}

/// TaskLayout's split fields: nested members as `task_struct` offsets.
fn split_fields(btf: &Btf, l: &mut TaskLayout) -> Result<()> {
    let task = |m| btf.member_offset("task_struct", m);
    let se = task("se")?;
    let entity = |m| -> Result<u32> { Ok(se + btf.member_offset("sched_entity", m)?) };
    l.state = task("__state")?;
    l.exec_start = entity("exec_start")?;
    l.sum_exec_runtime = entity("sum_exec_runtime")?;
    l.cfs_rq = entity("cfs_rq")
        .context("the time split needs CONFIG_FAIR_GROUP_SCHED (sched_entity.cfs_rq)")?;
    l.run_delay = task("sched_info").context("the time split needs CONFIG_SCHED_INFO")?
        + btf.member_offset("sched_info", "run_delay")?;
    l.nvcsw = task("nvcsw")?;
    l.nivcsw = task("nivcsw")?;
    l.rq_of_cfs_rq = btf.member_offset("cfs_rq", "rq")?;
    l.rq_clock = btf.member_offset("rq", "clock")?;
    l.rq_clock_task = btf.member_offset("rq", "clock_task")?;
    // The programs read each second field 8 bytes after the first: one address for both.
    ensure!(
        l.sum_exec_runtime == l.exec_start + 8 && l.nivcsw == l.nvcsw + 8,
        "sched_entity.sum_exec_runtime or task_struct.nivcsw is not where the programs read it"
    );
    Ok(())
}

/// Where the saved registers hold the syscall number, for counts-only mode: byte offset in
/// `struct pt_regs` (x86_64 `orig_ax`, aarch64 `syscallno`; read as a little-endian `i32`).
pub fn syscall_nr_offset(btf: &Btf) -> Result<u32> {
    #[cfg(target_arch = "x86_64")]
    let member = "orig_ax";
    #[cfg(target_arch = "aarch64")]
    let member = "syscallno";
    btf.member_offset("pt_regs", member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![0; 10]).is_err());
        assert!(Btf::parse(vec![0; 64]).is_err());
    }

    /// Against the running kernel's BTF: the offsets the compat check relies on exist.
    #[test]
    fn finds_task_fields_in_the_live_kernel() {
        let btf = Btf::from_sys_fs().expect("this kernel has BTF (/sys/kernel/btf/vmlinux)");
        assert_eq!(btf.member_offset("task_struct", "thread_info").unwrap(), 0);
        assert!(btf.member_offset("task_struct", "pid").unwrap() > 0);
        assert!(btf.member_offset("task_struct", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
        let (offset, mask) = compat_flag(&btf).unwrap();
        assert!(offset < 64 && mask != 0);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            syscall_nr_offset(&btf).unwrap(),
            120,
            "orig_ax, as in the uapi pt_regs"
        );
        let (l, missing) = task_layout(&btf).unwrap();
        assert_eq!(missing, None, "this kernel has every field of the split");
        assert_eq!(l.split, 1);
        assert_eq!(l.tgid, l.pid + 4, "pid_t pid; pid_t tgid;");
        assert_eq!(l.nivcsw, l.nvcsw + 8, "unsigned long nvcsw, nivcsw;");
        assert_eq!(l.sum_exec_runtime, l.exec_start + 8);
        assert!(l.rq_clock_task > l.rq_clock);
        assert!(l.rq_btf_id > 0, "struct rq is in this kernel's BTF");
        assert!(
            rdonly_cast_id(&btf).unwrap() > 0,
            "the kfunc bpf_rdonly_cast is in this kernel's BTF"
        );
        assert_eq!(
            l.rq_curr,
            btf.member_offset("rq", "curr").unwrap(),
            "curr, found inside rq's anonymous union"
        );
        assert!(l.rq_curr > 0 && l.rq_curr < btf.member_offset("rq", "clock").unwrap());
    }
}
