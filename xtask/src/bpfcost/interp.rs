//! A small interpreter of xlated BPF: runs a program against a modelled kernel ([`World`]) and
//! counts what it executed. Exact for the path taken: each instruction the kernel would
//! execute is executed here once (a 16-byte `ld_imm64` counts as one), each call the kernel
//! would make is made here (helpers by the kernel function they call, after the verifier's
//! rewrites), and the branches follow the modelled state, loops included.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::{
    kernel::{Insn, Program, Symbols},
    memory::{Region, Val},
    world::World,
};

/// What one run of a program executed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub insns: u64,
    /// Calls into the kernel, by the function called (helpers, and map operations the
    /// verifier turned into direct calls).
    pub helpers: BTreeMap<String, u32>,
    /// BPF-to-BPF calls (the programs' own non-inlined functions).
    pub subprog_calls: u32,
}

impl Count {
    pub fn helper_calls(&self) -> u32 {
        self.helpers.values().sum()
    }
}

/// Far more than any path of the programs: a runaway loop is an error, not a hang.
const MAX_STEPS: u64 = 100_000;
const STACK_SIZE: i64 = 512;

struct Frame {
    return_pc: usize,
    saved: [Val; 5],
}

pub struct Interp<'a> {
    prog: &'a Program,
    syms: &'a Symbols,
    world: &'a mut World,
    regs: [Val; 11],
    frames: Vec<Frame>,
    count: Count,
    /// XTASK_BPF_TRACE set: print every instruction executed, with the registers it uses.
    trace: bool,
}

