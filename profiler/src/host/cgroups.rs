//! cgroup v2 ids to the labels `/metrics` and `/stats` show: the systemd unit or container a
//! process runs in, and the Kubernetes pod (its UID and QoS class) when it runs in one. The
//! kernel gives each process's cgroup id (the inode number of its directory under
//! /sys/fs/cgroup); the path is found by walking that tree, once per drain at most and only when
//! an id is new, and every answer is cached (ids are 64-bit and not reused, so an answer never
//! goes stale). Called by the drain, never per scrape. A cgroup removed before the drain looked
//! (a container that lived less than a drain interval) stays `unknown`.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on unified hosts,
/// /sys/fs/cgroup/unified on hybrid ones; `None` when there is none, as in a container that
/// sees only v1 controllers. Walking a v1 hierarchy instead would be wrong: every cgroupfs root
/// has inode 1, so the v2 root's id would resolve to some v1 controller. Says in the log when
/// labels will be `unknown` for want of the host's tree.
pub fn v2_root() -> Option<PathBuf> {
    let root = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| v2_mount(&mounts));
    const FIX: &str = "in a container, mount the host's /sys/fs/cgroup";
    match &root {
        None => tracing::warn!(
            "no cgroup v2 hierarchy is mounted: every cgroup label is \"unknown\" ({FIX})"
        ),
        // The whole tree's root is kernfs's root, inode 1; a mount made inside a cgroup
        // namespace starts at the namespace's own cgroup and shows nothing above it.
        Some(dir) if std::fs::metadata(dir).is_ok_and(|m| m.ino() != 1) => tracing::warn!(
            "{} shows only a cgroup namespace's part of the tree: processes outside it are \
             labelled \"unknown\" ({FIX})",
            dir.display()
        ),
        Some(_) => {}
    }
    root
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

/// What a cgroup tells about the processes in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The `cgroup` label: see [`label`].
    pub label: Arc<str>,
    /// The Kubernetes pod, when the cgroup is one's or a container's in one.
    pub pod: Option<Arc<Pod>>,
}

impl Cgroup {
    fn unknown() -> Cgroup {
        Cgroup {
            label: Arc::from(UNKNOWN),
            pod: None,
        }
    }
}

/// A Kubernetes pod as kubelet names its cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// `metadata.uid` (what kube-state-metrics calls `uid` in `kube_pod_info`).
    pub uid: String,
    pub qos_class: QosClass,
}

/// `status.qosClass`, spelt as the Kubernetes API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn name(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

pub struct Resolver {
    root: Option<PathBuf>,
    cache: HashMap<u64, Cgroup>,
    unknown: Cgroup,
    pub walks: u64,
}

impl Resolver {
    /// `root`: the v2 hierarchy ([`v2_root`]); without one every id is `unknown`.
    pub fn new(root: Option<impl Into<PathBuf>>) -> Self {
        Self {
            root: root.map(Into::into),
            cache: HashMap::new(),
            unknown: Cgroup::unknown(),
            walks: 0,
        }
    }

