//! How to reach Redis and how the store behaves: the `--store` URL, the key
//! prefix, the registry's windows and cap, timeouts and replication waits.
//!
//! One typed struct with a documented [`Default`]; [`RedisConfig::validate`]
//! turns a bad URL or prefix into a [`ConfigError`] before any connection is
//! tried, so a binary can exit with a usage error.

use std::time::Duration;

use fleetgate_registry::decision::Windows;

use crate::keys::{InvalidPrefix, KeySpace};

/// Everything [`crate::RedisStore::connect_with`] needs.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` (or `rediss://` for TLS) for one server, or
    /// `redis+cluster://host:port,host:port,...` for a cluster (any subset of
    /// the nodes; the rest are discovered).
    pub url: String,
    /// Namespace of every key (`fleetgate` by default). Several stores can
    /// share one Redis under different prefixes; tests use one per test.
    pub prefix: String,
    pub windows: Windows,
    /// `--max-pending`.
    pub max_pending: usize,
    /// The longest any store method may take, including reconnection and
    /// retries; past it the method returns `StoreError::Unavailable`.
    /// Default 1 s.
    pub op_timeout: Duration,
    /// How long `connect` may take to reach Redis and load the scripts.
    /// Default 2 s.
    pub connect_timeout: Duration,
    /// After a grant, `put_user` and `delete_user`, wait until this many
    /// replicas have the write (`WAIT`). Default: off.
    pub wait_replicas: Option<WaitReplicas>,
    /// For `rediss://`: the PEM certificate of the CA that signed the Redis
    /// server's certificate (`--redis-ca-cert`). `None`: the system's
    /// roots.
    pub tls_ca: Option<Vec<u8>>,
}

/// `WAIT numreplicas timeout` after every durable write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitReplicas {
    /// Replicas that must acknowledge the write.
    pub replicas: usize,
    /// How long Redis waits for them; fewer acknowledgements by then make
    /// the call return `Unavailable` (the write stays applied on the master,
    /// so the caller's retry finds it, e.g. as `AlreadyGranted`).
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "fleetgate".into(),
            windows: Windows::default(),
            max_pending: 1_000_000,
            op_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            wait_replicas: None,
            tls_ca: None,
        }
    }
}

/// A redis-rs client for one node URL: with `tls_ca`, a `rediss://` URL's
/// server certificate must chain to that CA (otherwise to the system's
/// roots). redis-rs's rustls client needs a process-wide crypto provider;
/// when the process has none yet, ring is installed (the workspace also
/// links aws-lc-rs through goose, so rustls cannot pick one by itself).
pub fn client(url: &str, tls_ca: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    if url.starts_with("rediss://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: tls_ca.map(<[u8]>::to_vec),
            },
        )
    } else {
        redis::Client::open(url)
    }
}

/// `url` with any user and password replaced by `***`, for logs and
/// errors: a Redis password must never appear in either.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --store URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    #[error("op_timeout must be between 1 ms and 60 s")]
    Timeout,
}

/// Where the data lives, parsed from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server: its `redis://` URL.
    Single(String),
    /// Seed nodes of a cluster, each as a `redis://host:port` URL.
    Cluster(Vec<String>),
}

impl Topology {
    /// Parses `redis://…` or `redis+cluster://a:p,b:p`.
    pub fn parse(url: &str) -> Result<Topology, ConfigError> {
        let bad = |reason| ConfigError::Url {
            url: redact_url(url),
            reason,
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(bad("a cluster URL names at least one host:port"));
            }
            for n in &nodes {
                redis::parse_redis_url(n).ok_or_else(|| bad("a node is not host:port"))?;
            }
            Ok(Topology::Cluster(nodes))
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            redis::parse_redis_url(url).ok_or_else(|| bad("not a redis:// URL"))?;
            Ok(Topology::Single(url.to_owned()))
        } else if url.starts_with("rediss+cluster://") {
            Err(bad(
                "TLS to a Redis Cluster is not supported yet; use rediss:// for one server",
            ))
        } else {
            Err(bad("expected redis://, rediss:// or redis+cluster://"))
        }
    }

    /// The node URLs, for a pub/sub connection to any one of them.
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Topology::Single(u) => vec![u.clone()],
            Topology::Cluster(n) => n.clone(),
        }
    }
}

impl RedisConfig {
    /// Checks the URL, the prefix and the timeouts without connecting.
    pub fn validate(&self) -> Result<(Topology, KeySpace), ConfigError> {
        let topology = Topology::parse(&self.url)?;
        let keys = KeySpace::new(&self.prefix)?;
        if self.op_timeout.is_zero() || self.op_timeout > Duration::from_secs(60) {
            return Err(ConfigError::Timeout);
        }
        Ok((topology, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_errors() {
        assert_eq!(redact_url("redis://:pw@h:6379"), "redis://***@h:6379");
        assert_eq!(
            redact_url("redis://user:pw@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let e = Topology::parse("redis://:hunter2@h:notaport").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:7000").unwrap(),
            Topology::Single("redis://127.0.0.1:7000".into())
        );
        assert_eq!(
            Topology::parse("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001").unwrap(),
            Topology::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        for bad in [
            "",
            "http://x",
            "redis+cluster://",
            "redis+cluster://,",
            "127.0.0.1:6379",
        ] {
            assert!(Topology::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validate_checks_prefix_and_timeout() {
        let ok = RedisConfig::default();
        assert!(ok.validate().is_ok());
        let bad_prefix = RedisConfig {
            prefix: "a{b}".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(bad_prefix.validate(), Err(ConfigError::Prefix(_))));
        let zero = RedisConfig {
            op_timeout: Duration::ZERO,
            ..RedisConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err(), ConfigError::Timeout);
    }
}
