//! The guest: a Debian 12 root built from Debian packages only (mmdebstrap), with Debian's own
//! 6.1 kernel and systemd as PID 1, as a raw ext4 disk plus the kernel and initrd to boot it.
//! Cached under target/vm-test/, keyed by this file's text: any change to the recipe below
//! rebuilds it (delete target/vm-test/image-* to pick up newer Debian packages).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

const SUITE: &str = "bookworm";
/// Debian's archive, its updates and its security suite (the current 6.1 kernel is there).
const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// On top of the minimal base: the init, the kernel (linux-image-amd64 of bookworm is 6.1),
/// modprobe for the 9p modules, and what the checks run (bpftool, curl, jq, procps).
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "bpftool",
    "curl",
    "jq",
    "procps",
];
/// Big enough for the root (~700 MB) and the journal; sparse on the host.
const DISK_SIZE: &str = "2G";

/// Mounts the host's shared directory and runs its checks once the system is up, then powers
/// off whatever happened (qemu runs with -no-reboot, so that ends the run).
const RUNNER_UNIT: &str = "\
[Unit]
Description=vm-test: the checks shared by the host, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/mkdir -p /mnt/share
ExecStart=/bin/mount -t 9p -o trans=virtio,version=9p2000.L share /mnt/share
ExecStart=/bin/bash /mnt/share/guest-check.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
TimeoutStartSec=30min

[Install]
WantedBy=multi-user.target
";

/// The files written into the root after mmdebstrap: (path, contents).
const FILES: &[(&str, &str)] = &[
    ("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"),
    ("etc/hostname", "vm-test\n"),
    ("etc/systemd/system/vm-test.service", RUNNER_UNIT),
];

/// A built guest: its disk (never written: qemu runs it with snapshot=on), kernel and initrd.
pub struct Image {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The cached image for this recipe, built first if missing.
pub fn ensure(root: &Path) -> Result<Image> {
    let cache = root.join("target/vm-test");
    let dir = cache.join(format!("image-{}", recipe_key()));
    let image = Image {
        disk: dir.join("disk.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    if image.disk.is_file() && image.kernel.is_file() && image.initrd.is_file() {
        println!("vm-test: guest image cached at {}", dir.display());
        return Ok(image);
    }
    remove_other_images(&cache)?;
    let started = Instant::now();
    println!("vm-test: building the guest image (mmdebstrap {SUITE}; a few minutes)");
    let work = cache.join("image-build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let rootfs = work.join("root");
    let log = work.join("mmdebstrap.log");
    run_logged(
        Command::new("mmdebstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&rootfs)
            .args(MIRRORS),
        &log,
    )?;
    for (path, contents) in FILES {
        std::fs::write(rootfs.join(path), contents)
            .with_context(|| format!("writing {path} into the guest root"))?;
    }
    let wants = rootfs.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/vm-test.service",
        wants.join("vm-test.service"),
    )?;
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(only_file(&rootfs.join("boot"), "vmlinuz-")?, &image.kernel)?;
    std::fs::copy(
        only_file(&rootfs.join("boot"), "initrd.img-")?,
        &image.initrd,
    )?;
    let disk_tmp = work.join("disk.img");
    run_logged(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(&disk_tmp)
            .arg(DISK_SIZE),
        &log,
    )?;
    std::fs::rename(&disk_tmp, &image.disk)?;
    std::fs::remove_dir_all(&work)?;
    println!(
        "vm-test: guest image built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(image)
}

/// The recipe's digest: this file's text.
fn recipe_key() -> String {
    let digest = Sha256::digest(include_str!("image.rs"));
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Images of older recipes: a gigabyte each, never used again.
fn remove_other_images(cache: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("image-"))
        {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The one file in `dir` whose name starts with `prefix` (one kernel is installed).
fn only_file(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        {
            found.push(path);
        }
    }
    ensure!(
        found.len() == 1,
        "expected one {prefix}* in {}, found {found:?}",
        dir.display()
    );
    Ok(found.remove(0))
}

/// Runs `cmd` with its output appended to `log`; on failure, the error names the log.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!(
            "{program} failed ({status}); its output is in {}",
            log.display()
        );
    }
    Ok(())
}
