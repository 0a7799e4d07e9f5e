//! What other instances watch to learn that something changed: the events
//! channel ([`crate::events`]) and the 64 buckets' change epochs.
//!
//! The proxies' cache ([`crate::cache`]) listens to the events for speed
//! and compares epoch readings for certainty: every grant, deny and user
//! change bumps its bucket's epoch in the same script that publishes its
//! event, so a lost event is still noticed at the next reading.

use fleetgate_registry::store::StoreError;
use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::failure::redis_error;
use super::RedisStore;
use crate::events::{self, StoreEvent};
use crate::keys::{BUCKETS, ROLES_EPOCH_FIELD};

impl RedisStore {
    /// Publishes `event` on [`Self::events_channel`]. Transitions publish
    /// their own events; this is for callers with events of their own.
    pub async fn publish_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
        self.bounded("PUBLISH", async {
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(event.encode())
                .query_async::<i64>(&mut self.conn())
                .await
                .map_err(|e| redis_error("PUBLISH", e))?;
            Ok(())
        })
        .await
    }

    /// The 64 buckets' change epochs (`{t}:epoch`; a missing key reads 0),
    /// read concurrently. Every grant, deny and user change bumps its
    /// bucket's epoch in the same script that publishes its event, so a
    /// cache that compares two readings finds every bucket that changed in
    /// between, whether or not the event arrived.
    /// The roles hash's change counter (field [`ROLES_EPOCH_FIELD`], moved
    /// by every role put and delete in the same script); 0 before any.
    pub async fn roles_epoch(&self) -> Result<u64, StoreError> {
        self.bounded("roles_epoch", async {
            redis::cmd("HGET")
                .arg(self.keys.roles())
                .arg(ROLES_EPOCH_FIELD)
                .query_async::<Option<u64>>(&mut self.conn())
                .await
                .map(Option::unwrap_or_default)
                .map_err(|e| redis_error("HGET roles epoch", e))
        })
        .await
    }

    pub async fn bucket_epochs(&self) -> Result<Vec<u64>, StoreError> {
        self.bounded("bucket_epochs", async {
            let reads = (0..BUCKETS).map(|b| {
                let key = self.keys.bucket_keys(b).epoch;
                let mut conn = self.conn();
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<u64>>(&mut conn)
                        .await
                }
            });
            join_all(reads)
                .await
                .into_iter()
                .map(|r| r.map(Option::unwrap_or_default))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|e| redis_error("GET epoch", e))
        })
        .await
    }

    /// Subscribes to the events channel. The receiver first gets
    /// [`StoreEvent::Resync`], then every event; after a reconnection,
    /// `Resync` again. The background task ends when the receiver is
    /// dropped. Must be called inside a tokio runtime.
    pub fn subscribe_events(&self) -> mpsc::Receiver<StoreEvent> {
        events::subscribe(
            self.topology.nodes(),
            self.channel.clone(),
            self.connect_timeout,
            self.tls_ca.clone(),
        )
    }
}
