//! Opening the registry the way both binaries do at start: create the data
//! dir, load or create the server secret, open the store, make sure the
//! `admin` user exists, and start the expiry sweeper.

use std::sync::Arc;
use std::time::Duration;

use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::{Registry, UnixMillis};

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
    #[error("cannot create the admin user: {0}")]
    Admin(#[from] fleetgate_registry::store::StoreError),
}

/// The registry on the embedded store.
pub type EmbeddedRegistry = Registry<EmbeddedStore>;

/// Opens the registry described by `args`. A generated admin password is
/// printed once to standard output (never to the log).
pub async fn open_registry(args: &StoreArgs) -> Result<Arc<EmbeddedRegistry>, BootstrapError> {
    match args.store {
        StoreKind::Memory => {}
    }
    let dir = &args.data_dir;
    let data_dir_err = |source| BootstrapError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(data_dir_err)?;
    let secrets = Secrets::load_or_create(dir).map_err(data_dir_err)?;
    let config = args.registry_config();
    let now = UnixMillis::now();
    let store = EmbeddedStore::open(dir, config.windows, config.max_pending, now)?;
    let registry = Arc::new(Registry::new(store, secrets, config));
    if let Some(generated) = registry
        .ensure_admin(args.admin_password.as_deref(), now)
        .await?
    {
        println!(
            "fleetgate: created user `admin` with generated password: {generated}\n\
             fleetgate: this is shown only once; only its hash is stored. \
             Set --admin-password / FLEETGATE_ADMIN_PASSWORD to choose one."
        );
    }
    tracing::info!(data_dir = %dir.display(), "registry opened on the embedded store");
    Ok(registry)
}

/// Starts the embedded store's background sweeper of expired records.
pub fn start_sweeper(registry: &Arc<EmbeddedRegistry>) {
    // The store lives as long as the registry; the sweeper holds only a weak
    // reference through this Arc clone's lifetime.
    let store: Arc<EmbeddedRegistry> = registry.clone();
    std::thread::Builder::new()
        .name("fleetgate-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            store.store().sweep(UnixMillis::now());
        })
        .expect("spawning the sweeper thread");
}
