//! `fleetgate-admin`: the admin API on its own, for deployments that run the
//! proxy and the admin service as separate processes.
//!
//! Thin on purpose; every step is a library call:
//! tracing → config (usage error: exit 2) → runtime → registry and sweeper
//! → listener (log the bound address) → serve until SIGINT/SIGTERM → drain
//! for up to [`DRAIN_GRACE`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fleetgate_admin::{bootstrap, config, server, telemetry, AdminService};
use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long in-flight admin requests may take to finish after a signal.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// fleetgate's admin API: unlock the registry, grant or deny pending
/// requests, manage users, log in.
#[derive(Parser, Debug)]
#[command(name = "fleetgate-admin", version)]
struct Cli {
    #[command(flatten)]
    store: config::StoreArgs,

    /// Address the admin API listens on (`host:port`; port 0 picks one).
    #[arg(long, env = "FLEETGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: SocketAddr,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
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
    runtime.block_on(run(cli))
}

/// Logs go to stderr (stdout carries only the generated admin password), at
/// `info` unless `RUST_LOG` says otherwise. Colours only on a terminal, so
/// that captured logs stay greppable (tests read the bound address there).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `--help` and `--version` print and succeed; any other parse error is one
/// line on stderr and exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Printing help can only fail if stdout is gone; nothing to add then.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("fleetgate-admin: error: {first}");
    ExitCode::from(2)
}

async fn run(cli: Cli) -> ExitCode {
    // Before the registry is built: it resolves its metric handles then.
    let metrics = match telemetry::install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!("cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    match bootstrap::open(&cli.store).await {
        Ok(bootstrap::Opened::Embedded(registry)) => serve(cli, registry, metrics).await,
        Ok(bootstrap::Opened::Redis(registry)) => serve(cli, registry, metrics).await,
        Err(e) => {
            tracing::error!("cannot open the registry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the admin API over `registry` until a signal.
async fn serve<S: Store>(
    cli: Cli,
    registry: Arc<Registry<S>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> ExitCode {
    let listener = match TcpListener::bind(cli.admin_listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", cli.admin_listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!("cannot read the bound address: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Registered before the "listening" line, so a signal sent as soon as
    // that line appears is never missed.
    let signals = match Signals::register() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %addr, "admin API listening");

    telemetry::spawn_ticker(registry.clone(), metrics.clone(), |_, _| {});
    let service = Arc::new(
        AdminService::new(registry)
            .with_metrics(telemetry::renderer(metrics))
            .with_trusted_forwarders(cli.store.trusted_forwarders.clone()),
    );
    match server::serve(listener, service, signals.recv(), DRAIN_GRACE).await {
        Ok(()) => {
            tracing::info!("admin API stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("admin API failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, either of which starts the drain.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    }
}
