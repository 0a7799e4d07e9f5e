//! `fleetgate`: the all-in-one gateway. Proxy workers and the admin service
//! in one process, on the embedded store by default.
//!
//! Steps, in order: parse config (a bad flag exits 2 with one line) →
//! tracing → admin runtime and registry → listeners (each bound address is
//! logged) → workers → wait for SIGINT/SIGTERM → drain.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fleetgate_admin::bootstrap;
use fleetgate_admin::config::{parse_duration, StoreArgs};
use fleetgate_admin::AdminService;
use fleetgate_proxy::forward::Forwarder;
use fleetgate_proxy::limiter::{Limiter, RateSetting};
use fleetgate_proxy::listener;
use fleetgate_proxy::mqtt::session::MqttConfig;
use fleetgate_proxy::pacing::{Pacer, PacingConfig};
use fleetgate_proxy::routes::{App, ConnConfig, IoDriver, RateLimits, ShedConfig};
use fleetgate_proxy::tls::{TlsOptions, TlsSetup};
use fleetgate_proxy::worker::{self, Shutdown, WorkerSockets};
use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;

/// fleetgate: a device-registration gateway. Devices poll
/// POST /api/client-registry/register until an administrator grants them.
#[derive(Parser, Debug)]
#[command(name = "fleetgate", version, about, long_about = None)]
struct Cli {
    /// Address of the device API (HTTP).
    #[arg(long, env = "FLEETGATE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,

    /// Address of the admin API, or `off` (then the admin API is reachable
    /// only through another admin instance, or on the device ports with
    /// --admin-on-device-port on).
    #[arg(long, env = "FLEETGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_optional_addr)]
    admin_listen: OptionalAddr,

    /// Serve the whole admin API on the device ports too (`on`), for a
    /// single-port deployment on a trusted network. `off` (the default):
    /// device ports answer only the register route, POST /api/login,
    /// GET /api/certificates/ca and the health checks; the admin API is on
    /// --admin-listen.
    #[arg(long, env = "FLEETGATE_ADMIN_ON_DEVICE_PORT", default_value = "off", value_parser = ["on", "off"])]
    admin_on_device_port: String,

    /// Address of the MQTT listener, or `off`.
    #[arg(long, env = "FLEETGATE_MQTT_LISTEN", default_value = "0.0.0.0:1883", value_parser = parse_optional_addr)]
    mqtt_listen: OptionalAddr,

    /// Address of the HTTPS device API (same routes as --http-listen), or `off`.
    #[arg(long, env = "FLEETGATE_HTTPS_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_optional_addr)]
    https_listen: OptionalAddr,

    /// Address of the MQTT-over-TLS listener, or `off`.
    #[arg(long, env = "FLEETGATE_MQTTS_LISTEN", default_value = "0.0.0.0:8883", value_parser = parse_optional_addr)]
    mqtts_listen: OptionalAddr,

