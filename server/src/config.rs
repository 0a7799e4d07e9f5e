//! The typed configuration of both binaries: what `main` builds the
//! runtimes and the app from.
//!
//! [`GatewayConfig`] (the all-in-one `fleetgate`) and [`AdminConfig`]
//! (`fleetgate-admin`) share a [`StoreConfig`]. Each has a `Default` that
//! is the documented default of every flag (a test holds the flags and the
//! defaults together), and a `validate()` that checks what a flag parser
//! cannot see: values that are only wrong together, and configurations
//! built in code (tests build these structs directly and never touch the
//! process environment). A [`ConfigError`] names the flag, so `main` prints
//! one line and exits 2.
//!
//! Where the values come from is [`crate::flags`]: clap, with a
//! `FLEETGATE_<FLAG>` environment variable behind every flag.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use fleetgate_proxy::app::{ClientIds, ConnConfig, ShedConfig};
use fleetgate_proxy::limiter::Rate;
use fleetgate_proxy::mqtt::enforce::DenyPublish;
use fleetgate_proxy::pacing::PacingConfig;
use fleetgate_registry::decision::Windows;
use fleetgate_registry::RegistryConfig;

/// A configuration value that cannot work, named by its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for '{flag}': {message}")]
pub struct ConfigError {
    /// The flag as a user types it, e.g. `--retry-after-max`.
    pub flag: &'static str,
    pub message: String,
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Refuses a zero duration: every duration here is a timeout, a window or
/// a period, and zero would mean "never wait" or "spin".
fn nonzero(flag: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(flag, "must be greater than zero"));
    }
    Ok(())
}

/// Which backend holds registry state (`--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded store: pending requests in memory, users and grants
    /// journaled in the data dir.
    Memory,
    /// Redis or Redis Cluster, by URL (`redis://`, `rediss://`,
    /// `redis+cluster://`).
    Redis(String),
}

