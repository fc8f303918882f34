//! The embedded eBPF objects, and what the loader writes into their programs' instructions
//! before loading them, where libbpf would resolve a relocation that aya cannot emit:
//! - calls of kernel functions (kfuncs): a program calls a helper number that stands for the
//!   function (profiler_common::KFUNC_*), rewritten into a call of the function's BTF id;
//! - the offsets of the task fields the programs load (profiler_common::task_offset!): marks,
//!   rewritten into the offsets the kernel's BTF gives, as CO-RE field relocations are.
//!
//! Only the object's code sections are rewritten: a mark's bytes elsewhere (BTF, strings) are
//! data.

use std::ops::Range;

use object::{Object as _, ObjectSection as _, SectionKind};
use profiler_common::{TaskLayout, TASK_OFFSET_MARKS, TASK_OFFSET_SPAN};

use super::error::Error;

/// Built from profiler-ebpf by `cargo xtask build-ebpf`; see docs/building.md ("The embedded
/// eBPF object") for why it is committed and how it is kept fresh.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/profiler.bpf.o");
/// The same programs without the BPF ones that use task storage (profiler-ebpf main_slot.rs):
/// on a kernel without task storage the main object cannot create its map and does not load.
pub(super) static SLOT_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/profiler-slot.bpf.o");

/// An eBPF instruction is 8 bytes: the opcode, the registers byte (source register in the high
/// nibble), a 16-bit offset and a 32-bit immediate, little-endian. A 16-byte `ld_imm64` is two
/// such slots, the second with opcode 0, which nothing here matches.
const INSN: usize = 8;
/// `BPF_JMP | BPF_CALL`; its source nibble 0 calls a helper, 2 a kfunc of the kernel's BTF.
const CALL: u8 = 0x85;
const PSEUDO_KFUNC_CALL: u8 = 2;
/// The instruction class in the opcode's low 3 bits: a load from memory.
const CLASS_LDX: u8 = 1;
/// `BPF_ALU64 | BPF_ADD | BPF_K` and `BPF_ALU64 | BPF_MOV | BPF_K`: how LLVM puts an offset
/// into a register (an address to pass to `bpf_probe_read_kernel`, or one it reuses).
const ADD64_IMM: u8 = 0x07;
const MOV64_IMM: u8 = 0xb7;

/// A copy of an object's bytes, aligned as `aya::include_bytes_aligned!` aligns them (the ELF
/// parser reads its headers in place), and where its code is.
pub struct Object {
    chunks: Vec<Chunk>,
    len: usize,
    code: Vec<Range<usize>>,
}

#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Chunk([u8; 32]);

