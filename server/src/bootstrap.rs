//! Opening the registry the way both binaries do at start: the store named
//! by `--store`, the server secret, the client CA, the `admin` user, and the
//! background sweeper of expired records (a [`Sweeper`] that `main` stops
//! cleanly in its drain).
//!
//! - `memory`: the data dir is created, `secret.key` is loaded or created
//!   there, and the embedded store replays its journal.
//! - `redis://…`, `redis+cluster://…`: the secret lives in Redis (created
//!   once with `SET NX`), so every instance on that Redis computes the same
//!   fingerprints and accepts the same tokens. The store is wrapped in a
//!   `TokioBridge` so monoio workers can call it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_registry::audit::AuditFile;
use fleetgate_registry::ca::CertificateAuthority;
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::{Store, StoreError};
use fleetgate_registry::{Registry, UnixMillis};
use fleetgate_store_redis::{
    CachedStore, PollCache, RedisConfig, RedisStore, TokioBridge, WaitReplicas,
};

use crate::config::{StoreConfig, StoreKind};

/// Start-up failed; the binaries print this and exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] fleetgate_registry::embedded::journal::JournalError),
    #[error("cannot reach the store: {0}")]
    Connect(#[from] fleetgate_store_redis::ConnectError),
    #[error("cannot read the shared secret or create the admin user: {0}")]
    Store(#[from] StoreError),
    #[error("client CA: {0}")]
    Ca(#[from] fleetgate_registry::ca::CaError),
    #[error(transparent)]
    Admin(#[from] fleetgate_registry::registry::AdminSetupError),
}

/// The registry on the embedded store.
pub type EmbeddedRegistry = Registry<EmbeddedStore>;
/// The registry on Redis: callable from any thread, with the poll cache.
pub type RedisRegistry = Registry<CachedStore<TokioBridge<RedisStore>>>;

/// The registry `--store` asked for.
pub enum Opened {
    Embedded(Arc<EmbeddedRegistry>),
    Redis(Arc<RedisRegistry>),
}

/// The background sweeper of expired records; [`Sweeper::stop`] ends it
/// and waits for a sweep in progress to finish.
pub struct Sweeper {
    running: Running,
}

enum Running {
    /// The embedded store sweeps on its own thread (a sweep is CPU work on
    /// the shards, not I/O); dropping the sender wakes and ends it.
    Thread {
        stop: std::sync::mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    },
    /// Redis sweeps are I/O, on the tokio runtime.
    Task {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Sweeper {
    /// Stops the sweeper and waits for it.
    pub async fn stop(self) {
        match self.running {
            Running::Thread { stop, thread } => {
                drop(stop);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Running::Task { stop, task } => {
                let _ = stop.send(());
                let _ = task.await;
            }
        }
    }
}

/// How often expired records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Opens the registry described by `args`. A generated admin password is
/// printed once to standard output (never to the log). Must run on the
/// tokio runtime that will also serve the store.
pub async fn open(
    args: &StoreConfig,
    audit_file: Option<AuditFile>,
) -> Result<(Opened, Sweeper), BootstrapError> {
    let config = args.registry_config();
    let now = UnixMillis::now();
    match &args.store {
        StoreKind::Memory => {
            let dir = &args.data_dir;
            let data_dir_err = |source| BootstrapError::DataDir {
                path: dir.display().to_string(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(data_dir_err)?;
            let secrets = Secrets::load_or_create(dir).map_err(data_dir_err)?;
            let mut store = EmbeddedStore::open(dir, config.windows, config.max_pending, now)?;
            let webhooks = crate::webhooks::Wiring::new(&args.webhooks);
            if let Some(w) = &webhooks {
                store = store.with_webhook_outbox(w.outbox_max);
            }
            let ca = match ca_from_flags(args)? {
                Some(ca) => ca,
                None => CertificateAuthority::load_or_generate(
                    &dir.join("ca-cert.pem"),
                    &dir.join("ca-key.pem"),
                    args.cert_validity_days,
                )?,
            };
            let mut registry = with_audit(
                Registry::new(store, secrets, config).with_ca(Arc::new(ca)),
                args,
                audit_file,
            );
            if let Some(w) = &webhooks {
                registry = w.attach(registry);
            }
            let registry = Arc::new(registry);
            ensure_admin(&registry, args).await?;
            tracing::info!(data_dir = %dir.display(), "registry opened on the embedded store");
            if let Some(w) = webhooks {
                w.start(registry.clone());
            }
            let sweeper =
                start_embedded_sweeper(&registry).map_err(|source| BootstrapError::DataDir {
                    path: "the sweeper thread".into(),
                    source,
                })?;
            Ok((Opened::Embedded(registry), sweeper))
        }
        StoreKind::Redis(url) => {
            let tls_ca = match &args.redis_ca_cert {
                Some(path) => {
                    Some(
                        std::fs::read(path).map_err(|source| BootstrapError::DataDir {
                            path: path.display().to_string(),
                            source,
                        })?,
                    )
                }
                None => None,
            };
            let redis = RedisStore::connect_with(RedisConfig {
                url: url.clone(),
                prefix: args.redis_prefix.clone(),
                windows: config.windows,
                max_pending: config.max_pending,
                op_timeout: args.redis_timeout,
                wait_replicas: (args.redis_wait_replicas > 0).then(|| WaitReplicas {
                    replicas: usize::from(args.redis_wait_replicas),
                    timeout: args.redis_timeout,
                }),
                tls_ca,
                ..RedisConfig::default()
            })
            .await?;
            // Every instance's scripts append the events of its decisions;
            // the instances' deliverers share them (store::outbox).
            let webhooks = crate::webhooks::Wiring::new(&args.webhooks);
            let redis = match &webhooks {
                Some(w) => redis.with_webhook_outbox_claiming(w.outbox_max, w.claim_idle),
                None => redis,
            };
            let secrets = Secrets::derive(&redis.load_or_create_secret().await?);
            let ca = match ca_from_flags(args)? {
                Some(ca) => ca,
                None => {
                    // Shared through Redis: the first instance's CA wins.
                    let fresh = CertificateAuthority::generate(args.cert_validity_days)?;
                    let candidate = format!("{}\n{}", fresh.cert_pem(), fresh.key_pem());
                    let shared = redis
                        .load_or_create_shared("client-ca", candidate.as_bytes())
                        .await?;
                    let text = String::from_utf8_lossy(&shared).into_owned();
                    CertificateAuthority::from_combined_pem(&text, args.cert_validity_days)?
                }
            };
            let redis = Arc::new(redis);
            let sweeper = start_redis_sweeper(redis.clone(), args.audit.retention);
            let cache = PollCache::new(args.poll_cache_ttl, config.max_pending);
            fleetgate_store_redis::cache::spawn_event_listener(
                cache.clone(),
                redis.subscribe_events(),
            );
            fleetgate_store_redis::cache::spawn_refresher(
                cache.clone(),
                redis.clone(),
                fleetgate_store_redis::cache::REVALIDATE_EVERY,
            );
            let bridge = TokioBridge::new(redis, tokio::runtime::Handle::current());
            let store = CachedStore::new(Arc::new(bridge), cache);
            let mut registry = with_audit(
                Registry::new(store, secrets, config).with_ca(Arc::new(ca)),
                args,
                audit_file,
            );
            if let Some(w) = &webhooks {
                registry = w.attach(registry);
            }
            let registry = Arc::new(registry);
            ensure_admin(&registry, args).await?;
            if let Some(w) = webhooks {
                w.start(registry.clone());
            }
            tracing::info!(
                store = %fleetgate_store_redis::config::redact_url(url),
                prefix = %args.redis_prefix,
                "registry opened on Redis"
            );
            Ok((Opened::Redis(registry), sweeper))
        }
    }
}

/// The registry with the audit cap and retention of `args`, and the
/// `--audit-log` file opened by `main`.
fn with_audit<S: Store>(
    registry: Registry<S>,
    args: &StoreConfig,
    audit_file: Option<AuditFile>,
) -> Registry<S> {
    let registry = registry.with_audit(args.audit);
    match audit_file {
        Some(file) => registry.with_audit_file(file),
        None => registry,
    }
}

/// The CA given by `--ca-cert` and `--ca-key`, if both are set.
fn ca_from_flags(
    args: &StoreConfig,
) -> Result<Option<CertificateAuthority>, fleetgate_registry::ca::CaError> {
    let Some((cert, key)) = &args.ca else {
        return Ok(None);
    };
    CertificateAuthority::from_pem(&read_pem(cert)?, &read_pem(key)?, args.cert_validity_days)
        .map(Some)
}

fn read_pem(path: &std::path::Path) -> Result<String, fleetgate_registry::ca::CaError> {
    std::fs::read_to_string(path).map_err(|e| fleetgate_registry::ca::CaError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Creates the built-in admin if missing (printing a generated password
/// once) or sets the configured password.
async fn ensure_admin<S: fleetgate_registry::store::Store>(
    registry: &Registry<S>,
    args: &StoreConfig,
) -> Result<(), fleetgate_registry::registry::AdminSetupError> {
    if let Some(generated) = registry
        .ensure_admin(args.admin_password.as_deref(), UnixMillis::now())
        .await?
    {
        println!(
            "fleetgate: created user `admin` with generated password: {generated}\n\
             fleetgate: this is shown only once; only its hash is stored. \
             Set --admin-password / FLEETGATE_ADMIN_PASSWORD to choose one."
        );
    }
    Ok(())
}

/// Starts the embedded store's background sweeper of expired records.
fn start_embedded_sweeper(registry: &Arc<EmbeddedRegistry>) -> std::io::Result<Sweeper> {
    let registry = registry.clone();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("fleetgate-sweeper".into())
        .spawn(move || {
            // Nothing is ever sent: a timeout means "sweep", a disconnect
            // (the `Sweeper` stopped) means "stop".
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(SWEEP_EVERY)
            {
                let now = UnixMillis::now();
                registry.store().sweep(now);
                // The embedded store answers without suspending.
                let mut prune = std::pin::pin!(registry.prune_audit(now));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if let std::task::Poll::Ready(Err(e)) = prune.as_mut().poll(&mut cx) {
                    tracing::warn!(error = %e, "audit retention sweep failed; will retry");
                }
            }
        })?;
    Ok(Sweeper {
        running: Running::Thread { stop, thread },
    })
}

/// Every 5 s, sweeps expired requests out of Redis' indexes (frees their
/// pending slots), repairs lock copies, and drops audit records older than
/// `retention`.
fn start_redis_sweeper(store: Arc<RedisStore>, retention: Duration) -> Sweeper {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut stopped => return,
            }
            if let Err(e) = store.sweep(UnixMillis::now(), 1000).await {
                tracing::debug!(error = %e, "redis sweep failed; will retry");
            }
            let now = UnixMillis::now().0;
            let before = UnixMillis(
                now.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)),
            );
            if let Err(e) = store.prune_audit(before).await {
                tracing::debug!(error = %e, "audit retention sweep failed; will retry");
            }
        }
    });
    Sweeper {
        running: Running::Task { stop, task },
    }
}
