//! The periodic sweep: expired requests leave the indexes and give their
//! `--max-pending` slots back, lock copies that missed a write are
//! repaired, and (with webhooks) the end of an unlock window is recorded.
//!
//! Correctness never depends on it (every read checks expiry against the
//! clock, and Redis drops the request hashes by TTL); it keeps the indexes
//! and `pending_count` close to the truth. The binaries' sweeper calls
//! [`RedisStore::sweep`] every few seconds.

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::store::StoreError;
use futures_util::future::join_all;
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::RedisStore;
use crate::keys::BUCKETS;
use crate::record::{self, BadReply};

impl RedisStore {
    /// With webhooks, records `registry.locked` (`"expired": true`) once
    /// when the unlock window has closed by itself (`lock_expire.lua`: the
    /// first instance's sweep after the end records it).
    async fn record_lock_expiry(&self, now: UnixMillis) -> Result<(), StoreError> {
        if self.outbox_cap() == 0 {
            return Ok(());
        }
        let lock = self.keys.lock();
        let outbox = self.keys.lock_outbox();
        let mut cmd = self.scripts.lock_expire.evalsha(&[&lock, &outbox]);
        cmd.arg(now.0)
            .arg(self.outbox_cap())
            .arg(self.outbox_event_id());
        self.conn()
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| redis_error("lock_expire", e))?;
        Ok(())
    }

    /// Drops expired pending, granted and denied requests (at most `per_bucket` of
    /// each kind per bucket) and gives their `--max-pending` slots back.
    /// Returns how many records were dropped. Correctness never depends on
    /// it (every read checks expiry against the clock, and Redis drops the
    /// request hashes by TTL); it keeps the indexes and `pending_count`
    /// close to the truth. It also repairs bucket copies of the lock state
    /// that a failed `set_lock_state` missed. The binaries' sweeper calls it
    /// every few seconds.
    pub async fn sweep(&self, now: UnixMillis, per_bucket: usize) -> Result<usize, StoreError> {
        self.bounded("sweep", async {
            let calls = (0..BUCKETS).map(|b| {
                let bk = self.keys.bucket_keys(b);
                let mut conn = self.conn();
                async move {
                    let mut cmd = self.scripts.sweep.evalsha(&[
                        &bk.pending,
                        &bk.pending_expiry,
                        &bk.granted,
                        &bk.granted_expiry,
                        &bk.denied,
                        &bk.denied_expiry,
                    ]);
                    cmd.arg(&bk.tag).arg(now.0).arg(per_bucket);
                    conn.eval(&self.scripts, &cmd).await
                }
            });
            let mut pending = 0;
            let mut total = 0;
            for reply in join_all(calls).await {
                let reply = reply.map_err(|e| redis_error("sweep", e))?;
                let Value::Array(items) = reply else {
                    return Err(corrupt("sweep", BadReply("not an array".into())));
                };
                let (Some(p), Some(g), Some(d)) = (
                    items.first().and_then(record::int),
                    items.get(1).and_then(record::int),
                    items.get(2).and_then(record::int),
                ) else {
                    return Err(corrupt("sweep", BadReply(format!("counts {items:?}"))));
                };
                pending += p;
                total += p + g + d;
            }
            self.release_slots(pending).await;
            self.repair_lock_copies().await?;
            self.record_lock_expiry(now).await?;
            Ok(total as usize)
        })
        .await
    }
}
