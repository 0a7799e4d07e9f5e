//! Bulk decisions: grant or deny many pending requests in one call
//! (`POST /api/client-registry/requests/grant` and `.../deny`).
//!
//! A call names its requests by username ([`BulkTargets::Usernames`]) or by
//! a [`Selector`] over the pending requests (prefix, transport, pairing
//! ids), at most [`BULK_MAX`] per call; a selector that matches more
//! answers a cursor to go on from ([`BulkOutcome::next_cursor`], the same
//! keyset cursor as the listing: the last username handled).
//!
//! Each item keeps the single route's guarantees, because it goes through
//! the same per-item code ([`Registry::prepare_grant`]) and the same store
//! transition: a grant is answered only once durable, two grants of one
//! request create one user (the second is `already_granted`), and a request
//! replaced since it was read (another fingerprint, so another pairing id)
//! is a `conflict`. What is shared per call: the roles are checked once
//! (422 `unknown_roles` before anything is written), the argon2id work runs
//! on a bounded set of threads ([`Registry::hash_threads`], one per core,
//! and one bulk call's chunk at a time per process), and each chunk of
//! [`CHUNK`] grants is committed as one group ([`Store::commit_grants`]: one
//! journal append and `fdatasync`, or Redis pipelines of at most 128 with
//! one `WAIT` each).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::join_all;

use super::{validate_grant_overrides, GrantError, GrantOverrides, Registry, StoreOp};
use crate::clock::UnixMillis;
use crate::fingerprint::PairingId;
use crate::model::{RequestRecord, RequestState, Transport};
use crate::store::{DenyResult, GrantCommit, GrantResult, ListQuery, ListState, Store, StoreError};

/// The most requests one bulk call decides.
pub const BULK_MAX: usize = 10_000;

/// Grants hashed, then committed as one group, at a time. Large enough that
/// the `fdatasync` per group is noise next to the hashing (512 × 0.35 ms
/// of argon2id over two cores is about 90 ms; an `fdatasync` a few ms), and
/// small enough that a slow store call holds few results back.
pub const CHUNK: usize = 512;

/// Store reads or denials in flight at once for one bulk call (on Redis they
/// share the multiplexed connection; on the embedded store they never
/// suspend).
const CONCURRENT_READS: usize = 256;

/// Which requests a bulk call decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkTargets {
    /// These usernames (at most [`BULK_MAX`]); repeats are decided once.
    Usernames(Vec<String>),
    /// The pending requests the selector matches, in username order.
    Selector(Selector),
}

/// Pending requests to decide, in username order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only usernames starting with this.
    pub prefix: Option<String>,
    /// Only requests that came over this transport.
    pub transport: Option<Transport>,
    /// Only requests whose pairing id is one of these.
    pub pairing_ids: Option<Vec<String>>,
    /// At most this many (1 to [`BULK_MAX`]; `None` is [`BULK_MAX`]).
    pub limit: Option<usize>,
    /// Go on after this username (a previous answer's `next_cursor`).
    pub cursor: Option<String>,
}

/// What became of one request of a bulk call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkResult {
    /// Granted by this call (the user exists, durably).
    Granted,
    /// It was granted already, by this request (nothing changed).
    AlreadyGranted,
    /// Denied by this call.
    Denied,
    /// It was denied already (nothing changed).
    AlreadyDenied,
    /// Not decided: the username belongs to a user, the request was
    /// replaced since it was read, or it is in the other decided state
    /// (granting a denied one, denying a granted one).
    Conflict,
    /// No live request of this username.
    NotFound,
}

impl BulkResult {
    /// The name the API shows (`"granted"`, `"already_granted"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BulkResult::Granted => "granted",
            BulkResult::AlreadyGranted => "already_granted",
            BulkResult::Denied => "denied",
            BulkResult::AlreadyDenied => "already_denied",
            BulkResult::Conflict => "conflict",
            BulkResult::NotFound => "not_found",
        }
    }
}

/// One request's line in a bulk answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkItem {
    pub username: String,
    pub result: BulkResult,
    /// The pairing id of the request that was looked at (none for
    /// `not_found`).
    pub pairing_id: Option<PairingId>,
}

/// The answer to a bulk call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// One per request, in the order they were named (usernames) or
    /// matched (selector).
    pub items: Vec<BulkItem>,
    /// For a selector that matched more than its limit: pass back as the
    /// selector's cursor to go on.
    pub next_cursor: Option<String>,
}

