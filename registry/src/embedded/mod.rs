//! The embedded store: what a new user runs by default, in one process.
//!
//! - Pending and denied requests live in memory only. A restart forgets them;
//!   devices simply keep polling and, while unlocked, re-create them.
//! - Users and granted-but-uncollected requests are also written to an
//!   fsynced journal ([`journal`]) before a change is acknowledged, so they
//!   survive `kill -9`.
//! - The lock state lives in one atomic (read by every poll, never locked).
//! - Roles live in one ordered map behind a read-write lock (read by every
//!   `effective_permissions`, written only by an admin), and are journaled
//!   like users.
//! - Audit records live in memory in id order, at most the cap, with a
//!   journal of their own, `audit.log` ([`audit`]), so audit writes never
//!   take the journal mutex.
//!
//! # Concurrency
//! State is split over [`SHARDS`] shards by a hash of the username, each
//! behind its own mutex, so proxy workers polling different devices almost
//! never meet (measured in `docs/BENCHMARKS.md`). A poll takes exactly one
//! shard lock, for a few hundred nanoseconds, and never does I/O under it.
//! Durable mutations (grant, user changes) are serialised by the journal
//! mutex: write and fsync first, then apply in memory under the shard lock.
//! Because every durable mutation holds the journal mutex, a check made
//! before the fsync still holds after it, except for polls, which can only
//! create or refresh pending requests.
//!
//! Grants are group-committed: grants that arrive while a journal write is
//! under way (one bulk call, or many single grants from concurrent admin
//! requests) queue up and are written by the next holder of the journal
//! mutex as one record with one `fdatasync` (`commit_grants_sync`).
//!
//! Each shard keeps its maps ordered (`BTreeMap`), so an admin listing can
//! merge shards in username order for keyset pagination.

pub mod audit;
pub mod journal;
pub mod open;
pub mod outbox;
pub mod rules;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::audit::{AuditEntry, AuditRecord};
use crate::clock::UnixMillis;
use crate::decision::{decide, Decision, Known, LockState, Windows};
use crate::model::{RequestRecord, RequestState, Role, UserRecord};
use crate::rule::{DecidedBy, PutRuleResult, Rule, RuleClaim, RuleOrderResult, StoredRule};
use crate::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, ListState, Page,
    Poll, Store, StoreError,
};
use crate::webhook::WebhookEvent;
use journal::{GrantEntry, Journal, JournalError, JournalRecord};
use open::{CompactString, OpenRequest};

/// Number of shards. A power of two well above the worker count keeps the
/// chance that two workers want the same shard at once small.
pub const SHARDS: usize = 64;

#[derive(Default, Debug)]
struct Shard {
    /// Pending and denied requests, in their compact layout, boxed: the
    /// B-tree's nodes then hold 32-byte slots (name and pointer) instead of
    /// 160-byte ones, so its empty slots (about a third, after random
    /// inserts) waste 32 bytes each rather than 160, while each request is
    /// one exact-size allocation. At 1,000,000 pending that is about 50 B
    /// less per request (docs/BENCHMARKS.md, "Memory per pending request");
    /// a poll follows one more pointer.
    open: BTreeMap<CompactString, Box<OpenRequest>>,
    /// The denied requests of `open`, by username, with their `denied_at`:
    /// the index of the denied listing, so a page of denied requests never
    /// walks the pending ones. Invariant: a name is here exactly when `open`
    /// holds a denied request for it; every path that denies, forgets,
    /// sweeps or replaces an open request keeps it (`deny`,
    /// `forget_request`, `sweep`, the create of `register_sync`).
    denied: BTreeMap<CompactString, UnixMillis>,
    /// Granted requests still inside (or not yet swept past) their window.
    granted: BTreeMap<String, RequestRecord>,
    users: BTreeMap<String, UserRecord>,
}

/// The embedded store.
#[derive(Debug)]
pub struct EmbeddedStore {
    shards: Box<[Mutex<Shard>]>,
    /// `unlocked_until` in ms since the epoch; 0 means locked.
    unlocked_until: AtomicU64,
    /// Number of pending records held (live or expired-but-unswept).
    pending: AtomicUsize,
    max_pending: usize,
    windows: Windows,
    /// The defined roles by name. Not sharded: at most
    /// `request::DEFINED_ROLES_MAX` of them, read far more often than
    /// written, and never on the poll path.
    roles: RwLock<BTreeMap<String, Role>>,
    /// `None` for a purely in-memory store (tests, benches).
    journal: Mutex<Option<Journal>>,
    /// Per shard, bumped after every change to a user of that shard; with
    /// `roles_generation`, the answer of [`Store::access_generation`].
    user_generations: Box<[AtomicU64]>,
    /// Bumped after every role change.
    roles_generation: AtomicU64,
    /// The auto-approval rules in evaluation order, with their use counts.
    /// Written under the journal mutex, after the journal.
    rules: RwLock<rules::RuleTable>,
    /// Bumped after every change of the rule list (not of a use count).
    rules_version: AtomicU64,
    /// Grants waiting for the group commit (see `commit_grants_sync`).
    /// Locked only to push a slot or to take them all, never during I/O.
    grant_queue: Mutex<Vec<std::sync::Arc<GroupSlot>>>,
    /// Whether decisions write webhook events to the outbox (webhooks are
    /// configured: [`EmbeddedStore::with_webhook_outbox`]).
    recording: AtomicBool,
    /// Undelivered webhook events (`outbox`). Locked after the journal
    /// mutex, never during I/O.
    outbox: Mutex<outbox::Outbox>,
    /// The audit records and their own file, `audit.log` (`audit`): a
    /// mutex of their own, never the journal's.
    audit: Mutex<audit::AuditLog>,
}

