//! Webhook events: what the registry tells other systems about its
//! decisions, in the shape of the Standard Webhooks specification.
//!
//! This module holds the model only, with no sockets: the event types, the
//! [`WebhookEvent`] a store writes to its durable outbox in the same commit
//! as the decision it describes (`embedded::outbox`), and the bounded
//! in-memory queue of best-effort `request.pending` events that polls fill
//! without blocking ([`PendingEvents`]). Signing and delivery live in the
//! admin crate (`fleetgate_admin::webhook`), on the admin tokio runtime.
//!
//! `data` is always a view the admin API shows (a [`RequestView`] or a
//! [`UserView`], or the lock state), rendered when the event is created,
//! so it never carries a credential: the views have no field for one.
//!
//! [`RequestView`]: crate::model::RequestView
//! [`UserView`]: crate::model::UserView

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::model::{RequestRecord, UserRecord};
use crate::rule::DecidedBy;

/// The kinds of event, with their wire names (`request.granted`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "request.pending")]
    RequestPending,
    #[serde(rename = "request.granted")]
    RequestGranted,
    #[serde(rename = "request.denied")]
    RequestDenied,
    #[serde(rename = "request.deleted")]
    RequestDeleted,
    #[serde(rename = "user.updated")]
    UserUpdated,
    #[serde(rename = "user.deleted")]
    UserDeleted,
    #[serde(rename = "registry.unlocked")]
    RegistryUnlocked,
    #[serde(rename = "registry.locked")]
    RegistryLocked,
    #[serde(rename = "rule.matched")]
    RuleMatched,
}

impl EventType {
    /// The wire name, as in the body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RequestPending => "request.pending",
            EventType::RequestGranted => "request.granted",
            EventType::RequestDenied => "request.denied",
            EventType::RequestDeleted => "request.deleted",
            EventType::UserUpdated => "user.updated",
            EventType::UserDeleted => "user.deleted",
            EventType::RegistryUnlocked => "registry.unlocked",
            EventType::RegistryLocked => "registry.locked",
            EventType::RuleMatched => "rule.matched",
        }
    }
}

/// One event, as the outbox keeps it and the deliverer sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// The `webhook-id` header: `msg_` and 32 random hex digits, fixed when
    /// the event is created, so every retry and every redelivery after a
    /// restart carries the same id (receivers deduplicate on it).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the decision was made (the body's `timestamp`).
    pub at: UnixMillis,
    /// The body's `data`: a view, never a credential.
    pub data: serde_json::Value,
}

/// A fresh event id: `msg_` + 128 random bits in hex.
pub fn new_event_id() -> String {
    let bits: u128 = rand::random();
    format!("msg_{bits:032x}")
}

impl WebhookEvent {
    fn new(kind: EventType, at: UnixMillis, data: serde_json::Value) -> Self {
        WebhookEvent {
            id: new_event_id(),
            kind,
            at,
            data,
        }
    }

    /// The same event under the id `id`: a store that fixed the id when it
    /// recorded the event (the Redis outbox) renders it later with it.
    pub fn with_id(self, id: String) -> Self {
        WebhookEvent { id, ..self }
    }

    /// A request event (`request.*`): `data` is the request's admin view.
    pub fn request(kind: EventType, record: &RequestRecord, at: UnixMillis) -> Self {
        let data = serde_json::to_value(record.view()).unwrap_or_default();
        Self::new(kind, at, data)
    }

    /// `rule.matched`: `{"rule": name, "action": "grant"|"deny", "request": view}`.
    pub fn rule_matched(rule: &str, action: &str, record: &RequestRecord, at: UnixMillis) -> Self {
        let data = serde_json::json!({
            "rule": rule,
            "action": action,
            "request": record.view(),
        });
        Self::new(EventType::RuleMatched, at, data)
    }

    /// A user event (`user.*`): `data` is the user's admin view (never the
    /// password hash).
    pub fn user(kind: EventType, user: &UserRecord, at: UnixMillis) -> Self {
        let data = serde_json::to_value(user.view()).unwrap_or_default();
        Self::new(kind, at, data)
    }