fn size_of(code: u8) -> usize {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

fn sign_extend(v: u64, bytes: usize) -> u64 {
    let shift = 64 - 8 * bytes as u32;
    (((v << shift) as i64) >> shift) as u64
}

/// Runs `prog` with `ctx` (its arguments, as a tracepoint passes them) and returns r0 and the
/// count.
pub fn run(prog: &Program, syms: &Symbols, world: &mut World, ctx: &[Val]) -> Result<(u64, Count)> {
    for (i, arg) in ctx.iter().enumerate() {
        world.mem.write(&Region::Ctx, 8 * i as i64, 8, arg)?;
    }
    let mut regs: [Val; 11] = std::array::from_fn(|_| Val::Scalar(0));
    regs[1] = Val::Ptr(Region::Ctx, 0);
    regs[10] = Val::Ptr(Region::Stack(0), STACK_SIZE);
    let mut it = Interp {
        prog,
        syms,
        world,
        regs,
        frames: Vec::new(),
        count: Count::default(),
        trace: std::env::var_os("XTASK_BPF_TRACE").is_some(),
    };
    let r0 = it
        .execute()
        .with_context(|| format!("running {}", prog.name))?;
    for depth in 0..=1 + it.frames.len() {
        it.world.mem.clear(&Region::Stack(depth));
    }
    it.world.mem.clear(&Region::Ctx);
    Ok((r0, it.count))
}

impl Interp<'_> {
    fn execute(&mut self) -> Result<u64> {
        let mut pc = 0usize;
        loop {
            let insn = *self
                .prog
                .insns
                .get(pc)
                .with_context(|| format!("jumped to {pc}, past the end"))?;
            self.count.insns += 1;
            if self.trace {
                eprintln!(
                    "{:>4} {insn:?} r0={:?} r1={:?} r2={:?} r6={:?}",
                    pc, self.regs[0], self.regs[1], self.regs[2], self.regs[6]
                );
            }
            if self.count.insns > MAX_STEPS {
                bail!("more than {MAX_STEPS} instructions: a loop the model never leaves");
            }
            let next = match insn.code & 7 {
                0 => self.load_imm64(pc, insn),
                1 => self.load(pc, insn),
                2 | 3 => self.store(pc, insn),
                4 | 7 => self.alu(pc, insn),
                _ => match self.jump(pc, insn) {
                    Ok(Some(next)) => Ok(next),
                    Ok(None) => return self.regs[0].scalar().context("r0 at exit"),
                    Err(e) => Err(e),
                },
            };
            pc = next.with_context(|| format!("instruction {pc} ({insn:?})"))?;
        }
    }

    fn operand(&self, insn: Insn) -> Val {
        if insn.code & 0x08 != 0 {
            self.regs[insn.src as usize].clone()
        } else {
            Val::Scalar(insn.imm as i64 as u64)
        }
    }

    fn load_imm64(&mut self, pc: usize, insn: Insn) -> Result<usize> {
        if insn.code != 0x18 {
            bail!("insn {pc}: legacy packet load {:#x}", insn.code);
        }
        let high = self.prog.insns.get(pc + 1).context("truncated ld_imm64")?;
        let id = insn.imm as u32;
        self.regs[insn.dst as usize] = match insn.src {
            0 => Val::Scalar(u64::from(insn.imm as u32) | u64::from(high.imm as u32) << 32),
            1 => Val::Ptr(Region::MapObject(id), 0),
            2 => Val::Ptr(
                Region::Value {
                    map: id,
                    key: 0u32.to_le_bytes().to_vec(),
                    cpu: None,
                },
                i64::from(high.imm),
            ),
            k => bail!("insn {pc}: ld_imm64 of kind {k} is not modelled"),
        };
        Ok(pc + 2)
    }

    /// The region and offset an access through `base + off` touches.
    fn address(&self, base: &Val, off: i16) -> Result<(Region, i64)> {
        match base {
            Val::Ptr(region, o) => self.world.resolve(region, o + i64::from(off)),
            Val::Scalar(v) => bail!("a memory access through the number {v:#x}"),
        }
    }

    fn load(&mut self, pc: usize, insn: Insn) -> Result<usize> {
        let size = size_of(insn.code);
        let signed = matches!(insn.code & 0xe0, 0x40 | 0x80);
        if !matches!(insn.code & 0xe0, 0x20 | 0x40 | 0x60 | 0x80) {
            bail!("insn {pc}: load mode {:#x}", insn.code & 0xe0);
        }
        let (region, off) = self.address(&self.regs[insn.src as usize], insn.off)?;
        let mut val = self.world.load(&region, off, size)?;
        if signed {
            val = Val::Scalar(sign_extend(val.scalar()?, size));
        }
        self.regs[insn.dst as usize] = val;
        Ok(pc + 1)
    }

    fn store(&mut self, pc: usize, insn: Insn) -> Result<usize> {
        let size = size_of(insn.code);
        let (region, off) = self.address(&self.regs[insn.dst as usize], insn.off)?;
        let mode = insn.code & 0xe0;
        let val = if insn.code & 7 == 2 {
            Val::Scalar(insn.imm as i64 as u64)
        } else {
            self.regs[insn.src as usize].clone()
        };
        match mode {
            0x60 => self.world.mem.write(&region, off, size, &val)?,
            0xc0 => self.atomic(insn, &region, off, size, val)?,
            m => bail!("insn {pc}: store mode {m:#x}"),
        }
        Ok(pc + 1)
    }

    fn atomic(
        &mut self,
        insn: Insn,
        region: &Region,
        off: i64,
        size: usize,
        val: Val,
    ) -> Result<()> {
        let old = self.world.mem.read(region, off, size)?.scalar()?;
        let v = val.scalar()?;
        let mask = if size == 8 {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let (new, fetch) = match insn.imm {
            0x00 | 0x01 => (old.wrapping_add(v), insn.imm & 1 != 0),
            0x40 | 0x41 => (old | v, insn.imm & 1 != 0),
            0x50 | 0x51 => (old & v, insn.imm & 1 != 0),
            0xa0 | 0xa1 => (old ^ v, insn.imm & 1 != 0),
            0xe1 => (v, true),
            0xf1 => {
                let expected = self.regs[0].scalar()? & mask;
                self.regs[0] = Val::Scalar(old);
                let new = if old == expected { v } else { old };
                self.world
                    .mem
                    .write(region, off, size, &Val::Scalar(new & mask))?;
                return Ok(());
            }
            op => bail!("atomic operation {op:#x}"),
        };
        self.world
            .mem
            .write(region, off, size, &Val::Scalar(new & mask))?;
        if fetch {
            self.regs[insn.src as usize] = Val::Scalar(old);
        }
        Ok(())
    }

    fn alu(&mut self, pc: usize, insn: Insn) -> Result<usize> {
        let wide = insn.code & 7 == 7;
        let op = insn.code & 0xf0;
        let dst = insn.dst as usize;
        let src = self.operand(insn);
        // Moves: the verifier's per-CPU address move (off -1), plain moves (which carry
        // pointers), and sign-extending ones.
        if op == 0xb0 {
            self.regs[dst] = match (insn.off, &src, wide) {
                (-1, _, true) => self.world.this_cpu(&src)?,
                (0, Val::Scalar(v), false) => Val::Scalar(*v & 0xffff_ffff),
                (0, _, _) => src,
                _ => Val::Scalar(alu_value(op, 0, src.scalar()?, wide, insn)?),
            };
            return Ok(pc + 1);
        }
        // index + base, as the verifier's inlined array lookups compute it.
        if let (0x00, true, Val::Ptr(region, o), Val::Scalar(v)) = (op, wide, &src, &self.regs[dst])
        {
            self.regs[dst] = Val::Ptr(region.clone(), o + *v as i64);
            return Ok(pc + 1);
        }
        // pointer - pointer: a number (the verifier allows it with CAP_PERFMON).
        if let (0x10, true, Val::Ptr(a, ao), Val::Ptr(b, bo)) = (op, wide, &self.regs[dst], &src) {
            let (a, b) = (a.address().wrapping_add(*ao as u64), b.address());
            self.regs[dst] = Val::Scalar(a.wrapping_sub(b.wrapping_add(*bo as u64)));
            return Ok(pc + 1);
        }
        if let Val::Ptr(region, o) = &self.regs[dst] {
            let delta = src.scalar().with_context(|| format!("insn {pc}"))? as i64;
            let o = match (op, wide) {
                (0x00, true) => o + delta,
                (0x10, true) => o - delta,
                _ => bail!("insn {pc}: ALU op {op:#x} on a pointer"),
            };
            self.regs[dst] = Val::Ptr(region.clone(), o);
            return Ok(pc + 1);
        }
        let a = self.regs[dst].scalar()?;
        let b = src.scalar().with_context(|| format!("insn {pc}"))?;
        let v = alu_value(op, a, b, wide, insn).with_context(|| format!("insn {pc}"))?;
        self.regs[dst] = Val::Scalar(if wide { v } else { v & 0xffff_ffff });
        Ok(pc + 1)
    }

    /// The next pc, or None at the program's exit.
    fn jump(&mut self, pc: usize, insn: Insn) -> Result<Option<usize>> {
        let op = insn.code & 0xf0;
        let wide = insn.code & 7 == 5;
        let target = |off: i64| (pc as i64 + 1 + off) as usize;
        match op {
            0x00 if wide => return Ok(Some(target(i64::from(insn.off)))),
            0x00 => return Ok(Some(target(i64::from(insn.imm)))),
            0x80 => return self.call(pc, insn).map(Some),
            0x90 => return Ok(self.ret()),
            _ => {}
        }
        let a = self.regs[insn.dst as usize].clone();
        let b = self.operand(insn);
        let taken = compare(op, &a, &b, wide).with_context(|| format!("insn {pc}"))?;
        Ok(Some(if taken {
            target(i64::from(insn.off))
        } else {
            pc + 1
        }))
    }

    fn call(&mut self, pc: usize, insn: Insn) -> Result<usize> {
        match insn.src {
            0 => {
                let name = self
                    .syms
                    .call_target(insn.imm)
                    .with_context(|| format!("insn {pc}: a call to an unknown kernel address"))?
                    .to_string();
                *self.count.helpers.entry(name.clone()).or_default() += 1;
                let args: Vec<Val> = self.regs[1..=5].to_vec();
                self.regs[0] = self.world.call(&name, &args)?;
                for r in 1..=5 {
                    self.regs[r] = Val::Scalar(0);
                }
                Ok(pc + 1)
            }
            1 => {
                self.count.subprog_calls += 1;
                let saved = std::array::from_fn(|i| self.regs[6 + i].clone());
                self.frames.push(Frame {
                    return_pc: pc + 1,
                    saved,
                });
                self.regs[10] = Val::Ptr(Region::Stack(self.frames.len()), STACK_SIZE);
                // Once the JIT has run, the kernel shows the target's relative offset in
                // `off` (and the subprogram's index in `imm`).
                Ok((pc as i64 + 1 + i64::from(insn.off)) as usize)
            }
            k => bail!("insn {pc}: call of kind {k} (kfunc) is not modelled"),
        }
    }

    fn ret(&mut self) -> Option<usize> {
        let frame = self.frames.pop()?;
        self.world.mem.clear(&Region::Stack(self.frames.len() + 1));
        for (i, v) in frame.saved.into_iter().enumerate() {
            self.regs[6 + i] = v;
        }
        Some(frame.return_pc)
    }
}

fn alu_value(op: u8, a: u64, b: u64, wide: bool, insn: Insn) -> Result<u64> {
    let (a32, b32) = (a as u32, b as u32);
    let bits = if wide { 63 } else { 31 };
    Ok(match op {
        0x00 => a.wrapping_add(b),
        0x10 => a.wrapping_sub(b),
        0x20 => a.wrapping_mul(b),
        0x30 | 0x90 if insn.off != 0 => bail!("signed division is not modelled"),
        0x30 if wide => a.checked_div(b).unwrap_or(0),
        0x30 => u64::from(a32.checked_div(b32).unwrap_or(0)),
        0x90 if wide => a.checked_rem(b).unwrap_or(a),
        0x90 => u64::from(a32.checked_rem(b32).unwrap_or(a32)),
        0x40 => a | b,
        0x50 => a & b,
        0x60 if wide => a << (b & bits),
        0x60 => u64::from(a32 << (b32 & 31)),
        0x70 if wide => a >> (b & bits),
        0x70 => u64::from(a32 >> (b32 & 31)),
        0x80 => a.wrapping_neg(),
        0xa0 => a ^ b,
        0xb0 if wide => sign_extend(b, insn.off as usize / 8),
        0xb0 => sign_extend(b, insn.off as usize / 8) & 0xffff_ffff,
        0xc0 if wide => ((a as i64) >> (b & bits)) as u64,
        0xc0 => ((a32 as i32) >> (b32 & 31)) as u32 as u64,
        0xd0 => byte_swap(a, insn)?,
        _ => bail!("ALU op {op:#x}"),
    })
}

fn byte_swap(a: u64, insn: Insn) -> Result<u64> {
    // To little-endian on a little-endian machine truncates; otherwise swaps.
    let swap = insn.code & 0x08 != 0 || insn.code & 7 == 7;
    Ok(match (insn.imm, swap) {
        (16, false) => a & 0xffff,
        (32, false) => a & 0xffff_ffff,
        (64, false) => a,
        (16, true) => u64::from((a as u16).swap_bytes()),
        (32, true) => u64::from((a as u32).swap_bytes()),
        (64, true) => a.swap_bytes(),
        (w, _) => bail!("byte swap of width {w}"),
    })
}

/// A conditional jump's outcome. A pointer compares as non-null against 0, and against a
/// pointer into the same region by offset.
fn compare(op: u8, a: &Val, b: &Val, wide: bool) -> Result<bool> {
    let (x, y) = match (a, b) {
        (Val::Scalar(x), Val::Scalar(y)) => (*x, *y),
        (Val::Ptr(..), Val::Scalar(0)) => (1, 0),
        (Val::Scalar(0), Val::Ptr(..)) => (0, 1),
        (Val::Ptr(r1, o1), Val::Ptr(r2, o2)) if r1 == r2 => (*o1 as u64, *o2 as u64),
        _ => bail!("comparing {a:?} with {b:?}"),
    };
    let (x, y) = if wide {
        (x, y)
    } else {
        (x & 0xffff_ffff, y & 0xffff_ffff)
    };
    let (sx, sy) = if wide {
        (x as i64, y as i64)
    } else {
        (i64::from(x as u32 as i32), i64::from(y as u32 as i32))
    };
    Ok(match op {
        0x10 => x == y,
        0x20 => x > y,
        0x30 => x >= y,
        0x40 => x & y != 0,
        0x50 => x != y,
        0x60 => sx > sy,
        0x70 => sx >= sy,
        0xa0 => x < y,
        0xb0 => x <= y,
        0xc0 => sx < sy,
        0xd0 => sx <= sy,
        _ => bail!("jump op {op:#x}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpfcost::world::Layout;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn setup() -> (Symbols, World) {
        let syms = Symbols::parse(
            "ffffffff81000000 T __bpf_call_base\nffffffff81000100 T bpf_ktime_get_ns\n",
        )
        .unwrap();
        let layout = Layout {
            array_values: 0,
            htab_key: 0,
            task: Default::default(),
        };
        (syms, World::new(vec![], layout).unwrap())
    }

    #[test]
    fn counts_each_executed_instruction_and_call_once() {
        let prog = Program {
            name: "t".into(),
            btf: false,
            insns: vec![
                insn(0xb7, 6, 0, 0, 7),
                insn(0x18, 1, 0, 0, 0),
                insn(0, 0, 0, 0, 1),
                insn(0x85, 0, 0, 0, 0x100),
                insn(0x25, 0, 0, 1, 100),
                insn(0xb7, 6, 0, 0, 0),
                insn(0xbf, 0, 6, 0, 0),
                insn(0x95, 0, 0, 0, 0),
            ],
        };
        let (syms, mut world) = setup();
        world.now = 500;
        let (r0, count) = run(&prog, &syms, &mut world, &[]).unwrap();
        // The ld_imm64 is one instruction in two slots; the jump skips one.
        assert_eq!((r0, count.insns, count.helper_calls()), (7, 6, 1));
        assert_eq!(count.helpers.get("bpf_ktime_get_ns"), Some(&1));
        world.now = 50;
        let (r0, count) = run(&prog, &syms, &mut world, &[]).unwrap();
        assert_eq!((r0, count.insns), (0, 7));
    }

    #[test]
    fn follows_loops_and_subprogram_calls() {
        let prog = Program {
            name: "t".into(),
            btf: false,
            insns: vec![
                insn(0xb7, 1, 0, 0, 3),
                insn(0x85, 0, 1, 2, 1),
                insn(0x95, 0, 0, 0, 0),
                insn(0x95, 0, 0, 0, 0),
                insn(0xb7, 0, 0, 0, 0),
                insn(0x07, 0, 0, 0, 1),
                insn(0x07, 1, 0, 0, -1),
                insn(0x55, 1, 0, -3, 0),
                insn(0x95, 0, 0, 0, 0),
            ],
        };
        let (syms, mut world) = setup();
        let (r0, count) = run(&prog, &syms, &mut world, &[]).unwrap();
        assert_eq!((r0, count.insns, count.subprog_calls), (3, 14, 1));
        let spin = Program {
            name: "spin".into(),
            btf: false,
            insns: vec![insn(0x05, 0, 0, -1, 0)],
        };
        let err = run(&spin, &syms, &mut world, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("loop"), "{err:#}");
    }

    #[test]
    fn an_unknown_kernel_call_is_an_error_not_a_guess() {
        let prog = Program {
            name: "t".into(),
            btf: false,
            insns: vec![insn(0x85, 0, 0, 0, 0x200), insn(0x95, 0, 0, 0, 0)],
        };
        let (syms, mut world) = setup();
        assert!(run(&prog, &syms, &mut world, &[]).is_err());
    }
}
