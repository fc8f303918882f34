//! `syscall-profiler serve`: bind, attach, then drain and serve until SIGINT/SIGTERM.

use std::{
    sync::{mpsc, Arc, RwLock},
    thread,
    time::Duration,
};

use anyhow::Context;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::{
    api::{self, AppState},
    bpf,
    cli::ServeArgs,
    drain::Drain,
    fatal::Fatal,
    host::HostInfo,
    store::Store,
};

pub fn run(args: ServeArgs) -> Result<(), Fatal> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| Fatal::Other(anyhow::anyhow!("--log-level '{}': {e}", args.log_level)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Bind before attaching: a port clash should not cost a BPF load.
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| Fatal::Listen(format!("cannot listen on {}: {e}", args.listen)))?;
    listener
        .set_nonblocking(true)
        .context("configuring the listener")?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;

    let (probes, maps) = bpf::load_and_attach()?;
    info!("attached to raw tracepoints sys_enter, sys_exit, sched_process_exit");

    let store = Arc::new(RwLock::new(Store::new(args.retention, args.max_exited)));
    let (stop_drain, stopped) = mpsc::channel::<()>();
    let drain_thread = {
        let store = store.clone();
        let interval = args.interval;
        thread::Builder::new()
            .name("drain".into())
            .spawn(move || drain_loop(Drain::new(maps), &store, interval, stopped))
            .context("starting the drain thread")?
    };

    let state = Arc::new(AppState {
        store,
        host: HostInfo::read(),
        interval: args.interval,
        insights: args.insights.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // Tests and scripts read this line to learn the port when --listen asks for port 0.
        info!("serving on http://{addr}");
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    let _ = stop_drain.send(());
    if drain_thread.join().is_err() {
        error!("the drain thread panicked");
    }
    drop(probes);
    info!("detached; exiting");
    served.context("serving HTTP")?;
    Ok(())
}

fn drain_loop(
    mut drain: Drain,
    store: &RwLock<Store>,
    interval: Duration,
    stop: mpsc::Receiver<()>,
) {
    loop {
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if let Err(e) = drain.run_once(store) {
            // Maps stay intact on a failed read; the next drain picks up where this one failed.
            warn!("drain failed: {e:#}");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}