    /// `user.deleted` when only the name is known.
    pub fn user_deleted(username: &str, at: UnixMillis) -> Self {
        Self::new(
            EventType::UserDeleted,
            at,
            serde_json::json!({ "username": username }),
        )
    }

    /// `registry.unlocked` / `registry.locked`: `{"locked", "unlockedUntil"}`.
    /// `registry.locked` by an admin also has `"expired": false`.
    pub fn lock(unlocked_until: Option<UnixMillis>, at: UnixMillis) -> Self {
        match unlocked_until {
            Some(until) => Self::new(
                EventType::RegistryUnlocked,
                at,
                serde_json::json!({"locked": false, "unlockedUntil": until.to_rfc3339()}),
            ),
            None => Self::new(
                EventType::RegistryLocked,
                at,
                serde_json::json!({"locked": true, "unlockedUntil": null, "expired": false}),
            ),
        }
    }

    /// `registry.locked` when the unlock window closed by itself at
    /// `until` (the event's time): `{"locked": true, "unlockedUntil": null,
    /// "expired": true}`. Stores record it once, from their sweep.
    pub fn lock_expired(until: UnixMillis) -> Self {
        Self::new(
            EventType::RegistryLocked,
            until,
            serde_json::json!({"locked": true, "unlockedUntil": null, "expired": true}),
        )
    }

    /// The events of a grant: `request.granted`, preceded by `rule.matched`
    /// when a rule decided.
    pub fn for_grant(record: &RequestRecord, at: UnixMillis) -> Vec<Self> {
        let mut events = Vec::with_capacity(2);
        if let Some(DecidedBy::Rule(rule)) = &record.decided_by {
            events.push(Self::rule_matched(rule, "grant", record, at));
        }
        events.push(Self::request(EventType::RequestGranted, record, at));
        events
    }

    /// The events of a deny: `request.denied`, preceded by `rule.matched`
    /// when a rule decided.
    pub fn for_deny(record: &RequestRecord, at: UnixMillis) -> Vec<Self> {
        let mut events = Vec::with_capacity(2);
        if let Some(DecidedBy::Rule(rule)) = &record.decided_by {
            events.push(Self::rule_matched(rule, "deny", record, at));
        }
        events.push(Self::request(EventType::RequestDenied, record, at));
        events
    }
}

/// The default capacity of the `request.pending` queue.
pub const PENDING_QUEUE_DEFAULT: usize = 10_000;

/// The producer side of the bounded `request.pending` queue. Cloned into
/// the registry; `offer` never blocks and never waits for a lock: a full
/// queue drops the event and counts it
/// (`fleetgate_webhook_pending_dropped_total`).
#[derive(Clone, Debug)]
pub struct PendingEvents {
    tx: SyncSender<WebhookEvent>,
}

impl PendingEvents {
    /// A queue of at most `cap` events, and its consumer (the deliverer).
    pub fn bounded(cap: usize) -> (PendingEvents, Receiver<WebhookEvent>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(cap.max(1));
        (PendingEvents { tx }, rx)
    }

    /// Queues `event` if there is room; otherwise drops and counts it.
    /// Returns whether it was queued.
    pub fn offer(&self, event: WebhookEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!(crate::metrics::WEBHOOK_PENDING_DROPPED_TOTAL).increment(1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> WebhookEvent {
        WebhookEvent::lock(None, UnixMillis(n))
    }

    #[test]
    fn the_pending_queue_drops_at_its_cap_and_never_blocks() {
        let (q, rx) = PendingEvents::bounded(3);
        for n in 0..3 {
            assert!(q.offer(event(n)), "room for event {n}");
        }
        assert!(!q.offer(event(3)), "the fourth is dropped at the cap of 3");
        assert_eq!(rx.try_recv().unwrap().at, UnixMillis(0));
        assert!(q.offer(event(4)), "room again once one was taken");
    }

    #[test]
    fn event_ids_are_unique_and_types_have_their_wire_names() {
        let a = event(1);
        let b = event(1);
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("msg_") && a.id.len() == 36, "{}", a.id);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["type"], "registry.locked");
        assert_eq!(EventType::RuleMatched.as_str(), "rule.matched");
    }
}
