//! Assembling the all-in-one process from a [`GatewayConfig`]: the device
//! listeners (one `SO_REUSEPORT` socket per worker and protocol, with their
//! TLS material), the proxy's [`App`], and the tokio-side listeners (the
//! admin API and the proxy's `/metrics`).
//!
//! Every bound address is logged here, once, in the format operators and
//! the tests read (`device API listening addr=…`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use fleetgate_admin::service::MetricsRenderer;
use fleetgate_admin::AdminService;
use fleetgate_proxy::app::{App, MqttConfig, RateLimits};
use fleetgate_proxy::forward::Forwarder;
use fleetgate_proxy::limiter::Limiter;
use fleetgate_proxy::listener;
use fleetgate_proxy::pacing::Pacer;
use fleetgate_proxy::sources::SourceConnections;
use fleetgate_proxy::tls::{TlsOptions, TlsSetup};
use fleetgate_proxy::worker::WorkerSockets;
use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;
use tokio::sync::watch;

use crate::admin_handler::InProcessAdmin;
use crate::config::GatewayConfig;

/// How long in-flight admin requests may take to finish after a signal.
pub const ADMIN_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds every device listener, `workers` sockets each, and loads the TLS
/// material if a TLS listener is on.
pub fn bind_device_listeners<S: Store>(
    config: &GatewayConfig,
    workers: usize,
    registry: &Registry<S>,
) -> anyhow::Result<Vec<WorkerSockets>> {
    let listen = &config.listen;
    let http = listener::bind_group(listen.http, workers)
        .with_context(|| format!("cannot bind --http-listen {}", listen.http))?;
    tracing::info!(addr = %http[0].local_addr()?, workers, "device API listening");
    let mut mqtt = optional_group(listen.mqtt, workers, "--mqtt-listen", "MQTT")?;
    if listen.mqtt.is_some() {
        match &config.mqtt.upstream {
            Some(u) => {
                tracing::info!(upstream = %u, "granted MQTT clients are spliced to the upstream broker")
            }
            None => tracing::warn!(
                "no --mqtt-upstream: granted MQTT clients are refused with CONNACK 3 / 0x88 (server unavailable)"
            ),
        }
    }
    let tls = if listen.https.is_some() || listen.mqtts.is_some() {
        let setup = TlsSetup::new(&TlsOptions {
            cert_and_key: config.tls.cert_and_key.clone(),
            data_dir: config.store.data_dir.clone(),
            names: config.tls.names.clone(),
            client_ca: registry.ca().map(|ca| ca.cert_der().to_vec()),
            session_cache: config.tls.session_cache,
        })?;
        tracing::info!(fingerprint = %setup.fingerprint, "TLS server certificate loaded");
        Some(setup)
    } else {
        None
    };
    let mut https = optional_group(listen.https, workers, "--https-listen", "HTTPS")?;
    let mut mqtts = optional_group(listen.mqtts, workers, "--mqtts-listen", "MQTTS")?;
    Ok(http
        .into_iter()
        .map(|http| WorkerSockets {
            http,
            https: https.remove(0),
            mqtt: mqtt.remove(0),
            mqtts: mqtts.remove(0),
            tls: tls.as_ref().map(TlsSetup::for_worker),
        })
        .collect())
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
        .with_context(|| format!("cannot bind {flag} {addr}"))?;
    tracing::info!(addr = %group[0].local_addr()?, "{what} listening");
    Ok(group.into_iter().map(Some).collect())
}

/// The proxy's shared state: the registry, the hand-over of `/api/*` to the
/// admin service (in-process, or `--admin-upstream`), and the limits.
pub fn build_app<S: Store>(
    config: &GatewayConfig,
    workers: usize,
    registry: Arc<Registry<S>>,
    admin: Arc<AdminService<S>>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Arc<App<S>>> {
    let upstream = match &config.mqtt.upstream {
        Some(u) => Some(resolve(u).with_context(|| format!("--mqtt-upstream {u}"))?),
        None => None,
    };
    let forwarder = match &config.admin_upstream {
        Some(url) => {
            tracing::info!(upstream = %url, "/api/* is forwarded to the admin upstream");
            Forwarder::upstream(runtime.clone(), url.clone())
        }
        None => Forwarder::in_process(runtime.clone(), Arc::new(InProcessAdmin(admin))),
    };
    let limits = &config.rate_limits;
    Ok(Arc::new(App {
        registry,
        forwarder,
        config: config.conn.clone(),
        mqtt: MqttConfig {
            upstream,
            connect_timeout: config.mqtt.connect_timeout,
            cache_key: rand::random(),
            cache_ttl: config.mqtt.credential_cache_ttl,
            cache_capacity: config.mqtt.credential_cache_size,
            deny_publish: config.mqtt.deny_publish,
            client_ids: config.mqtt.client_ids,
            ..MqttConfig::default()
        },
        rate_limits: RateLimits {
            per_user: limits.per_user.map(|r| Limiter::new(r, limits.keys)),
            per_ip: limits.per_ip.map(|r| Limiter::new(r, limits.keys)),
        },
        pacer: Pacer::new(config.pacing, workers),
        shed: config.shed,
        sources: SourceConnections::new(config.max_connections_per_ip),
    }))
}

/// Resolves `host:port` once, at start.
fn resolve(s: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("resolves to no address"))
}

/// The tokio-side listeners of the all-in-one process, stopped together.
pub struct SideListeners {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SideListeners {
    /// Binds `--admin-listen` and `--metrics-listen` (when on) and serves
    /// them on the current tokio runtime.
    pub async fn start<S: Store>(
        config: &GatewayConfig,
        admin: Arc<AdminService<S>>,
        render: MetricsRenderer,
    ) -> anyhow::Result<SideListeners> {
        let (stop, stopped) = watch::channel(false);
        let shutdown = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let mut tasks = Vec::new();
        match config.listen.admin {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind --admin-listen {addr}"))?;
                tracing::info!(addr = %listener.local_addr()?, "admin API listening");
                let shutdown = shutdown();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) =
                        fleetgate_admin::server::serve(listener, admin, shutdown, ADMIN_DRAIN_GRACE)
                            .await
                    {
                        tracing::error!(error = %e, "admin API failed");
                    }
                }));
            }
            None if config.conn.admin_on_device_port => tracing::info!(
                "admin API listener off; the admin API is served on the device ports"
            ),
            None => tracing::info!(
                "admin API listener off; device ports forward only login and the CA certificate"
            ),
        }
        if let Some(addr) = config.listen.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind --metrics-listen {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            tasks.push(tokio::spawn(crate::telemetry::serve_metrics(
                listener,
                render,
                shutdown(),
            )));
        }
        Ok(SideListeners { stop, tasks })
    }

    /// Stops both listeners and waits for the admin API's drain.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