impl BulkOutcome {
    /// How many items have `result`.
    pub fn count(&self, result: BulkResult) -> usize {
        self.items.iter().filter(|i| i.result == result).count()
    }
}

/// Why a bulk call decided nothing (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// 400: more than [`BULK_MAX`] usernames, a limit out of range, or
    /// overrides that break the caps of a grant.
    #[error("{0}")]
    Invalid(String),
    /// 422: a rule is broken (`unknown_roles`); nothing was written.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    /// 503/500. Chunks committed before the failure stay committed; a retry
    /// answers them `already_granted`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500: a bug (a sealed secret that does not open, a CSR without a CA).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<GrantError> for BulkError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Invalid(m) => BulkError::Invalid(m),
            GrantError::Policy { rule, message } => BulkError::Policy { rule, message },
            GrantError::Store(e) => BulkError::Store(e),
            GrantError::Internal(m) => BulkError::Internal(m),
            GrantError::NotFound | GrantError::Conflict(_) => {
                BulkError::Internal(format!("unexpected per-item error: {e}"))
            }
        }
    }
}

/// A target looked up: its username and its live request, if any.
type Resolved = (String, Option<RequestRecord>);

impl<S: Store> Registry<S> {
    /// How many threads hash a bulk grant's chunk: one per core.
    pub fn hash_threads(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Grants the requests `targets` names, with `overrides.roles` and
    /// `overrides.permissions` for every one of them (`pairing_id` is not
    /// used: a bulk call names pairing ids in its selector).
    ///
    /// Hashes on up to [`Registry::hash_threads`] threads, blocking the
    /// caller meanwhile: call it where blocking is acceptable (the admin
    /// service runs it on tokio's blocking pool, as a single grant).
    pub async fn grant_many(
        &self,
        targets: BulkTargets,
        overrides: GrantOverrides,
        now: UnixMillis,
    ) -> Result<BulkOutcome, BulkError> {
        validate_grant_overrides(&overrides).map_err(BulkError::Invalid)?;
        let roles = super::dedup_roles(overrides.roles.unwrap_or_default());
        self.check_roles_defined(&roles)
            .await
            .map_err(GrantError::from)?;
        let permissions = overrides.permissions.unwrap_or_default();
        let (resolved, next_cursor) = self.resolve(targets, now).await?;

        let mut items: Vec<Option<BulkItem>> = vec![None; resolved.len()];
        // Indexes (into `resolved`) of the pending requests to grant.
        let mut to_grant = Vec::new();
        for (i, (username, record)) in resolved.iter().enumerate() {
            let result = match record.as_ref().map(|r| r.state) {
                None => BulkResult::NotFound,
                Some(RequestState::Granted { .. }) => BulkResult::AlreadyGranted,
                Some(RequestState::Denied { .. }) => BulkResult::Conflict,
                Some(RequestState::Pending) => {
                    to_grant.push(i);
                    continue;
                }
            };
            items[i] = Some(item(username, record.as_ref(), result));
        }
        let mut granted = 0;
        let mut answer = |chunk: &[usize], results: Vec<GrantResult>| {
            for (&i, result) in chunk.iter().zip(results) {
                let (username, record) = &resolved[i];
                let result = match result {
                    GrantResult::Granted(_) => {
                        granted += 1;
                        BulkResult::Granted
                    }
                    GrantResult::AlreadyGranted(_) => BulkResult::AlreadyGranted,
                    GrantResult::NotFound => BulkResult::NotFound,
                    GrantResult::Conflict(_) => BulkResult::Conflict,
                };
                items[i] = Some(item(username, record.as_ref(), result));
            }
        };
        // Each chunk is hashed while the one before it commits (see
        // `prepare_grants_while`), then committed itself.
        let mut committing: Option<(&[usize], Vec<GrantCommit>)> = None;
        for chunk in to_grant.chunks(CHUNK) {
            let records: Vec<&RequestRecord> = chunk
                .iter()
                .map(|&i| resolved[i].1.as_ref().expect("pending has a record"))
                .collect();
            let commits = match committing.take() {
                None => self.prepare_grants(&records, &roles, &permissions, now, None)?,
                Some((before, commits)) => {
                    let commit =
                        self.timed(StoreOp::CommitGrant, self.store.commit_grants(commits, now));
                    let mut committed = None;
                    let hashed = self.prepare_grants(
                        &records,
                        &roles,
                        &permissions,
                        now,
                        Some(Box::new(|| committed = Some(drive(commit)))),
                    );
                    answer(before, committed.expect("driven by prepare_grants")?);
                    hashed?
                }
            };
            committing = Some((chunk, commits));
        }
        if let Some((last, commits)) = committing {
            let results = self
                .timed(StoreOp::CommitGrant, self.store.commit_grants(commits, now))
                .await?;
            answer(last, results);
        }
        self.metrics.grants.increment(granted as u64);
        let outcome = BulkOutcome {
            items: items
                .into_iter()
                .map(|i| i.expect("every target answered"))
                .collect(),
            next_cursor,
        };
        tracing::info!(
            requests = outcome.items.len(),
            granted,
            roles = ?roles,
            permissions = permissions.len(),
            more = outcome.next_cursor.is_some(),
            "bulk grant"
        );
        Ok(outcome)
    }

    /// Denies the requests `targets` names. A pending request is denied, a
    /// denied one is `already_denied`, a granted one is a `conflict`
    /// (delete the user instead).
    pub async fn deny_many(
        &self,
        targets: BulkTargets,
        now: UnixMillis,
    ) -> Result<BulkOutcome, BulkError> {
        let (resolved, next_cursor) = self.resolve(targets, now).await?;
        let mut items = Vec::with_capacity(resolved.len());
        for chunk in resolved.chunks(CONCURRENT_READS) {
            let decided = chunk.iter().map(|(username, record)| async move {
                let result = match record.as_ref().map(|r| r.state) {
                    None => BulkResult::NotFound,
                    Some(RequestState::Granted { .. }) => BulkResult::Conflict,
                    Some(RequestState::Denied { .. }) => BulkResult::AlreadyDenied,
                    Some(RequestState::Pending) => {
                        match self
                            .timed(StoreOp::Deny, self.store.deny(username, None, now))
                            .await?
                        {
                            DenyResult::Denied => BulkResult::Denied,
                            DenyResult::NotFound => BulkResult::NotFound,
                            DenyResult::AlreadyGranted => BulkResult::Conflict,
                        }
                    }
                };
                Ok::<_, StoreError>(item(username, record.as_ref(), result))
            });
            for answered in join_all(decided).await {
                items.push(answered?);
            }
        }
        let outcome = BulkOutcome { items, next_cursor };
        let denied = outcome.count(BulkResult::Denied);
        self.metrics.denials.increment(denied as u64);
        tracing::info!(
            requests = outcome.items.len(),
            denied,
            more = outcome.next_cursor.is_some(),
            "bulk deny"
        );
        Ok(outcome)
    }

    /// Hashes one chunk on [`Registry::hash_threads`] threads. One chunk
    /// of one bulk call hashes at a time in this process (`bulk_hashing`),
    /// so concurrent bulk calls never run more hashing threads than there
    /// are cores, and the proxy workers keep a share of the CPU.
    ///
    /// With `meanwhile` (the previous chunk's commit), the calling thread
    /// runs that instead of hashing, while as many other threads hash: the
    /// hashing does not wait for the store. On one Redis a chunk's commit
    /// (four pipelines of 128 scripts, one after the other) left the
    /// hashing threads idle for its whole round trip.
    fn prepare_grants(
        &self,
        records: &[&RequestRecord],
        roles: &[String],
        permissions: &[crate::model::Permission],
        now: UnixMillis,
        meanwhile: Option<Box<dyn FnOnce() + '_>>,
    ) -> Result<Vec<GrantCommit>, GrantError> {
        let _one_at_a_time = self.bulk_hashing.lock().unwrap_or_else(|p| p.into_inner());
        let next = AtomicUsize::new(0);
        let threads = self.hash_threads().min(records.len()).max(1);
        // The calling thread hashes too, unless it has `meanwhile` to run.
        let helpers = if meanwhile.is_some() {
            threads
        } else {
            threads - 1
        };
        let work = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(record) = records.get(i) else {
                    return done;
                };
                let commit =
                    self.prepare_grant(record, roles.to_vec(), permissions.to_vec(), None, now);
                done.push((i, commit));
            }
        };
        let mut slots: Vec<Option<Result<GrantCommit, GrantError>>> =
            (0..records.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..=helpers)
                .map(|n| {
                    std::thread::Builder::new()
                        .name(format!("fleetgate-hash-{n}"))
                        .spawn_scoped(scope, work)
                })
                .collect();
            let hashes = match meanwhile {
                Some(meanwhile) => {
                    meanwhile();
                    // Then only if no other thread could be spawned.
                    helpers.iter().all(Result::is_err)
                }
                None => true,
            };
            // The calling thread is one of the hashing threads.
            if hashes {
                for (i, c) in work() {
                    slots[i] = Some(c);
                }
            }
            for helper in helpers {
                // A thread that could not be spawned leaves its share to
                // the others; a panicking one is a bug, passed on.
                let Ok(helper) = helper else { continue };
                for (i, c) in helper.join().expect("a hashing thread panicked") {
                    slots[i] = Some(c);
                }
            }
        });
        slots
            .into_iter()
            .map(|c| c.expect("every record hashed"))
            .collect()
    }

    /// The targets with their live requests, and the cursor to go on from.
    async fn resolve(
        &self,
        targets: BulkTargets,
        now: UnixMillis,
    ) -> Result<(Vec<Resolved>, Option<String>), BulkError> {
        match targets {
            BulkTargets::Usernames(names) => {
                if names.len() > BULK_MAX {
                    return Err(BulkError::Invalid(format!(
                        "at most {BULK_MAX} usernames per call, not {}; split the list",
                        names.len()
                    )));
                }
                let mut seen = HashSet::new();
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| seen.insert(n.clone()))
                    .collect();
                let mut resolved = Vec::with_capacity(names.len());
                for chunk in names.chunks(CONCURRENT_READS) {
                    let reads = chunk.iter().map(|name| {
                        self.timed(StoreOp::GetRequest, self.store.get_request(name, now))
                    });
                    for (name, record) in chunk.iter().zip(join_all(reads).await) {
                        resolved.push((name.clone(), record?));
                    }
                }
                Ok((resolved, None))
            }
            BulkTargets::Selector(selector) => self.select(selector, now).await,
        }
    }

    /// Walks the pending listing from the selector's cursor, a page at a
    /// time, keeping what matches, until the limit is reached or the
    /// listing ends.
    async fn select(
        &self,
        selector: Selector,
        now: UnixMillis,
    ) -> Result<(Vec<Resolved>, Option<String>), BulkError> {
        let limit = selector.limit.unwrap_or(BULK_MAX);
        if !(1..=BULK_MAX).contains(&limit) {
            return Err(BulkError::Invalid(format!(
                "limit must be an integer from 1 to {BULK_MAX}"
            )));
        }
        let pairing_ids: Option<HashSet<String>> = match selector.pairing_ids {
            Some(ids) if ids.len() > BULK_MAX => {
                return Err(BulkError::Invalid(format!(
                    "at most {BULK_MAX} pairingIds per call"
                )))
            }
            Some(ids) => Some(ids.into_iter().collect()),
            None => None,
        };
        let matches = |r: &RequestRecord| {
            selector.transport.is_none_or(|t| r.transport == t)
                && pairing_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&r.pairing_id().to_string()))
        };
        let mut found: Vec<Resolved> = Vec::new();
        let mut cursor = selector.cursor;
        loop {
            let query = ListQuery {
                state: ListState::Pending,
                limit: crate::store::MAX_PAGE,
                cursor: cursor.clone(),
                prefix: selector.prefix.clone(),
            };
            let page = self.store.list_requests(&query, now).await?;
            let mut items = page.items.into_iter();
            for record in items.by_ref() {
                if !matches(&record) {
                    continue;
                }
                found.push((record.username.clone(), Some(record)));
                if found.len() == limit {
                    break;
                }
            }
            let more = items.next().is_some() || page.next_cursor.is_some();
            if found.len() == limit {
                let next = more.then(|| found.last().expect("limit ≥ 1").0.clone());
                return Ok((found, next));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok((found, None)),
            }
        }
    }
}

/// Drives `future` to its end on this thread, parking it between wakes: a
/// store call made from inside [`Registry::prepare_grants`], which blocks
/// this thread. The admin service runs a bulk grant on tokio's blocking
/// pool inside `Handle::block_on`, so the runtime's context (the timers and
/// connections a network store's future registers with) is this thread's,
/// and the runtime's own threads drive them; the embedded store's future
/// is ready at the first poll. The caller's future must not be under
/// tokio's cooperative budget (the admin service wraps it in
/// `tokio::task::unconstrained`): this poll happens inside the caller's,
/// so the budget is never reset, and a spent one makes every tokio
/// resource answer `Pending` and wake itself, which would spin here.
fn drive<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

fn item(username: &str, record: Option<&RequestRecord>, result: BulkResult) -> BulkItem {
    BulkItem {
        username: username.to_owned(),
        result,
        pairing_id: record.map(RequestRecord::pairing_id),
    }
}