/// Where registry state lives and the registry's limits; shared by both
/// binaries.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Default: [`StoreKind::Memory`].
    pub store: StoreKind,
    /// The server secret, the journal, a generated CA and TLS certificate.
    /// Default `./fleetgate-data`.
    pub data_dir: PathBuf,
    /// The built-in admin's password; `None` generates one on first start
    /// and prints it once. Never logged (`Debug` redacts it).
    pub admin_password: Option<String>,
    /// Pending, collect and deny windows. Default 15 min, 10 min, 10 min.
    pub windows: Windows,
    /// Most pending requests at once. Default 1,000,000.
    pub max_pending: usize,
    /// `--ca-cert` and `--ca-key`; `None` generates (or shares through
    /// Redis) a CA.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// Validity of issued client certificates. Default 365 days.
    pub cert_validity_days: u32,
    /// CA of the Redis server's certificate, for `rediss://`.
    pub redis_ca_cert: Option<PathBuf>,
    /// Namespace of every Redis key. Default `fleetgate`.
    pub redis_prefix: String,
    /// Longest one Redis operation may take. Default 1 s.
    pub redis_timeout: Duration,
    /// `WAIT` for this many replicas after durable writes. Default 0.
    pub redis_wait_replicas: u16,
    /// How long a proxy answers a repeated poll from its cache. Default 30 s.
    pub poll_cache_ttl: Duration,
    /// Roles a device may ask for; `None`: any but `admin`.
    pub requestable_roles: Option<Vec<String>>,
    /// Peers whose `X-Forwarded-For` is believed. Default loopback.
    pub trusted_forwarders: Vec<IpAddr>,
    /// `--webhook-*`; default none.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// `--audit-log`: the JSON-lines copy of the audit log. Default none.
    pub audit_log: Option<PathBuf>,
    /// `--audit-max-records` (default 100,000) and `--audit-retention`
    /// (default 90 days).
    pub audit: fleetgate_registry::audit::AuditConfig,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("store", &self.store)
            .field("data_dir", &self.data_dir)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<redacted>"),
            )
            .field("windows", &self.windows)
            .field("max_pending", &self.max_pending)
            .field("ca", &self.ca)
            .field("redis_prefix", &self.redis_prefix)
            .finish_non_exhaustive()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store: StoreKind::Memory,
            data_dir: PathBuf::from("./fleetgate-data"),
            admin_password: None,
            windows: Windows::default(),
            max_pending: 1_000_000,
            ca: None,
            cert_validity_days: 365,
            redis_ca_cert: None,
            redis_prefix: "fleetgate".into(),
            redis_timeout: Duration::from_secs(1),
            redis_wait_replicas: 0,
            poll_cache_ttl: Duration::from_secs(30),
            requestable_roles: None,
            trusted_forwarders: vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            webhooks: crate::webhooks::WebhookConfig::default(),
            audit_log: None,
            audit: fleetgate_registry::audit::AuditConfig::default(),
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let StoreKind::Redis(url) = &self.store {
            fleetgate_store_redis::Topology::parse(url)
                .map_err(|e| invalid("--store", e.to_string()))?;
        }
        if self.redis_ca_cert.is_some()
            && !matches!(&self.store, StoreKind::Redis(url) if url.starts_with("rediss"))
        {
            return Err(invalid(
                "--redis-ca-cert",
                "only applies to a TLS store (`--store rediss://...`)",
            ));
        }
        nonzero("--pending-ttl", self.windows.pending_ttl)?;
        nonzero("--collect-window", self.windows.collect_window)?;
        nonzero("--deny-window", self.windows.deny_window)?;
        nonzero("--redis-timeout", self.redis_timeout)?;
        nonzero("--poll-cache-ttl", self.poll_cache_ttl)?;
        // A cached answer never refreshes the request's `last_seen` in the
        // store; a cache ttl as long as the pending ttl would let a device
        // that polls steadily expire there (store-redis/tests/cached.rs).
        if matches!(self.store, StoreKind::Redis(_))
            && self.poll_cache_ttl >= self.windows.pending_ttl
        {
            return Err(invalid(
                "--poll-cache-ttl",
                "must be shorter than --pending-ttl, or polling devices expire in Redis",
            ));
        }
        if self.max_pending == 0 {
            return Err(invalid("--max-pending", "must be at least 1"));
        }
        if !(1..=3650).contains(&self.cert_validity_days) {
            return Err(invalid("--cert-validity-days", "must be 1 to 3650"));
        }
        for role in self.requestable_roles.iter().flatten() {
            crate::flags::parse_role(role).map_err(|m| invalid("--requestable-roles", m))?;
        }
        self.webhooks.validate()?;
        Ok(())
    }

    /// The registry settings this configuration describes.
    /// Opens `--audit-log` for appending (and starts its writer), at
    /// start: a file that cannot be opened is a configuration error
    /// (exit 2), not something found at the first admin action.
    pub fn open_audit_log(
        &self,
    ) -> Result<Option<fleetgate_registry::audit::AuditFile>, ConfigError> {
        self.audit_log
            .as_deref()
            .map(fleetgate_registry::audit::AuditFile::open)
            .transpose()
            .map_err(|e| invalid("--audit-log", e.to_string()))
    }

    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig {
            windows: self.windows,
            max_pending: self.max_pending,
            requestable_roles: self.requestable_roles.clone(),
            ..RegistryConfig::default()
        }
    }
}

/// `fleetgate-admin`: the admin API on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:8081`.
    pub admin_listen: SocketAddr,
    pub store: StoreConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            store: StoreConfig::default(),
        }
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate()
    }
}

/// The addresses the all-in-one process listens on; `None` is `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listeners {
    /// The device API over HTTP. Default `0.0.0.0:8080`.
    pub http: SocketAddr,
    /// The device API over HTTPS. Default `0.0.0.0:8443`.
    pub https: Option<SocketAddr>,
    /// MQTT. Default `0.0.0.0:1883`.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS. Default `0.0.0.0:8883`.
    pub mqtts: Option<SocketAddr>,
    /// The admin API. Default `127.0.0.1:8081`: loopback only.
    pub admin: Option<SocketAddr>,
    /// The proxy's `/metrics`. Default `127.0.0.1:9464`.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listeners {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Listeners {
            http: any(8080),
            https: Some(any(8443)),
            mqtt: Some(any(1883)),
            mqtts: Some(any(8883)),
            admin: Some(local(8081)),
            metrics: Some(local(9464)),
        }
    }
}

