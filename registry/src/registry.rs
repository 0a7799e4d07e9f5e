//! `Registry`: the operations the proxy and the admin service call, built
//! from the pure pieces (validation, fingerprint, decision) and a [`Store`].
//!
//! The proxy calls [`Registry::register`] once per poll: parse, validate,
//! fingerprint, seal, then one store transition. No password hashing happens
//! there. The admin service calls the rest; [`Registry::grant`] is where a
//! pending secret is unsealed and hashed into the user's stored credential.
//! Roles are defined with [`Registry::put_role`] and [`Registry::delete_role`],
//! given to users with [`Registry::update_user_access`], and resolved into
//! what a user may do by [`Registry::effective_permissions`]. Bulk
//! decisions ([`Registry::grant_many`], [`Registry::deny_many`]) live in the
//! `bulk` submodule and share the single grant's per-item code
//! ([`Registry::prepare_grant`]). Auto-approval rules live in the `rules`
//! submodule: [`Registry::put_rule`] and its siblings for the admin, and the
//! decision of a newly created request by the first matching rule, called
//! from [`Registry::register_parsed`] only when the store created one (the
//! only extra poll-path work: none on a re-poll).

use std::net::SocketAddr;
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};

use crate::clock::UnixMillis;
use crate::decision::{Decision, LockState, Windows};
use crate::fingerprint::{self, CredentialKind, Fingerprint, PairingId};
use crate::model::{Permission, RequestRecord, Role, Transport, UserRecord, ADMIN_ROLE};
use crate::password::{PasswordHashing, Scheme};
use crate::request::{Credential, RegisterRequest, RequestError};
use crate::secrets::Secrets;
use crate::store::{DenyResult, GrantCommit, GrantResult, Poll, SealOnCreate, Store, StoreError};
use crate::token::Tokens;

mod audit;
mod bulk;
mod rules;
mod webhooks;
pub use bulk::{
    BulkError, BulkItem, BulkOutcome, BulkResult, BulkTargets, Selector, BULK_MAX, CHUNK,
};
pub use rules::RuleError;

/// The username of the built-in administrator.
pub const ADMIN_USERNAME: &str = "admin";

/// Registry-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    pub windows: Windows,
    /// Cap on pending requests (`--max-pending`).
    pub max_pending: usize,
    /// Unlock duration when the admin does not give one.
    pub default_unlock: Duration,
    /// Longest unlock an admin may ask for.
    pub max_unlock: Duration,
    /// The roles a device may ask for (`--requestable-roles`). `None`: any
    /// role but `admin`, which no device may ever ask for.
    pub requestable_roles: Option<Vec<String>>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            windows: Windows::default(),
            max_pending: 1_000_000,
            default_unlock: Duration::from_secs(300),
            max_unlock: Duration::from_secs(24 * 3600),
            requestable_roles: None,
        }
    }
}

/// Where a poll came from, beyond its body.
#[derive(Clone, Copy, Debug, Default)]
pub struct PollContext<'a> {
    pub transport: Option<Transport>,
    pub source_addr: Option<SocketAddr>,
    pub client_id: Option<&'a str>,
}

/// The answer to one register poll, before a transport turns it into bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 400: not a register request.
    Invalid(String),
    /// 422: a rule was broken.
    Policy { rule: &'static str, message: String },
    /// 409: the username is taken by a user or a different request.
    Conflict,
    /// 403: this request was denied recently.
    Denied,
    /// 423: locked. `pairing_id` is set when the request stays pending.
    Locked { pairing_id: Option<PairingId> },
    /// 202: pending; `created` when this poll created it.
    Pending {
        pairing_id: PairingId,
        created: bool,
    },
    /// 201: granted; the device can log in. For a CSR request, the issued
    /// certificate (PEM).
    Granted {
        pairing_id: PairingId,
        certificate: Option<String>,
    },
    /// 503: the store is unavailable or full; 500 when the error is a bug
    /// or a corrupt reply ([`StoreError::is_internal`]).
    Unavailable(StoreError),
}

