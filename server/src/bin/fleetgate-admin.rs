//! `fleetgate-admin`: the admin API on its own, for deployments that run
//! the proxy and the admin service as separate processes.
//!
//! Thin on purpose; every step is a library call: flags → tracing → config
//! check (usage error: exit 2) → runtime → registry and sweeper → listener
//! (log the bound address) → serve until SIGINT/SIGTERM → drain for up to
//! [`ADMIN_DRAIN_GRACE`].

use std::process::ExitCode;
use std::sync::Arc;

use fleetgate::bootstrap::{self, Opened, Sweeper};
use fleetgate::cli::{self, Signals};
use fleetgate::config::AdminConfig;
use fleetgate::flags::AdminFlags;
use fleetgate::gateway::ADMIN_DRAIN_GRACE;
use fleetgate::telemetry;
use fleetgate_admin::{server, AdminService};
use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let config = match cli::parse_flags::<AdminFlags>("fleetgate-admin") {
        Ok(flags) => flags.into_config(),
        Err(code) => return code,
    };
    cli::init_tracing();
    if let Err(e) = config.validate() {
        return cli::config_error("fleetgate-admin", &e);
    }
    let audit_file = match config.store.open_audit_log() {
        Ok(file) => file,
        Err(e) => return cli::config_error("fleetgate-admin", &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fleetgate-admin")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, audit_file)) {
        Ok(()) => {
            tracing::info!("admin API stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: AdminConfig,
    audit_file: Option<fleetgate_registry::audit::AuditFile>,
) -> anyhow::Result<()> {
    // Before the registry is built: it resolves its metric handles then.
    let metrics = telemetry::recorder(true)?;
    let (opened, sweeper) = bootstrap::open(&config.store, audit_file).await?;
    match opened {
        Opened::Embedded(registry) => serve(config, registry, sweeper, metrics).await,
        Opened::Redis(registry) => serve(config, registry, sweeper, metrics).await,
    }
}

/// Serves the admin API over `registry` until a signal, then drains.
async fn serve<S: Store>(
    config: AdminConfig,
    registry: Arc<Registry<S>>,
    sweeper: Sweeper,
    metrics: PrometheusHandle,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.admin_listen))?;
    let signals = Signals::register()?;
    tracing::info!(addr = %listener.local_addr()?, "admin API listening");

    telemetry::spawn_ticker(registry.clone(), metrics.clone(), |_, _| {});
    let service = Arc::new(
        AdminService::new(registry)
            .with_metrics(telemetry::renderer(metrics))
            .with_trusted_forwarders(config.store.trusted_forwarders.clone()),
    );
    let served = server::serve(listener, service, signals.recv(), ADMIN_DRAIN_GRACE).await;
    sweeper.stop().await;
    Ok(served?)
}
