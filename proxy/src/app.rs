//! The application state: [`App`], shared read-only by every worker (the
//! registry, the forwarding hand-over, the limits and configuration), and
//! [`Worker`], one worker thread's own state (its connection and in-flight
//! counts, credential cache and metric handles).
//!
//! Both the connection loops ([`crate::conn`], [`crate::mqtt::session`])
//! and the thread that runs them ([`crate::worker`]) depend on this module,
//! and it on neither.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_registry::Registry;

use crate::forward::Forwarder;
use crate::limiter::{device_key, source_key, Limiter, Verdict};
use crate::mqtt::credentials::CredentialCache;
use crate::pacing::Pacer;
use crate::telemetry::WorkerMetrics;

/// Settings the connection loop and routes share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    pub limits: crate::http::codec::Limits,
    /// Time allowed from the first byte of a request to its last.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Longest any one socket write may take (`--write-timeout`); a client
    /// that does not read its responses is closed after it.
    pub write_timeout: Duration,
    /// Time a TLS client has from accept to a finished handshake.
    pub tls_handshake_timeout: Duration,
    /// The I/O driver of the worker runtimes.
    pub io_driver: IoDriver,
    /// Whether the device ports forward the whole admin API
    /// (`--admin-on-device-port on`, for single-port deployments on a
    /// trusted network). Off: only [`crate::router::DEVICE_API_PATHS`].
    pub admin_on_device_port: bool,
}

/// Which monoio driver the workers run on (`--io-driver`). epoll is the
/// default: on the measured machine it served keep-alive polls 1.15 to 1.24
/// times as fast as io_uring, and CONNECT storms faster too
/// (docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    #[default]
    Epoll,
    /// io_uring or fail at start.
    IoUring,
}

impl IoDriver {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoDriver::Auto),
            "epoll" => Ok(IoDriver::Epoll),
            "io-uring" => Ok(IoDriver::IoUring),
            _ => Err("expected auto, epoll or io-uring".into()),
        }
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: Default::default(),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            io_driver: IoDriver::Epoll,
            admin_on_device_port: false,
        }
    }
}

/// MQTT settings shared by every worker.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Largest CONNECT remaining length.
    pub max_remaining: usize,
    /// A client must deliver its whole CONNECT within this time.
    pub connect_timeout: Duration,
    /// Where granted clients are spliced to; `None` refuses them with 3/0x88.
    pub upstream: Option<SocketAddr>,
    /// How long connecting to the upstream may take.
    pub upstream_timeout: Duration,
    /// Key of the per-process credential-cache digests.
    pub cache_key: [u8; 32],
    /// How long a verified credential is trusted without argon2.
    pub cache_ttl: Duration,
    /// How long a refused credential is refused without argon2.
    pub negative_cache_ttl: Duration,
    /// Entries per worker, for each of the two caches.
    pub cache_capacity: usize,
    /// Largest remaining length of a relayed packet.
    pub max_packet: usize,
    /// What MQTT 3.1.1 does with a denied PUBLISH (`--mqtt-deny-publish`).
    pub deny_publish: crate::mqtt::enforce::DenyPublish,
    /// The client id the broker sees (`--mqtt-client-ids`).
    pub client_ids: ClientIds,
    /// How often a live relayed session re-reads its user: a deleted user
    /// is cut and a permission change applies within this.
    pub revalidate_every: Duration,
}

/// The client id a relayed client has at the broker (`--mqtt-client-ids`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientIds {
    /// `<username>:<client id>`: a user can never take over another user's
    /// broker session, whatever client id it sends. An empty client id
    /// stays empty (the broker assigns one).
    #[default]
    Namespaced,
    /// As the client sent it, for brokers whose own ACLs key on client
    /// ids; then any user may take over any session by its client id.
    AsSent,
}

