//! The command lines of both binaries, as clap sees them: every flag, its
//! help text, its default and its `FLEETGATE_<FLAG>` environment variable.
//!
//! Flags are parsed here and turned into the typed configuration of
//! [`crate::config`] (`into_config`), which `main` validates. Parsers here
//! check one value at a time; anything that needs two values, or applies
//! to configurations built in code, is `validate()`'s.

use std::path::PathBuf;
use std::time::Duration;

use std::net::SocketAddr;

use clap::{Args, Parser};
use fleetgate_proxy::app::{ClientIds, ConnConfig, IoDriver, ShedConfig};
use fleetgate_proxy::limiter::RateSetting;
use fleetgate_proxy::mqtt::enforce::DenyPublish;
use fleetgate_proxy::pacing::PacingConfig;
use fleetgate_registry::decision::Windows;

use crate::config::{
    AdminConfig, GatewayConfig, Listeners, MqttSettings, RateLimitConfig, StoreConfig, StoreKind,
    TlsConfig,
};

/// Flags that choose and tune the registry store.
#[derive(Args, Clone, Debug)]
pub struct StoreFlags {
    /// Where registry state lives: `memory` is the embedded store (pending
    /// requests in memory, users and grants journaled in --data-dir);
    /// `redis://host:port` is one Redis; `redis+cluster://host:port,host:port`
    /// is a Redis Cluster. Every instance on one Redis shares all state.
    #[arg(long, env = "FLEETGATE_STORE", default_value = "memory", value_parser = parse_store)]
    pub store: StoreKind,

    /// Directory for the server secret and the embedded store's journal.
    /// Created if missing.
    #[arg(long, env = "FLEETGATE_DATA_DIR", default_value = "./fleetgate-data")]
    pub data_dir: PathBuf,

    /// Password of the built-in `admin` user. When unset, the first start
    /// generates one and prints it once; only its hash is stored.
    #[arg(long, env = "FLEETGATE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// How long a pending request that stops polling is kept (e.g. `15m`).
    #[arg(long, env = "FLEETGATE_PENDING_TTL", default_value = "15m", value_parser = parse_duration)]
    pub pending_ttl: Duration,

    /// How long a granted request can be collected again (e.g. `10m`).
    #[arg(long, env = "FLEETGATE_COLLECT_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub collect_window: Duration,

    /// How long a denied request is answered 403 before it is forgotten.
    #[arg(long, env = "FLEETGATE_DENY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub deny_window: Duration,

    /// Most pending requests kept at once; new requests past it get 503.
    #[arg(long, env = "FLEETGATE_MAX_PENDING", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending: u64,

    /// PEM certificate of the CA that signs client certificates. Without
    /// --ca-cert/--ca-key, a CA is generated on first start and kept in
    /// --data-dir (embedded store) or in Redis (shared by every instance).
    #[arg(long, env = "FLEETGATE_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// PEM private key of the client CA.
    #[arg(long, env = "FLEETGATE_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Validity of issued client certificates, in days.
    #[arg(long, env = "FLEETGATE_CERT_VALIDITY_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub cert_validity_days: u32,

    /// With `--store rediss://`: the PEM certificate of the CA that signed
    /// the Redis server's certificate (default: the system's roots).
    #[arg(long, env = "FLEETGATE_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Namespace of every Redis key; instances that should share state use
    /// the same prefix.
    #[arg(long, env = "FLEETGATE_REDIS_PREFIX", default_value = "fleetgate")]
    pub redis_prefix: String,

    /// Longest a Redis operation may take before the caller gets 503.
    #[arg(long, env = "FLEETGATE_REDIS_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// With Redis: how long a proxy answers a repeated poll of a pending
    /// request from its cache before asking Redis again (events from Redis
    /// drop an entry at once when its request is granted or denied).
    #[arg(long, env = "FLEETGATE_POLL_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub poll_cache_ttl: Duration,

    /// The roles a device may ask for in its register request,
    /// comma-separated; asking for any other role is 422. Unset: any role
    /// but `admin`, which a device may never ask for.
    #[arg(long, env = "FLEETGATE_REQUESTABLE_ROLES", value_delimiter = ',', value_parser = parse_role)]
    pub requestable_roles: Option<Vec<String>>,

