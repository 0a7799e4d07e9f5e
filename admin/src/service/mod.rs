//! [`AdminService`]: every admin route as one async function from a complete
//! request to a response, with no socket in sight.
//!
//! [`crate::server`] feeds it requests read from its own listener, and the
//! proxy's all-in-one process feeds it the `/api/*` requests it does not serve
//! itself. Both read the body first (at most [`MAX_BODY`] bytes) and call
//! [`AdminService::handle`]; tests call it directly.
//!
//! # Layout
//! - this file: [`AdminService`], its builders, the [`AdminService::handle`]
//!   entry point, and the hashing slots that bound blocking work.
//! - `routes`: the route table (method and path to handler), the admin
//!   token check, and the handlers.
//! - `audit`: which requests are recorded in the audit log and as what,
//!   and the query of `GET /api/audit`.
//! - `views`: the JSON bodies read and written, and the listing parameters.
//! - `error`: [`ApiError`], its status codes, short names and error body.
//! - `tests`: the whole API driven through [`AdminService::handle`]
//!   (`tests/bulk.rs`: the bulk decision routes).
//!
//! # Request flow
//! 0. `/`, `/ui` and `/ui/...` are the embedded web UI ([`crate::ui`]),
//!    answered without a token.
//! 1. Route the path (`Route::parse`); an unknown path is 404 and a known
//!    path with the wrong method is 405 with an `Allow` header.
//! 2. Every route except `/healthz`, `/readyz`, `/metrics`,
//!    `GET /api/certificates/ca`, `GET /api/openapi.json` and `POST /api/login` needs an admin token
//!    (`AdminService::authorize`): a valid JWT whose user still exists and,
//!    as stored now, has the `admin` role.
//! 3. Run the route against the [`Registry`].
//!
//! Failures are an [`ApiError`], classified where they happen (client
//! mistake, missing credentials, store outage, bug), which fixes the status
//! code and the `{"status": "<short>", "error": "<message>"}` body.
//!
//! # Blocking work
//! Password verification at login (argon2id: 20.7 ms for an admin's hash,
//! 0.35 ms for a device's, measured in `docs/SECURITY.md`) and the hash made
//! at grant run on tokio's blocking pool, never on a runtime worker. At most
//! [`max_hashing`] of them run at once: an admin-scheme argon2 run holds
//! 19 MiB, so unbounded concurrent logins would be a cheap way to exhaust
//! memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use tokio::sync::Semaphore;

use fleetgate_registry::store::Store;
use fleetgate_registry::Registry;

use crate::throttle::{LoginLimits, LoginThrottle};

mod audit;
mod error;
mod routes;
mod views;

pub use audit::DEFAULT_AUDIT_PAGE;
pub use error::ApiError;
pub use routes::OPENAPI_DOCUMENT;
pub use views::DEFAULT_PAGE;

/// Largest request body any admin route accepts; larger is 413 `too_large`.
/// The bulk decision routes take up to [`MAX_BULK_BODY`].
pub const MAX_BODY: usize = 64 * 1024;

/// Largest body of `POST /api/client-registry/requests/grant` and `.../deny`:
/// room for [`fleetgate_registry::registry::BULK_MAX`] usernames of up to
/// 64 bytes each, quoted and comma-separated (10,000 × 67 B ≈ 655 KiB),
/// plus overrides.
pub const MAX_BULK_BODY: usize = 1024 * 1024;

/// The body cap of the route at `path`: [`MAX_BULK_BODY`] for the two bulk
/// decision routes, [`MAX_BODY`] for every other.
pub fn max_body(path: &str) -> usize {
    match path {
        "/api/client-registry/requests/grant" | "/api/client-registry/requests/deny" => {
            MAX_BULK_BODY
        }
        _ => MAX_BODY,
    }
}

