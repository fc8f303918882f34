//! Debian packages a step needs, each with the check that proves it is installed, and the
//! idempotent install of the missing ones (`cargo xtask test`, `cargo xtask vm-test`).

use std::{
    ffi::{OsStr, OsString},
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// One Debian package and how to tell it is there.
pub struct Package {
    pub name: &'static str,
    pub proof: Proof,
    /// What uses it, for the reader of the table and of the install line.
    pub used_by: &'static str,
    /// Installed with its Recommends.
    with_recommends: bool,
    /// Needed only on this architecture (`std::env::consts::ARCH`).
    only_on: Option<&'static str>,
    /// From the release's backports suite (see `backports_apt_options`).
    from_backports: bool,
    /// Not a Debian package: from PyPI, with `python3 -m pip install`.
    from_pypi: bool,
}

impl Package {
    pub const fn new(name: &'static str, proof: Proof, used_by: &'static str) -> Package {
        Package {
            name,
            proof,
            used_by,
            with_recommends: false,
            only_on: None,
            from_backports: false,
            from_pypi: false,
        }
    }

    pub const fn with_recommends(mut self) -> Package {
        self.with_recommends = true;
        self
    }

    pub const fn only_on(mut self, arch: &'static str) -> Package {
        self.only_on = Some(arch);
        self
    }

    pub const fn from_backports(mut self) -> Package {
        self.from_backports = true;
        self
    }

    pub const fn from_pypi(mut self) -> Package {
        self.from_pypi = true;
        self
    }
}

/// The check that proves a package is installed: what its user runs, not dpkg's word, so a
/// program installed some other way counts too.
pub enum Proof {
    /// Every one of these programs is on PATH.
    OnPath(&'static [&'static str]),
    /// This file exists (a program packages keep off PATH).
    File(&'static str),
    /// `cc` (from PATH) compiles and links an empty C program with these flags.
    Compiles {
        cc: &'static str,
        flags: &'static [&'static str],
    },
}

impl Proof {
    pub fn holds(&self, path: &OsStr) -> bool {
        match self {
            Proof::OnPath(programs) => programs.iter().all(|p| on_path(p, path)),
            Proof::File(file) => Path::new(file).exists(),
            Proof::Compiles { cc, flags } => compiles(cc, flags, path),
        }
    }
}

fn on_path(program: &str, path: &OsStr) -> bool {
    find(program, path).is_some()
}

/// The first executable file named `program` in `path`'s directories.
pub fn find(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn compiles(cc: &str, flags: &[&str], path: &OsStr) -> bool {
    let Some(cc_path) = find(cc, path) else {
        return false;
    };
    let out = std::env::temp_dir().join(format!("xtask-probe-{cc}-{}", std::process::id()));
    let child = Command::new(cc_path)
        .env("PATH", path)
        .args(flags)
        .args(["-x", "c", "-", "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let fed = child
        .stdin
        .take()
        .is_some_and(|mut stdin| stdin.write_all(b"int main(void) { return 0; }\n").is_ok());
    let ok = child.wait().is_ok_and(|s| s.success()) && fed;
    let _ = std::fs::remove_file(&out);
    ok
}

/// The packages of `table` this machine needs (architecture) and lacks, judged with `path`.
pub fn missing<'a>(table: &'a [Package], path: &OsStr) -> Vec<&'a Package> {
    table
        .iter()
        .filter(|p| p.only_on.is_none_or(|arch| arch == std::env::consts::ARCH))
        .filter(|p| !p.proof.holds(path))
        .collect()
}

/// Installs, with apt-get, whatever of `table` is missing; touches nothing when all is there.
/// `who` prefixes the one line it prints.
pub fn install_missing(who: &str, table: &[Package]) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let lacking = missing(table, &path);
    if lacking.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = lacking
        .iter()
        .map(|p| format!("{} ({})", p.name, p.used_by))
        .collect();
    println!("{who}: installing {}", described.join(", "));
    let (pypi, lacking): (Vec<&Package>, Vec<&Package>) =
        lacking.into_iter().partition(|p| p.from_pypi);
    for p in pypi {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "-q", p.name])
            .status()
            .context("running python3 -m pip")?;
        if !status.success() {
            bail!("python3 -m pip install {} failed ({status})", p.name);
        }
    }
    if lacking.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "no apt-get: install these Debian packages by hand: {}",
            described.join(", ")
        );
    }
    if lacking.iter().any(|p| !p.from_backports) {
        apt_get(&[], &["update", "-qq"])?;
    }
    for (from_backports, with_recommends) in [(false, false), (false, true), (true, false)] {
        let names: Vec<&str> = lacking
            .iter()
            .filter(|p| (p.from_backports, p.with_recommends) == (from_backports, with_recommends))
            .map(|p| p.name)
            .collect();
        if names.is_empty() {
            continue;
        }
        let mut options = Vec::new();
        if from_backports {
            let suite;
            (options, suite) = backports_apt_options()?;
            apt_get(&options, &["update", "-qq"])?;
            options.extend(["-t".to_string(), suite]);
        }
        if !with_recommends {
            options.push("--no-install-recommends".to_string());
        }
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(names);
        apt_get(&options, &args)?;
    }
    let still: Vec<&str> = missing(table, &path).iter().map(|p| p.name).collect();
    if !still.is_empty() {
        bail!(
            "installed, yet still not usable: {} (see the table in xtask/src)",
            still.join(", ")
        );
    }
    Ok(())
}