fn shard_of(username: &str) -> usize {
    crate::shard::shard_of(username, SHARDS)
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard lock cannot leave a half-written record
    // (every mutation is a single map operation), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EmbeddedStore {
    /// A store with no journal: nothing survives the process.
    pub fn in_memory(windows: Windows, max_pending: usize) -> Self {
        EmbeddedStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            unlocked_until: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            max_pending,
            windows,
            roles: RwLock::new(BTreeMap::new()),
            journal: Mutex::new(None),
            user_generations: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            roles_generation: AtomicU64::new(0),
            rules: RwLock::new(rules::RuleTable::default()),
            rules_version: AtomicU64::new(0),
            grant_queue: Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
            outbox: Mutex::new(outbox::Outbox::default()),
            audit: Mutex::new(audit::AuditLog::default()),
        }
    }

    /// Records webhook events from now on: every decision writes its events
    /// to the outbox in the same journal append, holding at most `cap`
    /// undelivered events (the oldest are dropped past it, counted and
    /// logged). Events replayed from the journal are kept either way.
    pub fn with_webhook_outbox(self, cap: usize) -> Self {
        self.outbox_lock().set_cap(cap);
        self.recording.store(true, Ordering::Release);
        self
    }

    fn outbox_lock(&self) -> MutexGuard<'_, outbox::Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events of a decision, built only while webhooks are configured.
    fn events(&self, build: impl FnOnce() -> Vec<WebhookEvent>) -> Vec<WebhookEvent> {
        if self.recording.load(Ordering::Acquire) {
            build()
        } else {
            Vec::new()
        }
    }

    /// Writes `record` durably with its webhook `events` as one line (the
    /// journal mutex is held), then queues the events in the outbox.
    fn persist_with(
        &self,
        journal: &mut MutexGuard<'_, Option<Journal>>,
        record: &JournalRecord,
        events: Vec<WebhookEvent>,
    ) -> Result<(), StoreError> {
        self.persist_parts(journal, record, events, None)
    }

    /// [`Self::persist_with`], and the decision's audit records in the
    /// same line (`audited`), if any: `audit` holds the audit log, locked
    /// after the journal mutex since the records' ids were given, and the
    /// records with their cap; they join the log's memory once written.
    fn persist_parts(
        &self,
        journal: &mut MutexGuard<'_, Option<Journal>>,
        record: &JournalRecord,
        events: Vec<WebhookEvent>,
        audit: Option<(&mut audit::AuditLog, &[AuditRecord], usize)>,
    ) -> Result<(), StoreError> {
        let (records, max) = audit.as_ref().map_or((&[][..], 0), |(_, r, m)| (*r, *m));
        if events.is_empty() && records.is_empty() {
            return self.persist(journal, record);
        }
        if let Some(j) = journal.as_mut() {
            j.append_parts(record, &events, records, max).map_err(|e| {
                tracing::error!(error = %e, "journal append failed");
                StoreError::Unavailable(format!("journal write failed: {e}"))
            })?;
        }
        if let Some((log, records, max)) = audit {
            log.keep(records, max);
        }
        if !events.is_empty() {
            self.outbox_lock().push(events);
        }
        Ok(())
    }

    /// Writes webhook events of a decision the journal does not otherwise
    /// keep (deny, forget, lock), durably, before it is applied.
    fn persist_events(
        &self,
        journal: &mut MutexGuard<'_, Option<Journal>>,
        events: Vec<WebhookEvent>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let record = JournalRecord::Events { events };
        self.persist(journal, &record)?;
        let JournalRecord::Events { events } = record else {
            unreachable!("built above")
        };
        self.outbox_lock().push(events);
        Ok(())
    }

    /// Marks `username`'s access as changed (after the change is applied,
    /// so a reader that sees the new generation reads the new state).
    fn user_changed(&self, username: &str) {
        self.user_generations[shard_of(username)].fetch_add(1, Ordering::Release);
    }

    /// Opens the store in `dir`: replays and compacts the journal.
    pub fn open(
        dir: &Path,
        windows: Windows,
        max_pending: usize,
        now: UnixMillis,
    ) -> Result<Self, JournalError> {
        let mut store = Self::in_memory(windows, max_pending);
        store.audit = Mutex::new(audit::AuditLog::replay(dir)?);
        let path = dir.join("journal.log");
        let (records, torn) = journal::replay(&path)?;
        if torn > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = torn,
                "dropped a torn, unacknowledged record at the end of the journal"
            );
        }
        for record in records {
            store.apply(record);
        }
        // The audit records of `audited` lines reach `audit.log` now,
        // durably, before the rewrite below drops those lines.
        store.audit_log().finish_open()?;
        // Roles first: a reader of the compacted file meets every role
        // before the users that name it.
        let mut compacted: Vec<JournalRecord> = store
            .roles_read()
            .values()
            .map(|role| JournalRecord::PutRole { role: role.clone() })
            .collect();
        let roles = compacted.len();
        // Rules in their order, then the non-zero use counts.
        for r in store.rules_read().rules() {
            compacted.push(JournalRecord::PutRule {
                rule: r.rule.clone(),
            });
        }
        for r in store.rules_read().rules() {
            if r.uses > 0 {
                compacted.push(JournalRecord::RuleUses {
                    name: r.rule.name.clone(),
                    uses: r.uses,
                });
            }
        }
        let mut users = 0;
        let mut granted = 0;
        for shard in store.shards.iter() {
            let mut shard = lock(shard);
            shard.granted.retain(|_, r| windows.is_live(r, now));
            for user in shard.users.values() {
                compacted.push(JournalRecord::PutUser { user: user.clone() });
                users += 1;
            }
            for request in shard.granted.values() {
                compacted.push(JournalRecord::Granted {
                    request: request.clone(),
                });
                granted += 1;
            }
        }
        // Undelivered webhook events, in commit order.
        let undelivered: Vec<WebhookEvent> = store.outbox_lock().events().cloned().collect();
        let events = undelivered.len();
        for chunk in undelivered.chunks(1000) {
            compacted.push(JournalRecord::Events {
                events: chunk.to_vec(),
            });
        }
        let journal = Journal::rewrite(dir, &compacted)?;
        tracing::info!(
            path = %journal.path().display(),
            roles,
            users,
            granted,
            events,
            "embedded store opened; journal compacted"
        );
        *store.journal.lock().unwrap_or_else(|p| p.into_inner()) = Some(journal);
        Ok(store)
    }

    fn shard(&self, username: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(username)])
    }

    // Like the shard locks, a poisoned roles lock is used anyway: every
    // write under it is a single map operation.
    fn roles_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Role>> {
        self.roles.read().unwrap_or_else(|p| p.into_inner())
    }

    fn roles_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Role>> {
        self.roles.write().unwrap_or_else(|p| p.into_inner())
    }

    fn rules_read(&self) -> std::sync::RwLockReadGuard<'_, rules::RuleTable> {
        self.rules.read().unwrap_or_else(|p| p.into_inner())
    }

    fn rules_write(&self) -> std::sync::RwLockWriteGuard<'_, rules::RuleTable> {
        self.rules.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a replayed record to memory.
    fn apply(&self, record: JournalRecord) {
        match record {
            JournalRecord::PutUser { user } => {
                self.shard(&user.username)
                    .users
                    .insert(user.username.clone(), user);
            }
            JournalRecord::DeleteUser { username } => {
                let mut s = self.shard(&username);
                s.users.remove(&username);
                s.granted.remove(&username);
            }
            JournalRecord::Grant { user, request } => {
                let mut s = self.shard(&user.username);
                s.users.insert(user.username.clone(), user);
                s.granted.insert(request.username.clone(), request);
            }
            JournalRecord::Grants { grants } => {
                for GrantEntry { user, request } in grants {
                    let mut s = self.shard(&user.username);
                    s.users.insert(user.username.clone(), user);
                    s.granted.insert(request.username.clone(), request);
                }
            }
            JournalRecord::Granted { request } => {
                self.shard(&request.username)
                    .granted
                    .insert(request.username.clone(), request);
            }
            JournalRecord::PutRole { role } => {
                self.roles_write().insert(role.name.clone(), role);
            }
            JournalRecord::DeleteRole { name } => {
                self.roles_write().remove(&name);
            }
            JournalRecord::PutRule { rule } => self.rules_write().put(rule),
            JournalRecord::DeleteRule { name } => {
                self.rules_write().delete(&name);
            }
            JournalRecord::RuleOrder { names } => self.rules_write().reorder(&names),
            JournalRecord::RuleUses { name, uses } => self.rules_write().set_uses(&name, uses),
            JournalRecord::WithEvents { record, events } => {
                self.apply(*record);
                self.outbox_lock().push(events);
            }
            JournalRecord::Events { events } => {
                self.outbox_lock().push(events);
            }
            JournalRecord::Delivered { ids } => {
                self.outbox_lock().ack(&ids);
            }
            JournalRecord::Audited { record, audit, max } => {
                self.apply(*record);
                self.audit_log().adopt(audit, max);
            }
        }
    }

    /// Writes `record` durably, if this store has a journal.
    fn persist(
        &self,
        journal: &mut MutexGuard<'_, Option<Journal>>,
        record: &JournalRecord,
    ) -> Result<(), StoreError> {
        if let Some(j) = journal.as_mut() {
            j.append(record).map_err(|e| {
                tracing::error!(error = %e, "journal append failed");
                StoreError::Unavailable(format!("journal write failed: {e}"))
            })?;
        }
        Ok(())
    }

    fn audit_log(&self) -> MutexGuard<'_, audit::AuditLog> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lines in `audit.log` now (`None` without a data dir); tests check
    /// that a flood cannot grow it past its bound.
    pub fn audit_file_lines(&self) -> Option<usize> {
        self.audit_log().file_lines()
    }

    fn journal(&self) -> MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops expired records from memory and fixes the pending count.
    /// Called periodically by the binaries' sweeper thread; correctness
    /// does not depend on it, because every read checks expiry itself.
    pub fn sweep(&self, now: UnixMillis) -> usize {
        self.record_lock_expiry(now);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            let windows = self.windows;
            let mut pending_removed = 0;
            let Shard {
                open,
                denied,
                granted,
                ..
            } = &mut *s;
            open.retain(|name, r| {
                let live = r.is_live(&windows, now);
                if !live {
                    removed += 1;
                    if r.is_pending() {
                        pending_removed += 1;
                    } else {
                        denied.remove(name);
                    }
                }
                live
            });
            granted.retain(|_, r| {
                let live = windows.is_live(r, now);
                removed += usize::from(!live);
                live
            });
            drop(s);
            self.pending.fetch_sub(pending_removed, Ordering::Relaxed);
        }
        removed
    }

    /// With webhooks, once the unlock window has closed by itself, records
    /// `registry.locked` (`"expired": true`) once, and stores the locked
    /// state (which reads the same: an expired window is locked). Under the
    /// journal mutex, which `set_lock_state` also holds while recording, so
    /// an admin's unlock in between is never overwritten.
    fn record_lock_expiry(&self, now: UnixMillis) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        let until = self.unlocked_until.load(Ordering::Acquire);
        if until == 0 || until > now.0 {
            return;
        }
        let mut journal = self.journal();
        if self.unlocked_until.load(Ordering::Acquire) != until {
            return;
        }
        let event = WebhookEvent::lock_expired(UnixMillis(until));
        match self.persist_events(&mut journal, vec![event]) {
            Ok(()) => self.unlocked_until.store(0, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "recording the unlock window's end failed; will retry")
            }
        }
    }

    // The synchronous bodies of the `Store` methods.

    fn register_sync(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let lock_state = self.lock_state_sync();
        let mut s = self.shard(poll.username);
        let Shard {
            open,
            denied,
            granted,
            users,
        } = &mut *s;
        // One search per map: the entries found here serve both the
        // decision and its application (a re-poll is the hot path).
        let granted_entry = granted.get(poll.username);
        let mut open_entry = open.get_mut(poll.username);
        let known = Known {
            user_exists: users.contains_key(poll.username),
            request: granted_entry
                .map(Into::into)
                .or(open_entry.as_deref().map(|r| r.summary())),
        };
        let decision = decide(
            &poll.fingerprint,
            known,
            lock_state,
            now,
            &self.windows,
            poll.preauthorized,
        );
        match decision {
            Decision::Collect => Ok((decision, granted_entry.cloned())),
            Decision::StillPending | Decision::PendingWhileLocked => {
                let r = open_entry.take().expect("decide saw a pending request");
                r.refresh(now, poll.source_addr);
                Ok((decision, None))
            }
            Decision::Create => {
                // An expired record may still sit here; it is replaced.
                let replaced_pending = open_entry.as_ref().is_some_and(|r| r.is_pending());
                if open_entry.is_some() && !replaced_pending {
                    // An expired denial, not swept yet: its index entry goes.
                    denied.remove(poll.username);
                }
                granted.remove(poll.username);
                if !replaced_pending {
                    // Reserve a slot under the cap without a global lock.
                    let reserved =
                        self.pending
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                (n < self.max_pending).then_some(n + 1)
                            });
                    if reserved.is_err() {
                        return Err(StoreError::PendingLimit {
                            max: self.max_pending,
                        });
                    }
                }
                let username = CompactString::from(poll.username);
                open.insert(username, Box::new(OpenRequest::created(poll, now)));
                Ok((decision, None))
            }
            Decision::Conflict | Decision::Denied | Decision::Locked => Ok((decision, None)),
        }
    }

    fn lock_state_sync(&self) -> LockState {
        match self.unlocked_until.load(Ordering::Acquire) {
            0 => LockState::default(),
            ms => LockState {
                unlocked_until: Some(UnixMillis(ms)),
            },
        }
    }

    fn get_request_sync(&self, username: &str, now: UnixMillis) -> Option<RequestRecord> {
        let s = self.shard(username);
        if let Some(g) = s.granted.get(username) {
            return self.windows.is_live(g, now).then(|| g.clone());
        }
        s.open
            .get(username)
            .filter(|r| r.is_live(&self.windows, now))
            .map(|r| r.to_record(username))
    }

    /// Keyset pagination over all shards: each shard contributes its first
    /// `limit + 1` matching keys after the cursor; the merged, sorted keys are
    /// cut to `limit`, and only those records are cloned.
    fn list_keys<K: std::borrow::Borrow<str> + Ord, T>(
        &self,
        query: &ListQuery,
        map: impl Fn(&Shard) -> &BTreeMap<K, T>,
        keep: impl Fn(&T) -> bool,
    ) -> (Vec<String>, bool) {
        let limit = query.limit.clamp(1, crate::store::MAX_PAGE);
        let prefix = query.prefix.as_deref().unwrap_or("");
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let s = lock(shard);
            let start = match query.cursor.as_deref() {
                Some(c) if c >= prefix => Bound::Excluded(c),
                _ => Bound::Included(prefix),
            };
            let mut taken = 0;
            for (k, v) in map(&s).range::<str, _>((start, Bound::Unbounded)) {
                let k: &str = k.borrow();
                if !k.starts_with(prefix) || taken > limit {
                    break;
                }
                if keep(v) {
                    keys.push(k.to_owned());
                    taken += 1;
                }
            }
        }
        keys.sort_unstable();
        let more = keys.len() > limit;
        keys.truncate(limit);
        (keys, more)
    }
}

