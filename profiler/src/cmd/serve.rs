//! `syscall-profiler serve`: validate the settings, bind, attach, give up every capability, then
//! drain and serve until SIGINT/SIGTERM. SIGHUP re-reads the settings.

use std::{
    net::SocketAddr,
    sync::{mpsc, Arc},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

use crate::{
    cmd::exit::Fatal,
    config::{
        self,
        args::ServeArgs,
        parse::quote,
        sources::{self, Env},
        web::WebConfig,
        Settings,
    },
    drain::Drain,
    host::info::HostInfo,
    http::{self, auth, limits::Limits},
    kernel::{self as bpf, caps, Maps},
    store::{aggregates::MetricsConfig, shared::SharedStore, Store, StoreConfig},
    views::{self, buckets::BucketSet, metrics::ScrapeStats},
};

type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

pub fn run(args: ServeArgs) -> Result<(), Fatal> {
    let settings = sources::load(&args, &Env::process())?;
    let web = load_web_config(&settings)?;
    let log_handle = init_logging(log_filter(&settings.log_level)?);

    // Bind before attaching: a port clash should not cost a BPF load.
    let (listener, addr) = http::server::bind(settings.listen)?;
    if !addr.ip().is_loopback() {
        warn!(
            "listening on {addr}, beyond loopback: per-process data is served to the network{}",
            if web.tls.is_some() && web.requires_auth() {
                ""
            } else {
                " (consider a web config with TLS and basic auth)"
            }
        );
    }

    let (probes, maps) = bpf::load_and_attach(
        settings.pin_path.as_deref(),
        &settings.filter(),
        settings.counts_only,
    )?;
    // Held until exit: BPF run-time stats stay on while this fd is open (see bpf_stats.rs).
    let bpf_stats_fd = settings
        .bpf_stats
        .then(crate::kernel::bpf_stats::enable)
        .flatten();
    drop_capabilities(&maps)?;

    let watchdog = watchdog(settings.interval);
    let store = Arc::new(SharedStore::new(new_store(
        &settings,
        probes.time_split(),
        bpf_stats_fd.is_some(),
    )));
    let (stop_drain, drain_thread) = start_drain(maps, &store, &settings, watchdog)?;
    let served = serve_http(args, settings, store, log_handle, web, listener, addr)?;

    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    let _ = stop_drain.send(());
    if drain_thread.join().is_err() {
        error!("the drain thread panicked");
    }
    drop(probes);
    drop(bpf_stats_fd);
    info!("detached; exiting");
    served.context("serving HTTP")?;
    Ok(())
}

/// The filter of a `log_level` setting (already checked by its parser, which refuses what
/// tracing would take as a target silencing everything else).
fn log_filter(level: &str) -> Result<EnvFilter, config::Error> {
    EnvFilter::try_new(level).map_err(|e| config::Error::Invalid {
        place: format!("log_level {}", quote(level)),
        why: e.to_string(),
    })
}

/// Logs to stderr through `filter`, which SIGHUP can change through the returned handle.
fn init_logging(filter: EnvFilter) -> LogHandle {
    let (filter, log_handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes are noise in the journal and in files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    log_handle
}

/// Gives up every capability the maps can be read without. Before any other thread starts:
/// they inherit the emptied sets (capabilities are per thread).
fn drop_capabilities(maps: &Maps) -> Result<(), Fatal> {
    let keep = if bpf::maps_readable_unprivileged(maps)? {
        caps::Keep::Nothing
    } else {
        warn!(
            "this kernel checks CAP_BPF on every map read (before Linux 6.5, with \
             kernel.unprivileged_bpf_disabled set): keeping CAP_BPF, dropping the rest"
        );
        caps::Keep::Bpf
    };
    let after = caps::drop_all(keep)
        .map_err(|e| Fatal::Other(anyhow::anyhow!("giving up capabilities: {e}")))?;
    info!(
        "capabilities dropped: effective {:#x}, permitted {:#x}, bounding {:#x}",
        after.effective, after.permitted, after.bounding
    );
    Ok(())
}

/// systemd's watchdog timeout, if it watches us.
fn watchdog(interval: Duration) -> Option<Duration> {
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(wd) = watchdog {
        if wd < interval * 2 {
            warn!(
                "the watchdog timeout {wd:?} is less than two drain intervals ({interval:?}): \
                 a single slow drain will get the service restarted"
            );
        }
    }
    watchdog
}

fn new_store(settings: &Settings, time_split: bool, bpf_stats_enabled: bool) -> Store {
    Store::new(StoreConfig {
        retention: settings.retention,
        max_exited: settings.max_exited,
        latency: !settings.counts_only,
        time_split,
        metrics: MetricsConfig {
            per_pid: settings.metrics_per_pid,
            top_pids: settings.metrics_top_pids,
            max_groups: settings.metrics_max_groups,
        },
        bpf_stats_enabled,
    })
}

/// Resumes from the pinned maps' checkpoint, if any, and starts the drain thread; sending on
/// the returned channel stops it.
fn start_drain(
    maps: Maps,
    store: &Arc<SharedStore>,
    settings: &Settings,
    watchdog: Option<Duration>,
) -> Result<(mpsc::Sender<()>, thread::JoinHandle<()>), Fatal> {
    let (stop_drain, stopped) = mpsc::channel::<()>();
    let mut drain = Drain::new(maps);
    match (&settings.pin_path, drain.resume(store)?) {
        (None, _) => info!("no pin_path: counters start at zero and do not survive a restart"),
        (Some(_), None) => info!("no checkpoint in the pinned maps yet: counters start at zero"),
        (Some(_), Some(r)) => {
            info!(
                "resumed the counters from checkpoint {} ({} bytes, {} histogram readings, {} \
                 retired processes' deletes finished)",
                r.generation, r.bytes, r.slots, r.retired
            );
            // At once, so the first answers already name and count the processes.
            if let Err(e) = drain.run_once(store) {
                warn!("drain failed: {e:#}");
            }
        }
    }
    let store = store.clone();
    let interval = settings.interval;
    let drain_thread = thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_loop(drain, &store, interval, stopped, watchdog))
        .context("starting the drain thread")?;
    Ok((stop_drain, drain_thread))
}

/// Serves HTTP on `listener` until SIGINT or SIGTERM, reloading on SIGHUP.
fn serve_http(
    args: ServeArgs,
    settings: Settings,
    store: Arc<SharedStore>,
    log_handle: LogHandle,
    web: WebConfig,
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<std::io::Result<()>, Fatal> {
    let tls = web.tls.is_some();
    let ctx = Arc::new(views::Context {
        store: store.clone(),
        host: HostInfo::read(),
        interval: settings.interval,
        scrape: ScrapeStats::new(if settings.metrics_fine_buckets {
            BucketSet::Fine
        } else {
            BucketSet::PowersOfTwo
        }),
        insights: settings.insights(),
    });
    let web = auth::Shared::new(web).context("starting the password-checking thread")?;
    let limits = Limits {
        request_timeout: settings.request_timeout,
        max_concurrent_requests: settings.max_concurrent_requests,
        max_response_bytes: settings.max_response_bytes,
    };
    let app = http::router::router(ctx, &limits, web.clone());
    let opts = http::server::Options {
        max_connections: settings.max_connections,
        request_timeout: settings.request_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Answers are rendered on blocking threads, one per render slot (http/limits.rs): the
        // pool needs no more, and a flood of requests cannot multiply threads.
        .max_blocking_threads(settings.max_concurrent_requests)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let signals = Signals::register()?;
        let reloader = tokio::spawn(reload_on_hangup(
            args,
            settings,
            store,
            log_handle,
            web.clone(),
            tls,
            signals.hup,
        ));
        // Tests and scripts read this line to learn the port when --listen asks for port 0.
        info!("serving on {}://{addr}", if tls { "https" } else { "http" });
        let _ = sd_notify::notify(&[NotifyState::Ready]);
        let shutdown = shutdown_signal(signals.term, signals.int);
        http::server::serve(listener, app, web, tls, opts, shutdown).await;
        reloader.abort();
        Ok(())
    }))
}