/// Where the backports package lists are kept, apart from the machine's.
const BACKPORTS_APT_DIR: &str = "/var/cache/xtask-apt-backports";

/// apt-get options that add this release's backports suite for one command only (the machine's
/// sources plus backports, with package lists of their own), and the suite's name: the machine's
/// apt configuration stays as it was.
fn backports_apt_options() -> Result<(Vec<String>, String)> {
    let os_release =
        std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .context("/etc/os-release names no VERSION_CODENAME")?;
    let suite = format!("{codename}-backports");
    let dir = Path::new(BACKPORTS_APT_DIR);
    let parts = dir.join("sources.list.d");
    let _ = std::fs::remove_dir_all(&parts);
    std::fs::create_dir_all(&parts)?;
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    for entry in std::fs::read_dir("/etc/apt/sources.list.d")? {
        let file = entry?.path();
        if file
            .extension()
            .is_some_and(|e| e == "list" || e == "sources")
        {
            std::fs::copy(&file, parts.join(file.file_name().unwrap()))?;
        }
    }
    std::fs::write(
        parts.join("xtask-backports.sources"),
        format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )?;
    let options = vec![
        "-o".to_string(),
        format!("Dir::Etc::sourceparts={}", parts.display()),
        "-o".to_string(),
        format!("Dir::State::lists={}", dir.join("lists").display()),
    ];
    Ok((options, suite))
}

fn apt_get(options: &[String], args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(options)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Its progress lines are noise in a test log; its errors go to stderr.
        .stdout(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Package] = &[
        Package::new("present", Proof::OnPath(&["tool-a"]), "a test"),
        Package::new(
            "half-present",
            Proof::OnPath(&["tool-a", "tool-b"]),
            "a test",
        ),
        Package::new("not-executable", Proof::OnPath(&["tool-c"]), "a test"),
        Package::new("other-arch", Proof::OnPath(&["tool-d"]), "a test").only_on("no-such-arch"),
        Package::new(
            "no-compiler",
            Proof::Compiles {
                cc: "cc-x",
                flags: &[],
            },
            "a test",
        ),
    ];

    /// A PATH of two directories holding an executable tool-a and a non-executable tool-c.
    #[test]
    fn missing_is_judged_on_the_given_path() {
        let dir = tempdir("missing");
        let (one, two) = (dir.join("one"), dir.join("two"));
        for d in [&one, &two] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(two.join("tool-a"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(two.join("tool-a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(one.join("tool-c"), "").unwrap();
        std::fs::set_permissions(one.join("tool-c"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let path = std::env::join_paths([&one, &two]).unwrap();
        let names: Vec<&str> = missing(TABLE, &path).iter().map(|p| p.name).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["half-present", "not-executable", "no-compiler"]);
    }

    /// The compile proof runs the compiler found on PATH, and only counts its success.
    #[test]
    fn a_compile_proof_needs_the_compiler_to_succeed() {
        let dir = tempdir("compiles");
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(
                &p,
                format!("#!/bin/sh\nwhile read -r _; do :; done\n{body}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("cc-ok", "exit 0");
        script("cc-fails", "exit 1");
        let path = dir.clone().into_os_string();
        let ok = Proof::Compiles {
            cc: "cc-ok",
            flags: &["-m32"],
        };
        let fails = Proof::Compiles {
            cc: "cc-fails",
            flags: &[],
        };
        let (ok, fails) = (ok.holds(&path), fails.holds(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ok);
        assert!(!fails);
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-deb-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
