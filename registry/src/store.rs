//! The `Store` trait: where registry state lives, and the atomic state
//! transitions every backend provides.
//!
//! The embedded store ([`crate::embedded`]) is the default. Each method is one
//! atomic transition: a backend may never let two callers interleave inside
//! one (two grants of the same request create one user; a poll racing a grant
//! sees either pending or granted, never a half-state).
//!
//! Methods return `impl Future + Send` so that a network backend can await
//! I/O, while the embedded store answers without ever suspending.

use std::future::Future;
use std::net::SocketAddr;

use crate::audit::{AuditEntry, AuditQuery, AuditRecord};
use crate::clock::UnixMillis;
use crate::decision::{Decision, LockState};
use crate::fingerprint::Fingerprint;
use crate::model::{Permission, RequestRecord, Role, Transport, UserRecord};
use crate::rule::{DecidedBy, PutRuleResult, Rule, RuleClaim, RuleOrderResult, StoredRule};
use crate::secrets::Secrets;
use crate::webhook::WebhookEvent;

/// A store could not do what was asked. The variant says who caused it,
/// and so what the caller answers: an outage is 503 (retrying later may
/// work), a bug or a corrupt reply is 500 and an error log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// 503: the backend is unreachable, failing, or too slow.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// 500: the backend answered something this version cannot read (a
    /// record that does not decode, a script reply of the wrong shape): a
    /// bug, a version mismatch or tampering, never fixed by retrying.
    #[error("store reply corrupt: {0}")]
    Corrupt(String),
    /// Creating another pending request would pass `--max-pending`.
    #[error("pending request limit of {max} reached")]
    PendingLimit { max: usize },
}

impl StoreError {
    /// Whether this is a bug or corrupt data (500) rather than an outage or
    /// a full store (503).
    pub fn is_internal(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }
}

/// One register poll, already validated and fingerprinted.
#[derive(Debug)]
pub struct Poll<'a> {
    pub username: &'a str,
    pub fingerprint: Fingerprint,
    pub transport: Transport,
    pub source_addr: Option<SocketAddr>,
    pub client_id: Option<&'a str>,
    /// Stored only if the poll creates a pending request.
    pub roles: &'a [String],
    pub permissions: &'a [Permission],
    pub context: Option<&'a str>,
    /// The credential, sealed for the grant only if this poll creates a
    /// pending request (sealing costs about 1.4 µs; a fingerprint 0.2 µs).
    pub secret: SealOnCreate<'a>,
    /// A `whileLocked` rule has claimed this device: create its pending
    /// request even while the registry is locked (step 5 answers `Create`
    /// instead of `Locked`). Everything else of the decision is unchanged.
    pub preauthorized: bool,
}

/// A credential that is sealed only when a pending request is created.
pub enum SealOnCreate<'a> {
    /// Already sealed.
    Sealed(Vec<u8>),
    /// Seal `secret` with [`crate::fingerprint::seal`] when needed.
    Lazy {
        secrets: &'a Secrets,
        fingerprint: Fingerprint,
        username: &'a str,
        kind: crate::fingerprint::CredentialKind,
        secret: &'a [u8],
    },
}

impl SealOnCreate<'_> {
    /// The sealed bytes.
    pub fn into_sealed(self) -> Vec<u8> {
        match self {
            SealOnCreate::Sealed(v) => v,
            SealOnCreate::Lazy {
                secrets,
                fingerprint,
                username,
                kind,
                secret,
            } => crate::fingerprint::seal_credential(secrets, &fingerprint, username, kind, secret),
        }
    }
}

impl std::fmt::Debug for SealOnCreate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the clear-text credential.
        match self {
            SealOnCreate::Sealed(v) => write!(f, "Sealed({} bytes)", v.len()),
            SealOnCreate::Lazy { .. } => f.write_str("Lazy(..)"),
        }
    }
}

/// Which requests a listing returns. Each state has its own index in
/// every backend, so a page of one state never walks the others (a page of
/// denied requests stays cheap with 1,000,000 pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListState {
    Pending,
    /// Granted requests still inside their collection window, collected or
    /// not.
    Granted,
    /// Denied requests still inside their deny window (answered 403).
    Denied,
}

impl ListState {
    /// Whether a request in `state` belongs to this listing.
    pub fn holds(self, state: &crate::model::RequestState) -> bool {
        use crate::model::RequestState;
        matches!(
            (self, state),
            (ListState::Pending, RequestState::Pending)
                | (ListState::Granted, RequestState::Granted { .. })
                | (ListState::Denied, RequestState::Denied { .. })
        )
    }
}

/// A keyset-paginated listing query: items are ordered by username, and the
/// cursor is the last username of the previous page, so a page is stable
/// under concurrent inserts (an item present throughout is seen exactly once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub state: ListState,
    pub limit: usize,
    pub cursor: Option<String>,
    pub prefix: Option<String>,
}