/// Why an unlock did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// 400: the duration is zero or longer than `--max-unlock`.
    #[error("durationMs must be between 1 and {max_ms}")]
    OutOfRange { max_ms: u128 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a certificate login did not authenticate anyone.
#[derive(Debug, thiserror::Error)]
pub enum CertificateLoginError {
    /// 401: the certificate is not (or no longer) a user's.
    #[error("client certificate refused: {}", .0.reason())]
    Refused(CertificateRejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the built-in admin could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AdminSetupError {
    /// The password could not be hashed (argon2 refused its parameters).
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a role could not be defined or deleted.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// 404: no role of that name.
    #[error("no role `{0}`")]
    NotFound(String),
    /// 422: the name or the permissions break a rule (`role_name`,
    /// `permissions_count`, `resource_length`, `defined_roles_count`,
    /// `admin_role`); `rule` names it.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    /// 409: the built-in `admin` role cannot be deleted.
    #[error("the built-in `{ADMIN_ROLE}` role cannot be deleted")]
    Builtin,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `PATCH /api/users/{username}` replaces: each field given replaces
/// the user's; a field left out stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessUpdate {
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<Permission>>,
}

/// Why a user's roles or permissions were not changed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// 400: the update names nothing to change.
    #[error("nothing to change: give `roles`, `permissions` or both")]
    Empty,
    /// 404: no user of that name.
    #[error("no user `{0}`")]
    NotFound(String),
    /// 422: a rule is broken (`roles_count`, `role_length`,
    /// `permissions_count`, `resource_length`, `unknown_roles`,
    /// `admin_role`); `rule` names it.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RequestError> for RoleError {
    fn from(e: RequestError) -> Self {
        let (rule, message) = policy_parts(e);
        RoleError::Policy { rule, message }
    }
}

impl From<RequestError> for AccessError {
    fn from(e: RequestError) -> Self {
        let (rule, message) = policy_parts(e);
        AccessError::Policy { rule, message }
    }
}

/// The answer to a poll whose store decision needs no rule.
fn outcome_of(
    decision: Decision,
    record: Option<RequestRecord>,
    pairing_id: PairingId,
) -> RegisterOutcome {
    match decision {
        Decision::Collect => RegisterOutcome::Granted {
            pairing_id,
            certificate: record.and_then(|r| r.certificate),
        },
        Decision::StillPending => RegisterOutcome::Pending {
            pairing_id,
            created: false,
        },
        Decision::Create => RegisterOutcome::Pending {
            pairing_id,
            created: true,
        },
        Decision::PendingWhileLocked => RegisterOutcome::Locked {
            pairing_id: Some(pairing_id),
        },
        Decision::Locked => RegisterOutcome::Locked { pairing_id: None },
        Decision::Conflict => RegisterOutcome::Conflict,
        Decision::Denied => RegisterOutcome::Denied,
    }
}

/// The rule and message of a validation error. The checks used here
/// (`check_role_name`, `check_access_limits`) only ever return `Policy`.
fn policy_parts(e: RequestError) -> (&'static str, String) {
    match e {
        RequestError::Policy { rule, message } => (rule, message),
        RequestError::Invalid(message) => ("invalid", message),
    }
}

/// Why a verified client certificate does not authenticate anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateRejection {
    /// The certificate has no subject CN.
    NoCommonName,
    /// No user has the CN's name (never granted, or deleted).
    UnknownUser,
    /// The user exists but holds another certificate, or none.
    NotTheUsersCertificate,
    /// The user's certificate has expired.
    Expired,
}

impl CertificateRejection {
    pub fn reason(self) -> &'static str {
        match self {
            CertificateRejection::NoCommonName => "the certificate has no subject CN",
            CertificateRejection::UnknownUser => "no such user",
            CertificateRejection::NotTheUsersCertificate => {
                "not the certificate issued to this user"
            }
            CertificateRejection::Expired => "the certificate has expired",
        }
    }
}

impl RegisterOutcome {
    /// The short outcome name used in bodies and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            RegisterOutcome::Invalid(_) => "invalid",
            RegisterOutcome::Policy { .. } => "policy",
            RegisterOutcome::Conflict => "conflict",
            RegisterOutcome::Denied => "denied",
            RegisterOutcome::Locked { .. } => "locked",
            RegisterOutcome::Pending { .. } => "pending",
            RegisterOutcome::Granted { .. } => "granted",
            RegisterOutcome::Unavailable(_) => "unavailable",
        }
    }
}

/// The registry state as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryStatus {
    pub unlocked_until: Option<UnixMillis>,
    pub pending: usize,
}

/// Overrides an admin may give when granting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantOverrides {
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<Permission>>,
    /// The pairing id the admin compared with the device. When set, a
    /// request with another pairing id (a squatter who replaced the one the
    /// admin saw) is not granted: `Conflict`, and nothing changes.
    pub pairing_id: Option<String>,
}

/// Why a grant did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("no pending request for this username")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Invalid(String),
    /// 422: the grant names a role that is not defined (`unknown_roles`).
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a list of role names cannot be given to a user.
#[derive(Debug)]
enum RoleCheckError {
    /// Roles that are not defined, as "`a`, `b`".
    Unknown(String),
    Store(StoreError),
}

impl From<RoleCheckError> for GrantError {
    fn from(e: RoleCheckError) -> Self {
        match e {
            RoleCheckError::Unknown(names) => GrantError::Policy {
                rule: "unknown_roles",
                message: format!("no such role: {names}"),
            },
            RoleCheckError::Store(e) => GrantError::Store(e),
        }
    }
}

impl From<RoleCheckError> for AccessError {
    fn from(e: RoleCheckError) -> Self {
        match e {
            RoleCheckError::Unknown(names) => AccessError::Policy {
                rule: "unknown_roles",
                message: format!("no such role: {names}"),
            },
            RoleCheckError::Store(e) => AccessError::Store(e),
        }
    }
}

/// Why a deny did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    #[error("no pending request for this username")]
    NotFound,
    #[error("the request was already granted; delete the user instead")]
    AlreadyGranted,
    #[error("the request's pairing id is not the one given; it changed since it was read")]
    PairingMismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store operations that are measured, as `op` label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum StoreOp {
    Register,
    GetUser,
    GetRequest,
    CommitGrant,
    Deny,
    SetLockState,
    LockState,
    PendingCount,
}