    /// Peers whose `X-Forwarded-For` header names the real client, for the
    /// login throttle and the logs (proxies forwarding with
    /// --admin-upstream), comma-separated. Anyone else's header is ignored.
    #[arg(
        long,
        env = "FLEETGATE_TRUSTED_FORWARDERS",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub trusted_forwarders: Vec<std::net::IpAddr>,

    /// After grants and user changes, `WAIT` for this many Redis replicas
    /// (0: do not wait).
    #[arg(long, env = "FLEETGATE_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u16,

    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookFlags,
    /// Also append every audit record to this file, one JSON object a
    /// line (for a SIEM). Opened for appending at start; a file that
    /// cannot be opened is a usage error (exit 2).
    #[arg(long, env = "FLEETGATE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// How long the store keeps audit records (e.g. `90d`); the sweeper
    /// drops older ones.
    #[arg(long, env = "FLEETGATE_AUDIT_RETENTION", default_value = "90days", value_parser = parse_duration)]
    pub audit_retention: Duration,

    /// Most audit records the store keeps; past it the oldest are dropped
    /// (a flood of failed logins cannot grow the store).
    #[arg(long, env = "FLEETGATE_AUDIT_MAX_RECORDS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub audit_max_records: u64,
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    match s {
        "memory" => Ok(StoreKind::Memory),
        s if s.starts_with("redis://")
            || s.starts_with("rediss://")
            || s.starts_with("redis+cluster://")
            || s.starts_with("rediss+cluster://") =>
        {
            fleetgate_store_redis::Topology::parse(s).map_err(|e| e.to_string())?;
            Ok(StoreKind::Redis(s.to_owned()))
        }
        _ => {
            Err("expected `memory`, `redis://host:port`, `rediss://host:port` or `redis+cluster://host:port,...`".into())
        }
    }
}

/// One role name of `--requestable-roles`: 1 to 64 bytes, and not `admin`.
pub(crate) fn parse_role(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > fleetgate_registry::request::ROLE_MAX {
        return Err(format!(
            "a role name is 1 to {} bytes long",
            fleetgate_registry::request::ROLE_MAX
        ));
    }
    if s == fleetgate_registry::model::ADMIN_ROLE {
        return Err("`admin` can never be requested by a device".into());
    }
    Ok(s.to_owned())
}

/// Parses `15m`, `90s`, `1h 30m`, … (humantime syntax), refusing zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. `90s` or `15m`)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

impl StoreFlags {
    /// The typed configuration these flags describe.
    pub fn into_config(self) -> StoreConfig {
        StoreConfig {
            store: self.store,
            data_dir: self.data_dir,
            admin_password: self.admin_password,
            windows: Windows {
                pending_ttl: self.pending_ttl,
                collect_window: self.collect_window,
                deny_window: self.deny_window,
            },
            max_pending: self.max_pending as usize,
            ca: self.ca_cert.zip(self.ca_key),
            cert_validity_days: self.cert_validity_days,
            redis_ca_cert: self.redis_ca_cert,
            redis_prefix: self.redis_prefix,
            redis_timeout: self.redis_timeout,
            redis_wait_replicas: self.redis_wait_replicas,
            poll_cache_ttl: self.poll_cache_ttl,
            requestable_roles: self.requestable_roles,
            trusted_forwarders: self.trusted_forwarders,
            webhooks: self.webhooks.into_config(),
            audit_log: self.audit_log,
            audit: fleetgate_registry::audit::AuditConfig {
                max_records: self.audit_max_records as usize,
                retention: self.audit_retention,
            },
        }
    }
}

/// fleetgate: a device-registration gateway. Devices poll
/// POST /api/client-registry/register until an administrator grants them.
#[derive(Parser, Debug)]
#[command(name = "fleetgate", version, about, long_about = None)]
pub struct GatewayFlags {
    /// Address of the device API (HTTP).
    #[arg(long, env = "FLEETGATE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Address of the admin API, or `off` (then the admin API is reachable
    /// only through another admin instance, or on the device ports with
    /// --admin-on-device-port on).
    #[arg(long, env = "FLEETGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_optional_addr)]
    pub admin_listen: OptionalAddr,