    /// The TLS server certificate chain (PEM), with --tls-key. Without
    /// both, a self-signed ECDSA P-256 certificate is generated into the
    /// data dir on first start and reused.
    #[arg(long, env = "FLEETGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The TLS server private key (PEM), with --tls-cert.
    #[arg(long, env = "FLEETGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Names (DNS or IP) a generated TLS certificate is valid for,
    /// comma-separated. Used only when the certificate is generated.
    #[arg(
        long,
        env = "FLEETGATE_TLS_NAMES",
        default_value = "localhost,127.0.0.1,::1",
        value_delimiter = ','
    )]
    tls_names: Vec<String>,

    /// TLS sessions each worker keeps for stateful resumption (TLS 1.2
    /// session IDs; TLS 1.3 resumes with stateless tickets).
    #[arg(long, env = "FLEETGATE_TLS_SESSION_CACHE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    tls_session_cache: u64,

    /// Time a TLS client has from connecting to a finished handshake.
    #[arg(long, env = "FLEETGATE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    tls_handshake_timeout: Duration,

    /// The MQTT broker granted clients are spliced to (host:port). Without
    /// it, granted clients are refused with CONNACK 3 / 0x88.
    #[arg(long, env = "FLEETGATE_MQTT_UPSTREAM")]
    mqtt_upstream: Option<String>,

    /// Time an MQTT client has to deliver its whole CONNECT.
    #[arg(long, env = "FLEETGATE_MQTT_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    mqtt_connect_timeout: Duration,

    /// How long a verified MQTT credential is trusted without re-hashing.
    #[arg(long, env = "FLEETGATE_CREDENTIAL_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    credential_cache_ttl: Duration,

    /// Verified (and, separately, refused) credentials cached per worker.
    #[arg(long, env = "FLEETGATE_CREDENTIAL_CACHE_SIZE", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    credential_cache_size: u64,

    /// Address of the proxy's Prometheus `/metrics`, or `off`. The admin
    /// port serves `/metrics` too.
    #[arg(long, env = "FLEETGATE_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = parse_optional_addr)]
    metrics_listen: OptionalAddr,

    /// Record metrics (`on`) or not (`off`: every handle is a no-op and
    /// `/metrics` is empty). For measuring what recording costs.
    #[arg(long, env = "FLEETGATE_METRICS", default_value = "on", value_parser = ["on", "off"])]
    metrics: String,

    /// Polls (and MQTT CONNECTs) allowed per username: `N/DURATION`, or `off`.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_PER_USER", default_value = "5/10s", value_parser = RateSetting::parse)]
    rate_limit_per_user: RateSetting,

    /// Polls (and MQTT CONNECTs) allowed per source IP (larger: many devices
    /// share a NAT): `N/DURATION`, or `off`.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_PER_IP", default_value = "200/10s", value_parser = RateSetting::parse)]
    rate_limit_per_ip: RateSetting,

    /// Most usernames (and, separately, IPs) the rate limiters remember.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(64..=100_000_000))]
    rate_limit_keys: u64,

    /// `Retry-After` advised on 202 and 423 when the gateway is idle.
    #[arg(long, env = "FLEETGATE_RETRY_AFTER_BASE", default_value = "5s", value_parser = parse_duration)]
    retry_after_base: Duration,

    /// The largest `Retry-After` advised under load.
    #[arg(long, env = "FLEETGATE_RETRY_AFTER_MAX", default_value = "120s", value_parser = parse_duration)]
    retry_after_max: Duration,

    /// Pending requests that add one base `Retry-After` to the advice.
    #[arg(long, env = "FLEETGATE_PACING_PENDING_SCALE", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pacing_pending_scale: u64,

    /// Polls per second that add one base `Retry-After` to the advice.
    #[arg(long, env = "FLEETGATE_PACING_RATE_SCALE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pacing_rate_scale: u64,

    /// Requests per worker that may wait on the store or the admin service
    /// at once; more are shed with 503 (MQTT: CONNACK 3 / 0x89).
    #[arg(long, env = "FLEETGATE_MAX_INFLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_inflight: u64,

    /// Open connections per worker; more are answered 503 (MQTT: closed).
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_connections: u64,

    /// Open connections one source (IPv4 address, or IPv6 /64) may hold
    /// over all workers; more are answered 503 (TLS and MQTT: closed).
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: u32,

    /// Longest one socket write may take; a client that stops reading is
    /// closed after it.
    #[arg(long, env = "FLEETGATE_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,

    /// Forward `/api/*` to this admin service (`http://host:port`) instead
    /// of the in-process one; use with `--admin-listen off` to run a proxy
    /// without an admin of its own.
    #[arg(long, env = "FLEETGATE_ADMIN_UPSTREAM", value_parser = parse_upstream)]
    admin_upstream: Option<http::Uri>,

    /// The workers' I/O driver: `epoll`, `io-uring`, or `auto` (io_uring
    /// where the kernel allows it, else epoll). epoll is the default because
    /// it measured faster here (docs/BENCHMARKS.md).
    #[arg(long, env = "FLEETGATE_IO_DRIVER", default_value = "epoll", value_parser = IoDriver::parse)]
    io_driver: IoDriver,

    /// Number of proxy worker threads (default: the number of cores).
    #[arg(long, env = "FLEETGATE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,

    /// Time allowed from a request's first byte to its last; slower senders
    /// get 408.
    #[arg(long, env = "FLEETGATE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,

    /// How long an idle keep-alive connection stays open.
    #[arg(long, env = "FLEETGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Clone, Copy, Debug)]
struct OptionalAddr(Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e}; expected host:port or `off`"))
}