    /// Resolves every id in `ids` not seen before with at most one walk of the tree, then
    /// returns what each asked id's cgroup tells.
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) -> HashMap<u64, Cgroup> {
        let ids: Vec<u64> = ids.into_iter().collect();
        if ids
            .iter()
            .any(|id| *id != 0 && !self.cache.contains_key(id))
        {
            let mut found = HashMap::new();
            if let Some(root) = &self.root {
                walk(root, root, 0, &mut found);
            }
            self.walks += 1;
            for (ino, path) in found {
                self.cache.entry(ino).or_insert_with(|| Cgroup {
                    label: Arc::from(label(&path)),
                    pod: pod(&path).map(Arc::new),
                });
            }
            for id in &ids {
                self.cache
                    .entry(*id)
                    .or_insert_with(|| self.unknown.clone());
            }
        }
        ids.into_iter()
            .map(|id| {
                let c = self.cache.get(&id).cloned();
                (id, c.unwrap_or_else(|| self.unknown.clone()))
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
/// `libpod-<hex>.scope` (systemd driver), `libpod-<hex>` (podman's cgroupfs manager, under
/// `/libpod_parent`) or a bare `<64 hex>` (cgroupfs driver).
fn container_id(part: &str) -> Option<&str> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    let id = stem.rsplit('-').next().unwrap_or(stem);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The pod of a path under kubelet's `kubepods` cgroup, with either cgroup driver:
///
/// - systemd: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/…`,
///   the UID's dashes written as underscores (a dash nests slices in systemd's names);
/// - cgroupfs: `kubepods/burstable/pod<uid>/…`.
///
/// A Guaranteed pod has no QoS level: `kubepods.slice/kubepods-pod<uid>.slice`,
/// `kubepods/pod<uid>`. The kubepods root may be nested (`kubelet.slice/kubelet-kubepods.slice`
/// in kind, or under kubelet's `--cgroup-root`).
pub fn pod(path: &str) -> Option<Pod> {
    let mut parts = path
        .split('/')
        .filter(|p| !p.is_empty())
        .skip_while(|p| !(*p == "kubepods" || p.ends_with("kubepods.slice")))
        .skip(1);
    let mut part = parts.next()?;
    let qos_class = match qos_level(part) {
        Some(class) => {
            part = parts.next()?;
            class
        }
        None => QosClass::Guaranteed,
    };
    let uid = match part.strip_suffix(".slice") {
        Some(unit) => unit
            .rsplit('-')
            .next()?
            .strip_prefix("pod")?
            .replace('_', "-"),
        None => part.strip_prefix("pod")?.to_string(),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-';
    (!uid.is_empty() && uid.chars().all(valid)).then_some(Pod { uid, qos_class })
}

/// kubelet's QoS level directories: `burstable` or `kubepods-burstable.slice`, likewise
/// `besteffort`.
fn qos_level(part: &str) -> Option<QosClass> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    match name.rsplit('-').next()? {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
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
        // What podman 4.3 with runc and its cgroupfs manager made here (no systemd as PID 1).
        assert_eq!(
            label(&format!("/libpod_parent/libpod-{ID}")),
            "container:4f1c0a9b7e2d"
        );
        assert_eq!(label("/libpod_parent/conmon"), "/libpod_parent/conmon");
        assert_eq!(label("/"), "/");
        assert_eq!(label("/init"), "/init");
    }

    #[test]
    fn kubelet_pod_cgroups_name_the_pod_and_its_qos_class() {
        let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let escaped = uid.replace('-', "_");
        let pod_of = |path: String| pod(&path).map(|p| (p.uid, p.qos_class));
        let expect = |class| Some((uid.to_string(), class));
        for (level, class) in [
            ("burstable", QosClass::Burstable),
            ("besteffort", QosClass::BestEffort),
        ] {
            assert_eq!(
                pod_of(format!(
                    "/kubepods.slice/kubepods-{level}.slice/kubepods-{level}-pod{escaped}.slice/cri-containerd-{ID}.scope"
                )),
                expect(class)
            );
            assert_eq!(
                pod_of(format!("/kubepods/{level}/pod{uid}/{ID}")),
                expect(class)
            );
            // The pod's own cgroup, above its containers.
            assert_eq!(pod_of(format!("/kubepods/{level}/pod{uid}")), expect(class));
        }
        assert_eq!(
            pod_of(format!(
                "/kubepods.slice/kubepods-pod{escaped}.slice/cri-containerd-{ID}.scope"
            )),
            expect(QosClass::Guaranteed)
        );
        assert_eq!(
            pod_of(format!("/kubepods/pod{uid}/crio-{ID}")),
            expect(QosClass::Guaranteed)
        );
        // kind: kubelet's tree under its own slice.
        assert_eq!(
            pod_of(format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{escaped}.slice/cri-containerd-{ID}.scope"
            )),
            expect(QosClass::BestEffort)
        );
        // Not pods: the QoS levels themselves, other trees, and names that only look alike.
        for path in [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/besteffort",
            "/system.slice/kubelet.service",
            "/libpod_parent/libpod-0123",
            "/podman/pod1234",
            "/kubepods/burstable/pod",
            "/kubepods/burstable/pod12$4",
        ] {
            assert_eq!(pod(path), None, "{path}");
        }
        // The label is still the container's: the pod is told apart.
        assert_eq!(
            label(&format!("/kubepods/burstable/pod{uid}/{ID}")),
            "container:4f1c0a9b7e2d"
        );
    }

    #[test]
    fn resolves_real_directories_by_inode_and_caches() {
        let dir = std::env::temp_dir().join(format!("cgroups-test-{}", std::process::id()));
        let unit = dir.join("system.slice/demo.service");
        std::fs::create_dir_all(&unit).unwrap();
        let ino = std::fs::metadata(&unit).unwrap().ino();
        let mut r = Resolver::new(Some(&dir));
        let got = r.resolve([ino, 0]);
        assert_eq!(&*got[&ino].label, "demo.service");
        assert_eq!(got[&ino].pod, None);
        assert_eq!(&*got[&0].label, UNKNOWN);
        assert_eq!(r.walks, 1);
        // Cached: no second walk, even after the directory is gone.
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&*r.resolve([ino])[&ino].label, "demo.service");
        assert_eq!(r.walks, 1);
        // An id that is nowhere costs one walk, then is cached as unknown.
        assert_eq!(&*r.resolve([u64::MAX])[&u64::MAX].label, UNKNOWN);
        assert_eq!(&*r.resolve([u64::MAX])[&u64::MAX].label, UNKNOWN);
        assert_eq!(r.walks, 2);
    }

    #[test]
    fn without_a_v2_hierarchy_every_id_is_unknown() {
        let mut r = Resolver::new(None::<PathBuf>);
        let got = r.resolve([1, 42]);
        assert_eq!(&*got[&1].label, UNKNOWN);
        assert_eq!(&*got[&42].label, UNKNOWN);
    }
}