    /// Serve the whole admin API on the device ports too (`on`), for a
    /// single-port deployment on a trusted network. `off` (the default):
    /// device ports answer only the register route, POST /api/login,
    /// GET /api/certificates/ca and the health checks; the admin API is on
    /// --admin-listen.
    #[arg(long, env = "FLEETGATE_ADMIN_ON_DEVICE_PORT", default_value = "off", value_parser = ["on", "off"])]
    pub admin_on_device_port: String,

    /// Address of the MQTT listener, or `off`.
    #[arg(long, env = "FLEETGATE_MQTT_LISTEN", default_value = "0.0.0.0:1883", value_parser = parse_optional_addr)]
    pub mqtt_listen: OptionalAddr,

    /// Address of the HTTPS device API (same routes as --http-listen), or `off`.
    #[arg(long, env = "FLEETGATE_HTTPS_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_optional_addr)]
    pub https_listen: OptionalAddr,

    /// Address of the MQTT-over-TLS listener, or `off`.
    #[arg(long, env = "FLEETGATE_MQTTS_LISTEN", default_value = "0.0.0.0:8883", value_parser = parse_optional_addr)]
    pub mqtts_listen: OptionalAddr,

    /// The TLS server certificate chain (PEM), with --tls-key. Without
    /// both, a self-signed ECDSA P-256 certificate is generated into the
    /// data dir on first start and reused.
    #[arg(long, env = "FLEETGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The TLS server private key (PEM), with --tls-cert.
    #[arg(long, env = "FLEETGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Names (DNS or IP) a generated TLS certificate is valid for,
    /// comma-separated. Used only when the certificate is generated.
    #[arg(
        long,
        env = "FLEETGATE_TLS_NAMES",
        default_value = "localhost,127.0.0.1,::1",
        value_delimiter = ','
    )]
    pub tls_names: Vec<String>,

    /// TLS sessions each worker keeps for stateful resumption (TLS 1.2
    /// session IDs; TLS 1.3 resumes with stateless tickets).
    #[arg(long, env = "FLEETGATE_TLS_SESSION_CACHE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub tls_session_cache: u64,

    /// Time a TLS client has from connecting to a finished handshake.
    #[arg(long, env = "FLEETGATE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// The MQTT broker granted clients are spliced to (host:port). Without
    /// it, granted clients are refused with CONNACK 3 / 0x88.
    #[arg(long, env = "FLEETGATE_MQTT_UPSTREAM")]
    pub mqtt_upstream: Option<String>,

    /// Time an MQTT client has to deliver its whole CONNECT.
    #[arg(long, env = "FLEETGATE_MQTT_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub mqtt_connect_timeout: Duration,

    /// What an MQTT 3.1.1 client gets for a PUBLISH its user may not write:
    /// `ack` (acknowledged and discarded, as Mosquitto does) or
    /// `disconnect`. MQTT 5 clients always get PUBACK/PUBREC 0x87.
    #[arg(long, env = "FLEETGATE_MQTT_DENY_PUBLISH", default_value = "ack", value_parser = parse_deny_publish)]
    pub mqtt_deny_publish: DenyPublish,

    /// The client id a relayed client has at the broker: `namespaced`
    /// (`<username>:<client id>`, so no user can take over another's
    /// session) or `as-sent`.
    #[arg(long, env = "FLEETGATE_MQTT_CLIENT_IDS", default_value = "namespaced", value_parser = ClientIds::parse)]
    pub mqtt_client_ids: ClientIds,

    /// How long a verified MQTT credential is trusted without re-hashing.
    #[arg(long, env = "FLEETGATE_CREDENTIAL_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub credential_cache_ttl: Duration,

    /// Verified (and, separately, refused) credentials cached per worker.
    #[arg(long, env = "FLEETGATE_CREDENTIAL_CACHE_SIZE", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub credential_cache_size: u64,

    /// Address of the proxy's Prometheus `/metrics`, or `off`. The admin
    /// port serves `/metrics` too.
    #[arg(long, env = "FLEETGATE_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = parse_optional_addr)]
    pub metrics_listen: OptionalAddr,

    /// Record metrics (`on`) or not (`off`: every handle is a no-op and
    /// `/metrics` is empty). For measuring what recording costs.
    #[arg(long, env = "FLEETGATE_METRICS", default_value = "on", value_parser = ["on", "off"])]
    pub metrics: String,

    /// Polls (and MQTT CONNECTs) allowed per username: `N/DURATION`, or `off`.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_PER_USER", default_value = "5/10s", value_parser = RateSetting::parse)]
    pub rate_limit_per_user: RateSetting,

    /// Polls (and MQTT CONNECTs) allowed per source IP (larger: many devices
    /// share a NAT): `N/DURATION`, or `off`.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_PER_IP", default_value = "200/10s", value_parser = RateSetting::parse)]
    pub rate_limit_per_ip: RateSetting,

    /// Most usernames (and, separately, IPs) the rate limiters remember.
    /// Full, they forget the keys untouched for longest: a key seen at
    /// least once per half this many other keys is never forgotten.
    #[arg(long, env = "FLEETGATE_RATE_LIMIT_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(64..=100_000_000))]
    pub rate_limit_keys: u64,

    /// `Retry-After` advised on 202 and 423 when the gateway is idle.
    #[arg(long, env = "FLEETGATE_RETRY_AFTER_BASE", default_value = "5s", value_parser = parse_duration)]
    pub retry_after_base: Duration,

    /// The largest `Retry-After` advised under load.
    #[arg(long, env = "FLEETGATE_RETRY_AFTER_MAX", default_value = "120s", value_parser = parse_duration)]
    pub retry_after_max: Duration,

    /// Pending requests that add one base `Retry-After` to the advice.
    #[arg(long, env = "FLEETGATE_PACING_PENDING_SCALE", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pacing_pending_scale: u64,

    /// Polls per second that add one base `Retry-After` to the advice.
    #[arg(long, env = "FLEETGATE_PACING_RATE_SCALE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pacing_rate_scale: u64,

    /// Requests per worker that may wait on the store or the admin service
    /// at once; more are shed with 503 (MQTT: CONNACK 3 / 0x89).
    #[arg(long, env = "FLEETGATE_MAX_INFLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_inflight: u64,

    /// Open connections per worker; more are answered 503 (MQTT: closed).
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,

    /// Open connections one source (IPv4 address, or IPv6 /64) may hold
    /// over all workers; more are answered 503 (TLS and MQTT: closed).
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// Longest one socket write may take; a client that stops reading is
    /// closed after it.
    #[arg(long, env = "FLEETGATE_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Forward `/api/*` to this admin service (`http://host:port`) instead
    /// of the in-process one; use with `--admin-listen off` to run a proxy
    /// without an admin of its own.
    #[arg(long, env = "FLEETGATE_ADMIN_UPSTREAM", value_parser = parse_upstream)]
    pub admin_upstream: Option<http::Uri>,

    /// The workers' I/O driver: `epoll`, `io-uring`, or `auto` (io_uring
    /// where the kernel allows it, else epoll). epoll is the default because
    /// it measured faster here (docs/BENCHMARKS.md).
    #[arg(long, env = "FLEETGATE_IO_DRIVER", default_value = "epoll", value_parser = IoDriver::parse)]
    pub io_driver: IoDriver,

    /// Number of proxy worker threads (default: the number of cores).
    #[arg(long, env = "FLEETGATE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Time allowed from a request's first byte to its last; slower senders
    /// get 408.
    #[arg(long, env = "FLEETGATE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long an idle keep-alive connection stays open.
    #[arg(long, env = "FLEETGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    #[command(flatten)]
    pub store: StoreFlags,
}