impl Object {
    /// A copy of the ELF object `bytes`, to rewrite.
    pub fn new(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |what: String| Error::Object(format!("the embedded eBPF object: {what}"));
        let elf = object::File::parse(bytes).map_err(|e| bad(e.to_string()))?;
        let mut code = Vec::new();
        for section in elf.sections() {
            if section.kind() != SectionKind::Text {
                continue;
            }
            if let Some((start, size)) = section.file_range() {
                let (start, size) = (start as usize, size as usize);
                // LLVM aligns BPF code to 8 bytes; anything else would be read as garbage.
                if start % INSN != 0 || size % INSN != 0 || start + size > bytes.len() {
                    return Err(bad(format!(
                        "code section {} is not whole instructions",
                        section.name().unwrap_or("?")
                    )));
                }
                code.push(start..start + size);
            }
        }
        let mut copy = Self {
            chunks: vec![Chunk([0; 32]); bytes.len().div_ceil(32)],
            len: bytes.len(),
            code,
        };
        copy.bytes_mut().copy_from_slice(bytes);
        Ok(copy)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `chunks` holds at least `len` initialized bytes, and `Chunk` is plain bytes.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast::<u8>(), self.len) }
    }

    /// Runs `f` on every instruction of the code sections; how many it rewrote (returned true).
    fn rewrite(
        &mut self,
        mut f: impl FnMut(&mut [u8; INSN]) -> Result<bool, Error>,
    ) -> Result<usize, Error> {
        let code = std::mem::take(&mut self.code);
        let mut rewritten = 0;
        let mut result = Ok(());
        'sections: for range in &code {
            for insn in self.bytes_mut()[range.clone()].chunks_exact_mut(INSN) {
                match f(insn.try_into().expect("chunks of INSN bytes")) {
                    Ok(true) => rewritten += 1,
                    Ok(false) => {}
                    Err(e) => {
                        result = Err(e);
                        break 'sections;
                    }
                }
            }
        }
        self.code = code;
        result.map(|()| rewritten)
    }

    /// Every call of helper number `marker` calls the kernel function of BTF id `btf_id`
    /// instead; how many calls were rewritten. `btf_id` 0 (the kernel lacks the function) is
    /// libbpf's unresolved weak kfunc: the verifier accepts the call only in code it removes
    /// as dead, so the caller must make it dead (the programs' own constants).
    pub fn link_kfunc(&mut self, marker: u32, btf_id: u32) -> usize {
        self.rewrite(|insn| {
            if insn[..4] != [CALL, 0, 0, 0] || insn[4..] != marker.to_le_bytes() {
                return Ok(false);
            }
            insn[1] = PSEUDO_KFUNC_CALL << 4;
            insn[4..].copy_from_slice(&btf_id.to_le_bytes());
            Ok(true)
        })
        .expect("the kfunc rewrite cannot fail")
    }

    /// Every task field mark (profiler_common::task_offset!) becomes the field's offset in
    /// `layout`, plus the bytes past the field it was: in a load's offset, or in the immediate
    /// of a 64-bit add or move. How many instructions were rewritten; an error if an offset
    /// does not fit a load's 16 bits.
    pub fn link_task_offsets(&mut self, layout: &TaskLayout) -> Result<usize, Error> {
        let fields = layout.fields();
        let resolve = |mark: i64| -> Option<i64> {
            let past = mark.checked_sub(i64::from(TASK_OFFSET_MARKS))?;
            let span = i64::from(TASK_OFFSET_SPAN);
            let field = usize::try_from(past / span).ok()?;
            let offset = *fields.get(field)?;
            Some(i64::from(offset) + past % span)
        };
        self.rewrite(|insn| {
            if insn[0] & 7 == CLASS_LDX {
                let mark = i16::from_le_bytes([insn[2], insn[3]]);
                let Some(offset) = resolve(i64::from(mark)) else {
                    return Ok(false);
                };
                let offset = i16::try_from(offset).map_err(|_| {
                    Error::Object(format!(
                        "a task field at byte {offset}: past the 32 KiB a load's offset reaches"
                    ))
                })?;
                insn[2..4].copy_from_slice(&offset.to_le_bytes());
                return Ok(true);
            }
            if insn[0] == ADD64_IMM || insn[0] == MOV64_IMM {
                let mark = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                let Some(offset) = resolve(i64::from(mark)) else {
                    return Ok(false);
                };
                // Below i16::MAX + TASK_OFFSET_SPAN: fits.
                insn[4..].copy_from_slice(&(offset as i32).to_le_bytes());
                return Ok(true);
            }
            Ok(false)
        })
    }
}

/// The marks' range: every value a mark instruction can hold.
#[cfg(test)]
const MARKS: Range<i64> = TASK_OFFSET_MARKS as i64
    ..TASK_OFFSET_MARKS as i64
        + (profiler_common::TASK_LAYOUT_LEN as i64) * TASK_OFFSET_SPAN as i64;

#[cfg(test)]
mod tests {
    use profiler_common::{task_offset, KFUNC_RDONLY_CAST, TASK_LAYOUT_LEN};

    use super::*;

    /// The instructions of `object`'s code that hold a mark, as (byte, value).
    fn marks(object: &mut Object) -> Vec<(usize, i64)> {
        let mut found = Vec::new();
        let mut at = 0;
        object
            .rewrite(|insn| {
                let off = i64::from(i16::from_le_bytes([insn[2], insn[3]]));
                let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
                if insn[0] & 7 == CLASS_LDX && MARKS.contains(&off) {
                    found.push((at, off));
                } else if (insn[0] == ADD64_IMM || insn[0] == MOV64_IMM) && MARKS.contains(&imm) {
                    found.push((at, imm));
                }
                at += 1;
                Ok(false)
            })
            .unwrap();
        found
    }

    /// A layout whose every field is somewhere else: field i at 1000 + 40 i.
    fn distinct_layout() -> TaskLayout {
        let mut fields = [0u32; TASK_LAYOUT_LEN];
        for (i, f) in fields.iter_mut().enumerate() {
            *f = 1000 + 40 * i as u32;
        }
        // SAFETY: as in TaskLayout::fields, the other way.
        unsafe { std::mem::transmute(fields) }
    }

