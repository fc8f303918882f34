//! `cargo xtask vm-test`: the systemd unit under a real systemd, on a stock distribution kernel.
//!
//! Boots a Debian 12 guest (its own 6.1 kernel, systemd as PID 1; image.rs) with qemu
//! (qemu.rs), shares with it the release daemon, packaging/ and the checks (guest-check.sh),
//! and reports what the guest saw: the unit installed by packaging/install.sh starts
//! (Type=notify), serves, counts a known workload exactly, reloads, is watched by the watchdog,
//! holds no capabilities, detaches on stop and resumes from pinned maps; and which programs
//! the loader chose on a pre-6.16 kernel. Runs nothing on the host's kernel.

mod image;
mod qemu;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::deb::{install_missing, Package, Proof};

/// What the host needs to build and boot the guest.
const HOST_PACKAGES: &[Package] = &[
    // From backports: bookworm's qemu 7.2 conflicts with the backports qemu-utils this
    // machine kind ships (installing it removes qemu-utils); the backports build matches it.
    Package::new(
        "qemu-system-x86",
        Proof::OnPath(&["qemu-system-x86_64"]),
        "boots the guest",
    )
    .from_backports(),
    Package::new(
        "mmdebstrap",
        Proof::OnPath(&["mmdebstrap"]),
        "builds the guest's root from Debian packages",
    ),
    Package::new(
        "e2fsprogs",
        Proof::OnPath(&["mkfs.ext4"]),
        "makes the guest's disk",
    ),
    Package::new(
        "gcc",
        Proof::OnPath(&["gcc"]),
        "builds the guest's workload",
    ),
    Package::new(
        "libc6-dev",
        Proof::Compiles {
            cc: "gcc",
            flags: &["-static"],
        },
        "links the guest's workload statically",
    ),
];

/// The guest's checks; run by the guest's systemd from the shared directory.
const GUEST_CHECK: &str = include_str!("guest-check.sh");
/// The known workload, built static on the host so it needs nothing in the guest.
const CALLS_C: &str = include_str!("calls.c");

pub fn run(root: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "run as root: it installs Debian packages and builds the guest's root with mmdebstrap"
        );
    }
    let started = Instant::now();
    install_missing("vm-test", HOST_PACKAGES)?;
    let image = image::ensure(root)?;

    let run_dir = root.join("target/vm-test/run");
    let share = run_dir.join("share");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(share.join("repo/packaging"))?;
    std::fs::create_dir_all(share.join("repo/docs"))?;
    let daemon = crate::bench::build_daemon(root)?;
    std::fs::copy(&daemon, share.join("syscall-profiler"))?;
    for file in [
        "README.md",
        "packaging/install.sh",
        "packaging/syscall-profiler.service",
        "packaging/config.toml",
        "packaging/pinned-maps.conf",
    ] {
        std::fs::copy(root.join(file), share.join("repo").join(file))
            .with_context(|| format!("sharing {file}"))?;
    }
    // install.sh installs the README with the docs/ its links point into.
    for doc in std::fs::read_dir(root.join("docs")).context("reading docs/")? {
        let doc = doc?;
        std::fs::copy(doc.path(), share.join("repo/docs").join(doc.file_name()))
            .with_context(|| format!("sharing {}", doc.path().display()))?;
    }
    write_executable(&share.join("guest-check.sh"), GUEST_CHECK)?;
    build_calls(&run_dir, &share)?;

    let files = qemu::RunFiles {
        share: &share,
        console: &run_dir.join("console.log"),
        qemu_stderr: &run_dir.join("qemu-stderr.log"),
        transcript: &share.join("transcript.txt"),
    };
    let guest_started = Instant::now();
    let (accel, kvm_failure) = qemu::run(&image, &files)?;
    let guest_secs = guest_started.elapsed().as_secs_f64();

    let result = std::fs::read_to_string(share.join("result")).unwrap_or_default();
    println!(
        "vm-test: guest run {guest_secs:.0} s under {}{}; whole command {:.0} s",
        accel.name(),
        kvm_failure
            .map(|f| format!(" (KVM: {f})"))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "vm-test: transcript {}, console {}",
        files.transcript.display(),
        files.console.display()
    );
    let (checks, failed) = parse_result(&result).with_context(|| {
        format!(
            "the guest reported no result (see {})",
            files.console.display()
        )
    })?;
    ensure!(
        failed == 0,
        "{failed} of {checks} checks failed in the guest"
    );
    println!("vm-test: all {checks} checks passed in the guest");
    Ok(())
}

/// The guest's last word: `checks=N failed=F`.
fn parse_result(text: &str) -> Option<(u32, u32)> {
    let mut checks = None;
    let mut failed = None;
    for field in text.split_whitespace() {
        match field.split_once('=')? {
            ("checks", n) => checks = n.parse().ok(),
            ("failed", n) => failed = n.parse().ok(),
            _ => return None,
        }
    }
    Some((checks.filter(|&n| n > 0)?, failed?))
}

fn build_calls(run_dir: &Path, share: &Path) -> Result<()> {
    let src = run_dir.join("calls.c");
    std::fs::write(&src, CALLS_C)?;
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-Wall", "-Werror", "-o"])
        .arg(share.join("calls"))
        .arg(&src)
        .output()
        .context("running gcc")?;
    ensure!(
        out.status.success(),
        "building the guest's workload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_result_line_is_parsed_strictly() {
        assert_eq!(parse_result("checks=21 failed=0\n"), Some((21, 0)));
        assert_eq!(parse_result("checks=21 failed=3"), Some((21, 3)));
        assert_eq!(parse_result(""), None);
        assert_eq!(parse_result("checks=0 failed=0"), None);
        assert_eq!(parse_result("checks=5"), None);
        assert_eq!(parse_result("checks=5 failed=x"), None);
        assert_eq!(parse_result("checks=5 failed=0 extra"), None);
    }
}