fn load_web_config(settings: &Settings) -> Result<WebConfig, config::Error> {
    match &settings.web_config {
        Some(path) => WebConfig::load(path),
        None => Ok(WebConfig::open()),
    }
}

fn drain_loop(
    mut drain: Drain,
    store: &SharedStore,
    interval: Duration,
    stop: mpsc::Receiver<()>,
    watchdog: Option<Duration>,
) {
    let mut last_ping: Option<Instant> = None;
    loop {
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        match drain.run_once(store) {
            Ok(()) => {
                // The watchdog hears from us only while drains succeed, so a drain that keeps
                // failing (or hangs) gets the service restarted. A few pings per timeout are
                // plenty; at a 10 ms interval, pinging on every drain would be noise.
                if let Some(wd) = watchdog {
                    if last_ping.is_none_or(|t| t.elapsed() >= wd / 4) {
                        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                        last_ping = Some(Instant::now());
                    }
                }
            }
            // Maps stay intact on a failed read; the next drain picks up where this one failed.
            Err(e) => warn!("drain failed: {e:#}"),
        }
    }
}

/// SIGHUP: re-read flags, environment and config file, and apply what can change without
/// re-attaching or re-binding (the settings declared `Reload`). A bad new configuration is logged
/// and the running one kept.
async fn reload_on_hangup(
    args: ServeArgs,
    mut running: Settings,
    store: Arc<SharedStore>,
    log: LogHandle,
    web: auth::Shared,
    tls: bool,
    mut hup: Signal,
) {
    while hup.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        let _ = sd_notify::notify(&[NotifyState::Reloading]);
        match reload(&args, tls) {
            Err(e) => error!("reload refused, the running configuration stays: {e:#}"),
            Ok(new) => running = apply(&running, new, &store, &log, &web),
        }
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }
}

