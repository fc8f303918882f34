//! The command `record` runs: found in $PATH, started so that its calls count from its exec on,
//! and waited for with every process it starts.

use std::{
    ffi::OsString,
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
};

use anyhow::anyhow;

use crate::{cmd::exit::Fatal, kernel::ExecMarks};

/// Finds a bare command name in $PATH ourselves, as a shell would: otherwise the child tries
/// execve on each $PATH entry and its failed attempts land in the report as the command's own.
pub fn resolve(prog: &OsString) -> Result<PathBuf, Fatal> {
    use std::os::unix::fs::PermissionsExt;
    let path = PathBuf::from(prog);
    if prog.as_encoded_bytes().contains(&b'/') {
        // Said before the programs are loaded, as the exec's own error would say it.
        return match std::fs::metadata(&path) {
            Ok(_) => Ok(path),
            Err(e) => Err(Fatal::Other(anyhow!(
                "cannot run '{}': {e}",
                path.display()
            ))),
        };
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .map(|d| d.join(&path))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Fatal::Other(anyhow!(
                "cannot run '{}': not found in $PATH",
                prog.to_string_lossy()
            ))
        })
}

/// Makes `record` the reaper of every orphan the command leaves (a daemon it starts, a
/// background job of a shell that has exited), so it can wait for them as `strace -f` does.
pub fn adopt_orphans() -> Result<(), Fatal> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        let e = io::Error::last_os_error();
        return Err(Fatal::Other(anyhow!(
            "becoming the command's subreaper: {e}"
        )));
    }
    Ok(())
}

/// Starts `prog` (found for `args[0]`) with arguments `args`, `args[0]` included: as a shell
/// and strace do, the program sees the name it was given, not the path it was found at (Python,
/// for one, looks itself up in $PATH when its name has no slash). The child marks itself in `marks` right before its
/// exec, so the kernel starts the command's own process incarnation at that exec; the child's
/// set-up (signal dispositions, the signal mask, the mark itself) stays in the incarnation
/// before, which the report leaves out. Returns once the exec has happened (std waits for it).
pub fn start(prog: &Path, args: &[OsString], marks: &ExecMarks) -> Result<Child, Fatal> {
    let mut command = Command::new(prog);
    if let Some((name, rest)) = args.split_first() {
        command.arg0(name).args(rest);
    }
    // The last thing before the exec: std runs hooks after its own set-up.
    // SAFETY: the hook makes two system calls and touches no lock or allocator, which is what
    // a forked child of a multi-threaded process may do.
    unsafe { command.pre_exec(marks.self_marker()) };
    command
        .spawn()
        .map_err(|e| Fatal::Other(anyhow!("cannot run '{}': {e}", prog.display())))
}

/// Reaps every child that has exited without waiting (the command's orphans, adopted).
/// Whether any child is left, running or not yet reaped.
pub fn reap_orphans() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status we pass.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return true,
            pid if pid > 0 => continue,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return false,
        }
    }
}

/// What a shell would report: the code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