/// One caller's grants in the group commit queue: put in by the caller,
/// taken out and answered by whichever caller commits the group (the one
/// that holds the journal mutex).
#[derive(Debug)]
struct GroupSlot {
    grants: Mutex<Option<(Vec<GrantCommit>, UnixMillis)>>,
    /// The audit entry to write with the slot's one grant, if it is
    /// written (`commit_grant_recorded`), and the audit cap.
    audit: Mutex<Option<(AuditEntry, usize)>>,
    answer: Mutex<Option<Result<Vec<GrantResult>, StoreError>>>,
    /// The record stored for `audit`, set with `answer`.
    recorded: Mutex<Option<AuditRecord>>,
}

/// What became of one grant of a group while it was checked.
enum Checked {
    /// Decided without a write (already granted, conflict, not found).
    /// Boxed: most grants of a group are `Planned`.
    Done(Box<GrantResult>),
    /// To be written: the index of its entry in the group's record.
    Planned(usize),
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl EmbeddedStore {
    /// Group commit. The caller queues its grants, then waits for the
    /// journal mutex. Whoever gets the mutex first finds its own slot
    /// unanswered, takes every queued slot (its own and those of callers
    /// that queued while the previous group was being fsynced), and commits
    /// them with one append and one `fdatasync`, answering each slot before
    /// it lets go of the mutex. A caller whose slot was answered meanwhile
    /// returns that answer. So concurrent single grants share an `fdatasync`
    /// without any timer or extra thread, and a lone grant waits for no one
    /// (the same scheme as LevelDB's writer queue).
    ///
    /// With `audit`, the caller's one grant is written with that audit
    /// entry in its line when it is written (`audited`), and the stored
    /// record is returned.
    fn commit_grants_sync(
        &self,
        grants: Vec<GrantCommit>,
        audit: Option<(AuditEntry, usize)>,
        now: UnixMillis,
    ) -> Result<(Vec<GrantResult>, Option<AuditRecord>), StoreError> {
        let slot = std::sync::Arc::new(GroupSlot {
            grants: Mutex::new(Some((grants, now))),
            audit: Mutex::new(audit),
            answer: Mutex::new(None),
            recorded: Mutex::new(None),
        });
        self.grant_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::sync::Arc::clone(&slot));
        let mut journal = self.journal();
        if let Some(answer) = take(&slot.answer) {
            return answer.map(|results| (results, take(&slot.recorded)));
        }
        let group =
            std::mem::take(&mut *self.grant_queue.lock().unwrap_or_else(|p| p.into_inner()));
        self.commit_group(&mut journal, &group);
        drop(journal);
        // `None` only if the caller that took our slot panicked mid-group.
        let answer = take(&slot.answer).unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "the group commit holding this grant failed".into(),
            ))
        });
        answer.map(|results| (results, take(&slot.recorded)))
    }

    /// Checks one grant as a single `commit_grant` does, under the shard
    /// lock and without I/O: `Ok` with the request as it will be once
    /// granted, or the answer that needs no write.
    fn check_grant(
        &self,
        grant: &GrantCommit,
        now: UnixMillis,
    ) -> Result<RequestRecord, Box<GrantResult>> {
        let username = grant.username.as_str();
        let s = self.shard(username);
        if let Some(g) = s
            .granted
            .get(username)
            .filter(|r| self.windows.is_live(r, now))
        {
            return Err(Box::new(if g.fingerprint == grant.fingerprint {
                GrantResult::AlreadyGranted(g.clone())
            } else {
                GrantResult::Conflict("a different request for this username was granted")
            }));
        }
        if s.users.contains_key(username) {
            return Err(Box::new(GrantResult::Conflict(
                "a user with this username already exists",
            )));
        }
        let mut granted = match s
            .open
            .get(username)
            .filter(|r| r.is_live(&self.windows, now))
        {
            None => return Err(Box::new(GrantResult::NotFound)),
            Some(r) if r.fingerprint != grant.fingerprint => {
                return Err(Box::new(GrantResult::Conflict(
                    "the pending request changed since it was read; read it again",
                )))
            }
            Some(r) if !r.is_pending() => {
                return Err(Box::new(GrantResult::Conflict("the request was denied")))
            }
            Some(r) => r.to_record(username),
        };
        drop(s);
        granted.state = RequestState::Granted {
            granted_at: grant.granted_at,
        };
        granted.sealed = Vec::new();
        granted.certificate = grant.certificate.clone();
        granted.roles = grant.user.roles.clone();
        granted.permissions = grant.user.permissions.clone();
        granted.decided_by = grant.user.decided_by.clone();
        Ok(granted)
    }

    /// Commits the grants of `group` (the journal mutex is held): check
    /// each against the state and against the grants before it in the
    /// group, write every one that passes as one record with one
    /// `fdatasync`, then apply them in memory, then answer every slot.
    /// Durable before acknowledged, as for a single grant: no other durable
    /// mutation can run meanwhile (we hold the journal mutex), and polls
    /// cannot create users.
    fn commit_group(
        &self,
        journal: &mut MutexGuard<'_, Option<Journal>>,
        group: &[std::sync::Arc<GroupSlot>],
    ) {
        let mut entries: Vec<GrantEntry> = Vec::new();
        // Username → index in `entries`, so a second grant of a request in
        // the same group sees the first one.
        let mut in_group: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        let mut checked: Vec<Vec<Checked>> = Vec::with_capacity(group.len());
        for slot in group {
            let Some((grants, now)) = take(&slot.grants) else {
                checked.push(Vec::new());
                continue;
            };
            let mut outcomes = Vec::with_capacity(grants.len());
            for grant in grants {
                if let Some(&i) = in_group.get(&grant.username) {
                    let earlier = &entries[i].request;
                    outcomes.push(Checked::Done(Box::new(
                        if earlier.fingerprint == grant.fingerprint {
                            GrantResult::AlreadyGranted(earlier.clone())
                        } else {
                            GrantResult::Conflict(
                                "a different request for this username was granted",
                            )
                        },
                    )));
                    continue;
                }
                match self.check_grant(&grant, now) {
                    Err(result) => outcomes.push(Checked::Done(result)),
                    Ok(request) => {
                        in_group.insert(grant.username, entries.len());
                        outcomes.push(Checked::Planned(entries.len()));
                        entries.push(GrantEntry {
                            user: grant.user,
                            request,
                        });
                    }
                }
            }
            checked.push(outcomes);
        }
        // The audit entries of the slots whose one grant is written, with
        // their ids given under the audit log's lock, which is held (after
        // the journal mutex) until they are written and kept, so the log's
        // memory stays in id order.
        let mut audit_slots = Vec::new();
        let mut audit_entries = Vec::new();
        let mut audit_max = 0;
        for (i, (slot, outcomes)) in group.iter().zip(&checked).enumerate() {
            if let [Checked::Planned(_)] = outcomes.as_slice() {
                if let Some((entry, max)) = take(&slot.audit) {
                    audit_slots.push(i);
                    audit_entries.push(entry);
                    audit_max = max;
                }
            }
        }
        let mut audit_log = (!audit_entries.is_empty()).then(|| self.audit_log());
        let audit_records = audit_log
            .as_ref()
            .map(|log| log.assign(audit_entries))
            .unwrap_or_default();
        let audit = audit_log
            .as_deref_mut()
            .map(|log| (log, &audit_records[..], audit_max));
        let events = self.events(|| {
            entries
                .iter()
                .flat_map(|e| {
                    let at = match e.request.state {
                        RequestState::Granted { granted_at } => granted_at,
                        _ => e.request.last_seen,
                    };
                    WebhookEvent::for_grant(&e.request, at)
                })
                .collect()
        });
        let written = match entries.len() {
            0 => Ok(entries),
            1 => {
                let entry = entries.pop().expect("one entry");
                let record = JournalRecord::Grant {
                    user: entry.user,
                    request: entry.request,
                };
                let result = self.persist_parts(journal, &record, events, audit);
                let JournalRecord::Grant { user, request } = record else {
                    unreachable!("built above")
                };
                result.map(|()| vec![GrantEntry { user, request }])
            }
            _ => {
                let record = JournalRecord::Grants { grants: entries };
                let result = self.persist_parts(journal, &record, events, audit);
                let JournalRecord::Grants { grants } = record else {
                    unreachable!("built above")
                };
                result.map(|()| grants)
            }
        };
        drop(audit_log);
        let entries = match written {
            Ok(entries) => {
                for (i, record) in audit_slots.into_iter().zip(audit_records) {
                    *group[i].recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
                }
                entries
            }
            Err(e) => {
                // Nothing of the group was applied. Slots that needed no
                // write still get their answers.
                for (slot, outcomes) in group.iter().zip(checked) {
                    let answer = if outcomes.iter().any(|o| matches!(o, Checked::Planned(_))) {
                        Err(e.clone())
                    } else {
                        Ok(outcomes
                            .into_iter()
                            .map(|o| match o {
                                Checked::Done(r) => *r,
                                Checked::Planned(_) => unreachable!("checked above"),
                            })
                            .collect())
                    };
                    *slot.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
                }
                return;
            }
        };
        let mut pending_freed = 0;
        for entry in &entries {
            let username = entry.request.username.as_str();
            let mut s = self.shard(username);
            pending_freed += usize::from(s.open.remove(username).is_some_and(|r| r.is_pending()));
            s.users
                .insert(entry.user.username.clone(), entry.user.clone());
            s.granted.insert(username.to_owned(), entry.request.clone());
            drop(s);
            self.user_changed(username);
        }
        self.pending.fetch_sub(pending_freed, Ordering::Relaxed);
        for (slot, outcomes) in group.iter().zip(checked) {
            let answer = outcomes
                .into_iter()
                .map(|o| match o {
                    Checked::Done(r) => *r,
                    Checked::Planned(i) => GrantResult::Granted(entries[i].request.clone()),
                })
                .collect();
            *slot.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(answer));
        }
    }

    /// How many journal appends (each one `fdatasync`) this store made
    /// since it was opened; `0` without a journal.
    pub fn journal_appends(&self) -> u64 {
        self.journal().as_ref().map_or(0, Journal::appends)
    }
}

