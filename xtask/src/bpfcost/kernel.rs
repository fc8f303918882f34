//! What the cost count reads from the live kernel: a process's loaded programs as the verifier
//! rewrote them (xlated), their maps, kernel symbols for call targets, and two struct offsets
//! from the kernel's BTF that the verifier's inlined map lookups use.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapInfo, MapType};

/// One BPF instruction (struct bpf_insn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn from_bytes(b: &[u8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A loaded program as the kernel runs it (before JIT): after verification, dead-code removal
/// and the verifier's inlining of helpers.
#[derive(Clone, Debug)]
pub struct Program {
    /// As the kernel keeps it: cut to 15 characters.
    pub name: String,
    /// A BTF tracepoint (program type tracing) rather than a raw one.
    pub btf: bool,
    pub insns: Vec<Insn>,
}

/// enum bpf_prog_type's BPF_PROG_TYPE_TRACING: fentry/fexit and BTF tracepoints.
const PROG_TYPE_TRACING: u32 = 26;

impl Program {
    /// Whether this is the program the object names `full`: the kernel cuts names to 15
    /// characters, so `sys_exit_counts_btf` and `sys_exit_counts` look alike there; the
    /// project names its BTF tracepoint programs `*_btf`, and the program type tells them
    /// apart.
    pub fn is(&self, full: &str) -> bool {
        self.name == full[..full.len().min(15)] && self.btf == full.ends_with("_btf")
    }
}

#[derive(Clone, Debug)]
pub struct Map {
    pub id: u32,
    pub name: String,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Entry 0's value, for read-only (frozen) array maps: the programs' `.rodata` globals.
    pub rodata: Option<Vec<u8>>,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The head of struct bpf_prog_info (uapi: the kernel fills as much as it is given).
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    kind: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

#[repr(C)]
struct InfoByFd {
    fd: u32,
    info_len: u32,
    info: u64,
}

fn prog_info(fd: &OwnedFd, info: &mut ProgInfo) -> Result<()> {
    let mut attr = InfoByFd {
        fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok(())
}

/// Program `id`'s name, xlated instructions and map ids.
pub fn program(id: u32) -> Result<(Program, Vec<u32>)> {
    let mut attr = [id, 0, 0];
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("opening BPF program {id}"))?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = ProgInfo::default();
    prog_info(&fd, &mut info)?;
    if info.xlated_prog_len == 0 {
        bail!("program {id}: the kernel shows no xlated instructions (needs root)");
    }
    let mut bytes = vec![0u8; info.xlated_prog_len as usize];
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let (len, nr_maps) = (info.xlated_prog_len, info.nr_map_ids);
    info = ProgInfo {
        xlated_prog_len: len,
        xlated_prog_insns: bytes.as_mut_ptr() as u64,
        nr_map_ids: nr_maps,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..ProgInfo::default()
    };
    prog_info(&fd, &mut info)?;
    let name_len = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    let program = Program {
        name: String::from_utf8_lossy(&info.name[..name_len]).into_owned(),
        btf: info.kind == PROG_TYPE_TRACING,
        insns: bytes.chunks_exact(8).map(Insn::from_bytes).collect(),
    };
    Ok((program, map_ids))
}

pub fn map(id: u32) -> Result<Map> {
    let info = MapInfo::from_id(id).with_context(|| format!("opening BPF map {id}"))?;
    let kind = info
        .map_type()
        .with_context(|| format!("map {id}: unknown type"))?;
    let read_only = info.map_flags() & BPF_F_RDONLY_PROG != 0;
    let rodata = if kind == MapType::Array && read_only {
        let fd = info.fd()?;
        let mut value = vec![0u8; info.value_size() as usize];
        let key = 0u32;
        #[repr(C)]
        struct Lookup {
            fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut attr = Lookup {
            fd: fd.as_fd_raw(),
            pad: 0,
            key: &key as *const u32 as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).with_context(|| format!("reading map {id}"))?;
        Some(value)
    } else {
        None
    };
    Ok(Map {
        id,
        name: info.name_as_str().unwrap_or("?").to_string(),
        kind,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        rodata,
    })
}

trait RawFdOf {
    fn as_fd_raw(&self) -> u32;
}

impl<T: std::os::fd::AsFd> RawFdOf for T {
    fn as_fd_raw(&self) -> u32 {
        self.as_fd().as_raw_fd() as u32
    }
}

/// Ids of the BPF programs process `pid` holds (its program and link file descriptors).
pub fn programs_of(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fd");
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if !(target.contains("bpf-prog") || target.contains("bpf_link")) {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let text = std::fs::read_to_string(&fdinfo).unwrap_or_default();
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Kernel function names by address, from /proc/kallsyms, and the base that BPF call
/// instructions are relative to.
pub struct Symbols {
    call_base: u64,
    names: HashMap<u64, String>,
}

impl Symbols {
    pub fn load() -> Result<Symbols> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Symbols::parse(&text)
    }

    pub fn parse(kallsyms: &str) -> Result<Symbols> {
        let mut names = HashMap::new();
        for line in kallsyms.lines() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            if let Ok(addr) = u64::from_str_radix(addr, 16) {
                names.entry(addr).or_insert_with(|| name.to_string());
            }
        }
        let call_base = names
            .iter()
            .find_map(|(a, n)| (n == "__bpf_call_base").then_some(*a))
            .filter(|&a| a != 0)
            .context("no __bpf_call_base in /proc/kallsyms (run as root, kptr_restrict < 2)")?;
        Ok(Symbols { call_base, names })
    }

    /// The kernel function a helper call instruction's `imm` names.
    pub fn call_target(&self, imm: i32) -> Option<&str> {
        let addr = self.call_base.wrapping_add(imm as i64 as u64);
        self.names.get(&addr).map(String::as_str)
    }
}