#[derive(Clone, Copy, Debug)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e}; expected host:port or `off`"))
}

fn parse_deny_publish(s: &str) -> Result<DenyPublish, String> {
    match s {
        "ack" => Ok(DenyPublish::Ack),
        "disconnect" => Ok(DenyPublish::Disconnect),
        _ => Err("expected ack or disconnect".into()),
    }
}

pub(crate) fn parse_upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) if uri.path() == "/" || uri.path().is_empty() => Ok(uri),
        _ => Err("expected http://host:port".into()),
    }
}

impl GatewayFlags {
    /// The typed configuration these flags describe.
    pub fn into_config(self) -> GatewayConfig {
        GatewayConfig {
            listen: Listeners {
                http: self.http_listen,
                https: self.https_listen.0,
                mqtt: self.mqtt_listen.0,
                mqtts: self.mqtts_listen.0,
                admin: self.admin_listen.0,
                metrics: self.metrics_listen.0,
            },
            admin_upstream: self.admin_upstream,
            conn: ConnConfig {
                request_timeout: self.request_timeout,
                idle_timeout: self.idle_timeout,
                write_timeout: self.write_timeout,
                admin_on_device_port: self.admin_on_device_port == "on",
                tls_handshake_timeout: self.tls_handshake_timeout,
                io_driver: self.io_driver,
                ..ConnConfig::default()
            },
            tls: TlsConfig {
                cert_and_key: self.tls_cert.zip(self.tls_key),
                names: self.tls_names,
                session_cache: self.tls_session_cache as usize,
            },
            mqtt: MqttSettings {
                upstream: self.mqtt_upstream,
                connect_timeout: self.mqtt_connect_timeout,
                credential_cache_ttl: self.credential_cache_ttl,
                credential_cache_size: self.credential_cache_size as usize,
                deny_publish: self.mqtt_deny_publish,
                client_ids: self.mqtt_client_ids,
            },
            metrics: self.metrics == "on",
            rate_limits: RateLimitConfig {
                per_user: self.rate_limit_per_user.0,
                per_ip: self.rate_limit_per_ip.0,
                keys: self.rate_limit_keys as usize,
            },
            pacing: PacingConfig {
                base: self.retry_after_base,
                max: self.retry_after_max,
                pending_scale: self.pacing_pending_scale as f64,
                rate_scale: self.pacing_rate_scale as f64,
            },
            shed: ShedConfig {
                max_inflight: self.max_inflight as usize,
                max_connections: self.max_connections as usize,
            },
            max_connections_per_ip: self.max_connections_per_ip,
            workers: self.workers.map(usize::from),
            store: self.store.into_config(),
        }
    }
}

