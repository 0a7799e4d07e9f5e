//! The embedded store's webhook outbox: the events of decisions that are
//! durable but not yet delivered to every endpoint.
//!
//! Events enter in the same journal append (and `fdatasync`) as the
//! decision they describe: a grant's `grant`/`grants` record is wrapped in
//! a `withEvents` record, and decisions the journal does not otherwise keep
//! (deny, forget, lock) write an `events` record before they are applied.
//! Delivered events are retired by a `delivered` record, so a restart
//! rebuilds exactly the undelivered ones from the journal; compaction
//! rewrites them as `events` records.
//!
//! Held in memory in commit order, handed out once per process (a cursor),
//! and bounded by `cap`: at the cap the oldest event is dropped, counted in
//! `fleetgate_webhook_outbox_dropped_total` and logged, so a receiver that
//! is down for days never stops decisions (docs/DECISIONS.md).

use std::collections::{BTreeMap, HashMap};

use crate::webhook::WebhookEvent;

/// The default cap on undelivered events (`--webhook-outbox-max`).
pub const OUTBOX_DEFAULT_MAX: usize = 100_000;

/// Undelivered events, in commit order.
#[derive(Debug)]
pub struct Outbox {
    cap: usize,
    /// Commit order → event.
    events: BTreeMap<u64, WebhookEvent>,
    /// Event id → its key in `events`, for `ack`.
    ids: HashMap<String, u64>,
    /// The next key to give an event.
    next: u64,
    /// Events with a key below this were handed out by `take`; they stay
    /// until acknowledged (or the process ends: a restart hands out every
    /// undelivered event again).
    taken_below: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(OUTBOX_DEFAULT_MAX)
    }
}

impl Outbox {
    pub fn new(cap: usize) -> Self {
        Outbox {
            cap: cap.max(1),
            events: BTreeMap::new(),
            ids: HashMap::new(),
            next: 0,
            taken_below: 0,
        }
    }

    /// Sets the cap, dropping the oldest events past it. Returns how many
    /// were dropped.
    pub fn set_cap(&mut self, cap: usize) -> usize {
        self.cap = cap.max(1);
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.events.len() > self.cap {
            if let Some((_, event)) = self.events.pop_first() {
                self.ids.remove(&event.id);
                dropped += 1;
            }
        }
        if dropped > 0 {
            metrics::counter!(crate::metrics::WEBHOOK_OUTBOX_DROPPED_TOTAL)
                .increment(dropped as u64);
            tracing::warn!(
                dropped,
                cap = self.cap,
                "webhook outbox full: dropped the oldest undelivered events"
            );
        }
        dropped
    }

    /// Adds events after their commit. Returns how many old events the cap
    /// dropped to make room.
    pub fn push(&mut self, events: impl IntoIterator<Item = WebhookEvent>) -> usize {
        for event in events {
            if self.ids.contains_key(&event.id) {
                continue;
            }
            self.ids.insert(event.id.clone(), self.next);
            self.events.insert(self.next, event);
            self.next += 1;
        }
        self.trim()
    }

    /// Up to `max` events not handed out yet, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<WebhookEvent> {
        let out: Vec<(u64, WebhookEvent)> = self
            .events
            .range(self.taken_below..)
            .take(max)
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        if let Some((k, _)) = out.last() {
            self.taken_below = k + 1;
        }
        out.into_iter().map(|(_, e)| e).collect()
    }

    /// Retires events by id; unknown ids are ignored. Returns how many
    /// were held.
    pub fn ack(&mut self, ids: &[String]) -> usize {
        let mut n = 0;
        for id in ids {
            if let Some(k) = self.ids.remove(id) {
                self.events.remove(&k);
                n += 1;
            }
        }
        n
    }

    /// Events held, handed out or not.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every held event in commit order (for compaction).
    pub fn events(&self) -> impl Iterator<Item = &WebhookEvent> {
        self.events.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixMillis;

    fn ev(n: u64) -> WebhookEvent {
        WebhookEvent::lock(Some(UnixMillis(n)), UnixMillis(n))
    }

    #[test]
    fn events_are_handed_out_once_in_order_and_retired_by_id() {
        let mut o = Outbox::new(10);
        let (a, b, c) = (ev(1), ev(2), ev(3));
        o.push([a.clone(), b.clone()]);
        assert_eq!(o.take(1), vec![a.clone()]);
        o.push([c.clone()]);
        assert_eq!(o.take(10), vec![b.clone(), c.clone()]);
        assert!(o.take(10).is_empty(), "nothing handed out twice");
        assert_eq!(o.ack(&[b.id.clone(), "msg_unknown".into()]), 1);
        assert_eq!(o.len(), 2);
        let left: Vec<_> = o.events().cloned().collect();
        assert_eq!(left, vec![a, c]);
    }

    #[test]
    fn at_the_cap_the_oldest_event_is_dropped() {
        let mut o = Outbox::new(3);
        let events: Vec<_> = (0..4).map(ev).collect();
        assert_eq!(o.push(events[..3].iter().cloned()), 0, "3 fit a cap of 3");
        assert_eq!(o.push([events[3].clone()]), 1, "the fourth drops one");
        let left: Vec<_> = o.events().cloned().collect();
        assert_eq!(left, events[1..].to_vec(), "the oldest went");
        assert_eq!(o.ack(&[events[0].id.clone()]), 0);
    }
}
