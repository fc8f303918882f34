//! `--pin-path`: the kernel maps live in a bpf filesystem, so a restarted daemon — also after
//! `kill -9` — picks up where the last one stopped instead of starting from zero. The programs
//! themselves are never pinned: their links belong to the daemon's file descriptors, so a dead
//! daemon leaves nothing attached.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData};
use profiler_common::{
    ErrnoKey, Hist, HistKey, LedgerErrnoKey, LedgerKey, LedgerTotals, ProcInfo, ProcKey, Start,
    BUCKETS, LAYOUT_VERSION, META_MAP,
};

use aya::maps::MapError;

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
        size_of::<LedgerKey>(),
        size_of::<LedgerErrnoKey>(),
        size_of::<LedgerTotals>(),
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

/// The fingerprint stamped in `dir`'s META map; None when nothing is pinned there yet.
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
    let meta: Array<MapData, u64> = Array::try_from(Map::Array(data)).map_err(unreadable)?;
    meta.get(&0, 0).map(Some).map_err(unreadable)
}

/// Stamps this build's fingerprint into the (now loaded) META map.
pub fn stamp(meta: &mut Array<MapData, u64>) -> Result<(), Error> {
    meta.set(0, fingerprint(), 0).map_err(Error::Stamp)
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
