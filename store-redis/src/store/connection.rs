//! The [`RedisStore`] handle: its configuration, its connections, and the
//! bound every method runs under.
//!
//! Connecting validates the [`RedisConfig`], opens the shared multiplexed
//! connection, the grants connection (group commits), and with `WAIT` a
//! third one for single durable writes, and loads the Lua scripts, all
//! within `connect_timeout`. Every other part of the store (`register`,
//! `lock`, `trait_impl`, …) reaches Redis through [`RedisStore::conn`],
//! [`RedisStore::durable_conn`] or [`RedisStore::grants_conn`], inside
//! [`RedisStore::bounded`] (or [`RedisStore::bounded_within`], for a
//! group whose deadline grows with its size).

use std::future::Future;
use std::time::Duration;

use fleetgate_registry::decision::Windows;
use fleetgate_registry::store::StoreError;

use super::failure::redis_error;
use super::ms;
use crate::config::{ConfigError, RedisConfig, Topology, WaitReplicas};
use crate::conn::Conn;
use crate::keys::KeySpace;
use crate::scripts::Scripts;

/// Why [`RedisStore::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL, prefix or timeouts are wrong: a usage error.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis could not be reached, or refused to load the scripts (the
    /// `StoreError` says whether that was an outage or a bug).
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// The Redis backend of [`Store`](fleetgate_registry::store::Store). Cheap
/// to share: clone it, or put it in an `Arc`; all clones use the same
/// connection(s).
#[derive(Clone)]
pub struct RedisStore {
    /// The multiplexed connection (single) or per-node connections
    /// (cluster); cloned per call, which only clones a handle.
    pub(super) conn: Conn,
    /// A second connection for writes followed by `WAIT`, present only when
    /// `WAIT` is configured. Redis blocks the connection a `WAIT` was sent
    /// on until the replicas answer (up to the WAIT timeout when one is
    /// down), and `WAIT` must follow its write on the same connection; on
    /// the shared connection that would stall every poll behind each grant.
    pub(super) durable: Option<Conn>,
    /// The connection group commits ([`Store::commit_grants`]) run on,
    /// always its own: a bulk grant sends pipelines of up to
    /// [`super::grants::GROUP_MAX`] scripts, and on the shared connection
    /// every poll's cache miss queued behind them (measured: 503s on polls
    /// during a 100,000-device bulk grant, docs/BENCHMARKS.md). Its
    /// response timeout is the longest group deadline
    /// ([`super::grants::group_deadline`]), not `op_timeout`.
    ///
    /// [`Store::commit_grants`]: fleetgate_registry::store::Store::commit_grants
    pub(super) grants: Conn,
    /// Script sources and SHA1s; `NOSCRIPT` reloads them.
    pub(super) scripts: std::sync::Arc<Scripts>,
    pub(super) keys: KeySpace,
    pub(super) topology: Topology,
    /// `events_channel`, built once.
    pub(super) channel: String,
    pub(super) windows: Windows,
    /// Window lengths in ms, as every script wants them.
    pub(super) windows_ms: [u64; 3],
    pub(super) max_pending: usize,
    pub(super) op_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) wait: Option<WaitReplicas>,
    /// The CA of a `rediss://` server (also for the event subscriber).
    pub(super) tls_ca: Option<Vec<u8>>,
    /// The webhook outbox, when webhooks are on (`store::outbox`).
    pub(super) outbox: Option<std::sync::Arc<super::outbox::OutboxState>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.topology)
            .field("prefix", &self.keys.prefix())
            .field("max_pending", &self.max_pending)
            .field("op_timeout", &self.op_timeout)
            .field("wait", &self.wait)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port` or
    /// `redis+cluster://host:port,host:port`) with every other setting at
    /// its default (1 s operation timeout, no `WAIT`).
    pub async fn connect(
        url: &str,
        windows: Windows,
        max_pending: usize,
        prefix: &str,
    ) -> Result<RedisStore, ConnectError> {
        Self::connect_with(RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            windows,
            max_pending,
            ..RedisConfig::default()
        })
        .await
    }

    /// Connects and loads the scripts, within `config.connect_timeout`.
    pub async fn connect_with(config: RedisConfig) -> Result<RedisStore, ConnectError> {
        let (topology, keys) = config.validate()?;
        let scripts = std::sync::Arc::new(Scripts::new());
        let connect = async {
            let mut conn = Conn::connect(
                &topology,
                config.op_timeout,
                config.connect_timeout,
                config.tls_ca.as_deref(),
            )
            .await
            .map_err(|e| redis_error("connect", e))?;
            conn.load_scripts(&scripts)
                .await
                .map_err(|e| redis_error("SCRIPT LOAD", e))?;
            let grants = Conn::connect(
                &topology,
                super::grants::group_deadline(config.op_timeout, super::grants::GROUP_MAX),
                config.connect_timeout.min(config.op_timeout),
                config.tls_ca.as_deref(),
            )
            .await
            .map_err(|e| redis_error("connect", e))?;
            let durable = match config.wait_replicas {
                Some(_) => Some(
                    Conn::connect(
                        &topology,
                        config.op_timeout,
                        config.connect_timeout,
                        config.tls_ca.as_deref(),
                    )
                    .await
                    .map_err(|e| redis_error("connect", e))?,
                ),
                None => None,
            };
            Ok::<_, StoreError>((conn, grants, durable))
        };
        let (conn, grants, durable) = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "redis at {} did not answer within {:?}",
                    crate::config::redact_url(&config.url),
                    config.connect_timeout
                ))
            })??;
        let w = config.windows;
        Ok(RedisStore {
            conn,
            durable,
            grants,
            scripts,
            channel: keys.events_channel(),
            keys,
            topology,
            windows: w,
            windows_ms: [ms(w.pending_ttl), ms(w.collect_window), ms(w.deny_window)],
            max_pending: config.max_pending,
            op_timeout: config.op_timeout,
            connect_timeout: config.connect_timeout,
            wait: config.wait_replicas,
            tls_ca: config.tls_ca,
            outbox: None,
        })
    }

    /// The key names of this store's namespace.
    pub fn key_space(&self) -> &KeySpace {
        &self.keys
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The pub/sub channel every transition publishes on
    /// (`<prefix>:events`).
    pub fn events_channel(&self) -> &str {
        &self.channel
    }

    /// Runs `fut`, or answers `Unavailable` once `op_timeout` has passed.
    /// The connection layer has its own response timeout, but a method can
    /// make several calls, and a reconnect in progress is awaited, not
    /// failed; this is the bound the caller can rely on.
    pub(super) async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded_within(what, self.op_timeout, fut).await
    }

    /// [`RedisStore::bounded`] with another deadline: for a pipeline whose
    /// work grows with its length (a group of grants), so that every write
    /// still has a deadline but a long group is not failed for being long.
    pub(super) async fn bounded_within<T>(
        &self,
        what: &'static str,
        deadline: Duration,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(deadline, fut).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(operation = what, timeout = ?deadline, "redis call timed out");
                Err(StoreError::Unavailable(format!(
                    "redis did not answer {what} within {deadline:?}"
                )))
            }
        }
    }

    /// The shared connection (a handle; cheap).
    pub(super) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The connection for writes that are followed by `WAIT`.
    pub(super) fn durable_conn(&self) -> Conn {
        self.durable.as_ref().unwrap_or(&self.conn).clone()
    }

    /// The connection of group commits (a handle; cheap).
    pub(super) fn grants_conn(&self) -> Conn {
        self.grants.clone()
    }

    /// Fails on a `WAIT` that came back with fewer replicas than required:
    /// the write is applied on the master but not acknowledged as durable.
    pub(super) fn check_wait(&self, what: &str, acked: Option<i64>) -> Result<(), StoreError> {
        match (self.wait, acked) {
            (Some(w), Some(n)) if n < w.replicas as i64 => {
                tracing::warn!(
                    operation = what,
                    acked = n,
                    wanted = w.replicas,
                    "WAIT timed out"
                );
                Err(StoreError::Unavailable(format!(
                    "{what} reached {n} of {} replicas within {:?}",
                    w.replicas, w.timeout
                )))
            }
            _ => Ok(()),
        }
    }
}