/// The TLS listeners' server certificate and session settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--tls-cert` and `--tls-key`; `None` generates a self-signed
    /// certificate into the data dir on first start.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Names a generated certificate is valid for. Default
    /// `localhost,127.0.0.1,::1`.
    pub names: Vec<String>,
    /// TLS 1.2 sessions each worker keeps. Default 10,000.
    pub session_cache: usize,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_and_key: None,
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            session_cache: 10_000,
        }
    }
}

/// The MQTT listener's settings that come from flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSettings {
    /// The broker granted clients are relayed to (`host:port`, resolved
    /// once at start); `None` refuses them with CONNACK 3 / 0x88.
    pub upstream: Option<String>,
    /// Time a client has to deliver its whole CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// How long a verified credential is trusted without argon2.
    /// Default 10 min.
    pub credential_cache_ttl: Duration,
    /// Entries per worker in each credential cache. Default 100,000.
    pub credential_cache_size: usize,
    /// What MQTT 3.1.1 does with a denied PUBLISH. Default: acknowledge
    /// and discard.
    pub deny_publish: DenyPublish,
    /// The client id relayed clients have at the broker. Default:
    /// namespaced by user.
    pub client_ids: ClientIds,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            upstream: None,
            connect_timeout: Duration::from_secs(10),
            credential_cache_ttl: Duration::from_secs(600),
            credential_cache_size: 100_000,
            deny_publish: DenyPublish::Ack,
            client_ids: ClientIds::Namespaced,
        }
    }
}

/// The rate limits of polls and CONNECTs; `None` is `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Per (username, credential). Default 5 per 10 s.
    pub per_user: Option<Rate>,
    /// Per source (IPv4 address, IPv6 /64). Default 200 per 10 s.
    pub per_ip: Option<Rate>,
    /// Keys each limiter remembers. Default 1,000,000.
    pub keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_user: Rate::parse("5/10s").expect("a valid rate"),
            per_ip: Rate::parse("200/10s").expect("a valid rate"),
            keys: 1_000_000,
        }
    }
}

