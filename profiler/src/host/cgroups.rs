//! cgroup v2 ids to the labels `/metrics` shows: the systemd unit or container a process runs
//! in. The kernel gives each process's cgroup id (the inode number of its directory under
//! /sys/fs/cgroup); the path is found by walking that tree, once per drain at most and only when
//! an id is new, and every answer is cached (ids are 64-bit and not reused, so an answer never
//! goes stale). Called by the drain, never per scrape.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on unified hosts,
/// /sys/fs/cgroup/unified on hybrid ones. Walking a v1 hierarchy instead would be wrong: every
/// cgroupfs root has inode 1, so the v2 root's id would resolve to some v1 controller.
pub fn v2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| v2_mount(&mounts))
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
}

fn v2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// Shown for an id the tree no longer has (the cgroup was removed before we looked) or 0.
pub const UNKNOWN: &str = "unknown";

/// The tree is walked at most this deep: systemd and Kubernetes nest 4–6 levels; the bound
/// keeps a pathological tree from costing a drain more than it should.
const MAX_DEPTH: usize = 16;

pub struct Resolver {
    root: PathBuf,
    cache: HashMap<u64, Arc<str>>,
    unknown: Arc<str>,
    pub walks: u64,
}

impl Resolver {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: HashMap::new(),
            unknown: Arc::from(UNKNOWN),
            walks: 0,
        }
    }

    /// Resolves every id in `ids` not seen before with at most one walk of the tree, then
    /// returns the label of each asked id.
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) -> HashMap<u64, Arc<str>> {
        let ids: Vec<u64> = ids.into_iter().collect();
        if ids
            .iter()
            .any(|id| *id != 0 && !self.cache.contains_key(id))
        {
            let mut found = HashMap::new();
            walk(&self.root, &self.root, 0, &mut found);
            self.walks += 1;
            for (ino, path) in found {
                self.cache
                    .entry(ino)
                    .or_insert_with(|| Arc::from(label(&path)));
            }
            for id in &ids {
                self.cache
                    .entry(*id)
                    .or_insert_with(|| self.unknown.clone());
            }
        }
        ids.into_iter()
            .map(|id| {
                let l = self.cache.get(&id).cloned();
                (id, l.unwrap_or_else(|| self.unknown.clone()))
            })
            .collect()
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, found: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    found.insert(meta.ino(), format!("/{}", rel.display()));
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), depth + 1, found);
        }
    }
}

/// The most telling name in a cgroup path: a container id (first 12 hex digits, as docker and
/// crictl print them) when any component names one, else the innermost systemd unit
/// (`nginx.service`, `session-3.scope`), else the path itself.
pub fn label(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().rev() {
        if let Some(id) = container_id(part) {
            return format!("container:{}", &id[..12]);
        }
    }
    for part in parts.iter().rev() {
        if [".service", ".scope", ".slice"]
            .iter()
            .any(|s| part.ends_with(s))
        {
            return part.to_string();
        }
    }
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

/// `docker-<64 hex>.scope`, `cri-containerd-<hex>.scope`, `crio-<hex>.scope`,
/// `libpod-<hex>.scope` (systemd driver) or a bare `<64 hex>` (cgroupfs driver).
fn container_id(part: &str) -> Option<&str> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    let id = stem.rsplit('-').next().unwrap_or(stem);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0a9b7e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7";

    #[test]
    fn finds_the_v2_mount_on_unified_and_hybrid_hosts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(v2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(v2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn labels_name_the_unit_or_container() {
        assert_eq!(label("/system.slice/ssh.service"), "ssh.service");
        assert_eq!(
            label("/user.slice/user-0.slice/session-3.scope"),
            "session-3.scope"
        );
        assert_eq!(
            label(&format!("/system.slice/docker-{ID}.scope")),
            "container:4f1c0a9b7e2d"
        );
        assert_eq!(
            label(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            )),
            "container:4f1c0a9b7e2d"
        );
        assert_eq!(
            label(&format!("/kubepods/burstable/pod1234/{ID}")),
            "container:4f1c0a9b7e2d"
        );
        assert_eq!(label("/"), "/");
        assert_eq!(label("/init"), "/init");
    }

    #[test]
    fn resolves_real_directories_by_inode_and_caches() {
        let dir = std::env::temp_dir().join(format!("cgroups-test-{}", std::process::id()));
        let unit = dir.join("system.slice/demo.service");
        std::fs::create_dir_all(&unit).unwrap();
        let ino = std::fs::metadata(&unit).unwrap().ino();
        let mut r = Resolver::new(&dir);
        let got = r.resolve([ino, 0]);
        assert_eq!(&*got[&ino], "demo.service");
        assert_eq!(&*got[&0], UNKNOWN);
        assert_eq!(r.walks, 1);
        // Cached: no second walk, even after the directory is gone.
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&*r.resolve([ino])[&ino], "demo.service");
        assert_eq!(r.walks, 1);
        // An id that is nowhere costs one walk, then is cached as unknown.
        assert_eq!(&*r.resolve([u64::MAX])[&u64::MAX], UNKNOWN);
        assert_eq!(&*r.resolve([u64::MAX])[&u64::MAX], UNKNOWN);
        assert_eq!(r.walks, 2);
    }
}
