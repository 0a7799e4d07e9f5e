//! The configuration shared by both binaries: where state lives and the
//! registry's limits. Every flag also reads `FLEETGATE_<FLAG>` from the
//! environment; `--help` explains each.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleetgate_registry::decision::Windows;
use fleetgate_registry::RegistryConfig;

/// Flags that choose and tune the registry store.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
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
}

/// Which backend `--store` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded store.
    Memory,
    /// Redis or Redis Cluster, by URL.
    Redis(String),
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
fn parse_role(s: &str) -> Result<String, String> {
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

impl StoreArgs {
    /// The registry settings these flags describe.
    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig {
            windows: Windows {
                pending_ttl: self.pending_ttl,
                collect_window: self.collect_window,
                deny_window: self.deny_window,
            },
            max_pending: self.max_pending as usize,
            requestable_roles: self.requestable_roles.clone(),
            ..RegistryConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