/// `fleetgate`: proxy workers and the admin service in one process.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    pub listen: Listeners,
    /// Forward `/api/*` to this admin (`http://host:port`) instead of the
    /// in-process one.
    pub admin_upstream: Option<http::Uri>,
    /// Timeouts, the I/O driver and whether the device ports serve the
    /// whole admin API (default: only login and the CA certificate).
    pub conn: ConnConfig,
    pub tls: TlsConfig,
    pub mqtt: MqttSettings,
    /// Record metrics (default) or make every handle a no-op.
    pub metrics: bool,
    pub rate_limits: RateLimitConfig,
    /// `Retry-After` advice. Default 5 s, growing to 120 s under load.
    pub pacing: PacingConfig,
    /// In-flight requests and open connections per worker. Default 1,024
    /// and 10,000.
    pub shed: ShedConfig,
    /// Open connections per source over all workers. Default 1,000.
    pub max_connections_per_ip: u32,
    /// Worker threads; `None` is one per core.
    pub workers: Option<usize>,
    pub store: StoreConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: Listeners::default(),
            admin_upstream: None,
            conn: ConnConfig::default(),
            tls: TlsConfig::default(),
            mqtt: MqttSettings::default(),
            metrics: true,
            rate_limits: RateLimitConfig::default(),
            pacing: PacingConfig::default(),
            shed: ShedConfig::default(),
            max_connections_per_ip: 1000,
            workers: None,
            store: StoreConfig::default(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate()?;
        nonzero("--request-timeout", self.conn.request_timeout)?;
        nonzero("--idle-timeout", self.conn.idle_timeout)?;
        nonzero("--write-timeout", self.conn.write_timeout)?;
        nonzero("--tls-handshake-timeout", self.conn.tls_handshake_timeout)?;
        nonzero("--mqtt-connect-timeout", self.mqtt.connect_timeout)?;
        nonzero("--credential-cache-ttl", self.mqtt.credential_cache_ttl)?;
        nonzero("--retry-after-base", self.pacing.base)?;
        if self.pacing.max < self.pacing.base {
            return Err(invalid(
                "--retry-after-max",
                format!(
                    "{} is below --retry-after-base ({})",
                    humantime::format_duration(self.pacing.max),
                    humantime::format_duration(self.pacing.base)
                ),
            ));
        }
        if self.pacing.pending_scale.is_nan() || self.pacing.pending_scale < 1.0 {
            return Err(invalid("--pacing-pending-scale", "must be at least 1"));
        }
        if self.pacing.rate_scale.is_nan() || self.pacing.rate_scale < 1.0 {
            return Err(invalid("--pacing-rate-scale", "must be at least 1"));
        }
        if self.rate_limits.keys < 64 {
            return Err(invalid("--rate-limit-keys", "must be at least 64"));
        }
        if self.shed.max_inflight == 0 {
            return Err(invalid("--max-inflight", "must be at least 1"));
        }
        if self.shed.max_connections == 0 {
            return Err(invalid("--max-connections", "must be at least 1"));
        }
        if self.max_connections_per_ip == 0 {
            return Err(invalid("--max-connections-per-ip", "must be at least 1"));
        }
        if self.mqtt.credential_cache_size == 0 {
            return Err(invalid("--credential-cache-size", "must be at least 1"));
        }
        if self.tls.session_cache == 0 {
            return Err(invalid("--tls-session-cache", "must be at least 1"));
        }
        if self.workers.is_some_and(|n| !(1..=1024).contains(&n)) {
            return Err(invalid("--workers", "must be 1 to 1024"));
        }
        if let Some(uri) = &self.admin_upstream {
            crate::flags::parse_upstream(&uri.to_string())
                .map_err(|m| invalid("--admin-upstream", m))?;
        }
        Ok(())
    }

    /// How many workers to start: the configured number, or one per core.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        GatewayConfig::default().validate().unwrap();
        AdminConfig::default().validate().unwrap();
    }

    #[test]
    fn an_error_names_its_flag() {
        let mut c = GatewayConfig::default();
        c.pacing.max = Duration::from_secs(1);
        assert_eq!(c.validate().unwrap_err().flag, "--retry-after-max");

        let mut c = GatewayConfig::default();
        c.conn.write_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().flag, "--write-timeout");

        let mut c = AdminConfig::default();
        c.store.redis_ca_cert = Some("ca.pem".into());
        let e = c.validate().unwrap_err();
        assert_eq!(e.flag, "--redis-ca-cert");
        assert_eq!(
            e.to_string(),
            "invalid value for '--redis-ca-cert': only applies to a TLS store (`--store rediss://...`)"
        );

        let mut c = AdminConfig::default();
        c.store.requestable_roles = Some(vec!["admin".into()]);
        assert_eq!(c.validate().unwrap_err().flag, "--requestable-roles");

        let mut c = AdminConfig::default();
        c.store.store = StoreKind::Redis("redis://127.0.0.1:6379".into());
        c.store.poll_cache_ttl = c.store.windows.pending_ttl;
        assert_eq!(c.validate().unwrap_err().flag, "--poll-cache-ttl");

        let mut c = AdminConfig::default();
        c.store.store = StoreKind::Redis("redis+cluster://".into());
        assert_eq!(c.validate().unwrap_err().flag, "--store");
    }

    #[test]
    fn debug_never_shows_the_admin_password() {
        let c = StoreConfig {
            admin_password: Some("hunter2-secret".into()),
            ..StoreConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
