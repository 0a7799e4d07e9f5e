//! [`AdminService`]: every admin route as one async function from a complete
//! request to a response, with no socket in sight.
//!
//! [`crate::server`] feeds it requests read from its own listener, and the
//! proxy's all-in-one process feeds it the `/api/*` requests it does not serve
//! itself. Both read the body first (at most [`MAX_BODY`] bytes) and call
//! [`AdminService::handle`]; tests call it directly.
//!
//! # Request flow
//! 1. Route the path (`Route::parse`); an unknown path is 404 and a known
//!    path with the wrong method is 405 with an `Allow` header.
//! 2. Every route except `/healthz`, `/readyz` and `POST /api/login` needs an
//!    admin token (`AdminService::authorize`): a valid JWT whose user still
//!    exists and, as stored now, has the `admin` role.
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
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use fleetgate_registry::metrics::LOGINS_TOTAL;
use fleetgate_registry::model::{Permission, UserRecord};
use fleetgate_registry::password::Scheme;
use fleetgate_registry::registry::{
    DenyError, GrantError, GrantOverrides, RegistryStatus, UnlockError, ADMIN_USERNAME,
};
use fleetgate_registry::store::{
    ForgetResult, ListQuery, ListState, Page, Store, StoreError, MAX_PAGE,
};
use fleetgate_registry::{Registry, UnixMillis};

use crate::query::{percent_decode, DecodeError, Plus, QueryParams};
use crate::throttle::{LoginLimits, LoginThrottle};

/// Largest request body any admin route accepts; larger is 413 `too_large`.
pub const MAX_BODY: usize = 64 * 1024;

/// Page size of a listing when the request gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// Seconds a client is asked to wait (`Retry-After`) after a store outage.
const RETRY_AFTER_SECS: &str = "5";

/// How many password hashes or verifications may run at once: one per core,
/// at most 8 (each admin-scheme run holds 19 MiB).
pub fn max_hashing() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// Why a request failed, classified by who caused it. Each variant fixes
/// the status code and the `status` short name of the JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// 401: no credentials, bad credentials, or a token that no longer
    /// stands for a user.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid token of a user without the `admin` role.
    #[error("this API needs a user with the `admin` role")]
    Forbidden,
    /// 404: no such route or no such record.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method; `allow` lists the
    /// methods it has (the `Allow` header).
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: Method, allow: &'static str },
    /// 408: the client did not send its whole body in time.
    #[error("the request body was not received in time")]
    BodyTimeout,
    /// 409: the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 429 with `Retry-After`: too many failed logins from this source
    /// (see [`crate::throttle`]).
    #[error("too many failed logins; try again in {} s", retry_secs(.0))]
    TooManyLogins(Duration),
    /// 503 with `Retry-After`: the login queue is full (a login flood);
    /// grants have their own hashing slots and are not delayed.
    #[error("too many logins at once; retry shortly")]
    LoginsBusy,
    /// 413: the body is larger than [`MAX_BODY`].
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// 503 with `Retry-After`: the store failed; retrying later may work.
    /// (A corrupt store reply is [`ApiError::Internal`] instead: see the
    /// `From<StoreError>` below.)
    #[error(transparent)]
    Unavailable(StoreError),
    /// 500: a bug or a broken invariant. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyLogins(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::LoginsBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `status` field of the error body. 405 and 408 are client
    /// mistakes with no short name of their own, so they say `invalid`.
    pub fn short(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) | ApiError::MethodNotAllowed { .. } | ApiError::BodyTimeout => {
                "invalid"
            }
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyLogins(_) => "rate_limited",
            ApiError::LoginsBusy => "unavailable",
            ApiError::TooLarge => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON error response, with `Allow` on a 405 and `Retry-After` on
    /// a 503.
    pub fn into_response(self) -> Response<Bytes> {
        let message = match &self {
            // The detail may name internals; it is logged by the caller.
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                status: self.short(),
                error: message,
            },
        );
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            ApiError::TooManyLogins(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(&wait)));
            }
            ApiError::LoginsBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A wait in whole seconds, rounded up, at least 1 (for `Retry-After`).
