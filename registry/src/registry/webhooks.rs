//! The registry's side of webhooks: the best-effort `request.pending`
//! event of a poll that created a request.
//!
//! Decisions (grants, denials, deletions, user and lock changes) write
//! their events in the store, in the same commit (`webhook`,
//! `embedded::outbox`). A new pending request is not a decision and is not
//! durable in the embedded store, so its event is offered to a bounded
//! in-memory queue with a non-blocking `try_send` ([`PendingEvents`]): a
//! full queue drops and counts it, and a poll never waits. Re-polls emit
//! nothing: only the poll the store answered `Create` gets here.

use super::{PollContext, Registry};
use crate::clock::UnixMillis;
use crate::fingerprint::Fingerprint;
use crate::model::{RequestRecord, RequestState, Transport};
use crate::request::RegisterRequest;
use crate::store::Store;
use crate::webhook::{EventType, PendingEvents, WebhookEvent};

impl<S: Store> Registry<S> {
    /// Sends `request.pending` events to `queue` (the deliverer's).
    pub fn with_pending_events(mut self, queue: PendingEvents) -> Self {
        self.pending_events = Some(queue);
        self
    }

    /// Offers the `request.pending` event of a request this poll created.
    pub(super) fn offer_pending(
        &self,
        req: &RegisterRequest<'_>,
        ctx: &PollContext<'_>,
        fingerprint: Fingerprint,
        now: UnixMillis,
    ) {
        let Some(queue) = &self.pending_events else {
            return;
        };
        let record = RequestRecord {
            username: req.username.to_string(),
            fingerprint,
            state: RequestState::Pending,
            transport: ctx.transport.unwrap_or(Transport::Http),
            sealed: Vec::new(),
            roles: req.roles.clone(),
            permissions: req.permissions.clone(),
            context: req.context.as_deref().map(str::to_owned),
            source_addr: ctx.source_addr,
            client_id: ctx.client_id.map(str::to_owned),
            first_seen: now,
            last_seen: now,
            polls: 1,
            certificate: None,
            decided_by: None,
        };
        queue.offer(WebhookEvent::request(
            EventType::RequestPending,
            &record,
            now,
        ));
    }
}
