//! Why a setting cannot be used, in one line that names where it came from: the flag, the
//! environment variable, or the file and key. Echoed values and paths are clipped (parse.rs), so
//! a 100 KB mistake makes a short line.

use std::path::{Path, PathBuf};

use super::parse::clip_to;

/// Files are read whole, so a setting file is capped: `--config /dev/urandom` is refused, not
/// read forever.
pub const FILE_MAX_BYTES: u64 = 1 << 20;

/// The most characters of a path an error line echoes.
const PATH_ECHO_MAX: usize = 200;

/// A path as error lines echo it.
pub fn shown(path: &Path) -> String {
    clip_to(&path.display().to_string(), PATH_ECHO_MAX)
}

/// Why a settings file was not read (sources.rs, `read_capped`).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A device, FIFO or directory: reading it could block or never end.
    #[error("not a regular file")]
    NotAFile,
    #[error("larger than {} KiB", FILE_MAX_BYTES >> 10)]
    TooLarge,
    #[error("not UTF-8 text")]
    NotUtf8,
}

/// A setting that cannot be used, named by where it came from, in one line (with its cause, if
/// any, after ": ").
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that does not parse or is out of range; `place` is `--flag`, `environment
    /// variable NAME` or `config file PATH, key 'name'`.
    #[error("{place}: {why}")]
    Invalid { place: String, why: String },
    /// `what` is `config file` or `web config file`.
    #[error("cannot read {what} {}", shown(path))]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// TOML the file's reader refuses: bad syntax, or (in the web config) a key or value of the
    /// wrong kind. `message` is clipped.
    #[error(
        "{what} {}{}: {message}",
        shown(path),
        line.map_or(String::new(), |n| format!(", line {n}"))
    )]
    Syntax {
        what: &'static str,
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// `hint` is "(did you mean 'x'?)" or the list of keys.
    #[error("config file {}: unknown key '{key}' {hint}", shown(path))]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    /// A variable with the settings' prefix that names no setting: a typo must not be ignored
    /// while the same typo in the file is an error.
    #[error("environment variable {name}: not a setting of serve {hint}")]
    UnknownVariable { name: String, hint: String },
    #[error(
        "config file {}, key '{key}': expected {expected}, found {found}",
        shown(path)
    )]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "web config file {}, basic_auth_users: '{user}' is not a user name (empty, or \
         contains ':')",
        shown(path)
    )]
    UserName { path: PathBuf, user: String },
    #[error(
        "web config file {}, basic_auth_users.{user}: not a bcrypt hash: {why}",
        shown(path)
    )]
    Hash {
        path: PathBuf,
        user: String,
        why: String,
    },
    /// An empty table would switch authentication off, which must be said by leaving it out.
    #[error(
        "web config file {}: [basic_auth_users] is empty, which would turn authentication off \
         (remove the table to serve without authentication)",
        shown(path)
    )]
    NoUsers { path: PathBuf },
    /// `field` is `cert_file` or `key_file`; `why` is why the file was not read or the PEM
    /// reader's error, clipped.
    #[error(
        "web config file {}: tls_server_config.{field} {}: {why}",
        shown(path),
        shown(file)
    )]
    TlsFile {
        path: PathBuf,
        field: &'static str,
        file: PathBuf,
        why: String,
    },
    #[error(
        "web config file {}: tls_server_config.cert_file {}: no PEM certificate in it",
        shown(path),
        shown(file)
    )]
    NoCertificate { path: PathBuf, file: PathBuf },
    #[error("web config file {}: TLS", shown(path))]
    Tls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "web config file {}: tls_server_config: certificate and key do not fit",
        shown(path)
    )]
    KeyMismatch {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}
