//! Opening the registry the way both binaries do at start: the store named
//! by `--store`, the server secret, the `admin` user, and the background
//! sweeper of expired records.
//!
//! - `memory`: the data dir is created, `secret.key` is loaded or created
//!   there, and the embedded store replays its journal.
//! - `redis://…`, `redis+cluster://…`: the secret lives in Redis (created
//!   once with `SET NX`), so every instance on that Redis computes the same
//!   fingerprints and accepts the same tokens. The store is wrapped in a
//!   `TokioBridge` so monoio workers can call it.

use std::sync::Arc;
use std::time::Duration;

use fleetgate_registry::ca::CertificateAuthority;
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::StoreError;
use fleetgate_registry::{Registry, UnixMillis};
use fleetgate_store_redis::{
    CachedStore, PollCache, RedisConfig, RedisStore, TokioBridge, WaitReplicas,
};

use crate::config::{StoreArgs, StoreKind};

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

/// Opens the registry described by `args`. A generated admin password is
/// printed once to standard output (never to the log). Must run on the
/// tokio runtime that will also serve the store.
pub async fn open(args: &StoreArgs) -> Result<Opened, BootstrapError> {
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
            let store = EmbeddedStore::open(dir, config.windows, config.max_pending, now)?;
            let ca = match ca_from_flags(args)? {
                Some(ca) => ca,
                None => CertificateAuthority::load_or_generate(
                    &dir.join("ca-cert.pem"),
                    &dir.join("ca-key.pem"),
                    args.cert_validity_days,
                )?,
            };
            let registry = Arc::new(Registry::new(store, secrets, config).with_ca(Arc::new(ca)));
            ensure_admin(&registry, args).await?;
            tracing::info!(data_dir = %dir.display(), "registry opened on the embedded store");
            start_embedded_sweeper(&registry);
            Ok(Opened::Embedded(registry))
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
            start_redis_sweeper(redis.clone());
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
            let registry = Arc::new(Registry::new(store, secrets, config).with_ca(Arc::new(ca)));
            ensure_admin(&registry, args).await?;
            tracing::info!(
                store = %fleetgate_store_redis::config::redact_url(url),
                prefix = %args.redis_prefix,
                "registry opened on Redis"
            );
            Ok(Opened::Redis(registry))
        }
    }
}

/// The CA given by `--ca-cert` and `--ca-key`, if both are set.
fn ca_from_flags(
    args: &StoreArgs,
) -> Result<Option<CertificateAuthority>, fleetgate_registry::ca::CaError> {
    let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) else {
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
    args: &StoreArgs,
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
fn start_embedded_sweeper(registry: &Arc<EmbeddedRegistry>) {
    let registry = registry.clone();
    std::thread::Builder::new()
        .name("fleetgate-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            registry.store().sweep(UnixMillis::now());
        })
        .expect("spawning the sweeper thread");
}

/// Every 5 s, sweeps expired requests out of Redis' indexes (frees their
/// pending slots) and repairs lock copies.
fn start_redis_sweeper(store: Arc<RedisStore>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            if let Err(e) = store.sweep(UnixMillis::now(), 1000).await {
                tracing::debug!(error = %e, "redis sweep failed; will retry");
            }
        }
    });
}