/// A new configuration, checked whole before any of it is applied.
struct Reloaded {
    settings: Settings,
    web: WebConfig,
    log_filter: EnvFilter,
}

fn reload(args: &ServeArgs, tls: bool) -> anyhow::Result<Reloaded> {
    let settings = sources::load(args, &Env::process())?;
    let web = load_web_config(&settings)?;
    if web.tls.is_some() != tls {
        anyhow::bail!(
            "turning TLS {} needs a restart",
            if tls { "off" } else { "on" }
        );
    }
    let log_filter = log_filter(&settings.log_level)?;
    Ok(Reloaded {
        settings,
        web,
        log_filter,
    })
}

/// Applies what SIGHUP applies of `new` and says what changed; returns the settings now running.
fn apply(
    running: &Settings,
    new: Reloaded,
    store: &SharedStore,
    log: &LogHandle,
    web: &auth::Shared,
) -> Settings {
    for key in running.needs_restart(&new.settings) {
        warn!("{key} changed: it takes effect at the next restart");
    }
    let applied = running.reloaded(&new.settings);
    store
        .write()
        .apply_reload(applied.retention, applied.max_exited);
    if let Err(e) = log.reload(new.log_filter) {
        error!("applying log_level: {e}");
    }
    // Who may connect is worth a line of its own, whether or not web_config's path changed.
    if let Some(change) = web.get().config.auth_change(&new.web) {
        warn!("{change}");
    }
    web.set(new.web);
    let changes = running.changes(&applied);
    info!(
        "configuration reloaded: {}",
        if changes.is_empty() {
            "no setting SIGHUP applies changed".to_string()
        } else {
            changes.join(", ")
        }
    );
    applied
}

/// The signals the daemon handles, registered before it announces readiness: until a handler
/// exists, SIGTERM and SIGHUP would kill the process outright.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

async fn shutdown_signal(mut term: Signal, mut int: Signal) {
    tokio::select! {
        _ = int.recv() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{declare::Apply, table::DECLARED};

    /// What `apply` puts into effect on SIGHUP. It must be exactly the table's `Reload` rows, so
    /// a row marked `Reload` cannot be logged as reloaded while nothing applies it: a new one
    /// needs its line in `apply` and its name here.
    const APPLIED_ON_RELOAD: &[&str] = &["retention", "max_exited", "log_level", "web_config"];

    #[test]
    fn every_reloadable_setting_is_applied_on_sighup() {
        let reloadable: Vec<&str> = DECLARED
            .iter()
            .filter(|d| d.apply == Apply::Reload)
            .map(|d| d.key)
            .collect();
        assert_eq!(
            reloadable, APPLIED_ON_RELOAD,
            "a setting marked Reload in config/table.rs must be put into effect by serve's apply()"
        );
    }
}