impl ClientIds {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "namespaced" => Ok(ClientIds::Namespaced),
            "as-sent" => Ok(ClientIds::AsSent),
            _ => Err("expected namespaced or as-sent".into()),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_remaining: crate::mqtt::codec::DEFAULT_MAX_REMAINING,
            connect_timeout: Duration::from_secs(10),
            upstream: None,
            upstream_timeout: Duration::from_secs(5),
            cache_key: [0; 32],
            cache_ttl: Duration::from_secs(600),
            negative_cache_ttl: Duration::from_secs(60),
            cache_capacity: 100_000,
            max_packet: crate::mqtt::relay::DEFAULT_MAX_PACKET,
            deny_publish: crate::mqtt::enforce::DenyPublish::Ack,
            client_ids: ClientIds::Namespaced,
            revalidate_every: Duration::from_millis(500),
        }
    }
}

/// Per-worker load bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShedConfig {
    /// Requests waiting on the store or the admin service, per worker.
    pub max_inflight: usize,
    /// Open connections, per worker.
    pub max_connections: usize,
}

impl Default for ShedConfig {
    fn default() -> Self {
        ShedConfig {
            max_inflight: 1024,
            max_connections: 10_000,
        }
    }
}

/// The two rate limiters; `None` when a limit is `off`.
pub struct RateLimits {
    /// Keyed by (username, credential): [`crate::limiter::device_key`].
    pub per_user: Option<Limiter>,
    /// Keyed by IPv4 address or IPv6 /64: [`crate::limiter::source_key`].
    pub per_ip: Option<Limiter>,
}

impl RateLimits {
    /// Checks the per-source limit (before anything is parsed).
    pub fn check_ip(&self, ip: IpAddr, now: Instant) -> Verdict {
        self.per_ip
            .as_ref()
            .map_or(Verdict::Allow, |l| l.check(&source_key(ip), now))
    }

    /// Checks the per-device limit of `username` presenting `credential`
    /// (a password, or a CSR): only the same credentials share a budget.
    pub fn check_user(&self, username: &str, credential: &[u8], now: Instant) -> Verdict {
        self.per_user.as_ref().map_or(Verdict::Allow, |l| {
            l.check(&device_key(username, credential), now)
        })
    }
}

/// Everything a worker needs, shared by all workers.
pub struct App<S> {
    pub registry: Arc<Registry<S>>,
    pub forwarder: Forwarder,
    pub config: ConnConfig,
    pub mqtt: MqttConfig,
    pub rate_limits: RateLimits,
    pub pacer: Pacer,
    pub shed: ShedConfig,
    /// Open connections per source, over every worker and listener.
    pub sources: Arc<crate::sources::SourceConnections>,
}

/// Tells workers to stop accepting and drain.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One worker's state, shared by its tasks (never across threads).
pub struct Worker<S> {
    pub id: usize,
    pub app: Arc<App<S>>,
    pub shutdown: Shutdown,
    /// Connections open on this worker.
    pub open: Cell<usize>,
    /// Requests now waiting on the store or the admin service.
    pub inflight: Cell<usize>,
    pub credentials: RefCell<CredentialCache>,
    /// Compiled permission sets of the users relayed on this worker.
    pub access: RefCell<crate::mqtt::access::AccessCache>,
    pub metrics: WorkerMetrics,
}

impl<S> Worker<S> {
    /// Reserves an in-flight slot, or `None` when the worker is at its bound
    /// (the caller sheds the request).
    pub fn try_begin(&self) -> Option<InflightGuard<'_>> {
        if self.inflight.get() >= self.app.shed.max_inflight {
            return None;
        }
        self.inflight.set(self.inflight.get() + 1);
        Some(InflightGuard(&self.inflight))
    }

    /// Whether shutdown has begun (connections then close after a response).
    pub fn draining(&self) -> bool {
        self.shutdown.is_triggered()
    }
}

/// Releases an in-flight slot when dropped.
pub struct InflightGuard<'a>(&'a Cell<usize>);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
