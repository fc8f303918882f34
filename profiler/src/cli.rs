use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Default listen address: loopback only, and a port clear of Prometheus (9090), Alertmanager
/// (9093), Pushgateway (9091) and node_exporter (9100).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9760";

#[derive(Parser)]
#[command(
    name = "syscall-profiler",
    version,
    about = "System-wide syscall latency profiler (eBPF)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach to every syscall on the host and serve the totals over HTTP.
    Serve(ServeArgs),
    /// Record syscalls for a while (or of a command) without a daemon; print an strace -c table.
    Record(crate::record::RecordArgs),
    /// A live terminal view of a running daemon's /stats.
    Top(crate::top::TopArgs),
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to serve HTTP on. Anything but loopback exposes per-process data to the network.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// How often the kernel maps are drained into the totals (e.g. 1s, 500ms; 10ms to 10s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// How long an exited process stays visible (e.g. 5m, 30s; 0s drops it at the next drain).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub retention: Duration,

    /// How many exited processes to keep at most; past it the longest-exited leave early.
    #[arg(long, default_value_t = 10_000)]
    pub max_exited: usize,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    #[command(flatten)]
    pub insights: crate::insights::InsightArgs,
}

/// Parses `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{s}' has no unit: use ms, s, m or h (e.g. 1s)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' does not start with a whole number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit '{unit}' in '{s}': use ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// The drain interval: the 32-bit kernel counters must be read well before they can wrap, and
/// draining faster than 10 ms costs more than it tells.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
        return Err(format!(
            "'{s}' is out of range: the interval must be from 10ms to 10s"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn interval_bounds() {
        assert!(parse_interval("9ms").is_err());
        assert!(parse_interval("10ms").is_ok());
        assert!(parse_interval("10s").is_ok());
        assert!(parse_interval("11s").is_err());
    }
}