/// fleetgate's admin API: unlock the registry, grant or deny pending
/// requests, manage users, log in.
#[derive(Parser, Debug)]
#[command(name = "fleetgate-admin", version)]
pub struct AdminFlags {
    #[command(flatten)]
    pub store: StoreFlags,

    /// Address the admin API listens on (`host:port`; port 0 picks one).
    #[arg(long, env = "FLEETGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
}

impl AdminFlags {
    /// The typed configuration these flags describe.
    pub fn into_config(self) -> AdminConfig {
        AdminConfig {
            admin_listen: self.admin_listen,
            store: self.store.into_config(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `args` with every environment variable ignored, so the test
    /// sees the flag defaults whatever the process environment holds.
    fn parse_without_env<T: CommandFactory + FromArgMatches>(args: &[&str]) -> T {
        let matches = T::command()
            .mut_args(|a| a.env(None))
            .try_get_matches_from(args)
            .unwrap();
        T::from_arg_matches(&matches).unwrap()
    }

    /// The documented `Default` of each config is exactly what the flags
    /// give when none is set: one set of defaults, not two that drift.
    #[test]
    fn flag_defaults_are_the_config_defaults() {
        let gateway: GatewayFlags = parse_without_env(&["fleetgate"]);
        assert_eq!(gateway.into_config(), GatewayConfig::default());
        let admin: AdminFlags = parse_without_env(&["fleetgate-admin"]);
        assert_eq!(admin.into_config(), AdminConfig::default());
    }

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn store_names() {
        assert_eq!(parse_store("memory").unwrap(), StoreKind::Memory);
        assert_eq!(
            parse_store("redis://127.0.0.1:6379").unwrap(),
            StoreKind::Redis("redis://127.0.0.1:6379".into())
        );
        assert!(parse_store("postgres://x").is_err());
    }
}