fn retry_secs(wait: &Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<StoreError> for ApiError {
    /// An outage or a full store is 503; a corrupt reply is a bug or
    /// tampering, 500, never retried into success.
    fn from(e: StoreError) -> Self {
        if e.is_internal() {
            ApiError::Internal(e.to_string())
        } else {
            ApiError::Unavailable(e)
        }
    }
}

impl From<UnlockError> for ApiError {
    fn from(e: UnlockError) -> Self {
        match e {
            UnlockError::OutOfRange { .. } => ApiError::Invalid(e.to_string()),
            UnlockError::Store(e) => e.into(),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::Invalid(format!("malformed URL: {e}"))
    }
}

/// The routes, with `{username}` segments already percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    CaCertificate,
    Login,
    RegistryStatus,
    Unlock,
    Lock,
    Requests,
    Request(String),
    Grant(String),
    Deny(String),
    Users,
    User(String),
}

impl Route {
    /// The route of `path`, `None` for an unknown path. Trailing slashes
    /// and empty segments are not normalised: `/api/users/` is unknown.
    fn parse(path: &str) -> Result<Option<Route>, ApiError> {
        match path {
            "/healthz" => return Ok(Some(Route::Healthz)),
            "/readyz" => return Ok(Some(Route::Readyz)),
            "/metrics" => return Ok(Some(Route::Metrics)),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/api/") else {
            return Ok(None);
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let user =
            |s: &str| -> Result<String, ApiError> { Ok(percent_decode(s, Plus::IsLiteral)?) };
        let route = match segments.as_slice() {
            ["login"] => Route::Login,
            ["certificates", "ca"] => Route::CaCertificate,
            ["client-registry"] => Route::RegistryStatus,
            ["client-registry", "unlock"] => Route::Unlock,
            ["client-registry", "lock"] => Route::Lock,
            ["client-registry", "requests"] => Route::Requests,
            ["client-registry", "requests", u] if !u.is_empty() => Route::Request(user(u)?),
            ["client-registry", "requests", u, "grant"] if !u.is_empty() => Route::Grant(user(u)?),
            ["client-registry", "requests", u, "deny"] if !u.is_empty() => Route::Deny(user(u)?),
            ["users"] => Route::Users,
            ["users", u] if !u.is_empty() => Route::User(user(u)?),
            _ => return Ok(None),
        };
        Ok(Some(route))
    }

    /// The methods this route answers, as the `Allow` header lists them.
    fn allow(&self) -> &'static str {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::CaCertificate
            | Route::RegistryStatus
            | Route::Requests
            | Route::Users => "GET",
            Route::Request(_) => "GET, DELETE",
            Route::Login | Route::Unlock | Route::Lock | Route::Grant(_) | Route::Deny(_) => "POST",
            Route::User(_) => "GET, DELETE",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    fn needs_admin(&self) -> bool {
        !matches!(
            self,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::CaCertificate | Route::Login
        )
    }
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
        let peer = self.client_addr(req.headers(), peer);
        let response = match self.dispatch(&req, peer).await {
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
        response
    }

    async fn dispatch(
        &self,
        req: &Request<Bytes>,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Bytes>, ApiError> {
        if req.body().len() > MAX_BODY {
            return Err(ApiError::TooLarge);
        }
        let path = req.uri().path();
        let route = Route::parse(path)?
            .ok_or_else(|| ApiError::NotFound(format!("no route for {path}")))?;
        if !route.allows(req.method()) {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().clone(),
                allow: route.allow(),
            });
        }
        let query = QueryParams::parse(req.uri().query().unwrap_or(""))?;
        if !route.needs_admin() {
            return self.run(route, req, &query, peer).await;
        }
        let admin = self.authorize(req.headers(), &query).await?;
        let result = self.run(route, req, &query, peer).await;
        // An audit line for every change an admin asks for, kept or refused.
        if req.method() != Method::GET {
            let status = match &result {
                Ok(response) => response.status(),
                Err(e) => e.status(),
            };
            tracing::info!(
                by = %admin.username,
                method = %req.method(),
                path,
                status = status.as_u16(),
                "admin action"
            );
        }
        result
    }

    /// Runs an authorized route.
    async fn run(
        &self,
        route: Route,
        req: &Request<Bytes>,
        query: &QueryParams,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Bytes>, ApiError> {
        let now = UnixMillis::now();
        let body = req.body();
        let registry = &self.registry;
        match route {
            Route::Healthz => Ok(json_response(StatusCode::OK, &Health { status: "ok" })),
            // The CA certificate is public: devices fetch it to verify
            // what they are issued.
            Route::CaCertificate => match self.registry.ca() {
                Some(ca) => {
                    let mut response = Response::new(Bytes::from(ca.cert_pem().to_owned()));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-pem-file"),
                    );
                    Ok(response)
                }
                None => Err(ApiError::NotFound("no client CA is configured".into())),
            },
            Route::Metrics => match &self.metrics {
                Some(render) => {
                    let mut response = Response::new(Bytes::from(render()));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok(response)
                }
                None => Err(ApiError::NotFound("metrics are not enabled".into())),
            },
            Route::Readyz => {
                registry.store().ping().await?;
                Ok(json_response(StatusCode::OK, &Health { status: "ready" }))
            }
            Route::Login => self.login(body, peer, now).await,
            Route::RegistryStatus => {
                let status = registry.status(now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Unlock => {
                let unlock: UnlockBody = parse_optional_json(body)?;
                let duration = unlock.duration_ms.map(Duration::from_millis);
                let status = registry.unlock(duration, now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Lock => {
                let status = registry.lock(now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Requests => {
                let state = match query.get("state").unwrap_or("pending") {
                    "pending" => ListState::Pending,
                    "granted" => ListState::Granted,
                    other => {
                        return Err(ApiError::Invalid(format!(
                            "state must be `pending` or `granted`, not `{other}`"
                        )))
                    }
                };
                let page = registry
                    .store()
                    .list_requests(&list_query(query, state)?, now)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PageView::from_page(page, |r| r.view()),
                ))
            }
            Route::Request(username) if req.method() == Method::DELETE => {
                match registry.store().forget_request(&username, now).await? {
                    ForgetResult::Forgotten => {
                        tracing::info!(username = %username, "request forgotten");
                        Ok(no_content())
                    }
                    ForgetResult::NotFound => Err(no_request(&username)),
                    ForgetResult::Granted => Err(ApiError::Conflict(
                        "the request was granted; delete the user instead".into(),
                    )),
                }
            }
            Route::Request(username) => {
                let record = registry
                    .store()
                    .get_request(&username, now)
                    .await?
                    .ok_or_else(|| no_request(&username))?;
                Ok(json_response(StatusCode::OK, &record.view()))
            }
            Route::Grant(username) => self.grant(username, body, now).await,
            Route::Deny(username) => {
                let decision: DecisionBody = parse_optional_json(body)?;
                match registry
                    .deny(&username, decision.pairing_id.as_deref(), now)
                    .await
                {
                    Ok(()) => Ok(no_content()),
                    Err(DenyError::NotFound) => Err(no_request(&username)),
                    Err(e @ (DenyError::AlreadyGranted | DenyError::PairingMismatch)) => {
                        Err(ApiError::Conflict(e.to_string()))
                    }
                    Err(DenyError::Store(e)) => Err(e.into()),
                }
            }
            Route::Users => {
                // `state` is ignored by `list_users`.
                let page = registry
                    .store()
                    .list_users(&list_query(query, ListState::Pending)?)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PageView::from_page(page, UserRecord::view),
                ))
            }
            Route::User(username) if req.method() == Method::DELETE => {
                // Keep it simple and never lock everyone out: the built-in
                // admin cannot be deleted. (Other admin-role users can,
                // and `ensure_admin` recreates `admin` at every start.)
                if username == ADMIN_USERNAME {
                    return Err(ApiError::Conflict(format!(
                        "the built-in `{ADMIN_USERNAME}` user cannot be deleted"
                    )));
                }
                if registry.store().delete_user(&username).await? {
                    Ok(no_content())
                } else {
                    Err(no_user(&username))
                }
            }
            Route::User(username) => {
                let user = registry
                    .store()
                    .get_user(&username)
                    .await?
                    .ok_or_else(|| no_user(&username))?;
                Ok(json_response(StatusCode::OK, &user.view()))
            }
        }
    }

    /// Checks that the request carries the token of a current admin and
    /// returns that admin.
    ///
    /// The roles are read from the stored user, not from the token's claims,
    /// so removing a role or deleting a user takes effect at once. A token
    /// issued before its user was (re)created is refused too, so a deleted
    /// user's token does not come back to life if the name is registered
    /// again.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        query: &QueryParams,
    ) -> Result<UserRecord, ApiError> {
        let token = match bearer_token(headers)? {
            Some(token) => token,
            // For compatibility with clients that cannot set headers.
            None => {
                query
                    .get("apiToken")
                    .filter(|t| !t.is_empty())
                    .ok_or(ApiError::Unauthorized(
                        "missing token: send `Authorization: Bearer <token>` from POST /api/login",
                    ))?
            }
        };
        let claims = self
            .registry
            .tokens()
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        let user = self
            .registry
            .store()
            .get_user(&claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized("the token's user no longer exists"))?;
        if claims.gen != user.created_at.0 {
            return Err(ApiError::Unauthorized(
                "the token was issued to an earlier user of this name",
            ));
        }
        if !user.is_admin() {
            return Err(ApiError::Forbidden);
        }
        Ok(user)
    }

    /// `POST /api/login`: any user with a password can log in.
    async fn login(
        &self,
        body: &Bytes,
        peer: Option<SocketAddr>,
        now: UnixMillis,
    ) -> Result<Response<Bytes>, ApiError> {
        let login: LoginBody = parse_json(body)?;
        // Range-checked before any hashing, so a bad request costs nothing.
        let hours = fleetgate_registry::token::lifetime_hours(login.expire_time_in_hours)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let source = peer.map(|p| p.ip());
        if let Some(wait) = self
            .throttle
            .check(&login.username, source, std::time::Instant::now())
        {
            metrics::counter!(LOGINS_TOTAL, "result" => "throttled").increment(1);
            return Err(ApiError::TooManyLogins(wait));
        }
        let user = self.registry.store().get_user(&login.username).await?;
        let stored_hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let verified = self.verify_password(login.password, stored_hash).await?;
        if verified {
            self.throttle.succeeded(&login.username, source);
        } else {
            self.throttle
                .failed(&login.username, source, std::time::Instant::now());
        }
        match user {
            Some(user) if verified => {
                let token = self.registry.tokens().issue_for(&user, now, hours);
                tracing::info!(username = %user.username, peer = ?peer, hours, "login");
                metrics::counter!(LOGINS_TOTAL, "result" => "success").increment(1);
                let mut response = json_response(StatusCode::OK, &LoginView { token });
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(response)
            }
            // The username is not logged: people type passwords into it.
            _ => {
                tracing::info!(peer = ?peer, "login refused");
                metrics::counter!(LOGINS_TOTAL, "result" => "failure").increment(1);
                Err(ApiError::Unauthorized("unknown user or wrong password"))
            }
        }
    }

    /// Checks `password` against `stored` on the blocking pool. Without a
    /// stored hash (unknown user, or a certificate-only user) it spends the
    /// same argon2 work on a throwaway hash, so the answer's timing does not
    /// tell which usernames exist.
    async fn verify_password(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, ApiError> {
        let permit = self.login_permit().await?;
        let registry = Arc::clone(&self.registry);
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hashing = registry.hashing();
            match stored {
                Some(phc) => hashing.verify(password.as_bytes(), &phc),
                None => hashing
                    .hash(password.as_bytes(), Scheme::Admin)
                    .map(|_| false),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check task failed: {e}")))?;
        outcome.or_else(|e| {
            // A corrupt stored credential must not let anyone in, nor tell
            // the client more than "no".
            tracing::error!(error = %e, "stored credential cannot be checked");
            Ok(false)
        })
    }

    /// `POST /api/client-registry/requests/{username}/grant`.
    async fn grant(
        &self,
        username: String,
        body: &Bytes,
        now: UnixMillis,
    ) -> Result<Response<Bytes>, ApiError> {
        let grant: GrantBody = parse_optional_json(body)?;
        let overrides = GrantOverrides {
            roles: grant.roles,
            permissions: grant.permissions,
            pairing_id: grant.pairing_id,
        };
        // `Registry::grant` hashes the device secret (0.35 ms of CPU), so it
        // runs on the blocking pool. `Handle::block_on` from a blocking-pool
        // thread is sound on both runtime flavours (it is not inside an
        // async context, so it cannot panic or stall a worker). The embedded
        // store never needs the IO or timer drivers; a network store's
        // would be driven by the runtime's own thread(s), which this request
        // leaves free while it awaits the blocking task.
        let permit = self.hashing_permit().await?;
        let registry = Arc::clone(&self.registry);
        let runtime = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            runtime.block_on(registry.grant(&username, overrides, now))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("grant task failed: {e}")))?;
        match outcome {
            Ok(record) => Ok(json_response(StatusCode::OK, &record.view())),
            Err(GrantError::NotFound) => Err(ApiError::NotFound(GrantError::NotFound.to_string())),
            Err(GrantError::Conflict(why)) => Err(ApiError::Conflict(why.to_owned())),
            Err(GrantError::Invalid(why)) => Err(ApiError::Invalid(why)),
            Err(GrantError::Store(e)) => Err(e.into()),
            Err(GrantError::Internal(why)) => Err(ApiError::Internal(why)),
        }
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

/// The bearer token of an `Authorization` header, `None` without the header.
/// A header with another scheme is refused rather than ignored, so a client
/// sending Basic credentials learns why it is not let in.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    match token {
        Some(token) => Ok(Some(token)),
        None => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

/// The `limit`, `cursor` and `prefix` of a listing. An empty `cursor` or
/// `prefix` is the same as none.
fn list_query(query: &QueryParams, state: ListState) -> Result<ListQuery, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(format!("limit must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let non_empty = |name| query.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
    Ok(ListQuery {
        state,
        limit,
        cursor: non_empty("cursor"),
        prefix: non_empty("prefix"),
    })
}

fn no_request(username: &str) -> ApiError {
    ApiError::NotFound(format!("no request for `{username}`"))
}

fn no_user(username: &str) -> ApiError {
    ApiError::NotFound(format!("no user `{username}`"))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// Like [`parse_json`], but an empty (or all-whitespace) body means "all
/// defaults", for routes whose body is optional.
fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"status":"internal","error":"internal error"}"#),
            )
        }
    };
    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn no_content() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

// JSON shapes, in and out.

#[derive(Serialize)]
struct ErrorBody {
    status: &'static str,
    error: String,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// `POST /api/login`. Unknown fields are ignored, as clients of the older
/// API send extra ones.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginBody {
    username: String,
    password: String,
    /// Signed, so that `-1` gets the range message rather than a type error.
    #[serde(default)]
    expire_time_in_hours: Option<i64>,
}

#[derive(Serialize)]
struct LoginView {
    token: String,
}

/// `POST /api/client-registry/unlock`. Unknown fields are refused: a typo
/// must not silently unlock for the default duration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UnlockBody {
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// `POST .../grant`. Unknown fields are refused: a typo (`role`) must not
/// silently grant the requested roles instead.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    permissions: Option<Vec<Permission>>,
    /// The pairing id the admin compared with the device (409 if the
    /// request now has another).
    #[serde(default, rename = "pairingId")]
    pairing_id: Option<String>,
}

/// `POST .../deny`: optionally the pairing id the admin saw.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default, rename = "pairingId")]
    pairing_id: Option<String>,
}

/// The registry's lock state and pending count.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    locked: bool,
    unlocked_until: Option<String>,
    pending: usize,
}

impl From<RegistryStatus> for StatusView {
    fn from(status: RegistryStatus) -> Self {
        StatusView {
            locked: status.unlocked_until.is_none(),
            unlocked_until: status.unlocked_until.map(UnixMillis::to_rfc3339),
            pending: status.pending,
        }
    }
}

/// One page of a listing: pass `nextCursor` back as `cursor` for the next.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageView<V> {
    items: Vec<V>,
    next_cursor: Option<String>,
}

impl<V> PageView<V> {
    fn from_page<T>(page: Page<T>, view: impl Fn(&T) -> V) -> Self {
        PageView {
            items: page.items.iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests;
