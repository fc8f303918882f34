//! The flags of `serve`: every setting as text, checked by `config` like a value from the
//! environment or the file.

use std::path::PathBuf;

use clap::Args;

/// Every setting can also come from the environment (`SYSCALL_PROFILER_<NAME>`) or the
/// `--config` file; flags win over the environment, which wins over the file, which wins over
/// the defaults. Values are validated in `config`, so a bad one is named the same way whichever
/// source it came from.
#[derive(Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file (env SYSCALL_PROFILER_CONFIG). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to serve HTTP on [default: 127.0.0.1:9760]. Anything but loopback exposes
    /// per-process data to the network.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// How often the kernel maps are drained into the totals (10ms to 10s) [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,

    /// How long an exited process stays visible (0s drops it at the next drain) [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,

    /// How many exited processes to keep at most; past it the longest-exited leave before
    /// their retention ends [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_exited: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Web configuration file: TLS certificate and key, basic-auth users (bcrypt hashes).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<String>,

    /// Directory on a bpf filesystem (e.g. /sys/fs/bpf/syscall-profiler) to pin the maps in,
    /// so a restart resumes the counters instead of zeroing them [default: none].
    #[arg(long, value_name = "DIR")]
    pub pin_path: Option<String>,

    /// Also export per-process series on /metrics: the top `metrics_top_pids` processes by
    /// syscall time, every other process folded into pid="other" [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_per_pid: Option<String>,

    /// With metrics_per_pid: how many processes get series of their own (1 to 10000)
    /// [default: 20].
    #[arg(long, value_name = "N")]
    pub metrics_top_pids: Option<String>,

    /// At most this many (comm, cgroup) groups on /metrics (1 to 100000); calls of further
    /// groups count under comm="other", cgroup="other" [default: 1000].
    #[arg(long, value_name = "N")]
    pub metrics_max_groups: Option<String>,

    /// Histogram `le` bounds on /metrics at every kernel bucket edge around the values seen,
    /// besides the powers of two every histogram has: quantiles within 12.5% instead of a
    /// factor of two, for more series (see docs/metrics.md) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_fine_buckets: Option<String>,

    /// Have the kernel time every BPF program run (BPF_ENABLE_STATS), so /metrics shows the
    /// profiler's own cost per event. It makes every BPF program on the host slower while on,
    /// ours included (see docs/metrics.md) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub bpf_stats: Option<String>,

    /// Record only these processes (comma-separated pids), decided in the kernel before any
    /// map work [default: all].
    #[arg(long, value_name = "PIDS")]
    pub filter_pids: Option<String>,

    /// Record only processes in this cgroup v2 directory or below it, e.g.
    /// /sys/fs/cgroup/system.slice/nginx.service [default: all].
    #[arg(long, value_name = "DIR")]
    pub filter_cgroup: Option<String>,

    /// Record only these syscalls (comma-separated names, e.g. read,write,openat)
    /// [default: all].
    #[arg(long, value_name = "NAMES")]
    pub filter_syscalls: Option<String>,

    /// Count calls and errors only, without latency: `sys_enter` is not attached, which about
    /// halves the cost per syscall. No histograms, no in-flight view [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub counts_only: Option<String>,

    /// Longest time one HTTP request may take [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,

    /// Requests handled at once; more wait their turn [default: 4].
    #[arg(long, value_name = "N")]
    pub max_concurrent_requests: Option<String>,

    /// Open HTTP connections at once; more wait to be accepted [default: 256].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,

    /// Largest response body; a bigger answer is refused with 400 asking to narrow the query
    /// [default: 64MiB]. Accepts B, KiB, MiB.
    #[arg(long, value_name = "SIZE")]
    pub max_response_bytes: Option<String>,

    /// Insight thresholds: flags only (not in the config file or environment).
    #[command(flatten)]
    pub insights: super::insights::InsightArgs,
}