impl StoreOp {
    const ALL: [StoreOp; 8] = [
        StoreOp::Register,
        StoreOp::GetUser,
        StoreOp::GetRequest,
        StoreOp::CommitGrant,
        StoreOp::Deny,
        StoreOp::SetLockState,
        StoreOp::LockState,
        StoreOp::PendingCount,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Register => "register",
            StoreOp::GetUser => "get_user",
            StoreOp::GetRequest => "get_request",
            StoreOp::CommitGrant => "commit_grant",
            StoreOp::Deny => "deny",
            StoreOp::SetLockState => "set_lock_state",
            StoreOp::LockState => "lock_state",
            StoreOp::PendingCount => "pending_count",
        }
    }
}

/// Metric handles resolved once, when the registry is built (after the
/// binary installs its recorder), so recording is lock-free.
struct RegistryMetrics {
    /// Per `StoreOp`: (ok, error, latency).
    store: Vec<(metrics::Counter, metrics::Counter, metrics::Histogram)>,
    grants: metrics::Counter,
    denials: metrics::Counter,
}

impl RegistryMetrics {
    fn new() -> Self {
        use crate::metrics as names;
        RegistryMetrics {
            store: StoreOp::ALL
                .iter()
                .map(|op| {
                    let l = op.label();
                    (
                        metrics::counter!(names::STORE_OPERATIONS_TOTAL, "op" => l, "result" => "ok"),
                        metrics::counter!(names::STORE_OPERATIONS_TOTAL, "op" => l, "result" => "error"),
                        metrics::histogram!(names::STORE_OPERATION_DURATION_SECONDS, "op" => l),
                    )
                })
                .collect(),
            grants: metrics::counter!(names::GRANTS_TOTAL),
            denials: metrics::counter!(names::DENIALS_TOTAL),
        }
    }
}

impl std::fmt::Debug for RegistryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryMetrics(..)")
    }
}

/// The registry: a store plus the server's keys and settings.
#[derive(Debug)]
pub struct Registry<S> {
    store: S,
    secrets: Secrets,
    hashing: PasswordHashing,
    tokens: Tokens,
    config: RegistryConfig,
    metrics: RegistryMetrics,
    /// Signs the certificates of CSR registrations (`None`: CSR requests
    /// cannot be granted).
    ca: Option<std::sync::Arc<crate::ca::CertificateAuthority>>,
    /// Held while a bulk grant's chunk hashes, so that bulk calls hash one
    /// chunk at a time (each on [`Registry::hash_threads`] threads).
    bulk_hashing: std::sync::Mutex<()>,
    /// The auto-approval rules, compiled, at the store's last
    /// `rules_version` (see `rules`).
    rules_cache: rules::RulesCache,
    /// Where `request.pending` webhook events go (`None`: no webhooks).
    pending_events: Option<crate::webhook::PendingEvents>,
    /// The audit cap and retention (`registry::audit`).
    audit: crate::audit::AuditConfig,
    /// The `--audit-log` file, when configured.
    audit_file: Option<crate::audit::AuditFile>,
}

impl<S: Store> Registry<S> {
    pub fn new(store: S, secrets: Secrets, config: RegistryConfig) -> Self {
        Registry {
            hashing: PasswordHashing::new(secrets.password_pepper),
            tokens: Tokens::new(&secrets.jwt_key),
            store,
            secrets,
            config,
            metrics: RegistryMetrics::new(),
            ca: None,
            bulk_hashing: std::sync::Mutex::new(()),
            rules_cache: rules::RulesCache::default(),
            pending_events: None,
            audit: crate::audit::AuditConfig::default(),
            audit_file: None,
        }
    }

    /// Sets the certificate authority that signs CSR registrations.
    pub fn with_ca(mut self, ca: std::sync::Arc<crate::ca::CertificateAuthority>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// The certificate authority, if configured.
    pub fn ca(&self) -> Option<&std::sync::Arc<crate::ca::CertificateAuthority>> {
        self.ca.as_ref()
    }

    /// Runs one store operation, recording its result and latency.
    pub async fn timed<T>(
        &self,
        op: StoreOp,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = std::time::Instant::now();
        let result = f.await;
        let (ok, err, latency) = &self.metrics.store[op as usize];
        latency.record(start.elapsed().as_secs_f64());
        match &result {
            Ok(_) => ok.increment(1),
            Err(_) => err.increment(1),
        }
        result
    }

    /// Looks a user up (measured).
    pub async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.timed(StoreOp::GetUser, self.store.get_user(username))
            .await
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn hashing(&self) -> &PasswordHashing {
        &self.hashing
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Whether a device may ask for `role`: never `admin`, and with
    /// `--requestable-roles`, only a listed role.
    pub fn requestable(&self, role: &str) -> bool {
        role != ADMIN_ROLE
            && self
                .config
                .requestable_roles
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|r| r == role))
    }

