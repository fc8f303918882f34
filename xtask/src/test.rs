//! `cargo xtask test`: the whole test suite on a fresh machine in one command. Installs the
//! Debian packages the tests run (only the missing ones), then `cargo test --workspace
//! --no-fail-fast`, so one failing test binary does not hide the others.
//!
//! The BPF toolchain is not installed here: the tests load the committed object
//! (profiler/bpf/*.o, embedded in the daemon) and only check that it matches its sources
//! (`embedded_ebpf_object_matches_its_sources`); nothing in the suite rebuilds it.

use std::{
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

use crate::deb::{install_missing, Package, Proof};

/// Every Debian package a test runs a program from, with the program. The only list: .ci/run
/// and the README defer to it.
pub const TEST_PACKAGES: &[Package] = &[
    Package::new(
        "strace",
        Proof::OnPath(&["strace"]),
        "tests/tests/accuracy.rs compares counts with strace -c",
    ),
    Package::new(
        "gcc-multilib",
        Proof::Compiles {
            cc: "gcc",
            flags: &["-m32", "-static"],
        },
        "tests/tests/accuracy.rs builds a static 32-bit program",
    )
    .only_on("x86_64"),
    Package::new(
        "tmux",
        Proof::OnPath(&["tmux"]),
        "tests/tests/top.rs gives `top` a terminal",
    ),
    Package::new(
        "systemd",
        Proof::OnPath(&["systemd-analyze"]),
        "tests/tests/packaging.rs verifies the unit",
    ),
    Package::new(
        "util-linux",
        Proof::OnPath(&["setpriv"]),
        "tests/tests/daemon.rs, privileges.rs drop privileges",
    ),
    Package::new(
        "dash",
        Proof::OnPath(&["sh"]),
        "tests/tests/stats_bounded.rs runs 3,000 short-lived shells",
    ),
    Package::new(
        "prometheus",
        Proof::OnPath(&["prometheus", "promtool"]),
        "tests/tests/metrics.rs, deploy.rs scrape and check rules",
    ),
    Package::new(
        "curl",
        Proof::OnPath(&["curl"]),
        "tests/tests/metrics.rs scrapes /metrics gzipped as a real client",
    ),
    Package::new(
        "podman",
        Proof::OnPath(&["podman"]),
        "tests/tests/container.rs builds the image and runs the daemon and a workload in containers",
    ),
    // runc: crun refuses hybrid cgroup hosts; netavark: the network backend the test was run
    // with (a fresh install may otherwise pick the older one).
    Package::new(
        "runc",
        Proof::OnPath(&["runc"]),
        "tests/tests/container.rs on hybrid cgroup hosts",
    ),
    Package::new(
        "netavark",
        Proof::File("/usr/lib/podman/netavark"),
        "tests/tests/container.rs (podman's network backend)",
    ),
    Package::new(
        "mmdebstrap",
        Proof::OnPath(&["mmdebstrap"]),
        "tests/tests/container.rs builds the image's Debian base",
    ),
    Package::new(
        "kubernetes-validate",
        Proof::OnPath(&["kubernetes-validate"]),
        "tests/tests/deploy.rs validates deploy/kubernetes --strict",
    )
    .from_pypi(),
    // With its recommends: the fonts the page's text is rendered in.
    Package::new(
        "chromium",
        Proof::OnPath(&["chromium"]),
        "tests/tests/page.rs renders the dashboard",
    )
    .with_recommends(),
];

/// As root: install what is missing, run the suite, return cargo's exit code.
pub fn run(root: &Path) -> Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "run as root: the tests load eBPF programs into the running kernel, and missing \
             Debian packages get installed"
        );
    }
    install_missing("xtask test", TEST_PACKAGES)?;
    // The cargo that runs this xtask, so a rustup toolchain override carries over.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => bail!("cargo test was killed ({status})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every package is named once, and each proof names something to check.
    #[test]
    fn the_table_names_each_package_once_with_a_proof() {
        let mut names: Vec<&str> = TEST_PACKAGES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TEST_PACKAGES.len());
        for p in TEST_PACKAGES {
            match &p.proof {
                Proof::OnPath(programs) => assert!(!programs.is_empty(), "{}", p.name),
                Proof::File(file) => assert!(file.starts_with('/'), "{}", p.name),
                Proof::Compiles { cc, .. } => assert!(!cc.is_empty(), "{}", p.name),
            }
        }
    }

    /// Every program a test starts by name (Command::new("...")) is proven by the table, so a
    /// new external command in the tests cannot be forgotten here.
    #[test]
    fn every_program_the_tests_start_is_in_the_table() {
        let dir = crate::workspace_root().join("tests/tests");
        let proven: Vec<&str> = TEST_PACKAGES
            .iter()
            .flat_map(|p| match &p.proof {
                Proof::OnPath(programs) => programs.to_vec(),
                Proof::File(_) => vec![],
                Proof::Compiles { cc, .. } => vec![*cc],
            })
            .collect();
        let mut started = Vec::new();
        // Test files, and the modules of a test in a folder (tests/tests/metrics/).
        let mut files = Vec::new();
        let mut dirs = vec![dir];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for path in files {
            let text = std::fs::read_to_string(path).unwrap();
            for call in ["Command::new(\"", "which(\""] {
                started.extend(
                    text.split(call)
                        .skip(1)
                        .filter_map(|rest| rest.split('"').next())
                        .map(str::to_string),
                );
            }
        }
        assert!(started.iter().any(|p| p == "strace"), "{started:?}");
        for program in &started {
            assert!(
                proven.contains(&program.as_str()),
                "tests/tests starts `{program}`, which TEST_PACKAGES does not prove"
            );
        }
    }
}
