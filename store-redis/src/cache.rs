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
//! - **`ttl`**: even with every event lost, an entry is trusted for at most
//!   `ttl`.
//!
//! The cost: `polls` and `lastSeen` in the admin's view count only the polls
//! that reached the store (at most one per device per `ttl`). A cached
//! entry also means "no user with this name", because a grant drops the
//! entry, so `get_user` for such a username is answered locally too (the
//! MQTT path asks that first).
//!
//! The cache is one per process, in 64 mutex-guarded shards shared by every
//! worker. The event task can then invalidate it directly, and a device
//! whose connections land on different workers hits the same entry.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::metrics as names;
use fleetgate_registry::model::{RequestRecord, UserRecord};
use fleetgate_registry::store::{
    DenyResult, GrantCommit, GrantResult, ListQuery, Page, Poll, Store, StoreError,
};
use fleetgate_registry::UnixMillis;
use tokio::sync::mpsc;

use crate::events::StoreEvent;

const SHARDS: usize = 64;

struct Entry {
    fingerprint: Fingerprint,
    /// When the store last saw this request pending.
    refreshed: Instant,
}

/// The shared cache state.
pub struct PollCache {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    /// Per shard, bumped by every `forget`: a poll that was in flight at the
    /// store while its username was forgotten (a grant landed meanwhile)
    /// must not put back the answer it got from before the grant.
    epochs: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    ttl: Duration,
    max_per_shard: usize,
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

impl PollCache {
    /// A cache trusting entries for `ttl`, holding at most `max_entries`.
    pub fn new(ttl: Duration, max_entries: usize) -> Arc<Self> {
        Arc::new(PollCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epochs: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
            ttl,
            max_per_shard: (max_entries / SHARDS).max(1),
            unlocked_until: AtomicU64::new(0),
            lock_known: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            hits: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "poll", "result" => "hit"),
            misses: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "poll", "result" => "miss"),
        })
    }

    fn index(&self, username: &str) -> usize {
        (self.hasher.hash_one(username) as usize) % SHARDS
    }

    fn shard(&self, username: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
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
        if shard.len() >= self.max_per_shard && !shard.contains_key(username) {
            let ttl = self.ttl;
            shard.retain(|_, e| now.duration_since(e.refreshed) < ttl);
            if shard.len() >= self.max_per_shard {
                shard.clear();
            }
        }
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

    /// Forgets everything (events may have been missed).
    pub fn clear(&self) {
        for (s, e) in self.shards.iter().zip(self.epochs.iter()) {
            let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
            e.fetch_add(1, Ordering::AcqRel);
            shard.clear();
        }
        self.lock_known.store(false, Ordering::Release);
    }

    /// Whether a fresh pending entry with this fingerprint exists (and the
    /// store is answering).
    fn fresh(&self, username: &str, fingerprint: Option<&Fingerprint>, now: Instant) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        self.shard(username).get(username).is_some_and(|e| {
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
            | StoreEvent::UserPut(u)
            | StoreEvent::UserDeleted(u) => self.forget(u),
            StoreEvent::Resync => self.clear(),
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

/// Re-reads the lock state from `store` every `every` (covers a lock event
/// lost while the subscriber stayed connected), and marks the cache unusable
/// while the store does not answer. Runs on tokio.
pub fn spawn_lock_refresher<S: Store>(cache: Arc<PollCache>, store: Arc<S>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match store.lock_state().await {
                Ok(state) => {
                    cache.set_lock(state);
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

    async fn deny(&self, username: &str, now: UnixMillis) -> Result<DenyResult, StoreError> {
        let result = self.inner.deny(username, now).await;
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

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let result = self.inner.delete_user(username).await;
        self.cache.forget(username);
        result
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
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
        }
    }

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn cached() -> CachedStore<EmbeddedStore> {
        CachedStore::new(
            Arc::new(EmbeddedStore::in_memory(Windows::default(), 100)),
            PollCache::new(Duration::from_secs(60), 1000),
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
            origin: "http".into(),
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
        let c = PollCache::new(Duration::from_secs(60), 1000);
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
        let c = PollCache::new(Duration::from_secs(60), 1000);
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
        assert!(c.len() <= 128, "{}", c.len());
    }
}