    /// The fingerprint of a validated request.
    pub fn fingerprint(&self, req: &RegisterRequest<'_>) -> Fingerprint {
        let (kind, secret) = match &req.credential {
            Credential::Password(p) => (CredentialKind::Password, p.as_bytes()),
            Credential::Csr(c) => (CredentialKind::Csr, c.as_bytes()),
        };
        Fingerprint::compute(
            &self.secrets,
            &req.username,
            kind,
            secret,
            &req.roles,
            &req.permissions,
        )
    }

    /// One register poll from a JSON body: the whole decision order.
    pub async fn register(
        &self,
        body: &[u8],
        ctx: PollContext<'_>,
        now: UnixMillis,
    ) -> RegisterOutcome {
        match RegisterRequest::parse(body) {
            Ok(req) => self.register_parsed(&req, ctx, now).await,
            Err(RequestError::Invalid(m)) => RegisterOutcome::Invalid(m),
            Err(RequestError::Policy { rule, message }) => {
                RegisterOutcome::Policy { rule, message }
            }
        }
    }

    /// Steps 3 to 5 for an already validated request, then, for a request
    /// this poll created (or a device a locked registry would refuse), the
    /// auto-approval rules: a matching rule's grant answers 201 at once.
    pub async fn register_parsed(
        &self,
        req: &RegisterRequest<'_>,
        ctx: PollContext<'_>,
        now: UnixMillis,
    ) -> RegisterOutcome {
        if let Some(role) = req.roles.iter().find(|r| !self.requestable(r)) {
            return RegisterOutcome::Policy {
                rule: "requestable_roles",
                message: format!(
                    "the role `{role}` cannot be requested; requestable roles: {}",
                    self.config
                        .requestable_roles
                        .as_deref()
                        .unwrap_or_default()
                        .join(", ")
                ),
            };
        }
        let fp = self.fingerprint(req);
        let poll = self.poll(req, &ctx, fp, false);
        match self
            .timed(StoreOp::Register, self.store.register(poll, now))
            .await
        {
            // Rules decide a request once, when it is created.
            Ok((Decision::Create, _)) => {
                self.offer_pending(req, &ctx, fp, now);
                self.decide_by_rules(req, &ctx, fp, now).await
            }
            Ok((Decision::Locked, _)) => self.preauthorize(req, &ctx, fp, now).await,
            Ok((decision, record)) => outcome_of(decision, record, fp.pairing_id()),
            Err(e) => {
                if e.is_internal() {
                    tracing::error!(error = %e, "register: corrupt store reply");
                }
                RegisterOutcome::Unavailable(e)
            }
        }
    }

