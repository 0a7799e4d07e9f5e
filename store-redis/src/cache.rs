//! The proxies' cache of poll state, kept honest by store events, so that a
//! repeated poll of a known pending request usually needs no Redis round
//! trip.
//!
//! [`CachedStore`] wraps a store. It remembers, per username, the
//! fingerprint of a request it has just seen pending. It also keeps a copy
//! of the lock state. A poll with the same fingerprint within `ttl` of the
//! last store round trip is answered locally: 202 (`StillPending`) while
//! the cached lock says unlocked, 423 (`PendingWhileLocked`) otherwise. Any
//! other poll goes to the store, as does the first poll after `ttl`; that
//! one also refreshes the request's `last_seen` and its Redis TTL.
//!
//! What keeps it honest:
//! - **Events** ([`crate::events`]): a grant, a denial or a user change of a
//!   username drops its entry at once, on every proxy. The next poll reaches
//!   the store and sees 201 or 403. That is how a grant made on admin A
//!   reaches a device polling proxy B within milliseconds. A lock event
//!   replaces the cached lock state. A `Resync` (the subscriber reconnected,
//!   so events may have been missed) drops everything.
//! - **Local expiry**: the cached lock state is an `unlocked_until` time
//!   compared with the clock on every poll, so the registry locks on time
//!   even if no event arrives. It is also re-read from the store once a
//!   second, in case a lock event was lost while the subscriber stayed
//!   connected.
//! - **Bucket epochs** ([`spawn_refresher`]): every transition that
//!   publishes a per-user event also bumps its bucket's epoch in the same
//!   script. Every [`REVALIDATE_EVERY`] the refresher reads the 64 epochs and
//!   drops the cache shard of every bucket whose epoch moved (the cache's
//!   shards are the store's buckets). An entry is answered from only while
//!   the last successful reading started less than [`STALE_BOUND`] ago. So
//!   an event lost without a reconnect (dropped on a cluster bus during a
//!   failover, or by a subscriber on a node that never got it) leaves a
//!   stale answer for at most [`STALE_BOUND`], not for the whole `ttl`.
//! - **`ttl`**: how long an entry is trusted without a store round trip at
//!   all (the poll that passes it refreshes `last_seen`).
//!
//! The cost: `polls` and `lastSeen` in the admin's view count only the polls
//! that reached the store (at most one per device per `ttl`). A cached
//! entry also means "no user with this name", because a grant drops the
//! entry, so `get_user` for such a username is answered locally too (the
//! MQTT path asks that first).
//!
//! The cache is one per process, in 64 mutex-guarded shards shared by every
//! worker, one per store bucket ([`crate::keys::bucket_of`]). The event task can then invalidate it directly, and a device
//! whose connections land on different workers hits the same entry.

use fleetgate_registry::audit::{AuditEntry, AuditQuery, AuditRecord};
use fleetgate_registry::rule::{
    DecidedBy, PutRuleResult, Rule, RuleClaim, RuleOrderResult, StoredRule,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetgate_registry::bounded::GenerationalMap;
use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::metrics as names;
use fleetgate_registry::model::{RequestRecord, Role, UserRecord};
use fleetgate_registry::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, Page, Poll, Store,
    StoreError,
};
use fleetgate_registry::webhook::WebhookEvent;
use fleetgate_registry::UnixMillis;
use tokio::sync::mpsc;

use crate::events::StoreEvent;
use crate::keys::{bucket_of, BUCKETS};
use crate::RedisStore;

/// One cache shard per store bucket, so that a bucket whose epoch moved
/// drops exactly its own shard.
const SHARDS: usize = BUCKETS;

/// The longest a proxy answers from its cache after a grant, deny or user
/// change it did not hear about: entries are used only while the last
/// successful epoch reading started less than this long ago. This is the
/// documented worst case (docs/ARCHITECTURE.md, docs/API.md); with events
/// arriving, visibility takes about a millisecond (docs/BENCHMARKS.md).
pub const STALE_BOUND: Duration = Duration::from_secs(1);

/// How often the refresher re-reads the lock state and the 64 bucket
/// epochs: 65 small reads, four times a second, per proxy process. A quarter
/// of [`STALE_BOUND`], so that one slow or failed reading does not yet
/// disable the cache.
pub const REVALIDATE_EVERY: Duration = Duration::from_millis(250);

struct Entry {
    fingerprint: Fingerprint,
    /// When the store last saw this request pending.
    refreshed: Instant,
}