impl Store for EmbeddedStore {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        self.register_sync(poll, now)
    }

    async fn lock_state(&self) -> Result<LockState, StoreError> {
        Ok(self.lock_state_sync())
    }

    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        let ms = state.unlocked_until.map_or(0, |u| u.0.max(1));
        let events = self.events(|| {
            vec![WebhookEvent::lock(
                state.unlocked_until,
                crate::clock::UnixMillis::now(),
            )]
        });
        if events.is_empty() {
            self.unlocked_until.store(ms, Ordering::Release);
            return Ok(());
        }
        // The event is durable before the change is applied, and the
        // journal mutex orders two admins' changes as their events.
        let mut journal = self.journal();
        self.persist_events(&mut journal, events)?;
        self.unlocked_until.store(ms, Ordering::Release);
        Ok(())
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(self.pending.load(Ordering::Relaxed))
    }

    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.get_request_sync(username, now))
    }

    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        let windows = self.windows;
        let (keys, more) = match query.state {
            ListState::Pending => self.list_keys(
                query,
                |s| &s.open,
                |r| r.is_pending() && r.is_live(&windows, now),
            ),
            ListState::Granted => {
                self.list_keys(query, |s| &s.granted, |r| windows.is_live(r, now))
            }
            ListState::Denied => self.list_keys(
                query,
                |s| &s.denied,
                |denied_at| now < denied_at.plus(windows.deny_window),
            ),
        };
        let next_cursor = if more { keys.last().cloned() } else { None };
        let items = keys
            .iter()
            .filter_map(|k| self.get_request_sync(k, now))
            .filter(|r| query.state.holds(&r.state))
            .collect();
        Ok(Page { items, next_cursor })
    }

    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        let (mut results, _) = self.commit_grants_sync(vec![grant], None, now)?;
        Ok(results.pop().expect("one result per grant"))
    }

    async fn commit_grant_recorded(
        &self,
        grant: GrantCommit,
        audit: AuditEntry,
        max: usize,
        now: UnixMillis,
    ) -> Result<(GrantResult, Option<AuditRecord>), StoreError> {
        let (mut results, recorded) =
            self.commit_grants_sync(vec![grant], Some((audit, max)), now)?;
        Ok((results.pop().expect("one result per grant"), recorded))
    }

    async fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        self.commit_grants_sync(grants, None, now)
            .map(|(results, _)| results)
    }

    async fn deny(
        &self,
        username: &str,
        by: Option<DecidedBy>,
        now: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        // The journal mutex makes a deny and a grant of the same request
        // exclusive: `commit_grant` checks, writes the journal and applies
        // while holding it, so a deny can never land between its check and
        // its apply (and answer 204 for a request that then ends granted).
        let mut journal = self.journal();
        let mut s = self.shard(username);
        if s.granted
            .get(username)
            .is_some_and(|r| self.windows.is_live(r, now))
        {
            return Ok(DenyResult::AlreadyGranted);
        }
        let windows = self.windows;
        let Some(r) = s
            .open
            .get_mut(username)
            .filter(|r| r.is_live(&windows, now))
        else {
            return Ok(DenyResult::NotFound);
        };
        let events = if r.is_pending() {
            self.events(|| {
                let mut record = r.to_record(username);
                record.state = RequestState::Denied { denied_at: now };
                record.sealed = Vec::new();
                record.decided_by = by.clone();
                WebhookEvent::for_deny(&record, now)
            })
        } else {
            Vec::new()
        };
        if !events.is_empty() {
            // No I/O under the shard lock. The journal mutex keeps grants,
            // denies and forgets out until the deny is applied; a poll can
            // only refresh the request meanwhile.
            drop(s);
            self.persist_events(&mut journal, events)?;
            s = self.shard(username);
        }
        let Some(r) = s
            .open
            .get_mut(username)
            .filter(|r| r.is_live(&windows, now))
        else {
            return Ok(DenyResult::NotFound);
        };
        if r.is_pending() {
            r.deny(now, by);
            s.denied.insert(CompactString::from(username), now);
            drop(s);
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(DenyResult::Denied)
    }

    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        // Exclusive with grants, as `deny` is.
        let mut journal = self.journal();
        let mut s = self.shard(username);
        if s.granted
            .get(username)
            .is_some_and(|r| self.windows.is_live(r, now))
        {
            return Ok(ForgetResult::Granted);
        }
        let windows = self.windows;
        if !s
            .open
            .get(username)
            .is_some_and(|r| r.is_live(&windows, now))
        {
            return Ok(ForgetResult::NotFound);
        }
        let events = self.events(|| {
            let Some(r) = s.open.get(username) else {
                return Vec::new();
            };
            let mut record = r.to_record(username);
            record.sealed = Vec::new();
            vec![WebhookEvent::request(
                crate::webhook::EventType::RequestDeleted,
                &record,
                now,
            )]
        });
        if !events.is_empty() {
            drop(s);
            self.persist_events(&mut journal, events)?;
            s = self.shard(username);
        }
        let was_pending = s.open.remove(username).is_some_and(|r| r.is_pending());
        s.denied.remove(username);
        drop(s);
        if was_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(ForgetResult::Forgotten)
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.shard(username).users.get(username).cloned())
    }

    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let (keys, more) = self.list_keys(query, |s| &s.users, |_| true);
        let next_cursor = if more { keys.last().cloned() } else { None };
        let items = keys
            .iter()
            .filter_map(|k| self.shard(k).users.get(k).cloned())
            .collect();
        Ok(Page { items, next_cursor })
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let mut journal = self.journal();
        self.persist(&mut journal, &JournalRecord::PutUser { user: user.clone() })?;
        let username = user.username.clone();
        self.shard(&username).users.insert(username.clone(), user);
        self.user_changed(&username);
        Ok(())
    }

    async fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        // Every user write holds the journal mutex, so nothing can land
        // between this read and the write below.
        let mut journal = self.journal();
        let Some(mut user) = self.shard(username).users.get(username).cloned() else {
            return Ok(None);
        };
        change.apply(&mut user);
        let events = self.events(|| {
            vec![WebhookEvent::user(
                crate::webhook::EventType::UserUpdated,
                &user,
                crate::clock::UnixMillis::now(),
            )]
        });
        self.persist_with(
            &mut journal,
            &JournalRecord::PutUser { user: user.clone() },
            events,
        )?;
        self.shard(username)
            .users
            .insert(username.to_owned(), user.clone());
        self.user_changed(username);
        Ok(Some(user))
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut journal = self.journal();
        let Some(user) = self.shard(username).users.get(username).cloned() else {
            return Ok(false);
        };
        let events = self.events(|| {
            vec![WebhookEvent::user(
                crate::webhook::EventType::UserDeleted,
                &user,
                crate::clock::UnixMillis::now(),
            )]
        });
        self.persist_with(
            &mut journal,
            &JournalRecord::DeleteUser {
                username: username.to_owned(),
            },
            events,
        )?;
        let mut s = self.shard(username);
        s.users.remove(username);
        s.granted.remove(username);
        drop(s);
        self.user_changed(username);
        Ok(true)
    }

    async fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        Ok(self.roles_read().get(name).cloned())
    }

    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        // A BTreeMap iterates in name order.
        Ok(self.roles_read().values().cloned().collect())
    }

    async fn put_role(&self, role: Role) -> Result<(), StoreError> {
        // Durable before applied, under the journal mutex like users.
        let mut journal = self.journal();
        self.persist(&mut journal, &JournalRecord::PutRole { role: role.clone() })?;
        self.roles_write().insert(role.name.clone(), role);
        self.roles_generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        let mut journal = self.journal();
        // Checked under the journal mutex, which every role write holds, so
        // the role cannot appear or vanish between the check and the write.
        if !self.roles_read().contains_key(name) {
            return Ok(false);
        }
        self.persist(
            &mut journal,
            &JournalRecord::DeleteRole {
                name: name.to_owned(),
            },
        )?;
        self.roles_write().remove(name);
        self.roles_generation.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    async fn rules_version(&self) -> Result<u64, StoreError> {
        Ok(self.rules_version.load(Ordering::Acquire))
    }

    async fn list_rules(&self) -> Result<(u64, Vec<StoredRule>), StoreError> {
        // Read under the table's lock, which every change holds while it
        // bumps the version, so the pair is consistent.
        let table = self.rules_read();
        Ok((
            self.rules_version.load(Ordering::Acquire),
            table.rules().to_vec(),
        ))
    }

    async fn put_rule(&self, rule: Rule, max: usize) -> Result<PutRuleResult, StoreError> {
        // Every rule write holds the journal mutex, so the check still
        // holds when the change is applied.
        let mut journal = self.journal();
        let result = self.rules_read().check_put(&rule.name, max);
        if result == PutRuleResult::Full {
            return Ok(result);
        }
        self.persist(&mut journal, &JournalRecord::PutRule { rule: rule.clone() })?;
        let mut table = self.rules_write();
        table.put(rule);
        self.rules_version.fetch_add(1, Ordering::Release);
        Ok(result)
    }

    async fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        let mut journal = self.journal();
        if !self.rules_read().contains(name) {
            return Ok(false);
        }
        self.persist(
            &mut journal,
            &JournalRecord::DeleteRule {
                name: name.to_owned(),
            },
        )?;
        let mut table = self.rules_write();
        table.delete(name);
        self.rules_version.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    async fn set_rule_order(&self, names: &[String]) -> Result<RuleOrderResult, StoreError> {
        let mut journal = self.journal();
        if !self.rules_read().is_order(names) {
            return Ok(RuleOrderResult::Mismatch);
        }
        self.persist(
            &mut journal,
            &JournalRecord::RuleOrder {
                names: names.to_vec(),
            },
        )?;
        let mut table = self.rules_write();
        table.reorder(names);
        self.rules_version.fetch_add(1, Ordering::Release);
        Ok(RuleOrderResult::Applied)
    }

    async fn claim_rule_use(&self, name: &str) -> Result<RuleClaim, StoreError> {
        // The journal mutex serialises claims, so two claims of the last
        // use cannot both pass; the count is on disk before it is used.
        let mut journal = self.journal();
        let claim = self.rules_read().check_claim(name);
        if let RuleClaim::Claimed(uses) = claim {
            self.persist(
                &mut journal,
                &JournalRecord::RuleUses {
                    name: name.to_owned(),
                    uses,
                },
            )?;
            self.rules_write().set_uses(name, uses);
        }
        Ok(claim)
    }

    async fn append_audit(
        &self,
        entries: Vec<crate::audit::AuditEntry>,
        max: usize,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        self.audit_log().append(entries, max).map_err(|e| {
            tracing::error!(error = %e, "audit log append failed");
            StoreError::Unavailable(format!("audit log write failed: {e}"))
        })
    }

    async fn list_audit(
        &self,
        query: &crate::audit::AuditQuery,
    ) -> Result<Page<crate::audit::AuditRecord>, StoreError> {
        Ok(crate::audit::page_of(self.audit_log().records(), query))
    }

    async fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        self.audit_log()
            .prune_before(before)
            .map_err(|e| StoreError::Unavailable(format!("audit log write failed: {e}")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn outbox_take(&self, max: usize) -> Result<Vec<WebhookEvent>, StoreError> {
        Ok(self.outbox_lock().take(max))
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut journal = self.journal();
        self.persist(
            &mut journal,
            &JournalRecord::Delivered { ids: ids.to_vec() },
        )?;
        self.outbox_lock().ack(ids);
        Ok(())
    }

    async fn outbox_depth(&self) -> Result<usize, StoreError> {
        Ok(self.outbox_lock().len())
    }

    fn access_generation(&self, username: &str) -> Option<u64> {
        // Both counters only grow, so their sum moves whenever either does.
        let user = self.user_generations[shard_of(username)].load(Ordering::Acquire);
        Some(user.wrapping_add(self.roles_generation.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests;