fn parse_upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) if uri.path() == "/" || uri.path().is_empty() => Ok(uri),
        _ => Err("expected http://host:port".into()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return config_error("fleetgate", e),
    };
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints help/version normally; any other flag error as one line, exit 2.
pub(crate) fn config_error(bin: &str, e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    eprintln!("{bin}: {}", first.trim());
    ExitCode::from(2)
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let workers = match cli.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Before anything resolves metric handles (the registry, the workers).
    let metrics = if cli.metrics == "on" {
        fleetgate_admin::telemetry::install_recorder()?
    } else {
        tracing::warn!("--metrics off: nothing is recorded");
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle()
    };
    let render = fleetgate_admin::telemetry::renderer(metrics.clone());
    // The admin service and the forwarding hand-over run here; proxy
    // workers own the cores, so one tokio thread is enough.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleetgate-admin")
        .enable_all()
        .build()?;
    let opened = runtime.block_on(bootstrap::open(&cli.store))?;
    match opened {
        bootstrap::Opened::Embedded(registry) => {
            serve(cli, workers, runtime, registry, metrics, render)
        }
        bootstrap::Opened::Redis(registry) => {
            serve(cli, workers, runtime, registry, metrics, render)
        }
    }
}

/// Everything after the store is open: listeners, workers, signals, drain.
fn serve<S: Store>(
    cli: Cli,
    workers: usize,
    runtime: tokio::runtime::Runtime,
    registry: Arc<Registry<S>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    render: fleetgate_admin::service::MetricsRenderer,
) -> anyhow::Result<()> {
    let service = Arc::new(
        AdminService::new(registry.clone())
            .with_metrics(render.clone())
            .with_trusted_forwarders(cli.store.trusted_forwarders.clone()),
    );

    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = match cli.admin_listen.0 {
        Some(addr) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| anyhow::anyhow!("cannot bind --admin-listen {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "admin API listening");
            let service = service.clone();
            let mut stopped = admin_stopped.clone();
            Some(runtime.spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = fleetgate_admin::server::serve(
                    listener,
                    service,
                    shutdown,
                    Duration::from_secs(5),
                )
                .await
                {
                    tracing::error!(error = %e, "admin API failed");
                }
            }))
        }
        None => {
            if cli.admin_on_device_port == "on" {
                tracing::info!(
                    "admin API listener off; the admin API is served on the device ports"
                );
            } else {
                tracing::info!("admin API listener off; device ports forward only login and the CA certificate");
            }
            None
        }
    };

    let upstream = match &cli.mqtt_upstream {
        Some(u) => Some(resolve(u).map_err(|e| anyhow::anyhow!("--mqtt-upstream {u}: {e}"))?),
        None => None,
    };
    let http = listener::bind_group(cli.http_listen, workers)
        .map_err(|e| anyhow::anyhow!("cannot bind --http-listen {}: {e}", cli.http_listen))?;
    tracing::info!(addr = %http[0].local_addr()?, workers, "device API listening");
    let mut mqtt: Vec<Option<std::net::TcpListener>> = match cli.mqtt_listen.0 {
        Some(addr) => {
            let group = listener::bind_group(addr, workers)
                .map_err(|e| anyhow::anyhow!("cannot bind --mqtt-listen {addr}: {e}"))?;
            tracing::info!(addr = %group[0].local_addr()?, "MQTT listening");
            match upstream {
                Some(u) => tracing::info!(upstream = %u, "granted MQTT clients are spliced to the upstream broker"),
                None => tracing::warn!(
                    "no --mqtt-upstream: granted MQTT clients are refused with CONNACK 3 / 0x88 (server unavailable)"
                ),
            }
            group.into_iter().map(Some).collect()
        }
        None => (0..workers).map(|_| None).collect(),
    };
    let tls = if cli.https_listen.0.is_some() || cli.mqtts_listen.0.is_some() {
        let setup = TlsSetup::new(&TlsOptions {
            cert_and_key: cli.tls_cert.clone().zip(cli.tls_key.clone()),
            data_dir: cli.store.data_dir.clone(),
            names: cli.tls_names.clone(),
            client_ca: registry.ca().map(|ca| ca.cert_der().to_vec()),
            session_cache: cli.tls_session_cache as usize,
        })?;
        tracing::info!(fingerprint = %setup.fingerprint, "TLS server certificate loaded");
        Some(setup)
    } else {
        None
    };
    let mut https = optional_group(cli.https_listen.0, workers, "--https-listen", "HTTPS")?;
    let mut mqtts = optional_group(cli.mqtts_listen.0, workers, "--mqtts-listen", "MQTTS")?;
    let sockets: Vec<WorkerSockets> = http
        .into_iter()
        .map(|http| WorkerSockets {
            http,
            https: https.remove(0),
            mqtt: mqtt.remove(0),
            mqtts: mqtts.remove(0),
            tls: tls.as_ref().map(TlsSetup::for_worker),
        })
        .collect();
    if let Some(addr) = cli.metrics_listen.0 {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| anyhow::anyhow!("cannot bind --metrics-listen {addr}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        let mut stopped = admin_stopped.clone();
        runtime.spawn(fleetgate_admin::telemetry::serve_metrics(
            listener,
            render,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    let keys = cli.rate_limit_keys as usize;
    let app = Arc::new(App {
        registry,
        forwarder: match &cli.admin_upstream {
            Some(url) => {
                tracing::info!(upstream = %url, "/api/* is forwarded to the admin upstream");
                Forwarder::upstream(runtime.handle().clone(), url.clone())
            }
            None => Forwarder::in_process(runtime.handle().clone(), service),
        },
        config: ConnConfig {
            request_timeout: cli.request_timeout,
            idle_timeout: cli.idle_timeout,
            write_timeout: cli.write_timeout,
            admin_on_device_port: cli.admin_on_device_port == "on",
            tls_handshake_timeout: cli.tls_handshake_timeout,
            io_driver: cli.io_driver,
            ..ConnConfig::default()
        },
        mqtt: MqttConfig {
            upstream,
            connect_timeout: cli.mqtt_connect_timeout,
            cache_key: rand::random(),
            cache_ttl: cli.credential_cache_ttl,
            cache_capacity: cli.credential_cache_size as usize,
            ..MqttConfig::default()
        },
        rate_limits: RateLimits {
            per_user: cli.rate_limit_per_user.0.map(|r| Limiter::new(r, keys)),
            per_ip: cli.rate_limit_per_ip.0.map(|r| Limiter::new(r, keys)),
        },
        pacer: Pacer::new(
            PacingConfig {
                base: cli.retry_after_base,
                max: cli.retry_after_max.max(cli.retry_after_base),
                pending_scale: cli.pacing_pending_scale as f64,
                rate_scale: cli.pacing_rate_scale as f64,
            },
            workers,
        ),
        shed: ShedConfig {
            max_inflight: cli.max_inflight as usize,
            max_connections: cli.max_connections as usize,
        },
        sources: fleetgate_proxy::sources::SourceConnections::new(cli.max_connections_per_ip),
    });
    {
        let app = app.clone();
        let _ticker = runtime.enter();
        fleetgate_admin::telemetry::spawn_ticker(
            app.registry.clone(),
            metrics,
            move |pending, elapsed| {
                let advice = app.pacer.tick(pending, elapsed);
                metrics::gauge!(fleetgate_registry::metrics::RETRY_AFTER_SECONDS).set(advice);
            },
        );
    }
    let shutdown = Shutdown::default();
    let handles = worker::spawn_workers(app, sockets, shutdown.clone())?;

    runtime.block_on(wait_for_signal())?;
    tracing::info!("shutting down: draining connections");
    shutdown.trigger();
    let _ = stop_admin.send(true);
    for h in handles {
        let _ = h.join();
    }
    if let Some(task) = admin_task {
        let _ = runtime.block_on(task);
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// One listening socket per worker on `addr`, or none when it is `off`.
fn optional_group(
    addr: Option<SocketAddr>,
    workers: usize,
    flag: &str,
    what: &str,
) -> anyhow::Result<Vec<Option<std::net::TcpListener>>> {
    let Some(addr) = addr else {
        return Ok((0..workers).map(|_| None).collect());
    };
    let group = listener::bind_group(addr, workers)
        .map_err(|e| anyhow::anyhow!("cannot bind {flag} {addr}: {e}"))?;
    tracing::info!(addr = %group[0].local_addr()?, "{what} listening");
    Ok(group.into_iter().map(Some).collect())
}

/// Resolves `host:port` once, at start.
fn resolve(s: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("resolves to no address"))
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
