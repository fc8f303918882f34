use std::{
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{error::ErrorKind, Parser, Subcommand};
use xtask::{
    bench::{self, drain::DrainArgs, hostile::HostileArgs, workload::WorkerArgs, BenchArgs},
    bpfcost, check_ebpf_fresh, ebpf_sources_digest, layers, workspace_root, EBPF_OBJECTS,
    EBPF_SOURCES_DIGEST,
};

#[derive(Parser)]
#[command(about = "Build steps cargo can't do on its own")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile profiler-ebpf for the BPF target and refresh the embedded object, the bench
    /// reference objects and their sources digest.
    BuildEbpf {
        /// cargo for the BPF build: Debian's cargo-web by default (see scripts/install-ebpf-toolchain.sh).
        #[arg(long, env = "BPF_CARGO", default_value = "/usr/bin/cargo")]
        cargo: String,
        /// rustc for the BPF build; its standard library sources must be installed.
        #[arg(long, env = "BPF_RUSTC", default_value = "/usr/bin/rustc")]
        rustc: String,
    },
    /// Fail if the embedded object is older than the eBPF sources.
    CheckEbpf,
    /// Fail on an import against the daemon's module layers (profiler/src) or an import cycle;
    /// print which layers import which.
    Layers,
    /// Measure the profiler's cost per syscall against nothing, the floor, the limit and
    /// bpftrace, and the daemon's CPU, memory and HTTP latency; write docs/benchmarks.md. As root.
    Bench(BenchArgs),
    /// Only the daemon under hostile clients (stalled readers, slowloris, a wrong-password
    /// flood; about a minute; as root, under the kernel lock): put its table in
    /// docs/benchmarks.md.
    BenchHostile(HostileArgs),
    /// Only the daemon's drain, build against build: one daemon at a time under the 10,000
    /// series load, each window's drain CPU by phase from the daemon's own metric, builds
    /// alternated over rounds (about 35 s a build and round; as root). Prints its table.
    BenchDrain(DrainArgs),
    /// Count the BPF instructions and kernel calls of each program path of the daemon (loads
    /// it in each configuration: as root, under the kernel lock) and write the table into
    /// docs/performance.md; fails when a path is over its budget (xtask/src/bpfcost/mod.rs).
    BpfCost {
        /// The daemon binary [default: target/release/syscall-profiler, built first].
        #[arg(long, value_name = "PATH")]
        daemon_bin: Option<std::path::PathBuf>,
    },
    /// As root: install the Debian packages the tests use (only the missing ones), then run
    /// the whole suite (`cargo test --workspace --no-fail-fast`).
    Test,
    /// As root: boot a Debian 12 guest (its 6.1 kernel, systemd as PID 1) with qemu, install
    /// the release daemon there with packaging/install.sh and check the unit under systemd.
    VmTest,
    /// A workload process of `bench` (the harness runs itself).
    #[command(hide = true)]
    BenchWorker(WorkerArgs),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line names the flag and the problem; the usage block after
            // it is noise in a script's log.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid command line");
            eprintln!(
                "xtask: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.cmd {
        Cmd::BuildEbpf { cargo, rustc } => done(build_ebpf(&root, &cargo, &rustc)),
        Cmd::CheckEbpf => done(check_ebpf_fresh(&root)),
        Cmd::Layers => done(layers::run(&root)),
        Cmd::Bench(args) => done(bench::run(&root, args, &argv)),
        Cmd::BenchHostile(args) => done(bench::hostile::run(&root, args)),
        Cmd::BenchDrain(args) => done(bench::drain::run(&root, args)),
        Cmd::BpfCost { daemon_bin } => done(bpf_cost(&root, daemon_bin)),
        Cmd::BenchWorker(args) => done(bench::workload::worker_main(args)),
        Cmd::Test => xtask::test::run(&root),
        Cmd::VmTest => done(xtask::vm_test::run(&root)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line with the cause chain; no backtrace even when RUST_BACKTRACE is set.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_ebpf(root: &Path, cargo: &str, rustc: &str) -> Result<()> {
    let target_dir = root.join("target/bpf");
    let rustflags = [
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        // Same object bytes whichever directory the repository was cloned into.
        &format!("--remap-path-prefix={}=.", root.display()),
    ]
    .join("\x1f");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--package", "profiler-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", rustc)
        // Debian's rustc is a stable release; build-std and the atomic intrinsics need the
        // unstable switches it carries behind this variable.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // Variables the calling (rustup) cargo sets would otherwise leak into the BPF build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS");
    let status = cmd.status().with_context(|| {
        format!("running {cargo}: install the BPF toolchain with scripts/install-ebpf-toolchain.sh")
    })?;
    if !status.success() {
        bail!("BPF build failed ({status})");
    }
    for (bin, object) in EBPF_OBJECTS {
        let built = target_dir.join("bpfel-unknown-none/release").join(bin);
        std::fs::copy(&built, root.join(object))
            .with_context(|| format!("copying {} to {object}", built.display()))?;
        println!(
            "wrote {object} ({} bytes)",
            std::fs::metadata(root.join(object))?.len()
        );
    }
    std::fs::write(
        root.join(EBPF_SOURCES_DIGEST),
        ebpf_sources_digest(root)? + "\n",
    )?;
    Ok(())
}

fn bpf_cost(root: &Path, daemon_bin: Option<std::path::PathBuf>) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bpf-cost loads the daemon's eBPF programs: run it as root");
    }
    check_ebpf_fresh(root)?;
    let bin = match daemon_bin {
        Some(p) => p,
        None => bench::build_daemon(root)?,
    };
    let costs = bpfcost::measure(&bin)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let tree = bench::machine::tree(root, &["docs/performance.md", "docs/benchmarks.md"]);
    let table = bpfcost::render(&costs, &tree, kernel.trim());
    println!("{table}");
    let path = root.join("docs/performance.md");
    let doc = std::fs::read_to_string(&path).context("reading docs/performance.md")?;
    std::fs::write(&path, bpfcost::splice(&doc, &table))?;
    println!("wrote {}", path.display());
    let over = bpfcost::budget_violations(&costs);
    if !over.is_empty() {
        bail!("over budget:\n{}", over.join("\n"));
    }
    Ok(())
}