    /// The store's view of one poll of `req`.
    fn poll<'a>(
        &'a self,
        req: &'a RegisterRequest<'_>,
        ctx: &PollContext<'a>,
        fp: Fingerprint,
        preauthorized: bool,
    ) -> Poll<'a> {
        let (kind, secret) = match &req.credential {
            Credential::Password(p) => (CredentialKind::Password, p.as_bytes()),
            Credential::Csr(c) => (CredentialKind::Csr, c.as_bytes()),
        };
        Poll {
            username: &req.username,
            fingerprint: fp,
            transport: ctx.transport.unwrap_or(Transport::Http),
            source_addr: ctx.source_addr,
            client_id: ctx.client_id,
            roles: &req.roles,
            permissions: &req.permissions,
            context: req.context.as_deref(),
            secret: SealOnCreate::Lazy {
                secrets: &self.secrets,
                fingerprint: fp,
                username: &req.username,
                kind,
                secret,
            },
            preauthorized,
        }
    }

    pub async fn status(&self, now: UnixMillis) -> Result<RegistryStatus, StoreError> {
        let lock = self
            .timed(StoreOp::LockState, self.store.lock_state())
            .await?;
        Ok(RegistryStatus {
            unlocked_until: lock.active_until(now),
            pending: self
                .timed(StoreOp::PendingCount, self.store.pending_count())
                .await?,
        })
    }

    /// Reads the registry status and publishes it as the pending and
    /// unlocked gauges. Binaries call this once a second.
    pub async fn publish_gauges(&self, now: UnixMillis) -> Result<RegistryStatus, StoreError> {
        use crate::metrics as names;
        let status = self.status(now).await?;
        metrics::gauge!(names::PENDING_REQUESTS).set(status.pending as f64);
        let left = status
            .unlocked_until
            .map_or(0.0, |u| u.remaining_after(now).as_secs_f64());
        metrics::gauge!(names::REGISTRY_UNLOCKED).set(if left > 0.0 { 1.0 } else { 0.0 });
        metrics::gauge!(names::REGISTRY_UNLOCK_REMAINING_SECONDS).set(left);
        Ok(status)
    }

    /// Unlocks for `duration` (the default when `None`), capped at
    /// `max_unlock`.
    pub async fn unlock(
        &self,
        duration: Option<Duration>,
        now: UnixMillis,
    ) -> Result<RegistryStatus, UnlockError> {
        let d = duration.unwrap_or(self.config.default_unlock);
        if d.is_zero() || d > self.config.max_unlock {
            return Err(UnlockError::OutOfRange {
                max_ms: self.config.max_unlock.as_millis(),
            });
        }
        self.timed(
            StoreOp::SetLockState,
            self.store.set_lock_state(LockState {
                unlocked_until: Some(now.plus(d)),
            }),
        )
        .await?;
        Ok(self.status(now).await?)
    }

    pub async fn lock(&self, now: UnixMillis) -> Result<RegistryStatus, StoreError> {
        self.timed(
            StoreOp::SetLockState,
            self.store.set_lock_state(LockState::default()),
        )
        .await?;
        self.status(now).await
    }

    /// Grants the pending request of `username`: unseals its secret, hashes
    /// it (device scheme), and commits the new user and the grant durably.
    /// Idempotent: granting a granted request returns it unchanged.
    ///
    /// This hashes (about a millisecond of CPU); async callers on a shared
    /// runtime should run it where blocking briefly is acceptable.
    pub async fn grant(
        &self,
        username: &str,
        overrides: GrantOverrides,
        now: UnixMillis,
    ) -> Result<RequestRecord, GrantError> {
        self.grant_audited(username, overrides, None, now)
            .await
            .map(|(record, _)| record)
    }

    /// [`Self::grant`], with the audit record of the decision. When this
    /// grant creates the user, `audit` is stored in the same durable write
    /// where the store can ([`Store::commit_grant_recorded`]: one journal
    /// line and one `fdatasync` on the embedded store) and the answer
    /// says `true`. Otherwise (`false`, an error, or no `audit`) the
    /// caller records it as any other.
    pub async fn grant_audited(
        &self,
        username: &str,
        overrides: GrantOverrides,
        audit: Option<crate::audit::AuditEntry>,
        now: UnixMillis,
    ) -> Result<(RequestRecord, bool), GrantError> {
        validate_grant_overrides(&overrides).map_err(GrantError::Invalid)?;
        let roles = dedup_roles(overrides.roles.clone().unwrap_or_default());
        self.check_roles_defined(&roles).await?;
        let record = self
            .timed(StoreOp::GetRequest, self.store.get_request(username, now))
            .await?
            .ok_or(GrantError::NotFound)?;
        if let Some(expected) = &overrides.pairing_id {
            if *expected != record.pairing_id().to_string() {
                return Err(GrantError::Conflict(
                    "the request's pairing id is not the one given; it changed since it was read",
                ));
            }
        }
        match record.state {
            crate::model::RequestState::Granted { .. } => return Ok((record, false)),
            crate::model::RequestState::Denied { .. } => {
                return Err(GrantError::Conflict("the request was denied"))
            }
            crate::model::RequestState::Pending => {}
        }
        let commit = self.prepare_grant(
            &record,
            roles,
            overrides.permissions.unwrap_or_default(),
            None,
            now,
        )?;
        let (result, recorded) = match audit {
            Some(entry) => {
                self.timed(
                    StoreOp::CommitGrant,
                    self.store
                        .commit_grant_recorded(commit, entry, self.audit.max_records, now),
                )
                .await?
            }
            None => (
                self.timed(StoreOp::CommitGrant, self.store.commit_grant(commit, now))
                    .await?,
                None,
            ),
        };
        let recorded = match recorded {
            Some(record) => {
                self.audit_stored(std::slice::from_ref(&record));
                true
            }
            None => false,
        };
        match result {
            GrantResult::Granted(r) => {
                self.metrics.grants.increment(1);
                tracing::info!(username, pairing_id = %r.pairing_id(), "request granted");
                Ok((r, recorded))
            }
            GrantResult::AlreadyGranted(r) => Ok((r, false)),
            GrantResult::NotFound => Err(GrantError::NotFound),
            GrantResult::Conflict(why) => Err(GrantError::Conflict(why)),
        }
    }

    /// The per-item work of every grant, single or bulk: unseals the
    /// pending request's secret and turns it into the new user's
    /// credential (argon2id, device scheme, for a password; a certificate
    /// signed by the CA for a CSR), and builds the [`GrantCommit`] naming
    /// the fingerprint that was read. The user gets exactly `roles` and
    /// `permissions`: a grant without them creates a user with no access at
    /// all. What the device asked for stays on the request as a hint the
    /// admin can copy (the UI's dialog pre-fills it), never as a grant by
    /// default (docs/DECISIONS.md, "what a grant gives"). `decided_by`
    /// names the rule when a rule grants (`None`: an admin).
    ///
    /// CPU-bound (about 0.35 ms of argon2id), never suspends: callers run it
    /// where blocking briefly is acceptable.
    pub(crate) fn prepare_grant(
        &self,
        record: &RequestRecord,
        roles: Vec<String>,
        permissions: Vec<Permission>,
        decided_by: Option<crate::rule::DecidedBy>,
        now: UnixMillis,
    ) -> Result<GrantCommit, GrantError> {
        let username = record.username.as_str();
        let (kind, secret) = fingerprint::unseal_credential(
            &self.secrets,
            &record.fingerprint,
            username,
            &record.sealed,
        )
        .map_err(|e| GrantError::Internal(e.to_string()))?;
        let (password_hash, issued) = match kind {
            CredentialKind::Password => {
                let hash = self
                    .hashing
                    .hash(&secret, Scheme::Device)
                    .map_err(|e| GrantError::Internal(e.to_string()))?;
                (Some(hash), None)
            }
            CredentialKind::Csr => {
                let ca = self.ca.as_ref().ok_or_else(|| {
                    GrantError::Internal("no certificate authority is configured".into())
                })?;
                let csr = String::from_utf8(secret)
                    .map_err(|_| GrantError::Internal("sealed CSR is not UTF-8".into()))?;
                let issued = ca
                    .issue(&csr, username, now)
                    .map_err(|e| GrantError::Internal(e.to_string()))?;
                (None, Some(issued))
            }
        };
        let user = UserRecord {
            username: username.to_owned(),
            password_hash,
            certificate: issued.as_ref().map(|c| crate::model::CertificateInfo {
                fingerprint: c.fingerprint.clone(),
                not_after: c.not_after,
            }),
            roles,
            permissions,
            created_at: now,
            origin: record.transport.into(),
            decided_by,
        };
        Ok(GrantCommit {
            username: username.to_owned(),
            fingerprint: record.fingerprint,
            user,
            granted_at: now,
            certificate: issued.map(|c| c.pem),
        })
    }

    /// Denies the pending request of `username`. With `pairing_id`, only if
    /// the live request still has it (the admin denies what they saw).
    pub async fn deny(
        &self,
        username: &str,
        pairing_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), DenyError> {
        if let Some(expected) = pairing_id {
            let record = self
                .timed(StoreOp::GetRequest, self.store.get_request(username, now))
                .await?
                .ok_or(DenyError::NotFound)?;
            if record.pairing_id().to_string() != expected {
                return Err(DenyError::PairingMismatch);
            }
        }
        match self
            .timed(StoreOp::Deny, self.store.deny(username, None, now))
            .await?
        {
            DenyResult::Denied => {
                self.metrics.denials.increment(1);
                tracing::info!(username, "request denied");
                Ok(())
            }
            DenyResult::NotFound => Err(DenyError::NotFound),
            DenyResult::AlreadyGranted => Err(DenyError::AlreadyGranted),
        }
    }

    /// Authenticates a client certificate that the TLS layer has already
    /// verified against the client CA (chain, validity, clientAuth): its CN
    /// names the user, and the user must still exist and hold exactly this
    /// certificate, unexpired. A deleted user, a superseded certificate or
    /// an expired one is refused.
    pub async fn authenticate_certificate(
        &self,
        der: &[u8],
        now: UnixMillis,
    ) -> Result<UserRecord, CertificateLoginError> {
        use CertificateRejection as R;
        let refuse = |r| Err(CertificateLoginError::Refused(r));
        let Some(username) = crate::ca::certificate_common_name(der) else {
            return refuse(R::NoCommonName);
        };
        let Some(user) = self.user(&username).await? else {
            return refuse(R::UnknownUser);
        };
        let Some(held) = &user.certificate else {
            return refuse(R::NotTheUsersCertificate);
        };
        if held.fingerprint != crate::ca::fingerprint_der(der) {
            return refuse(R::NotTheUsersCertificate);
        }
        if held.not_after <= now {
            return refuse(R::Expired);
        }
        Ok(user)
    }

    /// Makes sure the built-in `admin` user (and first the built-in `admin`
    /// role, see [`Registry::ensure_admin_role`]) exists. With `password`,
    /// the admin's password is set to it (rehashing only if it changed).
    /// Without, a missing admin gets a generated password, returned so the
    /// caller can print it once; it is stored only as a hash.
    pub async fn ensure_admin(
        &self,
        password: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<String>, AdminSetupError> {
        self.ensure_admin_role().await?;
        let existing = self.store.get_user(ADMIN_USERNAME).await?;
        let (password, generated) = match (password, &existing) {
            (Some(p), Some(user)) => {
                let current = user
                    .password_hash
                    .as_deref()
                    .is_some_and(|h| self.hashing.verify(p.as_bytes(), h).unwrap_or(false));
                if current {
                    return Ok(None);
                }
                tracing::info!("admin password changed by configuration");
                (p.to_owned(), false)
            }
            (Some(p), None) => (p.to_owned(), false),
            (None, Some(_)) => return Ok(None),
            (None, None) => (Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24), true),
        };
        let hash = self
            .hashing
            .hash(password.as_bytes(), Scheme::Admin)
            .map_err(|e| AdminSetupError::Hash(e.to_string()))?;
        let mut roles = existing
            .as_ref()
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        if !roles.iter().any(|r| r == ADMIN_ROLE) {
            roles.push(ADMIN_ROLE.to_owned());
        }
        self.store
            .put_user(UserRecord {
                username: ADMIN_USERNAME.to_owned(),
                password_hash: Some(hash),
                roles,
                permissions: existing.map(|u| u.permissions).unwrap_or_default(),
                created_at: now,
                origin: crate::model::UserOrigin::Bootstrap,
                certificate: None,
                decided_by: None,
            })
            .await?;
        Ok(generated.then_some(password))
    }

    /// Makes sure the built-in `admin` role exists, with
    /// [`crate::model::admin_role_permissions`], in this store. A role an
    /// admin has changed since is left as it is, unless it has no
    /// permissions at all (which the API refuses; only a direct store write
    /// can do it). Returns whether it wrote the role.
    pub async fn ensure_admin_role(&self) -> Result<bool, StoreError> {
        if let Some(role) = self.store.get_role(ADMIN_ROLE).await? {
            if !role.permissions.is_empty() {
                return Ok(false);
            }
            tracing::warn!("the built-in admin role had no permissions; restored");
        }
        self.store
            .put_role(Role {
                name: ADMIN_ROLE.to_owned(),
                permissions: crate::model::admin_role_permissions(),
            })
            .await?;
        Ok(true)
    }

    /// What `user` may do: its direct permissions and those of each of its
    /// roles that is defined (a role that is not defined grants nothing),
    /// deduplicated and sorted (by resource, then operation, then context).
    /// One store read per distinct role; a user has at most
    /// [`crate::request::ROLES_MAX`].
    pub async fn effective_permissions(
        &self,
        user: &UserRecord,
    ) -> Result<Vec<Permission>, StoreError> {
        let mut all = user.permissions.clone();
        let mut names: Vec<&str> = user.roles.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            if let Some(role) = self.store.get_role(name).await? {
                all.extend(role.permissions);
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Creates or replaces a role. The name must pass
    /// [`crate::request::check_role_name`] and the permissions
    /// [`crate::request::check_access_limits`] (the caps of a user's direct
    /// permissions). A new role may not pass
    /// [`crate::request::DEFINED_ROLES_MAX`], and the built-in `admin` role
    /// may not be emptied. Durable before it returns.
    ///
    /// The count is checked before the write, not in the same store
    /// transition, so admins creating roles at the same instant can pass
    /// the cap by as many roles as they create at once.
    pub async fn put_role(&self, role: Role) -> Result<Role, RoleError> {
        use crate::request::{check_access_limits, check_role_name, DEFINED_ROLES_MAX};
        check_role_name(&role.name)?;
        check_access_limits(&[], &role.permissions, "given to a role")?;
        if role.name == ADMIN_ROLE && role.permissions.is_empty() {
            return Err(RoleError::Policy {
                rule: "admin_role",
                message: format!(
                    "the built-in `{ADMIN_ROLE}` role cannot be emptied; give it at least one permission"
                ),
            });
        }
        if self.store.get_role(&role.name).await?.is_none()
            && self.store.list_roles().await?.len() >= DEFINED_ROLES_MAX
        {
            return Err(RoleError::Policy {
                rule: "defined_roles_count",
                message: format!(
                    "at most {DEFINED_ROLES_MAX} roles may be defined; delete one first"
                ),
            });
        }
        self.store.put_role(role.clone()).await?;
        tracing::info!(role = %role.name, permissions = role.permissions.len(), "role put");
        Ok(role)
    }

    /// Deletes a role; the built-in `admin` role cannot be deleted. Users
    /// holding the role keep its name (it grants nothing while undefined).
    pub async fn delete_role(&self, name: &str) -> Result<(), RoleError> {
        if name == ADMIN_ROLE {
            return Err(RoleError::Builtin);
        }
        if self.store.delete_role(name).await? {
            tracing::info!(role = %name, "role deleted");
            Ok(())
        } else {
            Err(RoleError::NotFound(name.to_owned()))
        }
    }

    /// Replaces a user's roles, direct permissions, or both, and returns
    /// the user as stored. The lists are checked like a grant's overrides
    /// ([`crate::request::check_access_limits`]); every role must be
    /// defined (422 `unknown_roles`, naming them); the built-in `admin` user
    /// keeps the `admin` role (422 `admin_role`). Duplicate role names are
    /// dropped, keeping the first. Nothing else of the user changes; in
    /// particular `created_at`, the `gen` claim of its tokens, stays, so the
    /// user's tokens keep working (with the new roles, which the admin API
    /// reads from the store on every request).
    ///
    /// This is a read followed by a write, not one store transition: a
    /// delete of the same user between the two would be undone (the user
    /// written back as read). Admins should not patch a user they are
    /// deleting.
    /// Fails unless every role in `roles` is defined, naming those that
    /// are not.
    async fn check_roles_defined(&self, roles: &[String]) -> Result<(), RoleCheckError> {
        let mut unknown = Vec::new();
        for name in roles {
            if self
                .store
                .get_role(name)
                .await
                .map_err(RoleCheckError::Store)?
                .is_none()
            {
                unknown.push(format!("`{name}`"));
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(RoleCheckError::Unknown(unknown.join(", ")))
        }
    }

    pub async fn update_user_access(
        &self,
        username: &str,
        update: AccessUpdate,
    ) -> Result<UserRecord, AccessError> {
        if update.roles.is_none() && update.permissions.is_none() {
            return Err(AccessError::Empty);
        }
        let roles = update.roles.map(dedup_roles);
        crate::request::check_access_limits(
            roles.as_deref().unwrap_or_default(),
            update.permissions.as_deref().unwrap_or_default(),
            "given to a user",
        )?;
        // No such user is the first thing to tell (404 before any 422).
        if self.user(username).await?.is_none() {
            return Err(AccessError::NotFound(username.to_owned()));
        }
        if let Some(roles) = &roles {
            if username == ADMIN_USERNAME && !roles.iter().any(|r| r == ADMIN_ROLE) {
                return Err(AccessError::Policy {
                    rule: "admin_role",
                    message: format!(
                        "the built-in `{ADMIN_USERNAME}` user must keep the `{ADMIN_ROLE}` role"
                    ),
                });
            }
            self.check_roles_defined(roles).await?;
        }
        // One step in the store: a user deleted since the read above stays
        // deleted (404), and a concurrent change of the other field is kept.
        let change = crate::store::AccessChange {
            roles,
            permissions: update.permissions,
        };
        let user = self
            .store
            .update_user_access(username, &change)
            .await?
            .ok_or_else(|| AccessError::NotFound(username.to_owned()))?;
        tracing::info!(username, roles = ?user.roles, permissions = user.permissions.len(), "user access changed");
        Ok(user)
    }
}

/// `roles` without repeats, in first-seen order.
fn dedup_roles(roles: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    roles
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

fn validate_grant_overrides(o: &GrantOverrides) -> Result<(), String> {
    let roles = o.roles.as_deref().unwrap_or_default();
    let permissions = o.permissions.as_deref().unwrap_or_default();
    crate::request::check_access_limits(roles, permissions, "granted").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use crate::model::{Operation, PermissionContext, UserOrigin};

    /// The embedded store never suspends, so its futures finish in one poll.
    fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the embedded store suspended"),
        }
    }

    fn registry() -> Registry<EmbeddedStore> {
        Registry::new(
            EmbeddedStore::in_memory(Windows::default(), 100),
            Secrets::random(),
            RegistryConfig::default(),
        )
    }

    fn perm(resource: &str, operation: Operation, context: PermissionContext) -> Permission {
        Permission {
            resource: resource.into(),
            operation,
            context,
        }
    }

    fn user(roles: &[&str], permissions: Vec<Permission>) -> UserRecord {
        UserRecord {
            username: "dev01".into(),
            password_hash: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions,
            created_at: UnixMillis(5),
            origin: UserOrigin::Http,
            certificate: None,
            decided_by: None,
        }
    }

    #[test]
    fn effective_permissions_are_the_sorted_union_of_direct_and_role_permissions() {
        use Operation::{Read, ReadWrite, Write};
        use PermissionContext::{Http, Mqtt};
        let r = registry();
        let put = |name: &str, permissions| {
            now_or_never(r.put_role(Role {
                name: name.into(),
                permissions,
            }))
            .unwrap()
        };
        put(
            "sensors",
            vec![perm("plant/+/temp", Write, Mqtt), perm("b", Read, Mqtt)],
        );
        put(
            "readers",
            vec![perm("b", Read, Mqtt), perm("/status", Read, Http)],
        );
        let u = user(
            // `readers` twice, and a role that is not defined.
            &["sensors", "readers", "ghost", "readers"],
            vec![perm("b", Read, Mqtt), perm("b", ReadWrite, Mqtt)],
        );
        assert_eq!(
            now_or_never(r.effective_permissions(&u)).unwrap(),
            vec![
                perm("/status", Read, Http),
                perm("b", Read, Mqtt),
                perm("b", ReadWrite, Mqtt),
                perm("plant/+/temp", Write, Mqtt),
            ]
        );
        // Without roles: the direct permissions, sorted and deduplicated.
        let u = user(
            &[],
            vec![
                perm("z", Read, Mqtt),
                perm("a", Read, Mqtt),
                perm("z", Read, Mqtt),
            ],
        );
        assert_eq!(
            now_or_never(r.effective_permissions(&u)).unwrap(),
            vec![perm("a", Read, Mqtt), perm("z", Read, Mqtt)]
        );
        assert_eq!(
            now_or_never(r.effective_permissions(&user(&["ghost"], vec![]))).unwrap(),
            vec![]
        );
    }

    #[test]
    fn the_admin_role_is_created_once_and_an_admin_change_is_kept() {
        let r = registry();
        assert!(now_or_never(r.ensure_admin_role()).unwrap());
        let admin = now_or_never(r.store().get_role(ADMIN_ROLE))
            .unwrap()
            .unwrap();
        assert_eq!(admin.permissions, crate::model::admin_role_permissions());
        assert!(
            !now_or_never(r.ensure_admin_role()).unwrap(),
            "already there"
        );
        let narrowed = Role {
            name: ADMIN_ROLE.into(),
            permissions: vec![crate::model::admin_role_permissions().remove(0)],
        };
        now_or_never(r.put_role(narrowed.clone())).unwrap();
        assert!(!now_or_never(r.ensure_admin_role()).unwrap());
        assert_eq!(
            now_or_never(r.store().get_role(ADMIN_ROLE)).unwrap(),
            Some(narrowed)
        );
        // An admin user's effective permissions include the admin role's.
        let u = user(&[ADMIN_ROLE], vec![]);
        assert_eq!(
            now_or_never(r.effective_permissions(&u)).unwrap(),
            vec![crate::model::admin_role_permissions().remove(0)]
        );
    }
}
