//! Booting the guest with qemu: KVM when it works, TCG (software emulation) otherwise.
//!
//! Nested KVM is tried first for a short while only: on this project's machines /dev/kvm exists
//! but a guest hangs after the kernel's decompression, printing nothing, while TCG boots.

use std::{
    fs::File,
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::image::Image;

/// How long KVM gets to show the kernel's first console line (it takes well under a second
/// when KVM works; TCG takes a few).
const KVM_GRACE: Duration = Duration::from_secs(30);
/// The whole guest run under TCG: boot, the checks, poweroff.
const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The kernel's first console line.
const KERNEL_BANNER: &str = "Linux version";

#[derive(Clone, Copy, PartialEq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where a run's files go.
pub struct RunFiles<'a> {
    pub share: &'a Path,
    pub console: &'a Path,
    pub qemu_stderr: &'a Path,
    /// The guest's transcript (inside `share`), printed live as it grows.
    pub transcript: &'a Path,
}

/// Runs the guest until it powers off; returns the accelerator used and, when KVM was tried
/// and given up, what it did.
pub fn run(image: &Image, files: &RunFiles) -> Result<(Accel, Option<String>)> {
    let kvm_failure = if Path::new("/dev/kvm").exists() {
        match try_kvm(image, files)? {
            None => return Ok((Accel::Kvm, None)),
            Some(why) => why,
        }
    } else {
        "no /dev/kvm".to_string()
    };
    println!("vm-test: KVM: {kvm_failure}; falling back to TCG (software emulation)");
    let mut qemu = spawn(Accel::Tcg, image, files)?;
    wait_for_poweroff(&mut qemu, files, Instant::now())?;
    Ok((Accel::Tcg, Some(kvm_failure)))
}

/// A whole run under KVM, or why KVM was given up (after at most KVM_GRACE).
fn try_kvm(image: &Image, files: &RunFiles) -> Result<Option<String>> {
    let started = Instant::now();
    let mut qemu = spawn(Accel::Kvm, image, files)?;
    loop {
        if let Some(status) = qemu.try_wait()? {
            return Ok(Some(format!(
                "qemu -accel kvm exited ({status}) before the kernel printed anything: {}",
                first_line(files.qemu_stderr)
            )));
        }
        if console_has(files.console, KERNEL_BANNER) {
            println!(
                "vm-test: KVM works: kernel up after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            wait_for_poweroff(&mut qemu, files, started)?;
            return Ok(None);
        }
        if started.elapsed() > KVM_GRACE {
            let _ = qemu.kill();
            let _ = qemu.wait();
            return Ok(Some(format!(
                "qemu -accel kvm -cpu host: no console output in {} s (the guest hangs before \
                 the kernel's first line){}",
                KVM_GRACE.as_secs(),
                match first_line(files.qemu_stderr) {
                    s if s.is_empty() => String::new(),
                    s => format!("; qemu said: {s}"),
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn(accel: Accel, image: &Image, files: &RunFiles) -> Result<Child> {
    // Fresh files per attempt, so what is read back belongs to this boot.
    for f in [files.console, files.qemu_stderr, files.transcript] {
        let _ = std::fs::remove_file(f);
    }
    let cpu = match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel.name(), "-cpu", cpu])
        .args(["-m", "1024", "-smp", "2"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", files.console.display()))
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        // A panic reboots, which -no-reboot turns into qemu's exit.
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
        .arg("-drive")
        // snapshot=on: the guest's writes go to a temporary file, the cached image stays clean.
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            image.disk.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none,id=share",
            files.share.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(files.qemu_stderr)?);
    println!("vm-test: booting the guest (qemu -accel {})", accel.name());
    cmd.spawn().context("starting qemu-system-x86_64")
}

/// Waits for qemu to exit, printing the guest's transcript as it grows.
fn wait_for_poweroff(qemu: &mut Child, files: &RunFiles, started: Instant) -> Result<()> {
    let mut printed = 0u64;
    let mut kernel_up = false;
    loop {
        if !kernel_up && console_has(files.console, KERNEL_BANNER) {
            kernel_up = true;
            println!(
                "vm-test: kernel up after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        printed = print_new_lines(files.transcript, printed);
        if let Some(status) = qemu.try_wait()? {
            print_new_lines(files.transcript, printed);
            if !status.success() {
                bail!(
                    "qemu failed ({status}): {}; console: {}",
                    first_line(files.qemu_stderr),
                    files.console.display()
                );
            }
            return Ok(());
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!(
                "the guest did not power off within {} min; console: {}",
                RUN_TIMEOUT.as_secs() / 60,
                files.console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints the complete lines of `path` after byte `from`; returns the new offset.
fn print_new_lines(path: &Path, from: u64) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return from;
    };
    if file.seek(SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut offset = from;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.ends_with('\n') {
        print!("  | {line}");
        offset += line.len() as u64;
        line.clear();
    }
    offset
}

fn console_has(console: &Path, needle: &str) -> bool {
    std::fs::read(console).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
}

fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
