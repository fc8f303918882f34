//! `--pin-path`: the kernel maps live in a bpf filesystem, so a restarted daemon — also after
//! `kill -9` — picks up where the last one stopped instead of starting from zero. The programs
//! themselves are never pinned: their links belong to the daemon's file descriptors, so a dead
//! daemon leaves nothing attached.

use std::{
    ffi::CString,
    os::fd::AsFd,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, IterableMap, Map, MapData, MapError},
    Ebpf,
};
use profiler_common::{
    ErrnoKey, Hist, HistKey, Meta, ProcInfo, ProcKey, Start, BUCKETS, CHECKPOINT_CHUNK,
    CHECKPOINT_CHUNKS_PER_HALF, LAYOUT_VERSION, LIVE_MAP, META_MAP, PROCS_MAP, STARTS_MAP,
};
use tracing::info;

use super::batch;
use crate::host::{clock::monotonic_ns, procfs};

/// Why `--pin-path` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting error (exit 2), unlike the others (exit 6).
    #[error("--pin-path '{}' must be an absolute path", .0.display())]
    Relative(PathBuf),
    #[error(
        "--pin-path {} is not on a bpf filesystem: use a directory under {DEFAULT_BPFFS} \
         (mount one with `mount -t bpf bpf {DEFAULT_BPFFS}`)",
        .0.display()
    )]
    NotBpffs(PathBuf),
    #[error(
        "no bpf filesystem at {DEFAULT_BPFFS}, and mounting one failed: {cause} (mount it with \
         `mount -t bpf bpf {DEFAULT_BPFFS}`, or run without --pin-path)"
    )]
    Mount { cause: std::io::Error },
    #[error("creating --pin-path {}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "maps pinned at {} were written by an incompatible build (layout {found:#x}, this \
         build {this:#x}): remove the directory to start fresh, or use another --pin-path",
        dir.display()
    )]
    Incompatible { dir: PathBuf, found: u64, this: u64 },
    #[error(
        "{} is not a map this daemon can read ({cause}): remove {} to start fresh",
        path.display(),
        dir.display()
    )]
    Unreadable {
        path: PathBuf,
        dir: PathBuf,
        cause: Box<MapError>,
    },
    #[error("writing the layout fingerprint")]
    Stamp(#[source] MapError),
    #[error(
        "the checkpoint in the pinned maps cannot be used ({why}): remove the --pin-path \
         directory to start fresh"
    )]
    Checkpoint { why: String },
    #[error("forgetting processes that exited while no daemon was attached: {what}")]
    Sweep {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Identifies the layout of every pinned record: a daemon refuses maps whose fingerprint
/// differs, rather than misreading them.
pub fn fingerprint() -> u64 {
    use std::mem::size_of;
    let sizes = [
        size_of::<Start>(),
        size_of::<HistKey>(),
        size_of::<Hist>(),
        size_of::<ErrnoKey>(),
        size_of::<ProcKey>(),
        size_of::<ProcInfo>(),
        size_of::<Meta>(),
        CHECKPOINT_CHUNK,
        CHECKPOINT_CHUNKS_PER_HALF as usize,
        BUCKETS,
    ];
    // FNV-1a: stable across builds and Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in std::iter::once(LAYOUT_VERSION).chain(sizes.iter().map(|&s| s as u64)) {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h | 1 // never 0: 0 is an unstamped META
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as libc::c_long == BPF_FS_MAGIC }
}

fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Makes `dir` a usable pin directory: on a bpf filesystem (mounting the usual one at
/// /sys/fs/bpf if that is where it should be and nothing is mounted), created, and holding no
/// maps of an incompatible build.
pub fn prepare(dir: &Path) -> Result<(), Error> {
    if !dir.is_absolute() {
        return Err(Error::Relative(dir.to_path_buf()));
    }
    if !is_bpffs(&nearest_existing(dir)) {
        if dir.starts_with(DEFAULT_BPFFS) && !is_bpffs(Path::new(DEFAULT_BPFFS)) {
            mount_bpffs()?;
        }
        if !is_bpffs(&nearest_existing(dir)) {
            return Err(Error::NotBpffs(dir.to_path_buf()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    match read_fingerprint(dir)? {
        Some(found) if found != 0 && found != fingerprint() => Err(Error::Incompatible {
            dir: dir.to_path_buf(),
            found,
            this: fingerprint(),
        }),
        _ => Ok(()),
    }
}

fn mount_bpffs() -> Result<(), Error> {
    let target = CString::new(DEFAULT_BPFFS).unwrap();
    let fstype = CString::new("bpf").unwrap();
    std::fs::create_dir_all(DEFAULT_BPFFS).ok();
    // SAFETY: NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Mount {
            cause: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted a bpf filesystem at {DEFAULT_BPFFS}");
    Ok(())
}

/// The fingerprint stamped in `dir`'s META map; None when nothing is pinned there yet. Builds
/// before the checkpoint kept it as META's whole value, a `u64`.
fn read_fingerprint(dir: &Path) -> Result<Option<u64>, Error> {
    let path = dir.join(META_MAP);
    if !path.exists() {
        return Ok(None);
    }
    let unreadable = |cause| Error::Unreadable {
        path: path.clone(),
        dir: dir.to_path_buf(),
        cause: Box::new(cause),
    };
    let data = MapData::from_pin(&path).map_err(unreadable)?;
    let value_size = data.info().map_err(unreadable)?.value_size();
    let map = Map::Array(data);
    if value_size as usize == std::mem::size_of::<u64>() {
        let meta: Array<MapData, u64> = Array::try_from(map).map_err(unreadable)?;
        return meta.get(&0, 0).map(Some).map_err(unreadable);
    }
    let meta: Array<MapData, Meta> = Array::try_from(map).map_err(unreadable)?;
    meta.get(&0, 0)
        .map(|m| Some(m.fingerprint))
        .map_err(unreadable)
}

/// Stamps this build's fingerprint into the META map of new maps, with no checkpoint yet.
pub fn stamp(meta: &mut Array<MapData, Meta>) -> Result<(), Error> {
    let record = Meta {
        fingerprint: fingerprint(),
        ..Meta::default()
    };
    meta.set(0, record, 0).map_err(Error::Stamp)
}

/// Processes and threads that exited while no daemon was attached left their kernel entries
/// behind unstamped: a LIVE entry would hand its incarnation to whatever process next gets the
/// pid, a STARTS record its process to the next thread with the tid, and the drain would never
/// retire them. Before the programs attach to reused maps, this forgets them and stamps the
/// processes' exit (now) in PROCS, so the drain retires them as it does any exited process.
///
/// A process is gone when /proc has no running process with its pid, or the one there started
/// after the incarnation was first seen (the pid was recycled). An incarnation tells its first
/// sighting modulo 2^32 × 1.024 µs (73 minutes): a recycled pid whose previous holder was
/// first seen longer ago than that can be missed, never a live process taken for gone.
pub fn forget_unseen_exits(ebpf: &mut Ebpf) -> Result<(), Error> {
    let sweep = |what| move |source| Error::Sweep { what, source };
    let now_ns = monotonic_ns();
    let mut live: HashMap<&mut MapData, u32, u32> = typed(ebpf, LIVE_MAP)?;
    let entries: Vec<(u32, u32)> =
        batch::lookup_all(live.map().fd().as_fd()).map_err(sweep("reading LIVE"))?;
    let gone: Vec<ProcKey> = entries
        .into_iter()
        .filter(|&(tgid, incarnation)| !runs_since(tgid, incarnation, now_ns))
        .map(|(tgid, incarnation)| ProcKey { tgid, incarnation })
        .collect();
    for key in &gone {
        let _ = live.remove(&key.tgid);
    }
    let mut procs: HashMap<&mut MapData, ProcKey, ProcInfo> = typed(ebpf, PROCS_MAP)?;
    for key in &gone {
        if let Ok(mut info) = procs.get(key, 0) {
            info.exit_ns = now_ns;
            let _ = procs.insert(key, info, 0);
        }
    }
    let mut starts: HashMap<&mut MapData, u32, Start> = typed(ebpf, STARTS_MAP)?;
    let records: Vec<(u32, Start)> =
        batch::lookup_all(starts.map().fd().as_fd()).map_err(sweep("reading STARTS"))?;
    let mut threads = 0;
    for (tid, start) in records {
        let process = ProcKey {
            tgid: start.tgid,
            incarnation: start.incarnation,
        };
        if gone.contains(&process) || !procfs::thread_exists(start.tgid, tid) {
            let _ = starts.remove(&tid);
            threads += 1;
        }
    }
    if !gone.is_empty() || threads > 0 {
        info!(
            "{} processes and {threads} threads exited while no daemon was attached: forgotten",
            gone.len()
        );
    }
    Ok(())
}

/// Whether process `tgid` runs and started no later than incarnation `incarnation` was first
/// seen (see `forget_unseen_exits`).
fn runs_since(tgid: u32, incarnation: u32, now_ns: u64) -> bool {
    let Some(started_ns) = procfs::started_monotonic_ns(tgid) else {
        return false;
    };
    // Incarnations count 1,024 ns units, truncated to 32 bits; the latest such time before now.
    let now = now_ns >> 10;
    let first_seen = now.saturating_sub(u64::from((now as u32).wrapping_sub(incarnation)));
    // /proc's start time has clock-tick (10 ms) resolution.
    const SLACK: u64 = 20_000_000 >> 10;
    started_ns >> 10 <= first_seen + SLACK
}

fn typed<'a, M>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<M, Error>
where
    M: TryFrom<&'a mut Map, Error = MapError>,
{
    let map = ebpf.map_mut(name).ok_or(Error::Sweep {
        what: name,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    M::try_from(map).map_err(|e| Error::Sweep {
        what: name,
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_non_zero() {
        assert_eq!(fingerprint(), fingerprint());
        assert_ne!(fingerprint(), 0);
    }

    #[test]
    fn tmp_is_not_bpffs() {
        assert!(!is_bpffs(Path::new("/tmp")));
        let err = prepare(Path::new("/tmp/syscall-profiler-pin-test")).unwrap_err();
        assert!(matches!(err, Error::NotBpffs(_)), "{err:?}");
        assert!(err.to_string().contains("not on a bpf filesystem"), "{err}");
        assert!(matches!(
            prepare(Path::new("relative/dir")),
            Err(Error::Relative(_))
        ));
    }
}