/// The largest page a listing returns.
pub const MAX_PAGE: usize = 1000;

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What `commit_grant` is asked to make true.
#[derive(Clone, Debug)]
pub struct GrantCommit {
    pub username: String,
    /// The fingerprint of the pending request the admin saw; the grant fails
    /// if the stored request has changed since.
    pub fingerprint: Fingerprint,
    /// The user to create, credential already hashed.
    pub user: UserRecord,
    pub granted_at: UnixMillis,
    /// The client certificate issued for a CSR request (PEM), kept with the
    /// grant so that a lost 201 can be collected again.
    pub certificate: Option<String>,
}

/// The result of a grant attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantResult {
    /// The user was created, durably, and the request is now granted.
    Granted(RequestRecord),
    /// The request was already granted; nothing changed.
    AlreadyGranted(RequestRecord),
    /// No live pending request with that fingerprint.
    NotFound,
    /// The username is taken, or the request was denied or replaced.
    Conflict(&'static str),
}

/// The result of a deny attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyResult {
    Denied,
    NotFound,
    /// The request was already granted: delete the user instead.
    AlreadyGranted,
}

/// The result of forgetting a request (`DELETE .../requests/{username}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgetResult {
    /// A pending or denied request was dropped; the username is free.
    Forgotten,
    NotFound,
    /// The request was granted: delete the user instead.
    Granted,
}

/// What [`Store::update_user_access`] replaces in a user; `None` leaves
/// that part as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessChange {
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<Permission>>,
}

impl AccessChange {
    /// `user` with the change applied.
    pub fn apply(&self, user: &mut UserRecord) {
        if let Some(roles) = &self.roles {
            user.roles = roles.clone();
        }
        if let Some(permissions) = &self.permissions {
            user.permissions = permissions.clone();
        }
    }
}

