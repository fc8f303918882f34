//! Every setting of `serve`, declared once. A row is the setting's help (its doc comment), key,
//! type, default, whether SIGHUP applies it, its `--help` placeholder and its parser; the flag
//! (`--key-with-dashes`), the environment variable (`SYSCALL_PROFILER_KEY`), the file key, the
//! checks of every source, what SIGHUP applies, the docs table and the packaged config file's
//! listing all follow from the row (declare.rs). A new setting is a new row, and a field the
//! code that uses it reads.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    declare::{declare_settings, initial, Apply, Decl, Field, Initial::*, Source},
    error::Error,
    insights::{above_one, parse_window, positive, InsightArgs},
    parse::{
        parse_bool, parse_bounded_duration, parse_cgroup, parse_count, parse_duration,
        parse_interval, parse_listen, parse_log_level, parse_path, parse_pids, parse_size,
        parse_syscalls,
    },
};

declare_settings! {
    /// Address to serve HTTP on. Anything but loopback exposes per-process data to the network
    /// (a warning says so). Port 9760 stays clear of Prometheus (9090-9093) and node_exporter
    /// (9100).
    listen: SocketAddr = Value("127.0.0.1:9760"), Restart, "ADDR", |v, _| parse_listen(v);

    /// How often the kernel maps are drained into the totals (10ms to 10s).
    interval: Duration = Value("1s"), Restart, "DURATION", |v, _| parse_interval(v);

    /// How long an exited process stays visible (0s drops it at the next drain).
    retention: Duration = Value("5m"), Reload, "DURATION", |v, _| parse_duration(v);

    /// How many exited processes are kept at most (0 to 10000000); past it the longest-exited
    /// leave before their retention ends (store.evicted_early counts them): the daemon's memory
    /// bound on fork-heavy hosts.
    max_exited: usize = Value("10000"), Reload, "N", |v, _| parse_count(v, 0, 10_000_000);

    /// Log filter: error, warn, info, debug, trace or off, or comma-separated directives
    /// TARGET=LEVEL (e.g. info,syscall_profiler::drain=debug). Logs go to stderr.
    log_level: String = Value("info"), Reload, "FILTER", |v, _| parse_log_level(v);

    /// Web configuration file: TLS certificate and key, basic-auth users (bcrypt hashes); paths
    /// in it are relative to it.
    web_config: Option<PathBuf> = Unset("none"), Reload, "FILE", parse_path,
        see "[operations.md](operations.md#http-limits-tls-and-authentication)";

    /// Directory on a bpf filesystem (e.g. /sys/fs/bpf/syscall-profiler) to pin the maps in, so
    /// a restart resumes the counters instead of zeroing them.
    pin_path: Option<PathBuf> = Unset("none"), Restart, "DIR", parse_path,
        see "[operations.md](operations.md#restarts-without-losing-data)";

    /// Longest time one HTTP request may take, a client may take to send its headers, and each
    /// write of an answer may go without progress before the connection is closed (100ms to
    /// 10m).
    request_timeout: Duration = Value("10s"), Restart, "DURATION", |v, _| {
        parse_bounded_duration(v, Duration::from_millis(100), Duration::from_secs(600))
    };

    /// Answers rendered at once (1 to 4096); more wait their turn. Rendered answers not yet
    /// sent share a budget of max_concurrent_requests × max_response_bytes.
    max_concurrent_requests: usize = Value("4"), Restart, "N", |v, _| parse_count(v, 1, 4096);

    /// Open HTTP connections at once (1 to 65536); a newcomer beyond it takes the slot of the
    /// connection that has waited longest for a request head.
    max_connections: usize = Value("256"), Restart, "N", |v, _| parse_count(v, 1, 65536);

    /// Largest response body (1KiB to 1GiB, in B, KiB, MiB or GiB); a bigger answer is refused
    /// with 400 asking to narrow the query (top, pid, …).
    max_response_bytes: usize = Value("64MiB"), Restart, "SIZE", |v, _| {
        parse_size(v, 1 << 10, 1 << 30)
    };

    /// Also export per-process series on /metrics: the top metrics_top_pids processes by
    /// syscall time, every other process folded into pid="other".
    metrics_per_pid: bool = Value("false"), Restart, "BOOL", |v, _| parse_bool(v);

    /// With metrics_per_pid: how many processes get series of their own (1 to 10000).
    metrics_top_pids: usize = Value("20"), Restart, "N", |v, _| parse_count(v, 1, 10_000);

    /// At most this many (comm, cgroup) groups on /metrics (1 to 100000); calls of further
    /// groups count under comm="other", cgroup="other".
    metrics_max_groups: usize = Value("1000"), Restart, "N", |v, _| parse_count(v, 1, 100_000);

    /// Histogram le bounds on /metrics at every kernel bucket edge around the values seen,
    /// besides the powers of two every histogram has: quantiles within 12.5% instead of a
    /// factor of two, for more series.
    metrics_fine_buckets: bool = Value("false"), Restart, "BOOL", |v, _| parse_bool(v),
        see "[metrics.md](metrics.md#histogram-buckets-exact-le-bounds)";

    /// Have the kernel time every BPF program run (BPF_ENABLE_STATS), so /metrics shows the
    /// profiler's own cost per event. It makes every BPF program on the host slower while on,
    /// ours included.
    bpf_stats: bool = Value("false"), Restart, "BOOL", |v, _| parse_bool(v),
        see "[metrics.md](metrics.md#the-profilers-own-overhead)";

    /// Record only these processes (comma-separated pids, at most 4096), decided in the kernel
    /// before any map work.
    filter_pids: Vec<u32> = Unset("all"), Restart, "PIDS", |v, _| parse_pids(v);

    /// Record only processes in this cgroup v2 directory or below it, e.g.
    /// /sys/fs/cgroup/system.slice/nginx.service.
    filter_cgroup: Option<PathBuf> = Unset("all"), Restart, "DIR", parse_cgroup;

    /// Record only these syscalls (comma-separated names, e.g. read,write,openat; matched in
    /// both ABIs).
    filter_syscalls: Vec<String> = Unset("all"), Restart, "NAMES", |v, _| parse_syscalls(v);

    /// Count calls and errors only, without latency: sys_enter is not attached, which about
    /// halves the cost per syscall. No histograms, no split of the time (on CPU, runnable,
    /// blocked), no in-flight view; /stats says "mode": "counts_only" and leaves out the time
    /// fields.
    counts_only: bool = Value("false"), Restart, "BOOL", |v, _| parse_bool(v);

    /// Capture the path (or connect address) behind failing calls of syscalls that take one, in
    /// the kernel, for /stats' failing_args and the failing_calls insight ("which file"). Only
    /// failing calls are read, 256 bytes at most, within a per-CPU budget. Paths can be
    /// sensitive: false turns capture off in the kernel (nothing is read).
    capture_args: bool = Value("true"), Restart, "BOOL", |v, _| parse_bool(v),
        see "[api.md](api.md#failing-arguments)";

    /// Insights: report a program (processes of one name) failing one syscall with one errno
    /// at least this many times per second over the last 10 seconds (failing_calls).
    insight_failures_per_sec: f64 = Value("100"), Restart, "RATE", |v, _| positive(v),
        see "[api.md](api.md#insights--schema-version-2)";

    /// Insights: report a program blocked (asleep) in one syscall at least this share of its
    /// processes' wall time over the last 10 seconds (blocked; 0.5 = 50%, threads add up, so
    /// more than 1 is possible).
    insight_blocked_share: f64 = Value("0.5"), Restart, "SHARE", |v, _| positive(v);

    /// Insights: report a program on a CPU inside one syscall at least this share of its
    /// processes' wall time over the last 10 seconds (kernel_bound).
    insight_kernel_share: f64 = Value("0.5"), Restart, "SHARE", |v, _| positive(v);

    /// Insights: report a program runnable but waiting for a CPU inside one syscall at least
    /// this share of its processes' wall time over the last 10 seconds (cpu_starved).
    insight_runq_share: f64 = Value("0.2"), Restart, "SHARE", |v, _| positive(v);

    /// Insights: report a syscall whose p99 over the last window is at least this many times
    /// its p99 over the window before (p99_regression; above 1).
    insight_p99_ratio: f64 = Value("10"), Restart, "RATIO", |v, _| above_one(v);

    /// Insights: a syscall that spent at least this share of its time in the last window
    /// blocked is a wait (futex, epoll_wait, a pipe's read): its p99 rising is not reported as
    /// a regression.
    insight_wait_share: f64 = Value("0.5"), Restart, "SHARE", |v, _| positive(v);

    /// Insights: the window latency changes are judged over (1s to 150s: two windows must fit
    /// in the daemon's 5-minute history).
    insight_window: Duration = Value("1m"), Restart, "DURATION", |v, _| parse_window(v);

    /// Insights: calls a syscall needs in each window before its p99s are compared.
    insight_min_calls: usize = Value("100"), Restart, "N", |v, _| {
        parse_count(v, 0, 1_000_000_000)
    };
}

/// In-kernel filters (see profiler_common): empty lists and no cgroup record everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub cgroup: Option<PathBuf>,
    pub syscalls: Vec<String>,
    /// `--capture-args=false`: the kernel's table of syscalls whose failing arguments are
    /// captured is left empty.
    pub no_arg_capture: bool,
}

impl Settings {
    /// The `filter_*` settings, for the kernel layer.
    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.filter_pids.clone(),
            cgroup: self.filter_cgroup.clone(),
            syscalls: self.filter_syscalls.clone(),
            no_arg_capture: !self.capture_args,
        }
    }

    /// The `insight_*` settings, for the views.
    pub fn insights(&self) -> InsightArgs {
        InsightArgs {
            insight_failures_per_sec: self.insight_failures_per_sec,
            insight_blocked_share: self.insight_blocked_share,
            insight_kernel_share: self.insight_kernel_share,
            insight_runq_share: self.insight_runq_share,
            insight_p99_ratio: self.insight_p99_ratio,
            insight_wait_share: self.insight_wait_share,
            insight_window: self.insight_window,
            insight_min_calls: self.insight_min_calls as u64,
        }
    }
}

impl Default for InsightArgs {
    fn default() -> Self {
        Settings::default().insights()
    }
}