    #[test]
    fn every_task_field_mark_is_linked_in_both_objects() {
        for (name, bytes) in [("main", OBJECT), ("slot", SLOT_OBJECT)] {
            let mut object = Object::new(bytes).unwrap();
            let before = marks(&mut object);
            assert!(!before.is_empty(), "{name}: no task field mark");
            // Every mark is a field's, or a few bytes past it (sum_exec_runtime, nivcsw).
            for &(_, mark) in &before {
                assert!(
                    (mark - i64::from(TASK_OFFSET_MARKS)) % i64::from(TASK_OFFSET_SPAN) < 16,
                    "{name}: mark {mark:#x} is far past its field"
                );
            }
            let layout = distinct_layout();
            let n = object.link_task_offsets(&layout).unwrap();
            assert_eq!(n, before.len(), "{name}: rewrote what was marked");
            assert!(marks(&mut object).is_empty(), "{name}: a mark left");
        }
    }

    #[test]
    fn a_mark_becomes_its_fields_offset_plus_what_is_past_it() {
        // The main object loads `start_time` (owner checks) and `nivcsw` (8 past `nvcsw`).
        let mut object = Object::new(OBJECT).unwrap();
        let before = marks(&mut object);
        let at_start_time: Vec<usize> = before
            .iter()
            .filter(|&&(_, m)| m == task_offset!(start_time) as i64)
            .map(|&(at, _)| at)
            .collect();
        let at_nivcsw: Vec<usize> = before
            .iter()
            .filter(|&&(_, m)| m == task_offset!(nvcsw) as i64 + 8)
            .map(|&(at, _)| at)
            .collect();
        assert!(!at_start_time.is_empty() && !at_nivcsw.is_empty());
        let layout = TaskLayout {
            start_time: 1552,
            nvcsw: 1536,
            ..distinct_layout()
        };
        object.link_task_offsets(&layout).unwrap();
        let mut at = 0;
        object
            .rewrite(|insn| {
                let value = if insn[0] & 7 == CLASS_LDX {
                    i64::from(i16::from_le_bytes([insn[2], insn[3]]))
                } else {
                    i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]))
                };
                if at_start_time.contains(&at) {
                    assert_eq!(value, 1552);
                }
                if at_nivcsw.contains(&at) {
                    assert_eq!(value, 1544);
                }
                at += 1;
                Ok(false)
            })
            .unwrap();
    }

    #[test]
    fn an_offset_past_a_loads_reach_is_refused() {
        let mut object = Object::new(OBJECT).unwrap();
        let layout = TaskLayout {
            start_time: 40_000,
            ..distinct_layout()
        };
        let e = object.link_task_offsets(&layout).unwrap_err();
        assert!(e.to_string().contains("byte 40000"), "{e}");
    }

    #[test]
    fn kfunc_calls_are_linked_and_nothing_else() {
        let mut object = Object::new(OBJECT).unwrap();
        let mut calls = 0;
        object
            .rewrite(|insn| {
                calls += usize::from(insn[0] == CALL);
                Ok(false)
            })
            .unwrap();
        let n = object.link_kfunc(KFUNC_RDONLY_CAST, 777);
        assert!(n > 0, "the syscall programs call bpf_rdonly_cast");
        let (mut kfuncs, mut marked) = (0, 0);
        object
            .rewrite(|insn| {
                if insn[0] == CALL && insn[1] == PSEUDO_KFUNC_CALL << 4 {
                    assert_eq!(insn[4..], 777u32.to_le_bytes());
                    kfuncs += 1;
                }
                marked +=
                    usize::from(insn[0] == CALL && insn[4..] == KFUNC_RDONLY_CAST.to_le_bytes());
                Ok(false)
            })
            .unwrap();
        assert_eq!((kfuncs, marked), (n, 0));
        assert!(calls > n, "helper calls stay helper calls");
        // The same in the slot object, which has no task-storage programs: no call to link.
        assert_eq!(
            Object::new(SLOT_OBJECT)
                .unwrap()
                .link_kfunc(KFUNC_RDONLY_CAST, 777),
            0
        );
    }

    #[test]
    fn the_copy_is_aligned_and_the_same_bytes() {
        let object = Object::new(OBJECT).unwrap();
        assert_eq!(object.bytes(), OBJECT);
        assert_eq!(object.bytes().as_ptr() as usize % 32, 0);
        assert!(Object::new(b"not an ELF file").is_err());
    }
}
