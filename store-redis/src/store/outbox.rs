//! The webhook outbox on Redis: streams the decision scripts append to, read
//! by one consumer group, so each event is delivered by one instance.
//!
//! # Writing
//! Each bucket has a stream `{t}:outbox`, and the lock state has
//! `{<prefix>:lock}:outbox` (in the lock key's slot). The script that
//! commits a decision appends its events in the same step (`outbox_add` and
//! `outbox_request` in `prelude.lua`), so an event exists exactly when its
//! decision does, on a cluster too. Request events carry the request hash
//! (without the sealed credential and the certificate) and are rendered to
//! the admin view here, when read; user and lock events are rendered by the
//! caller and stored as JSON. The event id is fixed by the caller before the
//! script runs, so every delivery of an event carries the same
//! `webhook-id`. Each stream keeps at most `cap` entries (the outbox cap
//! over the 65 streams, rounded up); past it the oldest are dropped and
//! counted in `<stream>:dropped`.
//!
//! # Reading
//! Every instance with webhooks reads the streams through one consumer
//! group ([`GROUP`]) under its own consumer name, so `XREADGROUP … >` hands
//! each new entry to one instance only. An entry stays in the group's
//! pending list until it is acknowledged (`XACK` and `XDEL` in one script),
//! which the deliverer does once every endpoint is done with it.
//!
//! An instance that dies leaves its entries pending. Every
//! `claim_idle / 4` each live instance touches the entries it holds
//! (`XCLAIM … JUSTID`, which resets their idle time, even while they wait
//! hours for a retry) and takes over any entry idle for `claim_idle`
//! (`XAUTOCLAIM`): those of a dead instance, or of this one's previous
//! process. Delivery is at least once: an entry taken over after its
//! delivery but before its acknowledgement is sent again, with its id.
//!
//! Order: entries of one bucket (so all events of one username) are read in
//! commit order; across buckets they are merged by stream id (the Redis
//! server's millisecond), which is not a total commit order. The deliverer
//! does not keep order per endpoint anyway (docs/DECISIONS.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::model::UserRecord;
use fleetgate_registry::store::StoreError;
use fleetgate_registry::webhook::{EventType, WebhookEvent};
use futures_util::future::join_all;
use redis::Value;

use super::failure::redis_error;
use super::RedisStore;
use crate::record::{self, BadReply};

/// The consumer group every instance reads the outboxes with.
pub const GROUP: &str = "fleetgate-webhooks";

/// The default idle time after which another instance takes over an entry.
pub const CLAIM_IDLE_DEFAULT: Duration = Duration::from_secs(60);

/// A consumer with nothing pending that has been idle this long is
/// removed from the group when an instance starts reading (one is left
/// behind by every restart).
const STALE_CONSUMER: Duration = Duration::from_secs(3600);

/// One stream entry: its stream, its id and its field/value list.
struct Entry {
    stream: usize,
    id: String,
    fields: HashMap<String, Vec<u8>>,
}

/// The outbox settings and what this process holds.
#[derive(Debug)]
pub struct OutboxState {
    /// Entries each stream keeps at most.
    pub(super) cap: usize,
    consumer: String,
    claim_idle: Duration,
    streams: Vec<String>,
    groups_ready: AtomicBool,
    /// Where the next `read_new` starts.
    next_stream: AtomicUsize,
    /// Event id → (stream, entry id), for the entries handed out and not
    /// acknowledged yet (at most what the deliverer holds).
    held: Mutex<HashMap<String, (usize, String)>>,
    last_claim: Mutex<Option<Instant>>,
    /// The sum of the streams' drop counters at the last depth read.
    dropped_seen: Mutex<Option<u64>>,
}