/// The shared cache state.
pub struct PollCache {
    shards: Box<[Mutex<GenerationalMap<String, Entry>>]>,
    /// Per shard, bumped by every `forget`: a poll that was in flight at the
    /// store while its username was forgotten (a grant landed meanwhile)
    /// must not put back the answer it got from before the grant.
    epochs: Box<[AtomicU64]>,
    /// The store's bucket epochs at the last successful reading (`None`
    /// before the first one).
    store_epochs: Mutex<Option<Vec<u64>>>,
    /// Bumped by every role change heard of (event, local write, or a
    /// moved roles epoch); with `epochs`, the answer of
    /// [`PollCache::access_generation`].
    roles_generation: AtomicU64,
    /// The store's roles epoch at the last successful reading.
    store_roles_epoch: Mutex<Option<u64>>,
    /// The store's rule-list version plus one (0: not known), as the last
    /// `rules:<v>` event, reading or own write left it. It answers
    /// [`Store::rules_version`], which every locked poll of an unknown
    /// device asks (for `whileLocked` rules), without a round trip: that
    /// `HGET` was one of the two round trips of such a poll.
    rules_version: AtomicU64,
    /// Serialises the writers of `rules_version`, and counts the changes
    /// heard of (events, own writes, resyncs), so that a reading which
    /// started before one is dropped instead of putting an older version
    /// back.
    rules_changes: Mutex<u64>,
    /// When the last successful epoch reading started, in µs after `base`
    /// (0: never). Entries are trusted only within [`STALE_BOUND`] of it.
    validated_at: AtomicU64,
    base: Instant,
    ttl: Duration,
    /// Cached `unlocked_until` in ms (0: locked).
    unlocked_until: AtomicU64,
    /// Whether the lock state has been read at least once.
    lock_known: AtomicBool,
    /// Whether the store answered its last call. While it does not, nothing
    /// is answered from the cache: during an outage a grant may have landed
    /// unseen, so devices get the store's honest 503 instead.
    healthy: AtomicBool,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

/// The capacity of one shard of a cache for `working_set` entries.
///
/// A [`GenerationalMap`] keeps a key only if it is touched once per
/// generation, half its capacity. Each shard's generation therefore holds
/// its whole share of the working set, with a sixteenth more for the
/// unevenness of the hash across shards (at 500,000 a shard's share is
/// 7,812 ± 88, so the margin is over five standard deviations). Sized at
/// just the working set, a fleet of `--max-pending` devices polled in
/// rotation thrashed the cache: on one Redis, 500,000 devices polled round
/// after round got 23% to 78% hits where 100% were due, and 0.27× nginx's
/// rate (docs/BENCHMARKS.md, issue 17).
fn shard_capacity(working_set: usize) -> usize {
    let share = working_set.div_ceil(SHARDS);
    2 * (share + share / 16 + 1)
}

impl PollCache {
    /// A cache trusting entries for `ttl` that keeps all of `working_set`
    /// requests cached while each is polled in rotation (the proxies pass
    /// `--max-pending`). It holds at most about twice as many entries.
    pub fn new(ttl: Duration, working_set: usize) -> Arc<Self> {
        Arc::new(PollCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(GenerationalMap::new(shard_capacity(working_set))))
                .collect(),
            epochs: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            store_epochs: Mutex::new(None),
            roles_generation: AtomicU64::new(0),
            store_roles_epoch: Mutex::new(None),
            rules_version: AtomicU64::new(0),
            rules_changes: Mutex::new(0),
            validated_at: AtomicU64::new(0),
            base: Instant::now(),
            ttl,
            unlocked_until: AtomicU64::new(0),
            lock_known: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            hits: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "poll", "result" => "hit"),
            misses: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "poll", "result" => "miss"),
        })
    }

    fn index(&self, username: &str) -> usize {
        bucket_of(username)
    }

    fn shard(&self, username: &str) -> std::sync::MutexGuard<'_, GenerationalMap<String, Entry>> {
        self.shards[self.index(username)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The forget epoch of `username`'s shard.
    fn epoch(&self, username: &str) -> u64 {
        self.epochs[self.index(username)].load(Ordering::Acquire)
    }

    /// The cached lock state, if known.
    pub fn lock_state(&self) -> Option<LockState> {
        if !self.lock_known.load(Ordering::Acquire) {
            return None;
        }
        Some(match self.unlocked_until.load(Ordering::Acquire) {
            0 => LockState::default(),
            ms => LockState {
                unlocked_until: Some(UnixMillis(ms)),
            },
        })
    }

    /// Records whether the store just answered.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// Replaces the cached lock state.
    pub fn set_lock(&self, state: LockState) {
        self.unlocked_until.store(
            state.unlocked_until.map_or(0, |u| u.0.max(1)),
            Ordering::Release,
        );
        self.lock_known.store(true, Ordering::Release);
    }

    /// Caches `username` as pending with `fingerprint`, unless its shard
    /// saw a `forget` since `epoch` was read.
    fn remember(&self, username: &str, fingerprint: Fingerprint, now: Instant, epoch: u64) {
        let mut shard = self.shard(username);
        // Checked under the shard lock, which `forget` also takes.
        if self.epoch(username) != epoch {
            return;
        }
        // A full shard forgets the entries untouched for longest (see
        // `GenerationalMap`); a forgotten entry only costs one store round
        // trip on that device's next poll.
        shard.insert(
            username.to_owned(),
            Entry {
                fingerprint,
                refreshed: now,
            },
        );
    }

    /// Forgets one username (its state changed elsewhere).
    pub fn forget(&self, username: &str) {
        let mut shard = self.shard(username);
        self.epochs[self.index(username)].fetch_add(1, Ordering::AcqRel);
        shard.remove(username);
    }

    /// Forgets every entry of one shard (its bucket changed in the store).
    fn forget_shard(&self, index: usize) {
        let mut shard = self.shards[index].lock().unwrap_or_else(|p| p.into_inner());
        self.epochs[index].fetch_add(1, Ordering::AcqRel);
        shard.clear();
    }

    /// Forgets everything (events may have been missed).
    pub fn clear(&self) {
        for index in 0..SHARDS {
            self.forget_shard(index);
        }
        self.lock_known.store(false, Ordering::Release);
    }

    /// Applies one reading of the store's bucket epochs, taken by a call
    /// that started at `started`: drops the shard of every bucket whose
    /// epoch differs from the previous reading (all of them at the first
    /// reading), then trusts the remaining entries until `started` +
    /// [`STALE_BOUND`]. A change committed before `started` moved its
    /// bucket's epoch before the reading saw it, so it is never missed.
    pub fn apply_epochs(&self, epochs: &[u64], started: Instant) {
        let mut seen = self.store_epochs.lock().unwrap_or_else(|p| p.into_inner());
        match seen.as_deref() {
            Some(previous) if previous.len() == epochs.len() => {
                for (index, (old, new)) in previous.iter().zip(epochs).enumerate() {
                    if old != new {
                        self.forget_shard(index);
                    }
                }
            }
            _ => {
                for index in 0..SHARDS {
                    self.forget_shard(index);
                }
            }
        }
        *seen = Some(epochs.to_vec());
        let at = started.saturating_duration_since(self.base).as_micros() as u64 + 1;
        self.validated_at.fetch_max(at, Ordering::AcqRel);
    }

    /// Applies one reading of the store's roles epoch: a value that moved
    /// (or the first reading) counts as a role change.
    pub fn apply_roles_epoch(&self, epoch: u64) {
        let mut seen = self
            .store_roles_epoch
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *seen != Some(epoch) {
            self.roles_changed();
            *seen = Some(epoch);
        }
    }

    /// Notes that some role changed.
    pub fn roles_changed(&self) {
        self.roles_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The rule list's version, while it is known and the cache is
    /// trusted (the store answers, and the last epoch reading is within
    /// [`STALE_BOUND`]); `None` sends the caller to the store.
    pub fn rules_version(&self) -> Option<u64> {
        if !self.healthy.load(Ordering::Acquire) || !self.validated(Instant::now()) {
            return None;
        }
        self.rules_version.load(Ordering::Acquire).checked_sub(1)
    }

    /// A change of the rule list was heard of (an event or an own write):
    /// `version` or a newer one is current. Never moves the version back
    /// (events of two writers may arrive out of order).
    pub fn rules_changed(&self, version: u64) {
        let mut changes = self.rules_changes.lock().unwrap_or_else(|p| p.into_inner());
        *changes += 1;
        self.rules_version
            .fetch_max(version.saturating_add(1), Ordering::AcqRel);
    }

    /// The rule list's version is not known any more (a resync, or an own
    /// write whose new version could not be read): the next
    /// [`Store::rules_version`] goes to the store until a reading lands.
    pub fn forget_rules_version(&self) {
        let mut changes = self.rules_changes.lock().unwrap_or_else(|p| p.into_inner());
        *changes += 1;
        self.rules_version.store(0, Ordering::Release);
    }

    /// The count of rule changes heard of so far; pass it to
    /// [`PollCache::apply_rules_version`] with a reading started after.
    pub fn rules_changes(&self) -> u64 {
        *self.rules_changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a reading of the rule list's version that started when
    /// [`PollCache::rules_changes`] was `before`. It replaces the cached
    /// version (which may move it back, after a store was emptied) unless a
    /// change was heard of meanwhile: that one is at least as new.
    pub fn apply_rules_version(&self, version: u64, before: u64) {
        let changes = self.rules_changes.lock().unwrap_or_else(|p| p.into_inner());
        if *changes == before {
            self.rules_version
                .store(version.saturating_add(1), Ordering::Release);
        }
    }

    /// See [`Store::access_generation`]: moves with every change to
    /// `username`'s bucket and every role change this process heard of
    /// (events, its own writes, epoch readings). `None` while the cache is
    /// not trusted (the store is not answering, or the last epoch reading
    /// is older than [`STALE_BOUND`]): a change may have gone unheard.
    pub fn access_generation(&self, username: &str) -> Option<u64> {
        if !self.healthy.load(Ordering::Acquire) || !self.validated(Instant::now()) {
            return None;
        }
        let user = self.epochs[self.index(username)].load(Ordering::Acquire);
        Some(user.wrapping_add(self.roles_generation.load(Ordering::Acquire)))
    }

    /// Whether the last epoch reading is recent enough to answer from the
    /// cache at `now`.
    fn validated(&self, now: Instant) -> bool {
        let at = self.validated_at.load(Ordering::Acquire);
        if at == 0 {
            return false;
        }
        let now = now.saturating_duration_since(self.base).as_micros() as u64 + 1;
        now.saturating_sub(at) < STALE_BOUND.as_micros() as u64
    }

    /// Whether a fresh pending entry with this fingerprint exists (and the
    /// store is answering).
    fn fresh(&self, username: &str, fingerprint: Option<&Fingerprint>, now: Instant) -> bool {
        if !self.healthy.load(Ordering::Acquire) || !self.validated(now) {
            return false;
        }
        self.shard(username).get_mut(username).is_some_and(|e| {
            now.duration_since(e.refreshed) < self.ttl
                && fingerprint.is_none_or(|fp| e.fingerprint == *fp)
        })
    }

    /// Applies one store event.
    pub fn apply(&self, event: &StoreEvent) {
        match event {
            StoreEvent::Lock(state) => self.set_lock(*state),
            StoreEvent::Granted(u)
            | StoreEvent::Denied(u)
            | StoreEvent::Forgotten(u)
            | StoreEvent::UserPut(u)
            | StoreEvent::UserDeleted(u) => self.forget(u),
            // The poll cache holds no role state: an entry means "pending
            // request, no user", which no role change can alter. Only the
            // access generation moves.
            StoreEvent::RoleChanged(_) => self.roles_changed(),
            StoreEvent::RulesChanged(version) => self.rules_changed(*version),
            StoreEvent::Resync => {
                self.roles_changed();
                self.forget_rules_version();
                self.clear();
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies events from `events` to `cache` until the channel closes. Runs
/// on tokio.
pub fn spawn_event_listener(cache: Arc<PollCache>, mut events: mpsc::Receiver<StoreEvent>) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            cache.apply(&event);
        }
    });
}

/// Every `every` (normally [`REVALIDATE_EVERY`]), re-reads the lock state
/// (covers a lock event lost while the subscriber stayed connected) and the
/// bucket epochs (covers a lost grant, deny or user event; see
/// [`PollCache::apply_epochs`]) and the rule list's version (covers a lost
/// `rules:` event), and marks the cache unusable while the store does not
/// answer. Runs on tokio.
pub fn spawn_refresher(cache: Arc<PollCache>, store: Arc<RedisStore>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            let rules_changes = cache.rules_changes();
            match tokio::try_join!(
                store.lock_state(),
                store.bucket_epochs(),
                store.roles_epoch(),
                store.rules_version()
            ) {
                Ok((state, epochs, roles_epoch, rules_version)) => {
                    cache.set_lock(state);
                    cache.apply_roles_epoch(roles_epoch);
                    cache.apply_rules_version(rules_version, rules_changes);
                    cache.apply_epochs(&epochs, started);
                    cache.set_healthy(true);
                }
                Err(_) => cache.set_healthy(false),
            }
        }
    });
}