/// Where registry state lives. See the module docs for the atomicity rule.
pub trait Store: Send + Sync + 'static {
    /// Steps 3 to 5 of the decision order for one poll, applied atomically:
    /// reads the username's user and request, calls
    /// [`crate::decision::decide`], and creates or refreshes the pending
    /// request as decided. Returns the decision and the stored request
    /// afterwards (for a 201, the granted record).
    fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<(Decision, Option<RequestRecord>), StoreError>> + Send;

    /// The lock state, as every request reads it.
    fn lock_state(&self) -> impl Future<Output = Result<LockState, StoreError>> + Send;

    /// Sets the lock state (`unlocked_until: None` locks).
    fn set_lock_state(
        &self,
        state: LockState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many requests are pending (including any that expired but have
    /// not been swept yet).
    fn pending_count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The live request for `username`, in any state.
    fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<RequestRecord>, StoreError>> + Send;

    /// A page of live requests in one state, ordered by username.
    fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Page<RequestRecord>, StoreError>> + Send;

    /// Creates the user and marks the request granted, durably, before
    /// returning `Granted`.
    fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> impl Future<Output = Result<GrantResult, StoreError>> + Send;

    /// [`Store::commit_grant`], and the audit record of the decision:
    /// when the result is `Granted`, a store that can make both durable in
    /// one write stores `audit` (evicting beyond `max`, as
    /// [`Store::append_audit`]) with the grant and returns the stored
    /// record. `None` leaves the entry to the caller, to record as any
    /// other: for every other result, and always for a store without such
    /// a write (the default). The embedded store writes both in the
    /// grant's one journal line: one `fdatasync` per grant instead of two
    /// (`bench/compare/fsyncs-per-grant.sh`).
    fn commit_grant_recorded(
        &self,
        grant: GrantCommit,
        audit: AuditEntry,
        max: usize,
        now: UnixMillis,
    ) -> impl Future<Output = Result<(GrantResult, Option<AuditRecord>), StoreError>> + Send {
        let _ = (audit, max);
        async move { Ok((self.commit_grant(grant, now).await?, None)) }
    }

    /// Commits many grants as one group: every grant is checked as
    /// [`Store::commit_grant`] checks it, against the state left by the ones
    /// before it in the list (two grants of one request in one group create
    /// one user: the second is `AlreadyGranted`), and the whole group is made
    /// durable at once (the embedded store: one journal append and one
    /// `fdatasync`; Redis: pipelines of at most 128 grants on their own
    /// connection, one `WAIT` each). Returns one result
    /// per grant, in order, only once all of them are durable. An error means
    /// none of the results is known; retrying is safe (a grant already
    /// applied answers `AlreadyGranted`).
    fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<GrantResult>, StoreError>> + Send;

    /// Marks a pending request denied; `by` names the rule that denied it
    /// (`None`: an admin), kept on the denied record.
    fn deny(
        &self,
        username: &str,
        by: Option<DecidedBy>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<DenyResult, StoreError>> + Send;

    /// Drops a live pending or denied request, so the username is free at
    /// once (a denial would block it for the deny window). A granted one is
    /// left alone (`Granted`).
    fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<ForgetResult, StoreError>> + Send;

    fn get_user(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// A page of users ordered by username (`query.state` is ignored).
    fn list_users(
        &self,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Page<UserRecord>, StoreError>> + Send;

    /// Creates or replaces a user, durably.
    fn put_user(&self, user: UserRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces what `change` names (roles, permissions) in the user
    /// `username`, durably, as one step: no other write of that user can
    /// land between the read and the write, so a user deleted meanwhile
    /// stays deleted and two changes of different fields both survive.
    /// `None` when there is no such user.
    fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Deletes a user and any granted request of theirs, durably. Returns
    /// whether the user existed.
    fn delete_user(&self, username: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The role named `name`, if defined.
    fn get_role(&self, name: &str)
        -> impl Future<Output = Result<Option<Role>, StoreError>> + Send;

    /// Every defined role, sorted by name. Not paginated: the admin API
    /// caps the number of roles at [`crate::request::DEFINED_ROLES_MAX`] and
    /// their permissions at [`crate::request::PERMISSIONS_MAX`] each.
    fn list_roles(&self) -> impl Future<Output = Result<Vec<Role>, StoreError>> + Send;

    /// Creates or replaces the role `role.name`, durably (as durable as
    /// `put_user`), before returning. Roles are global, not per user.
    fn put_role(&self, role: Role) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes a role, durably. Returns whether it existed. Users that hold
    /// the role by name keep the name; it grants nothing while undefined.
    fn delete_role(&self, name: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A number that moves with every change of the rule list (put, delete,
    /// order; not uses), so a caller can keep its compiled rules until it
    /// moves. Cheap: the embedded store reads an atomic, Redis one field.
    fn rules_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every rule in evaluation order, with its use count, and the
    /// [`Store::rules_version`] they were read at.
    fn list_rules(&self)
        -> impl Future<Output = Result<(u64, Vec<StoredRule>), StoreError>> + Send;

    /// Creates the rule `rule.name` (placed last) unless `max` rules exist
    /// already (`Full`), or replaces it in place, keeping its uses; durable
    /// (as `put_role`) before returning. The count check and the write are
    /// one transition, so the cap holds under concurrent creates.
    fn put_rule(
        &self,
        rule: Rule,
        max: usize,
    ) -> impl Future<Output = Result<PutRuleResult, StoreError>> + Send;

    /// Deletes a rule and its use count, durably. Returns whether it existed.
    fn delete_rule(&self, name: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sets the evaluation order; `names` must be exactly the defined
    /// rules, each once (`Mismatch` otherwise, and nothing changes).
    fn set_rule_order(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<RuleOrderResult, StoreError>> + Send;

    /// Counts one decision of the rule `name` if its stored `maxUses`
    /// allows another, as one atomic step (exact across instances sharing
    /// the store), durably. The caller decides only on `Claimed`.
    fn claim_rule_use(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<RuleClaim, StoreError>> + Send;

    /// Webhooks: up to `max` events of the durable outbox that are not
    /// delivered yet and not already handed out by an earlier call of this
    /// process (a store that records no events answers none). Events are
    /// written to the outbox by the decisions themselves, in the same
    /// commit (see `webhook`); one deliverer per store calls this.
    fn outbox_take(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<WebhookEvent>, StoreError>> + Send {
        let _ = max;
        async { Ok(Vec::new()) }
    }

    /// Retires delivered (or given-up) events by id, durably: they are not
    /// handed out again, after a restart either.
    fn outbox_ack(&self, ids: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = ids;
        async { Ok(()) }
    }

    /// How many events the outbox holds (handed out or not).
    fn outbox_depth(&self) -> impl Future<Output = Result<usize, StoreError>> + Send {
        async { Ok(0) }
    }
    /// Appends audit records in order, durably (as `put_user`), each with
    /// an id greater than every id before it (the time part is the entry's
    /// `at`, raised to the last id's when the clock went back), and evicts
    /// the oldest records beyond `max` in the same write. Returns the
    /// stored records, in order.
    fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// A page of audit records in `query.order` after `query.cursor`,
    /// filtered. At most `query.limit` items, and at most
    /// [`crate::audit::AUDIT_SCAN_MAX`] records looked at: `next_cursor`
    /// is set whenever the walk stopped before the end, so a page may hold
    /// fewer items than asked (even none) and still have a next one.
    fn list_audit(
        &self,
        query: &AuditQuery,
    ) -> impl Future<Output = Result<Page<AuditRecord>, StoreError>> + Send;

    /// Drops the audit records whose id's time is before `before`
    /// (`--audit-retention`, called by the sweeper); returns how many.
    fn prune_audit(
        &self,
        before: UnixMillis,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A number that moves whenever what `username` may do may have
    /// changed: its user record (put, delete, grant) or any role. Read
    /// locally, without I/O, so a live MQTT session can ask it every few
    /// hundred milliseconds and re-read its user and roles only when it
    /// moved. `None` when this store cannot tell (the caller then re-reads
    /// every time): the default, and a cached Redis store whose last
    /// reading of the store's epochs is too old to trust.
    ///
    /// Contract: a change committed before this call started is reflected
    /// (the value differs from any value read before the change), within
    /// the store's documented visibility bound for other instances.
    fn access_generation(&self, username: &str) -> Option<u64> {
        let _ = username;
        None
    }
}
