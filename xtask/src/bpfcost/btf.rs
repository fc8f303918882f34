//! Member offsets of kernel structs, from the kernel's own BTF (/sys/kernel/btf/vmlinux).
//!
//! The verifier inlines array lookups as loads relative to `struct bpf_array`'s `value`, and a
//! hash lookup's value sits past `struct htab_elem`'s `key`: the interpreter needs both offsets
//! to tell which element an inlined lookup reached.

use anyhow::{bail, Context, Result};

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;

struct Type {
    name: u32,
    kind: u32,
    /// (name, type id, offset in bits) of a struct's or union's members.
    members: Vec<(u32, u32, u32)>,
    /// The referenced type of a typedef or qualifier.
    target: u32,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d.get(off..off + 4).context("BTF ends early")?;
    Ok(u32::from_le_bytes(b.try_into().unwrap()))
}

/// Bytes that follow a type's 12-byte header, by kind (uapi/linux/btf.h).
fn trailing(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => 12 * vlen,
        6 | 13 => 8 * vlen,
        2 | 7..=12 | 16 | 18 => 0,
        k => bail!("unknown BTF kind {k}"),
    })
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        Btf::parse(&std::fs::read(path).with_context(|| format!("reading {path}"))?)
    }

    pub fn parse(d: &[u8]) -> Result<Btf> {
        if d.get(..2) != Some(&[0x9f, 0xeb]) {
            bail!("not little-endian BTF");
        }
        let hdr = u32_at(d, 4)? as usize;
        let (type_off, type_len) = (u32_at(d, 8)? as usize, u32_at(d, 12)? as usize);
        let (str_off, str_len) = (u32_at(d, 16)? as usize, u32_at(d, 20)? as usize);
        let strings = d
            .get(hdr + str_off..hdr + str_off + str_len)
            .context("BTF strings out of bounds")?
            .to_vec();
        // Type ids start at 1: a placeholder stands for "void".
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            members: vec![],
            target: 0,
        }];
        let (mut at, end) = (hdr + type_off, hdr + type_off + type_len);
        while at < end {
            let (name, info, target) = (u32_at(d, at)?, u32_at(d, at + 4)?, u32_at(d, at + 8)?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let bitfields = info >> 31 != 0;
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in 0..vlen {
                    let p = at + 12 + 12 * m;
                    let offset = u32_at(d, p + 8)?;
                    let bits = if bitfields {
                        offset & 0xff_ffff
                    } else {
                        offset
                    };
                    members.push((u32_at(d, p)?, u32_at(d, p + 4)?, bits));
                }
            }
            types.push(Type {
                name,
                kind,
                members,
                target,
            });
            at += 12 + trailing(kind, vlen)?;
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// A type id with typedefs and qualifiers stripped.
    fn resolve(&self, mut id: u32) -> u32 {
        while let Some(t) = self.types.get(id as usize) {
            if !matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST) {
                break;
            }
            id = t.target;
        }
        id
    }

    /// The type id of struct `name`.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name) == name)
            .with_context(|| format!("no struct {name} in the kernel's BTF"))?;
        Ok(id as u32)
    }

    /// Byte offset of `member` in struct `name`, looking into anonymous unions and structs.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = self.struct_id(name)?;
        self.find_member(id, member)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no member {member}"))
    }

    fn find_member(&self, id: u32, member: &str) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        t.members.iter().find_map(|&(name, ty, bits)| {
            if self.name(name) == member {
                return Some(bits);
            }
            let inner = self.resolve(ty);
            let anonymous = name == 0
                && matches!(self.types.get(inner as usize), Some(t) if t.kind == KIND_STRUCT || t.kind == KIND_UNION);
            anonymous
                .then(|| self.find_member(inner, member).map(|b| bits + b))
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
    }
}
