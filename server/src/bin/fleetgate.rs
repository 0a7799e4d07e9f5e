//! `fleetgate`: the all-in-one gateway. Proxy workers and the admin service
//! in one process, on the embedded store by default.
//!
//! Steps, in order: flags → tracing → config check (a bad value exits 2
//! with one line naming the flag) → the admin runtime and the registry →
//! listeners (each bound address is logged) → workers → wait for
//! SIGINT/SIGTERM or a failed worker → drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetgate::bootstrap::{self, Opened, Sweeper};
use fleetgate::cli::{self, Signals};
use fleetgate::config::GatewayConfig;
use fleetgate::flags::GatewayFlags;
use fleetgate::gateway::{self, SideListeners};
use fleetgate::telemetry;
use fleetgate_admin::AdminService;
use fleetgate_proxy::app::Shutdown;
use fleetgate_proxy::worker;
use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;
use metrics_exporter_prometheus::PrometheusHandle;

fn main() -> ExitCode {
    let config = match cli::parse_flags::<GatewayFlags>("fleetgate") {
        Ok(flags) => flags.into_config(),
        Err(code) => return code,
    };
    cli::init_tracing();
    if let Err(e) = config.validate() {
        return cli::config_error("fleetgate", &e);
    }
    let audit_file = match config.store.open_audit_log() {
        Ok(file) => file,
        Err(e) => return cli::config_error("fleetgate", &e),
    };
    match run(config, audit_file) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    config: GatewayConfig,
    audit_file: Option<fleetgate_registry::audit::AuditFile>,
) -> anyhow::Result<ExitCode> {
    // Before anything resolves metric handles (the registry, the workers).
    let metrics = telemetry::recorder(config.metrics)?;
    // The admin service, the forwarding hand-over and the Redis client run
    // here; proxy workers own the cores, so one tokio thread is enough.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleetgate-admin")
        .enable_all()
        .build()?;
    let (opened, sweeper) = runtime.block_on(bootstrap::open(&config.store, audit_file))?;
    match opened {
        Opened::Embedded(registry) => serve(config, runtime, registry, sweeper, metrics),
        Opened::Redis(registry) => serve(config, runtime, registry, sweeper, metrics),
    }
}

/// Everything after the store is open: listeners, workers, signals, drain.
fn serve<S: Store>(
    config: GatewayConfig,
    runtime: tokio::runtime::Runtime,
    registry: Arc<Registry<S>>,
    sweeper: Sweeper,
    metrics: PrometheusHandle,
) -> anyhow::Result<ExitCode> {
    let workers = config.worker_count();
    let render = telemetry::renderer(metrics.clone());
    let admin = Arc::new(
        AdminService::new(registry.clone())
            .with_metrics(render.clone())
            .with_trusted_forwarders(config.store.trusted_forwarders.clone()),
    );
    let signals = runtime.block_on(async { Signals::register() })?;
    let side = runtime.block_on(SideListeners::start(&config, admin.clone(), render))?;
    let sockets = gateway::bind_device_listeners(&config, workers, &registry)?;
    let app = gateway::build_app(&config, workers, registry, admin, runtime.handle())?;
    {
        let app = app.clone();
        let _tokio = runtime.enter();
        telemetry::spawn_ticker(app.registry.clone(), metrics, move |pending, elapsed| {
            let advice = app.pacer.tick(pending, elapsed);
            metrics::gauge!(fleetgate_registry::metrics::RETRY_AFTER_SECONDS).set(advice);
        });
    }
    let shutdown = Shutdown::default();
    let (failed, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let handles = worker::spawn_workers(app, sockets, shutdown.clone(), failed)?;

    // A worker that cannot serve stops the whole process, through the same
    // drain as a signal.
    let failure = runtime.block_on(async {
        tokio::select! {
            () = signals.recv() => None,
            Some(e) = failures.recv() => Some(e),
        }
    });
    if let Some(e) = &failure {
        tracing::error!("{e}; shutting down");
    }
    tracing::info!("draining connections");
    shutdown.trigger();
    // The admin API drains on tokio while the workers drain on theirs.
    let side = runtime.spawn(side.stop());
    for h in handles {
        let _ = h.join();
    }
    runtime.block_on(async {
        let _ = side.await;
        sweeper.stop().await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(if failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