/// A store with a [`PollCache`] in front of its hot reads.
pub struct CachedStore<S> {
    inner: Arc<S>,
    cache: Arc<PollCache>,
}

impl<S> CachedStore<S> {
    pub fn new(inner: Arc<S>, cache: Arc<PollCache>) -> Self {
        CachedStore { inner, cache }
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    pub fn cache(&self) -> &Arc<PollCache> {
        &self.cache
    }
}

impl<S: Store> CachedStore<S> {
    /// After an own write of the rule list (whatever its outcome): the
    /// version read back from the store is current here at once.
    async fn rules_written(&self) {
        match self.inner.rules_version().await {
            Ok(version) => self.cache.rules_changed(version),
            Err(_) => self.cache.forget_rules_version(),
        }
    }
}

impl<S: Store> Store for CachedStore<S> {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let t = Instant::now();
        if let Some(lock) = self.cache.lock_state() {
            if self.cache.fresh(poll.username, Some(&poll.fingerprint), t) {
                self.cache.hits.increment(1);
                let decision = if lock.is_unlocked(now) {
                    Decision::StillPending
                } else {
                    Decision::PendingWhileLocked
                };
                return Ok((decision, None));
            }
        }
        self.cache.misses.increment(1);
        let (username, fingerprint) = (poll.username.to_owned(), poll.fingerprint);
        let epoch = self.cache.epoch(&username);
        let result = self.inner.register(poll, now).await;
        self.cache.set_healthy(result.is_ok());
        match &result {
            Ok((Decision::Create | Decision::StillPending | Decision::PendingWhileLocked, _)) => {
                self.cache.remember(&username, fingerprint, t, epoch)
            }
            // The request is no longer pending (or never was).
            Ok((Decision::Collect | Decision::Denied | Decision::Locked, _)) => {
                self.cache.forget(&username)
            }
            // Another device's credentials leave the cached request as it
            // was; the same credentials in conflict mean a user exists now.
            Ok((Decision::Conflict, _)) => {
                if self.cache.fresh(&username, Some(&fingerprint), t) {
                    self.cache.forget(&username);
                }
            }
            // Unknown outcome: the entry stays trusted for at most `ttl`.
            Err(_) => {}
        }
        result
    }

