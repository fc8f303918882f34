//! Build steps cargo cannot express, shared by the `xtask` binary and its tests.

pub mod bench;
pub mod bpfcost;
pub mod deb;
pub mod layers;
pub mod test;
pub mod vm_test;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The eBPF object the daemon embeds, committed so that a stable toolchain alone builds the
/// daemon (the way cilium/ebpf's bpf2go commits its generated objects).
pub const EBPF_OBJECT: &str = "profiler/bpf/profiler.bpf.o";
/// The same programs without task storage, for kernels that lack it (the loader's fallback).
pub const EBPF_SLOT_OBJECT: &str = "profiler/bpf/profiler-slot.bpf.o";
/// Digest of the sources the committed object was built from, written by `build-ebpf`.
pub const EBPF_SOURCES_DIGEST: &str = "profiler/bpf/profiler.bpf.o.sources-sha256";
/// Reference programs for `cargo xtask bench`: empty sys_enter/sys_exit pair (the floor) and the
/// same with one clock read per side (the limit). Built from the same crate as the daemon's
/// object, so the one sources digest covers them too.
pub const BENCH_FLOOR_OBJECT: &str = "profiler/bpf/bench-floor.bpf.o";
pub const BENCH_LIMIT_OBJECT: &str = "profiler/bpf/bench-limit.bpf.o";
/// Issue 17's experiment (`bench --task-storage`): the limit plus a syscall's start kept in a
/// per-CPU slot parked at sched_switch, or in BPF task storage.
pub const BENCH_SLOT_OBJECT: &str = "profiler/bpf/bench-slot.bpf.o";
pub const BENCH_TASK_STORAGE_OBJECT: &str = "profiler/bpf/bench-task-storage.bpf.o";
pub const BENCH_SLOT_TS_OBJECT: &str = "profiler/bpf/bench-slot-ts.bpf.o";
/// The start in an array indexed by the thread id, or by the saved registers' address.
pub const BENCH_TID_ARRAY_OBJECT: &str = "profiler/bpf/bench-tid-array.bpf.o";
/// Every object `build-ebpf` writes: (bin target of profiler-ebpf, committed path).
pub const EBPF_OBJECTS: &[(&str, &str)] = &[
    ("profiler", EBPF_OBJECT),
    ("profiler-slot", EBPF_SLOT_OBJECT),
    ("bench-floor", BENCH_FLOOR_OBJECT),
    ("bench-limit", BENCH_LIMIT_OBJECT),
    ("bench-slot", BENCH_SLOT_OBJECT),
    ("bench-task-storage", BENCH_TASK_STORAGE_OBJECT),
    ("bench-slot-ts", BENCH_SLOT_TS_OBJECT),
    ("bench-tid-array", BENCH_TID_ARRAY_OBJECT),
];

/// Everything that determines the object's contents, relative to the workspace root.
const EBPF_SOURCE_ROOTS: &[&str] = &[
    "profiler-ebpf/Cargo.toml",
    "profiler-ebpf/src",
    "profiler-common/Cargo.toml",
    "profiler-common/src",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// SHA-256 over the sorted relative paths and contents of every eBPF source file.
pub fn ebpf_sources_digest(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    for entry in EBPF_SOURCE_ROOTS {
        collect_files(&root.join(entry), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap_or(file);
        let contents =
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
        {
            collect_files(&entry?.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Ok if the committed objects exist and were built from the current sources.
pub fn check_ebpf_fresh(root: &Path) -> Result<()> {
    for (_, object) in EBPF_OBJECTS {
        anyhow::ensure!(
            root.join(object).is_file(),
            "{object} is missing: run `cargo xtask build-ebpf` and commit it"
        );
    }
    let recorded = std::fs::read_to_string(root.join(EBPF_SOURCES_DIGEST))
        .with_context(|| format!("reading {EBPF_SOURCES_DIGEST}: run `cargo xtask build-ebpf`"))?;
    let current = ebpf_sources_digest(root)?;
    anyhow::ensure!(
        recorded.trim() == current,
        "{EBPF_OBJECT} is stale: profiler-ebpf or profiler-common changed since it was built \
         (recorded sources digest {}, current {current}). Run `cargo xtask build-ebpf` and commit \
         the object.",
        recorded.trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard against a silently stale embedded object: fails whenever the eBPF or common
    /// sources change without `cargo xtask build-ebpf` being run.
    #[test]
    fn embedded_ebpf_object_matches_its_sources() {
        check_ebpf_fresh(&workspace_root()).unwrap();
    }

    #[test]
    fn digest_changes_with_any_source_byte() {
        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        for d in EBPF_SOURCE_ROOTS {
            let p = dir.join(d);
            if d.ends_with(".toml") {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "x").unwrap();
            } else {
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("lib.rs"), "fn a() {}").unwrap();
            }
        }
        let before = ebpf_sources_digest(&dir).unwrap();
        std::fs::write(dir.join("profiler-common/src/lib.rs"), "fn b() {}").unwrap();
        let after = ebpf_sources_digest(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(before, after);
    }
}
