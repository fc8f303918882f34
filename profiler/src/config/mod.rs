//! Every setting of the daemon and where it comes from: flags, the environment and a TOML file,
//! in that order of precedence, over the defaults (`sources.rs` reads them, `parse.rs` checks
//! each value). The web config file (`web.rs`) and the insight thresholds (`insights.rs`) are
//! settings too.

pub mod args;
pub mod insights;
pub mod parse;
pub mod sources;
pub mod web;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Default listen address: loopback only, and a port clear of Prometheus (9090), Alertmanager
/// (9093), Pushgateway (9091) and node_exporter (9100).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9760";

pub const ENV_PREFIX: &str = "SYSCALL_PROFILER_";
pub const ENV_CONFIG: &str = "SYSCALL_PROFILER_CONFIG";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub interval: Duration,
    pub retention: Duration,
    pub max_exited: usize,
    pub log_level: String,
    pub web_config: Option<PathBuf>,
    pub pin_path: Option<PathBuf>,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub max_response_bytes: usize,
    pub metrics_per_pid: bool,
    pub metrics_top_pids: usize,
    pub metrics_max_groups: usize,
    pub metrics_fine_buckets: bool,
    pub bpf_stats: bool,
    pub filter: Filter,
    pub counts_only: bool,
}

/// In-kernel filters (see profiler_common): empty lists and no cgroup record everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub cgroup: Option<PathBuf>,
    pub syscalls: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_file: None,
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            interval: Duration::from_secs(1),
            retention: Duration::from_secs(300),
            max_exited: 10_000,
            log_level: "info".into(),
            web_config: None,
            pin_path: None,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 4,
            max_connections: 256,
            max_response_bytes: 64 << 20,
            metrics_per_pid: false,
            metrics_top_pids: 20,
            metrics_max_groups: 1000,
            metrics_fine_buckets: false,
            bpf_stats: false,
            filter: Filter::default(),
            counts_only: false,
        }
    }
}

/// Every key the file may hold; the flag and variable names derive from it.
pub const KEYS: &[&str] = &[
    "listen",
    "interval",
    "retention",
    "max_exited",
    "log_level",
    "web_config",
    "pin_path",
    "request_timeout",
    "max_concurrent_requests",
    "max_connections",
    "max_response_bytes",
    "metrics_per_pid",
    "metrics_top_pids",
    "metrics_max_groups",
    "metrics_fine_buckets",
    "bpf_stats",
    "filter_pids",
    "filter_cgroup",
    "filter_syscalls",
    "counts_only",
];

/// A setting that cannot be used, named by where it came from, in one line (with its cause, if
/// any, after ": ").
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that does not parse or is out of range; `place` is `--flag`, `environment
    /// variable NAME` or `config file PATH, key 'name'`.
    #[error("{place}: {why}")]
    Invalid { place: String, why: String },
    /// `what` is `config file` or `web config file`.
    #[error("cannot read {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML the file's reader refuses: bad syntax, or (in the web config) a key or value of the
    /// wrong kind.
    #[error(
        "{what} {}{}: {message}",
        path.display(),
        line.map_or(String::new(), |n| format!(", line {n}"))
    )]
    Syntax {
        what: &'static str,
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("config file {}: unknown key '{key}' (known: {})", path.display(), KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {}, key '{key}': expected {expected}, found {found}", path.display())]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "web config file {}, basic_auth_users: '{user}' is not a user name (empty, or \
         contains ':')",
        path.display()
    )]
    UserName { path: PathBuf, user: String },
    #[error("web config file {}, basic_auth_users.{user}: not a bcrypt hash", path.display())]
    Hash {
        path: PathBuf,
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
    /// `field` is `cert_file` or `key_file`.
    #[error("web config file {}: tls_server_config.{field} {}", path.display(), file.display())]
    TlsFile {
        path: PathBuf,
        field: &'static str,
        file: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error(
        "web config file {}: tls_server_config.cert_file {}: no PEM certificate in it",
        path.display(),
        file.display()
    )]
    NoCertificate { path: PathBuf, file: PathBuf },
    #[error("web config file {}: TLS", path.display())]
    Tls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "web config file {}: tls_server_config: certificate and key do not fit",
        path.display()
    )]
    KeyMismatch {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

impl Settings {
    /// Keys whose value differs between `self` and `new` and that SIGHUP cannot apply: the
    /// socket, the drain's clock and the HTTP stack are set up once. (SIGHUP applies
    /// retention, max_exited, log_level and web_config.)
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.interval != new.interval {
            changed.push("interval");
        }
        if self.pin_path != new.pin_path {
            changed.push("pin_path");
        }
        if self.request_timeout != new.request_timeout {
            changed.push("request_timeout");
        }
        if self.max_concurrent_requests != new.max_concurrent_requests {
            changed.push("max_concurrent_requests");
        }
        if self.max_connections != new.max_connections {
            changed.push("max_connections");
        }
        if self.max_response_bytes != new.max_response_bytes {
            changed.push("max_response_bytes");
        }
        if (
            self.metrics_per_pid,
            self.metrics_top_pids,
            self.metrics_max_groups,
            self.metrics_fine_buckets,
        ) != (
            new.metrics_per_pid,
            new.metrics_top_pids,
            new.metrics_max_groups,
            new.metrics_fine_buckets,
        ) {
            changed.push("metrics_*");
        }
        if self.bpf_stats != new.bpf_stats {
            changed.push("bpf_stats");
        }
        if self.filter != new.filter {
            changed.push("filter_*");
        }
        if self.counts_only != new.counts_only {
            changed.push("counts_only");
        }
        changed
    }
}
