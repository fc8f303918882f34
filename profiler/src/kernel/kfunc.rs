//! Calls of kernel functions (kfuncs) from the programs. aya cannot declare one, so a program
//! calls a helper number that stands for the function (profiler_common::KFUNC_*), and the
//! loader rewrites each such call into a call of the function's BTF id before loading the
//! object, which is what libbpf does for a declared kfunc.

/// The 8-byte `call` instruction: opcode `BPF_JMP | BPF_CALL`, then the registers byte (source
/// in the high nibble: 0 a helper, 2 a kfunc of the kernel's own BTF), a 16-bit offset and the
/// 32-bit immediate (the helper number, or the kfunc's BTF id), little-endian.
const CALL: u8 = 0x85;
const PSEUDO_KFUNC_CALL: u8 = 2;

/// An object's bytes, aligned as `aya::include_bytes_aligned!` aligns them (the ELF parser
/// reads its headers in place).
pub struct Object {
    chunks: Vec<Chunk>,
    len: usize,
}

#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Chunk([u8; 32]);

impl Object {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `chunks` holds at least `len` initialized bytes, and `Chunk` is plain bytes.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A copy of `object` in which every call of helper number `marker` calls the kernel function
/// of BTF id `btf_id` instead, and how many calls were rewritten. `btf_id` 0 (the kernel lacks
/// the function) is libbpf's unresolved weak kfunc: the verifier accepts the call only in code
/// it removes as dead, so the caller must make it dead (the programs' own constants).
/// Instructions are 8-byte aligned in the file (LLVM aligns code sections to 8), so only those
/// offsets are looked at.
pub fn link(object: &[u8], marker: u32, btf_id: u32) -> (Object, usize) {
    let mut copy = Object {
        chunks: vec![Chunk([0; 32]); object.len().div_ceil(32)],
        len: object.len(),
    };
    copy.bytes_mut().copy_from_slice(object);
    let mut rewritten = 0;
    for insn in copy.bytes_mut().chunks_exact_mut(8) {
        if insn[..4] == [CALL, 0, 0, 0] && insn[4..] == marker.to_le_bytes() {
            insn[1] = PSEUDO_KFUNC_CALL << 4;
            insn[4..].copy_from_slice(&btf_id.to_le_bytes());
            rewritten += 1;
        }
    }
    (copy, rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_marked_calls_only() {
        let marker = 0x4b46_0001u32;
        let mut object = vec![0u8; 40];
        // A marked call at 8, a plain helper call (number 5) at 16, the marker's bytes where
        // no instruction starts (at 27), and a marked call at 32.
        object[8..16].copy_from_slice(&[CALL, 0, 0, 0, 1, 0, 0x46, 0x4b]);
        object[16..24].copy_from_slice(&[CALL, 0, 0, 0, 5, 0, 0, 0]);
        object[27..32].copy_from_slice(&[CALL, 0, 0, 0, 1]);
        object[32..40].copy_from_slice(&[CALL, 0, 0, 0, 1, 0, 0x46, 0x4b]);
        let (linked, n) = link(&object, marker, 777);
        assert_eq!(n, 2);
        let b = linked.bytes();
        assert_eq!(b.len(), 40);
        assert_eq!(b[8..16], [CALL, 0x20, 0, 0, 0x09, 0x03, 0, 0]);
        assert_eq!(b[16..32], object[16..32]);
        assert_eq!(b[32..40], [CALL, 0x20, 0, 0, 0x09, 0x03, 0, 0]);
        assert_eq!(b.as_ptr() as usize % 32, 0);
    }
}