impl OutboxState {
    pub(super) fn new(max: usize, streams: Vec<String>, claim_idle: Duration) -> Self {
        let cap = max.max(1).div_ceil(streams.len().max(1));
        let consumer = format!("c-{:016x}", rand::random::<u64>());
        OutboxState {
            cap,
            consumer,
            claim_idle: claim_idle.max(Duration::from_millis(100)),
            streams,
            groups_ready: AtomicBool::new(false),
            next_stream: AtomicUsize::new(0),
            held: Mutex::new(HashMap::new()),
            last_claim: Mutex::new(None),
            dropped_seen: Mutex::new(None),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, String)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the heartbeat and take-over round is due (and marks it done).
    fn claim_due(&self) -> bool {
        let mut last = self.last_claim.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.claim_idle / 4);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// The entries of an `XREADGROUP` of one stream (RESP2 or RESP3).
fn read_entries(stream: usize, reply: Value) -> Result<Vec<Entry>, BadReply> {
    let list = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(mut streams) => match streams.pop() {
            Some(Value::Array(mut pair)) if pair.len() == 2 => pair.pop().unwrap_or(Value::Nil),
            None => return Ok(Vec::new()),
            other => return Err(BadReply(format!("XREADGROUP stream {other:?}"))),
        },
        Value::Map(mut streams) => match streams.pop() {
            Some((_, entries)) => entries,
            None => return Ok(Vec::new()),
        },
        other => return Err(BadReply(format!("XREADGROUP reply {other:?}"))),
    };
    entries_of(stream, list)
}

/// A list of `[id, [field, value, …]]` entries; a deleted entry (its
/// fields nil) is skipped.
fn entries_of(stream: usize, list: Value) -> Result<Vec<Entry>, BadReply> {
    let Value::Array(items) = list else {
        return match list {
            Value::Nil => Ok(Vec::new()),
            other => Err(BadReply(format!("stream entries {other:?}"))),
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err(BadReply("stream entry is not an array".into()));
        };
        if pair.len() != 2 {
            return Err(BadReply("stream entry is not [id, fields]".into()));
        }
        let fields = pair.pop().unwrap_or(Value::Nil);
        let id = record::text(&pair[0])
            .ok_or_else(|| BadReply("stream entry id".into()))?
            .to_owned();
        let fields = match fields {
            Value::Nil => continue,
            Value::Array(f) => record::fields(f)?,
            Value::Map(_) => record::fields(record::hash_items(fields)?)?,
            other => return Err(BadReply(format!("stream entry fields {other:?}"))),
        };
        out.push(Entry { stream, id, fields });
    }
    Ok(out)
}

/// The event an entry records.
fn decode(entry: &Entry) -> Result<WebhookEvent, BadReply> {
    let f = &entry.fields;
    if let Some(json) = f.get("e") {
        return serde_json::from_slice(json).map_err(|e| BadReply(format!("event JSON: {e}")));
    }
    let s = |name: &str| -> Result<&str, BadReply> {
        f.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| BadReply(format!("outbox entry without `{name}`")))
    };
    let id = s("id")?.to_owned();
    let kind: EventType = serde_json::from_value(serde_json::Value::String(s("type")?.into()))
        .map_err(|_| BadReply(format!("event type {:?}", s("type"))))?;
    let at = UnixMillis(
        s("at")?
            .parse()
            .map_err(|_| BadReply("event time".into()))?,
    );
    if f.get("lock").map(Vec::as_slice) == Some(b"expired") {
        return Ok(WebhookEvent::lock_expired(at).with_id(id));
    }
    let username = s("user")?;
    if let Some(json) = f.get("u") {
        let user: UserRecord =
            serde_json::from_slice(json).map_err(|e| BadReply(format!("event user: {e}")))?;
        return Ok(WebhookEvent::user(kind, &user, at).with_id(id));
    }
    let record: HashMap<String, Vec<u8>> = f
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("r.")?.to_owned(), v.clone())))
        .collect();
    let request = record::decode_request(username, &record)?
        .ok_or_else(|| BadReply("request event without its record".into()))?;
    let event = match kind {
        EventType::RuleMatched => {
            WebhookEvent::rule_matched(s("rule")?, s("action")?, &request, at)
        }
        kind => WebhookEvent::request(kind, &request, at),
    };
    Ok(event.with_id(id))
}

/// Whether a Redis error is the consumer group missing (the stream was
/// deleted, or `FLUSHALL`).
fn no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// A stream id's (ms, seq), for merging streams; malformed ids sort last.
fn stream_order(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((u64::MAX, u64::MAX))
}

impl RedisStore {
    /// Records webhook events in the outbox streams, keeping at most `max`
    /// in all (see the module doc). Needed on every instance that decides
    /// (each one's scripts append), read by those that deliver.
    pub fn with_webhook_outbox(self, max: usize) -> Self {
        self.with_webhook_outbox_claiming(max, CLAIM_IDLE_DEFAULT)
    }

    /// [`RedisStore::with_webhook_outbox`] with another take-over idle time
    /// (tests shorten it).
    pub fn with_webhook_outbox_claiming(mut self, max: usize, claim_idle: Duration) -> Self {
        let state = OutboxState::new(max, self.keys.outboxes(), claim_idle);
        tracing::info!(consumer = %state.consumer, cap_per_stream = state.cap, "webhook outbox on redis");
        self.outbox = Some(std::sync::Arc::new(state));
        self
    }

