//! The lock state: one global key, a copy in every bucket, and the repair
//! of copies that missed a write.
//!
//! [`Store::lock_state`] reads the global key `<prefix>:lock`. The register
//! script cannot (on a cluster the global key is in another slot), so it
//! reads its bucket's copy `{t}:lock`. Both hold `<version>:<unlocked_until
//! ms>` (0 ms: locked; a missing key: locked).
//!
//! `set_lock_state` takes a new version (`INCR <prefix>:lock-version`),
//! writes `<version>:<ms>` to the global key and the 64 copies at once (each
//! write, `set_lock.lua`, only moves a key to a newer version, so concurrent
//! calls converge on the later one), then publishes `lock:<ms>`. A call that
//! fails half-way returns `Unavailable`; until it is retried, or the next
//! `sweep` copies the global value to the copies that missed it
//! ([`RedisStore::repair_lock_copies`]), some buckets may follow the
//! previous state.

use fleetgate_registry::decision::LockState;
use fleetgate_registry::store::StoreError;
use fleetgate_registry::webhook::WebhookEvent;
use fleetgate_registry::UnixMillis;
use futures_util::future::join_all;

#[cfg(doc)]
use fleetgate_registry::store::Store;

use super::failure::{corrupt, redis_error};
use super::RedisStore;
use crate::events::StoreEvent;
use crate::keys::BUCKETS;
use crate::record::BadReply;

/// `<version>:<unlocked_until ms>` as (version, ms); (0, 0) when absent.
/// Anything else was not written by this store: `Corrupt`.
pub(super) fn parse_lock(v: Option<&str>) -> Result<(u64, u64), BadReply> {
    let Some(v) = v else {
        return Ok((0, 0));
    };
    v.split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| BadReply(format!("lock state {v:?}")))
}

impl RedisStore {
    /// The global lock state (unbounded: the caller bounds it).
    pub(super) async fn read_lock_state(&self) -> Result<LockState, StoreError> {
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys.lock())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("GET lock", e))?;
        let (_, until) = parse_lock(v.as_deref()).map_err(|e| corrupt("GET lock", e))?;
        Ok(LockState {
            unlocked_until: (until > 0).then_some(UnixMillis(until)),
        })
    }

    /// Sets the lock state everywhere and publishes it (unbounded: the
    /// caller bounds it).
    pub(super) async fn write_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        let until = state.unlocked_until.map_or(0, |u| u.0.max(1));
        let version: u64 = redis::cmd("INCR")
            .arg(self.keys.lock_version())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("INCR lock-version", e))?;
        // The global key and the 64 bucket copies at once. A copy only
        // moves to a newer version, so concurrent calls converge on the
        // later one everywhere; a call that fails half-way is repaired
        // by the caller's retry or by the next `sweep`.
        let event =
            self.outbox_event_json(|| WebhookEvent::lock(state.unlocked_until, UnixMillis::now()));
        self.write_lock_copies(version, until, Some(&event)).await?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(StoreEvent::Lock(state).encode())
            .query_async::<i64>(&mut self.conn())
            .await
            .map_err(|e| redis_error("PUBLISH", e))?;
        Ok(())
    }

    /// Writes `<version>:<until>` to every bucket's copy of the lock state
    /// (and to the global key when `global` holds the change's webhook
    /// event JSON, "" when none is recorded, which the global key's write
    /// appends to the lock's outbox), unless a copy is newer.
    async fn write_lock_copies(
        &self,
        version: u64,
        until: u64,
        global: Option<&str>,
    ) -> Result<(), StoreError> {
        let global = global.map(|event| (self.keys.lock(), event));
        let copies: Vec<String> = (0..BUCKETS)
            .map(|b| self.keys.bucket_keys(b).lock)
            .collect();
        let outbox = self.keys.lock_outbox();
        let writes = copies
            .iter()
            .map(|key| (key, None))
            .chain(global.iter().map(|(key, event)| (key, Some(event))))
            .map(|(key, event)| {
                let mut conn = self.conn();
                let outbox = &outbox;
                async move {
                    let mut cmd = match event {
                        Some(_) => self.scripts.set_lock.evalsha(&[key, outbox]),
                        None => self.scripts.set_lock.evalsha(&[key]),
                    };
                    cmd.arg(version).arg(until);
                    if let Some(event) = event {
                        cmd.arg(self.outbox_cap()).arg(event);
                    }
                    conn.eval(&self.scripts, &cmd).await
                }
            });
        for r in join_all(writes).await {
            r.map_err(|e| redis_error("set lock copy", e))?;
        }
        Ok(())
    }

    /// Copies the global lock state to any bucket copy that missed it (a
    /// `set_lock_state` that failed half-way).
    pub(super) async fn repair_lock_copies(&self) -> Result<(), StoreError> {
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys.lock())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("GET lock", e))?;
        match parse_lock(v.as_deref()).map_err(|e| corrupt("GET lock", e))? {
            (0, _) => Ok(()),
            (version, until) => self.write_lock_copies(version, until, None).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_values_parse_and_foreign_ones_are_refused() {
        assert_eq!(parse_lock(None), Ok((0, 0)), "missing: locked");
        assert_eq!(parse_lock(Some("7:0")), Ok((7, 0)));
        assert_eq!(
            parse_lock(Some("12:1800000000000")),
            Ok((12, 1_800_000_000_000))
        );
        for bad in ["", "7", "7:", ":5", "x:5", "7:soon", "open sesame"] {
            assert!(parse_lock(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