/// How many password hashes or verifications may run at once: one per core,
/// at most 8 (each admin-scheme run holds 19 MiB).
pub fn max_hashing() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The admin API over one registry. Cheap to share: wrap it in an `Arc`.
pub struct AdminService<S> {
    registry: Arc<Registry<S>>,
    /// Serves `GET /metrics` (unauthenticated, like `/healthz`) when set.
    metrics: Option<MetricsRenderer>,
    /// Caps concurrent password hashing for grants (see the module docs).
    /// Owned permits travel into the blocking task, so a request that is
    /// dropped mid-hash still holds its slot until the hash really ends.
    hashing_slots: Arc<Semaphore>,
    /// The login queue: its own hashing slots, so a login flood never
    /// delays a grant, and at most [`MAX_LOGINS_WAITING`] logins waiting
    /// for one (more are 503 at once). A login whose request is dropped
    /// (the forwarding proxy timed out) leaves the queue without hashing.
    login_slots: Arc<Semaphore>,
    logins_waiting: AtomicUsize,
    throttle: LoginThrottle,
    /// Peers whose `X-Forwarded-For` names the real client (the proxies
    /// forwarding with `--admin-upstream`); anyone else's is ignored.
    trusted_forwarders: Vec<IpAddr>,
}

/// Logins that may wait for a hashing slot at once.
pub const MAX_LOGINS_WAITING: usize = 64;

impl<S> std::fmt::Debug for AdminService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Store> AdminService<S> {
    pub fn new(registry: Arc<Registry<S>>) -> Self {
        AdminService {
            registry,
            metrics: None,
            hashing_slots: Arc::new(Semaphore::new(max_hashing())),
            login_slots: Arc::new(Semaphore::new(max_hashing())),
            logins_waiting: AtomicUsize::new(0),
            throttle: LoginThrottle::new(LoginLimits::default()),
            trusted_forwarders: vec![
                IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        }
    }

    /// Replaces the login failure budgets.
    pub fn with_login_limits(mut self, limits: LoginLimits) -> Self {
        self.throttle = LoginThrottle::new(limits);
        self
    }

    /// Replaces the peers whose `X-Forwarded-For` is believed (default:
    /// loopback, where `fleetgate --admin-upstream` proxies usually run).
    pub fn with_trusted_forwarders(mut self, peers: Vec<IpAddr>) -> Self {
        self.trusted_forwarders = peers;
        self
    }

    /// The client's address: the socket peer, or the last
    /// `X-Forwarded-For` entry when the peer is a trusted forwarder.
    fn client_addr(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<SocketAddr> {
        let peer = peer?;
        if !self.trusted_forwarders.contains(&peer.ip()) {
            return Some(peer);
        }
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        Some(forwarded.map_or(peer, |ip| SocketAddr::new(ip, 0)))
    }

    /// Serves `GET /metrics` from `render`.
    pub fn with_metrics(mut self, render: MetricsRenderer) -> Self {
        self.metrics = Some(render);
        self
    }

    pub fn registry(&self) -> &Arc<Registry<S>> {
        &self.registry
    }

    /// Handles one complete request (body already read, at most
    /// [`MAX_BODY`] bytes). `peer` is the client address if known.
    pub async fn handle(&self, req: Request<Bytes>, peer: Option<SocketAddr>) -> Response<Bytes> {
        if crate::ui::is_ui_path(req.uri().path()) {
            return crate::ui::respond(req.method(), req.uri().path());
        }
        let peer = self.client_addr(req.headers(), peer);
        let mut response = match self.dispatch(&req, peer).await {
            Ok(response) => response,
            Err(e) => {
                if let ApiError::Internal(detail) = &e {
                    tracing::error!(path = req.uri().path(), detail, "admin request failed");
                }
                e.into_response()
            }
        };
        // Only the path is logged: the query may carry `apiToken`.
        tracing::debug!(
            method = %req.method(),
            path = req.uri().path(),
            status = response.status().as_u16(),
            peer = ?peer,
            "admin request"
        );
        // JSON is never to be sniffed into something a browser would run.
        response.headers_mut().insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        response
    }

    /// A slot of the login queue, or `LoginsBusy` when it is full.
    async fn login_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        /// Leaves the waiting count however the wait ends (also when the
        /// request is dropped while waiting).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.logins_waiting.fetch_add(1, Ordering::AcqRel) >= MAX_LOGINS_WAITING {
            self.logins_waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::LoginsBusy);
        }
        let _waiting = Waiting(&self.logins_waiting);
        Arc::clone(&self.login_slots)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("login slots closed".into()))
    }

    async fn hashing_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.hashing_slots)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("hashing slots closed".into()))
    }
}

#[cfg(test)]
mod tests;