    /// The cap the scripts get: 0 records nothing.
    pub(super) fn outbox_cap(&self) -> usize {
        self.outbox.as_ref().map_or(0, |o| o.cap)
    }

    /// A fresh event id for a script to record, or "" when nothing is
    /// recorded (no randomness or formatting spent per decision then).
    pub(super) fn outbox_event_id(&self) -> String {
        match self.outbox {
            Some(_) => fleetgate_registry::webhook::new_event_id(),
            None => String::new(),
        }
    }

    /// `event()` as the JSON a script records, or "" when nothing is
    /// recorded (the event is then never built).
    pub(super) fn outbox_event_json(&self, event: impl FnOnce() -> WebhookEvent) -> String {
        match self.outbox {
            Some(_) => super::to_json(&event()),
            None => String::new(),
        }
    }

    /// Creates the consumer group on every stream (once per process, and
    /// again after a `NOGROUP`), and removes stale consumers.
    async fn ensure_groups(&self, ob: &OutboxState) -> Result<(), StoreError> {
        if ob.groups_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let creates = ob.streams.iter().map(|stream| {
            let mut conn = self.conn();
            async move {
                let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match r {
                    Err(e) if e.code() != Some("BUSYGROUP") => Err(redis_error("XGROUP CREATE", e)),
                    _ => Ok(()),
                }
            }
        });
        for r in join_all(creates).await {
            r?;
        }
        self.remove_stale_consumers(ob).await;
        ob.groups_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes the group's consumers that hold nothing and have been idle
    /// for [`STALE_CONSUMER`]. Best effort: a failure is logged.
    async fn remove_stale_consumers(&self, ob: &OutboxState) {
        let stale_ms = super::ms(STALE_CONSUMER) as i64;
        for stream in &ob.streams {
            let info: redis::RedisResult<Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(stream)
                .arg(GROUP)
                .query_async(&mut self.conn())
                .await;
            let Ok(Value::Array(consumers)) = info else {
                continue;
            };
            for c in consumers {
                let items = match c {
                    Value::Array(items) => items,
                    other => match record::hash_items(other) {
                        Ok(items) => items,
                        Err(_) => continue,
                    },
                };
                let mut name = None;
                let (mut pending, mut idle) = (1, 0);
                for kv in items.chunks(2) {
                    match (record::text(&kv[0]), kv.get(1)) {
                        (Some("name"), Some(v)) => name = record::text(v).map(str::to_owned),
                        (Some("pending"), Some(v)) => pending = record::int(v).unwrap_or(1),
                        (Some("idle"), Some(v)) => idle = record::int(v).unwrap_or(0),
                        _ => {}
                    }
                }
                if let (Some(name), 0) = (name, pending) {
                    if idle >= stale_ms && name != ob.consumer {
                        let r: redis::RedisResult<i64> = redis::cmd("XGROUP")
                            .arg("DELCONSUMER")
                            .arg(stream)
                            .arg(GROUP)
                            .arg(&name)
                            .query_async(&mut self.conn())
                            .await;
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "webhook outbox: removing a stale consumer failed");
                        }
                    }
                }
            }
        }
    }

    /// `Store::outbox_take` on Redis.
    pub(super) async fn take_outbox(&self, max: usize) -> Result<Vec<WebhookEvent>, StoreError> {
        let Some(ob) = self.outbox.clone() else {
            return Ok(Vec::new());
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ensure_groups(&ob).await?;
        let mut entries = Vec::new();
        if ob.claim_due() {
            self.heartbeat(&ob).await?;
            entries.extend(self.take_over(&ob, max).await?);
        }
        let room = max - entries.len().min(max);
        if room > 0 {
            entries.extend(self.read_new(&ob, room).await?);
        }
        entries.sort_by_key(|e| (stream_order(&e.id), e.stream));
        let mut events = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        {
            let mut held = ob.held();
            for entry in entries {
                match decode(&entry) {
                    Ok(event) => {
                        if held
                            .insert(event.id.clone(), (entry.stream, entry.id))
                            .is_none()
                        {
                            events.push(event);
                        }
                    }
                    Err(e) => {
                        tracing::error!(stream = %ob.streams[entry.stream], entry = %entry.id, error = %e,
                            "webhook outbox: an entry this version cannot read is dropped");
                        metrics::counter!(
                            fleetgate_registry::metrics::WEBHOOK_OUTBOX_DROPPED_TOTAL
                        )
                        .increment(1);
                        bad.push((entry.stream, entry.id));
                    }
                }
            }
        }
        if !bad.is_empty() {
            self.retire(&ob, bad).await?;
        }
        Ok(events)
    }

    /// Resets the idle time of every entry this process holds, so no other
    /// instance takes them over while their retries wait.
    async fn heartbeat(&self, ob: &OutboxState) -> Result<(), StoreError> {
        let mut by_stream: HashMap<usize, Vec<String>> = HashMap::new();
        for (stream, id) in ob.held().values() {
            by_stream.entry(*stream).or_default().push(id.clone());
        }
        let claims = by_stream.into_iter().map(|(stream, ids)| {
            let mut conn = self.conn();
            let key = &ob.streams[stream];
            async move {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(key).arg(GROUP).arg(&ob.consumer).arg(0);
                for chunk in ids.chunks(1000) {
                    let mut c = cmd.clone();
                    c.arg(chunk).arg("JUSTID");
                    c.query_async::<Value>(&mut conn)
                        .await
                        .map_err(|e| redis_error("XCLAIM outbox", e))?;
                }
                Ok::<(), StoreError>(())
            }
        });
        for r in join_all(claims).await {
            r?;
        }
        Ok(())
    }

    /// Takes over up to `max` entries idle for `claim_idle` (a dead
    /// instance's, or this one's previous process').
    async fn take_over(&self, ob: &OutboxState, max: usize) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for (i, stream) in ob.streams.iter().enumerate() {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let reply: Value = match redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(&ob.consumer)
                .arg(super::ms(ob.claim_idle))
                .arg("0-0")
                .arg("COUNT")
                .arg(room)
                .query_async(&mut self.conn())
                .await
            {
                Ok(v) => v,
                Err(e) if no_group(&e) => {
                    ob.groups_ready.store(false, Ordering::Release);
                    continue;
                }
                Err(e) => return Err(redis_error("XAUTOCLAIM outbox", e)),
            };
            let Value::Array(mut parts) = reply else {
                return Err(super::failure::corrupt(
                    "XAUTOCLAIM outbox",
                    BadReply("reply is not an array".into()),
                ));
            };
            if parts.len() < 2 {
                continue;
            }
            let list = parts.swap_remove(1);
            let claimed =
                entries_of(i, list).map_err(|e| super::failure::corrupt("XAUTOCLAIM outbox", e))?;
            if !claimed.is_empty() {
                tracing::info!(stream = %stream, entries = claimed.len(),
                    "webhook outbox: took over entries another consumer left");
            }
            out.extend(claimed);
        }
        Ok(out)
    }

    /// Up to `max` entries no consumer has had, never more (an entry read
    /// is this consumer's until acknowledged or taken over): first an even
    /// share from up to `max` streams at once (starting one stream further
    /// each call, so a small `max` still reaches every stream), then more,
    /// one stream at a time, from those that may have more.
    async fn read_new(&self, ob: &OutboxState, max: usize) -> Result<Vec<Entry>, StoreError> {
        let n = ob.streams.len();
        let read = |i: usize, count: usize| {
            let mut conn = self.conn();
            let key = &ob.streams[i];
            async move {
                let r: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&ob.consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await;
                match r {
                    Ok(v) => read_entries(i, v)
                        .map_err(|e| super::failure::corrupt("XREADGROUP outbox", e)),
                    Err(e) if no_group(&e) => {
                        ob.groups_ready.store(false, Ordering::Release);
                        Ok(Vec::new())
                    }
                    Err(e) => Err(redis_error("XREADGROUP outbox", e)),
                }
            }
        };
        let start = ob.next_stream.fetch_add(1, Ordering::Relaxed) % n;
        let order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        let k = n.min(max);
        let per = max / k;
        let mut out = Vec::new();
        let mut maybe_more = Vec::new();
        let first = join_all(order[..k].iter().map(|&i| read(i, per))).await;
        for (&i, r) in order[..k].iter().zip(first) {
            let got = r?;
            if got.len() == per {
                maybe_more.push(i);
            }
            out.extend(got);
        }
        maybe_more.extend_from_slice(&order[k..]);
        for i in maybe_more {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            out.extend(read(i, room).await?);
        }
        debug_assert!(out.len() <= max);
        Ok(out)
    }

    /// Acknowledges and deletes entries, one script per stream.
    async fn retire(
        &self,
        ob: &OutboxState,
        entries: Vec<(usize, String)>,
    ) -> Result<(), StoreError> {
        let mut by_stream: HashMap<usize, Vec<String>> = HashMap::new();
        for (stream, id) in entries {
            by_stream.entry(stream).or_default().push(id);
        }
        let acks = by_stream.into_iter().map(|(stream, ids)| {
            let mut conn = self.conn();
            let key = &ob.streams[stream];
            async move {
                let mut cmd = self.scripts.outbox_ack.evalsha(&[key]);
                cmd.arg(GROUP).arg(&ids);
                conn.eval(&self.scripts, &cmd)
                    .await
                    .map_err(|e| redis_error("outbox ack", e))
                    .map(|_| ())
            }
        });
        for r in join_all(acks).await {
            r?;
        }
        Ok(())
    }

    /// `Store::outbox_ack` on Redis: ids this process does not hold (already
    /// acknowledged, or never handed out here) are ignored.
    pub(super) async fn ack_outbox(&self, ids: &[String]) -> Result<(), StoreError> {
        let Some(ob) = self.outbox.clone() else {
            return Ok(());
        };
        let entries: Vec<(usize, String)> = {
            let held = ob.held();
            ids.iter().filter_map(|id| held.get(id).cloned()).collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        self.retire(&ob, entries).await?;
        let mut held = ob.held();
        for id in ids {
            held.remove(id);
        }
        Ok(())
    }

    /// `Store::outbox_depth` on Redis: the entries of every stream, handed
    /// out or not. Also counts new drops at the cap into
    /// `fleetgate_webhook_outbox_dropped_total` (every instance sees the
    /// shared counters: the metric is the namespace's, per instance since
    /// its start).
    pub(super) async fn outbox_len(&self) -> Result<usize, StoreError> {
        let Some(ob) = self.outbox.clone() else {
            return Ok(0);
        };
        let reads = ob.streams.iter().map(|stream| {
            let mut conn = self.conn();
            async move {
                let len: usize = redis::cmd("XLEN")
                    .arg(stream)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error("XLEN outbox", e))?;
                let dropped: Option<u64> = redis::cmd("GET")
                    .arg(format!("{stream}:dropped"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error("GET outbox dropped", e))?;
                Ok::<_, StoreError>((len, dropped.unwrap_or(0)))
            }
        });
        let (mut len, mut dropped) = (0, 0);
        for r in join_all(reads).await {
            let (l, d) = r?;
            len += l;
            dropped += d;
        }
        let mut seen = ob.dropped_seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = *seen {
            if dropped > before {
                tracing::warn!(
                    dropped = dropped - before,
                    "webhook outbox full: oldest events dropped"
                );
                metrics::counter!(fleetgate_registry::metrics::WEBHOOK_OUTBOX_DROPPED_TOTAL)
                    .increment(dropped - before);
            }
        }
        *seen = Some(dropped);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_merge_by_time_then_sequence() {
        assert!(stream_order("5-1") < stream_order("5-2"));
        assert!(stream_order("5-9") < stream_order("10-0"));
        assert_eq!(stream_order("junk"), (u64::MAX, u64::MAX));
    }

    #[test]
    fn the_cap_is_shared_over_the_streams_rounded_up() {
        let s = OutboxState::new(100_000, vec!["s".into(); 65], CLAIM_IDLE_DEFAULT);
        assert_eq!(s.cap, 1539);
        let s = OutboxState::new(1, vec!["s".into(); 65], CLAIM_IDLE_DEFAULT);
        assert_eq!(s.cap, 1);
    }

    #[test]
    fn replies_of_both_protocols_and_deleted_entries() {
        let entry =
            |id: &str, fields: Value| Value::Array(vec![Value::BulkString(id.into()), fields]);
        let fields = Value::Array(vec![
            Value::BulkString(b"e".to_vec()),
            Value::BulkString(b"{}".to_vec()),
        ]);
        let list = Value::Array(vec![entry("1-0", fields.clone()), entry("2-0", Value::Nil)]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"k".to_vec()),
            list.clone(),
        ])]);
        let got = read_entries(3, resp2).unwrap();
        assert_eq!(got.len(), 1, "the deleted entry is skipped");
        assert_eq!((got[0].stream, got[0].id.as_str()), (3, "1-0"));
        let resp3 = Value::Map(vec![(Value::BulkString(b"k".to_vec()), list)]);
        assert_eq!(read_entries(0, resp3).unwrap().len(), 1);
        assert!(read_entries(0, Value::Nil).unwrap().is_empty());
        assert!(read_entries(0, Value::Int(1)).is_err());
    }
}