    async fn lock_state(&self) -> Result<LockState, StoreError> {
        let state = self.inner.lock_state().await?;
        self.cache.set_lock(state);
        Ok(state)
    }

    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        self.inner.set_lock_state(state).await?;
        self.cache.set_lock(state);
        Ok(())
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        self.inner.pending_count().await
    }

    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get_request(username, now).await
    }

    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        self.inner.list_requests(query, now).await
    }

    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        let username = grant.username.clone();
        let result = self.inner.commit_grant(grant, now).await;
        self.cache.forget(&username);
        result
    }

    async fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        // Forgotten after the commit, as for one grant (a poll in flight
        // meanwhile cannot put its pre-grant answer back: see `forget`).
        let usernames: Vec<String> = grants.iter().map(|g| g.username.clone()).collect();
        let result = self.inner.commit_grants(grants, now).await;
        for username in &usernames {
            self.cache.forget(username);
        }
        result
    }

    async fn deny(
        &self,
        username: &str,
        by: Option<DecidedBy>,
        now: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        let result = self.inner.deny(username, by, now).await;
        self.cache.forget(username);
        result
    }

    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        let result = self.inner.forget_request(username, now).await;
        self.cache.forget(username);
        result
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        // A fresh pending entry means no user by that name: a grant, or a
        // user change, would have dropped it.
        if self.cache.fresh(username, None, Instant::now()) {
            self.cache.hits.increment(1);
            return Ok(None);
        }
        self.inner.get_user(username).await
    }

    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        self.inner.list_users(query).await
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let username = user.username.clone();
        let result = self.inner.put_user(user).await;
        self.cache.forget(&username);
        result
    }

    async fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let result = self.inner.update_user_access(username, change).await;
        self.cache.forget(username);
        result
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let result = self.inner.delete_user(username).await;
        self.cache.forget(username);
        result
    }

    // Roles are not cached (they are read by admins and by the relay's
    // permission checks, never on the poll path), and no cached entry
    // depends on them, so these pass straight through; writes move the
    // access generation.

    async fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        self.inner.get_role(name).await
    }

    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        self.inner.list_roles().await
    }

    async fn put_role(&self, role: Role) -> Result<(), StoreError> {
        let result = self.inner.put_role(role).await;
        self.cache.roles_changed();
        result
    }

    async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        let result = self.inner.delete_role(name).await;
        self.cache.roles_changed();
        result
    }

    // The rule list's version is answered from the cache while it is
    // trusted: every locked poll of an unknown device asks it (for
    // `whileLocked` rules), and it was one of the two Redis round trips of
    // such a poll (docs/BENCHMARKS.md, "locked storm"). The rules
    // themselves are read only when the version moved. Own writes read the
    // new version back, so this process sees its own change at once;
    // other processes get the `rules:` event, or the refresher's reading
    // within STALE_BOUND.
    async fn rules_version(&self) -> Result<u64, StoreError> {
        if let Some(version) = self.cache.rules_version() {
            return Ok(version);
        }
        self.inner.rules_version().await
    }

    async fn list_rules(&self) -> Result<(u64, Vec<StoredRule>), StoreError> {
        self.inner.list_rules().await
    }

    async fn put_rule(&self, rule: Rule, max: usize) -> Result<PutRuleResult, StoreError> {
        let result = self.inner.put_rule(rule, max).await;
        self.rules_written().await;
        result
    }

    async fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        let result = self.inner.delete_rule(name).await;
        self.rules_written().await;
        result
    }

    async fn set_rule_order(&self, names: &[String]) -> Result<RuleOrderResult, StoreError> {
        let result = self.inner.set_rule_order(names).await;
        self.rules_written().await;
        result
    }

    async fn claim_rule_use(&self, name: &str) -> Result<RuleClaim, StoreError> {
        self.inner.claim_rule_use(name).await
    }

    // The poll cache holds nothing of the audit log.
    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        max: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.append_audit(entries, max).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>, StoreError> {
        self.inner.list_audit(query).await
    }

    async fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        self.inner.prune_audit(before).await
    }

    // The poll cache holds nothing of the webhook outbox either.
    async fn outbox_take(&self, max: usize) -> Result<Vec<WebhookEvent>, StoreError> {
        self.inner.outbox_take(max).await
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner.outbox_ack(ids).await
    }

    async fn outbox_depth(&self) -> Result<usize, StoreError> {
        self.inner.outbox_depth().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn access_generation(&self, username: &str) -> Option<u64> {
        self.cache.access_generation(username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::decision::Windows;
    use fleetgate_registry::embedded::EmbeddedStore;
    use fleetgate_registry::model::Transport;
    use fleetgate_registry::store::SealOnCreate;

    fn poll(username: &str, n: u8) -> Poll<'_> {
        Poll {
            username,
            fingerprint: Fingerprint([n; 32]),
            transport: Transport::Http,
            source_addr: None,
            client_id: None,
            roles: &[],
            permissions: &[],
            context: None,
            secret: SealOnCreate::Sealed(vec![n; 8]),
            preauthorized: false,
        }
    }

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    /// A cache whose epochs were just read (as the refresher does four
    /// times a second).
    fn validated_cache(ttl: Duration, max_entries: usize) -> Arc<PollCache> {
        let c = PollCache::new(ttl, max_entries);
        c.apply_epochs(&[0; BUCKETS], Instant::now());
        c
    }

    fn cached() -> CachedStore<EmbeddedStore> {
        CachedStore::new(
            Arc::new(EmbeddedStore::in_memory(Windows::default(), 100)),
            validated_cache(Duration::from_secs(60), 1000),
        )
    }

    #[tokio::test]
    async fn repeated_polls_are_answered_from_the_cache() {
        let s = cached();
        s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        })
        .await
        .unwrap();
        assert_eq!(
            s.register(poll("d1", 1), T0).await.unwrap().0,
            Decision::Create
        );
        for _ in 0..5 {
            assert_eq!(
                s.register(poll("d1", 1), T0).await.unwrap().0,
                Decision::StillPending
            );
        }
        // Only the first poll reached the inner store.
        let r = s.inner.get_request("d1", T0).await.unwrap().unwrap();
        assert_eq!(r.polls, 1);
        // Another fingerprint goes to the store and conflicts.
        assert_eq!(
            s.register(poll("d1", 2), T0).await.unwrap().0,
            Decision::Conflict
        );
        // The cached lock expires locally: after the deadline the answer is
        // 423, from the cache, without any event.
        let late = T0.plus(Duration::from_secs(61));
        assert_eq!(
            s.register(poll("d1", 1), late).await.unwrap().0,
            Decision::PendingWhileLocked
        );
        assert_eq!(
            s.inner.get_request("d1", T0).await.unwrap().unwrap().polls,
            1
        );
    }

    #[tokio::test]
    async fn a_grant_event_makes_the_next_poll_reach_the_store() {
        let s = cached();
        s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        })
        .await
        .unwrap();
        s.register(poll("d1", 1), T0).await.unwrap();
        assert!(s.cache.fresh("d1", None, Instant::now()));
        assert_eq!(s.get_user("d1").await.unwrap(), None);
        // Granted elsewhere (straight on the inner store), then the event.
        let user = UserRecord {
            certificate: None,
            username: "d1".into(),
            password_hash: None,
            roles: vec![],
            permissions: vec![],
            created_at: T0,
            origin: fleetgate_registry::model::UserOrigin::Http,
            decided_by: None,
        };
        s.inner
            .commit_grant(
                GrantCommit {
                    certificate: None,
                    username: "d1".into(),
                    fingerprint: Fingerprint([1; 32]),
                    user,
                    granted_at: T0,
                },
                T0,
            )
            .await
            .unwrap();
        // Without the event, the cache would still say pending:
        assert_eq!(
            s.register(poll("d1", 1), T0).await.unwrap().0,
            Decision::StillPending
        );
        s.cache.apply(&StoreEvent::Granted("d1".into()));
        assert_eq!(
            s.register(poll("d1", 1), T0).await.unwrap().0,
            Decision::Collect
        );
        assert!(s.get_user("d1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn role_changes_pass_through_and_leave_cached_polls_alone() {
        let s = cached();
        s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        })
        .await
        .unwrap();
        s.register(poll("d1", 1), T0).await.unwrap();
        let role = Role {
            name: "sensors".into(),
            permissions: vec![],
        };
        s.put_role(role.clone()).await.unwrap();
        assert_eq!(
            s.inner.get_role("sensors").await.unwrap(),
            Some(role.clone())
        );
        assert_eq!(s.get_role("sensors").await.unwrap(), Some(role.clone()));
        assert_eq!(s.list_roles().await.unwrap(), vec![role]);
        s.cache.apply(&StoreEvent::RoleChanged("sensors".into()));
        assert!(
            s.cache.fresh("d1", None, Instant::now()),
            "a role event dropped a poll entry"
        );
        assert!(s.delete_role("sensors").await.unwrap());
        assert_eq!(s.inner.get_role("sensors").await.unwrap(), None);
        assert!(!s.delete_role("sensors").await.unwrap());
    }

    #[tokio::test]
    async fn lock_events_and_resync() {
        let s = cached();
        s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        })
        .await
        .unwrap();
        s.register(poll("d1", 1), T0).await.unwrap();
        s.cache.apply(&StoreEvent::Lock(LockState::default()));
        assert_eq!(
            s.register(poll("d1", 1), T0).await.unwrap().0,
            Decision::PendingWhileLocked
        );
        s.cache.apply(&StoreEvent::Resync);
        assert!(s.cache.is_empty());
        assert!(s.cache.lock_state().is_none());
    }

    #[test]
    fn an_unhealthy_store_disables_the_cache() {
        let c = validated_cache(Duration::from_secs(60), 1000);
        let t = Instant::now();
        c.remember("d1", Fingerprint([1; 32]), t, c.epoch("d1"));
        assert!(c.fresh("d1", None, t));
        c.set_healthy(false);
        assert!(!c.fresh("d1", None, t));
        c.set_healthy(true);
        assert!(c.fresh("d1", None, t));
    }

    #[test]
    fn a_forget_during_a_store_call_wins() {
        let c = validated_cache(Duration::from_secs(60), 1000);
        let t = Instant::now();
        let before = c.epoch("d1");
        // The grant's event arrives while the poll is at the store...
        c.forget("d1");
        // ...so the poll's (pre-grant) answer is not cached.
        c.remember("d1", Fingerprint([1; 32]), t, before);
        assert!(!c.fresh("d1", None, t));
        c.remember("d1", Fingerprint([1; 32]), t, c.epoch("d1"));
        assert!(c.fresh("d1", None, t));
    }

    #[test]
    fn entries_are_bounded() {
        let c = PollCache::new(Duration::from_secs(60), 64 * 2);
        let t = Instant::now();
        for i in 0..10_000 {
            let name = format!("dev{i}");
            c.remember(&name, Fingerprint([0; 32]), t, c.epoch(&name));
        }
        // No shard past its cap (2 × (2 + 0 + 1)), so never more than
        // three times the working set in all.
        assert!(c.len() <= SHARDS * shard_capacity(128), "{}", c.len());
        assert!(SHARDS * shard_capacity(128) <= 3 * 128);
    }

    #[test]
    fn a_working_set_polled_in_rotation_stays_cached() {
        // The fleet workload: every one of `n` pending devices polled in
        // turn, round after round. Sized at `n` alone, generations of half
        // that dropped most entries before their next poll.
        let n = 50_000;
        let c = validated_cache(Duration::from_secs(600), n);
        let t = Instant::now();
        let names: Vec<String> = (0..n).map(|i| format!("fleet-{i:07}")).collect();
        for name in &names {
            c.remember(name, Fingerprint([3; 32]), t, c.epoch(name));
        }
        for round in 0..3 {
            let misses = names
                .iter()
                .filter(|name| !c.fresh(name, Some(&Fingerprint([3; 32])), t))
                .count();
            assert_eq!(misses, 0, "round {round}: {misses} of {n} forgotten");
        }
    }

    #[test]
    fn a_moved_bucket_epoch_drops_exactly_that_bucket() {
        // Two usernames in different buckets.
        let (a, b) = (
            "dev-a",
            (0..)
                .map(|i| format!("dev-{i}"))
                .find(|n| bucket_of(n) != bucket_of("dev-a"))
                .unwrap(),
        );
        let c = validated_cache(Duration::from_secs(60), 1000);
        let t = Instant::now();
        c.remember(a, Fingerprint([1; 32]), t, c.epoch(a));
        c.remember(&b, Fingerprint([2; 32]), t, c.epoch(&b));
        // a's bucket changed in the store (its event was lost).
        let mut epochs = vec![0; BUCKETS];
        epochs[bucket_of(a)] = 1;
        let before = c.epoch(a);
        c.apply_epochs(&epochs, Instant::now());
        assert!(!c.fresh(a, None, Instant::now()), "stale entry kept");
        assert!(
            c.fresh(&b, None, Instant::now()),
            "unchanged bucket dropped"
        );
        // A poll of a that was at the store during the reading cannot put
        // its answer back.
        c.remember(a, Fingerprint([1; 32]), t, before);
        assert!(!c.fresh(a, None, Instant::now()));
        // The same reading again changes nothing.
        c.remember(a, Fingerprint([1; 32]), t, c.epoch(a));
        c.apply_epochs(&epochs, Instant::now());
        assert!(c.fresh(a, None, Instant::now()));
    }

    #[test]
    fn the_first_epoch_reading_drops_everything() {
        let c = PollCache::new(Duration::from_secs(60), 1000);
        let t = Instant::now();
        c.remember("d1", Fingerprint([1; 32]), t, c.epoch("d1"));
        c.apply_epochs(&[7; BUCKETS], Instant::now());
        assert!(c.is_empty());
    }

    #[test]
    fn nothing_is_answered_without_a_recent_epoch_reading() {
        let c = PollCache::new(Duration::from_secs(60), 1000);
        let t = Instant::now();
        c.remember("d1", Fingerprint([1; 32]), t, c.epoch("d1"));
        // Never validated: not trusted, though well within the ttl.
        assert!(!c.fresh("d1", None, t));
        c.apply_epochs(&[0; BUCKETS], t);
        c.remember("d1", Fingerprint([1; 32]), t, c.epoch("d1"));
        assert!(c.fresh("d1", None, t));
        assert!(c.fresh("d1", None, t + STALE_BOUND - Duration::from_millis(1)));
        // The refresher stopped reading: after the bound the entry is no
        // longer used, though its ttl has 59 s to go.
        assert!(!c.fresh("d1", None, t + STALE_BOUND));
        c.apply_epochs(&[0; BUCKETS], t + STALE_BOUND);
        assert!(c.fresh("d1", None, t + STALE_BOUND));
    }

    /// A live session compares the access generation instead of re-reading
    /// its user: it must move with every event, epoch movement and role
    /// change heard of, stay put otherwise, and be withheld while the
    /// cache is not trusted.
    #[test]
    fn the_access_generation_moves_with_what_can_change_access() {
        let c = PollCache::new(Duration::from_secs(60), 1000);
        assert_eq!(c.access_generation("d1"), None, "never validated");
        let mut epochs = [0; BUCKETS];
        c.apply_epochs(&epochs, Instant::now());
        c.apply_roles_epoch(0);
        let g0 = c.access_generation("d1").unwrap();
        assert_eq!(c.access_generation("d1"), Some(g0), "nothing changed");
        c.apply_epochs(&epochs, Instant::now());
        c.apply_roles_epoch(0);
        assert_eq!(c.access_generation("d1"), Some(g0), "same readings");

        let mut seen = vec![g0];
        let mut step = |c: &PollCache, what: &str| {
            let g = c.access_generation("d1").unwrap();
            assert!(!seen.contains(&g), "{what} did not move it");
            seen.push(g);
        };
        c.apply(&StoreEvent::UserPut("d1".into()));
        step(&c, "a user event");
        c.apply(&StoreEvent::RoleChanged("sensor".into()));
        step(&c, "a role event");
        c.apply_roles_epoch(1);
        step(&c, "a moved roles epoch (lost role event)");
        epochs[bucket_of("d1")] += 1;
        c.apply_epochs(&epochs, Instant::now());
        step(&c, "a moved bucket epoch (lost user event)");
        c.apply(&StoreEvent::Resync);
        step(&c, "a resync");

        let other = c.access_generation("d1");
        c.apply(&StoreEvent::UserDeleted("someone-else".into()));
        if bucket_of("someone-else") != bucket_of("d1") {
            assert_eq!(c.access_generation("d1"), other, "another bucket's user");
        }
        c.set_healthy(false);
        assert_eq!(c.access_generation("d1"), None, "store not answering");
    }

    #[test]
    fn the_rules_version_is_answered_only_while_known_and_trusted() {
        let c = PollCache::new(Duration::from_secs(60), 1000);
        c.apply_rules_version(4, c.rules_changes());
        assert_eq!(c.rules_version(), None, "epochs never read: not trusted");
        c.apply_epochs(&[0; BUCKETS], Instant::now());
        assert_eq!(c.rules_version(), Some(4));

        // Events move it forward, never back (two writers' events may
        // arrive out of order).
        c.apply(&StoreEvent::RulesChanged(6));
        c.apply(&StoreEvent::RulesChanged(5));
        assert_eq!(c.rules_version(), Some(6));

        // A reading that started before a change was heard of is dropped;
        // one started after it is applied, even backwards (an emptied store).
        let before = c.rules_changes();
        c.rules_changed(7);
        c.apply_rules_version(6, before);
        assert_eq!(c.rules_version(), Some(7), "a stale reading put 6 back");
        c.apply_rules_version(0, c.rules_changes());
        assert_eq!(c.rules_version(), Some(0));

        // A resync forgets it until the next reading.
        c.apply(&StoreEvent::Resync);
        assert_eq!(c.rules_version(), None);
        c.apply_rules_version(9, c.rules_changes());
        assert_eq!(c.rules_version(), Some(9));

        c.set_healthy(false);
        assert_eq!(c.rules_version(), None, "store not answering");
    }

    #[tokio::test]
    async fn own_rule_writes_are_seen_at_once_and_others_pass_through_when_unknown() {
        let s = cached();
        // Not known yet: answered by the inner store.
        assert_eq!(s.rules_version().await.unwrap(), 0);
        let rule: Rule = serde_json::from_value(serde_json::json!({
            "name": "line1", "usernamePattern": "line1-[0-9]+", "action": "grant"
        }))
        .unwrap();
        assert_eq!(s.put_rule(rule, 10).await.unwrap(), PutRuleResult::Created);
        let after_put = s.inner.rules_version().await.unwrap();
        assert!(after_put > 0);
        assert_eq!(
            s.cache.rules_version(),
            Some(after_put),
            "own write known at once"
        );
        assert_eq!(s.rules_version().await.unwrap(), after_put);
        assert!(s.delete_rule("line1").await.unwrap());
        let after_delete = s.inner.rules_version().await.unwrap();
        assert!(after_delete > after_put);
        assert_eq!(s.rules_version().await.unwrap(), after_delete);
    }
}
