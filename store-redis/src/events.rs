//! State-change events on the pub/sub channel `<prefix>:events`, for the
//! proxies' caches.
//!
//! Transitions publish as part of their own script, so an event is sent
//! exactly when the change is applied: `grant:<u>` (grant script),
//! `deny:<u>` (deny script), `forget:<u>` (forget script), `user:<u>` (`put_user`), `delete:<u>`
//! (`delete_user`), `role:<name>` (`put_role` and `delete_role`: the role
//! was created, replaced or deleted; read it again to know which), `rules:<version>`
//! (`put_rule`, `delete_rule`, `rule_order`: the rule list's new version). The lock state is set by plain `SET`s, and
//! `set_lock_state` publishes `lock:<unlocked_until ms, 0 = locked>` right
//! after they succeed.
//!
//! Pub/sub is at-most-once: a subscriber that is disconnected misses events.
//! [`subscribe`] therefore yields [`StoreEvent::Resync`] each time it
//! (re)subscribes, and a cache must treat that as "everything may have
//! changed". Redis Cluster broadcasts `PUBLISH` to every node, so a
//! subscription to any one node sees all events.

use std::time::Duration;

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::decision::LockState;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// One event on the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// The lock state was set (`lock:<ms>`; 0 means locked).
    Lock(LockState),
    /// A request was granted and its user created (`grant:<username>`).
    Granted(String),
    /// A pending request was denied (`deny:<username>`).
    Denied(String),
    /// A pending or denied request was forgotten (`forget:<username>`).
    Forgotten(String),
    /// A user was created or replaced (`user:<username>`).
    UserPut(String),
    /// A user was deleted, with any granted request (`delete:<username>`).
    UserDeleted(String),
    /// A role was created, replaced or deleted (`role:<name>`): anything
    /// derived from it (a user's effective permissions) must be read again.
    RoleChanged(String),
    /// The rule list changed; its new version (`rules:<version>`).
    RulesChanged(u64),
    /// Not published: the subscriber (re)connected and may have missed
    /// events. Drop every cached state.
    Resync,
}

impl StoreEvent {
    /// The message as published.
    pub fn encode(&self) -> String {
        match self {
            StoreEvent::Lock(l) => format!("lock:{}", l.unlocked_until.map_or(0, |u| u.0.max(1))),
            StoreEvent::Granted(u) => format!("grant:{u}"),
            StoreEvent::Denied(u) => format!("deny:{u}"),
            StoreEvent::Forgotten(u) => format!("forget:{u}"),
            StoreEvent::UserPut(u) => format!("user:{u}"),
            StoreEvent::UserDeleted(u) => format!("delete:{u}"),
            StoreEvent::RoleChanged(r) => format!("role:{r}"),
            StoreEvent::RulesChanged(v) => format!("rules:{v}"),
            StoreEvent::Resync => "resync".into(),
        }
    }

    /// Parses a published message; `None` for anything unknown (a newer
    /// publisher's event is ignored, not fatal).
    pub fn parse(msg: &str) -> Option<StoreEvent> {
        if msg == "resync" {
            return Some(StoreEvent::Resync);
        }
        let (kind, arg) = msg.split_once(':')?;
        let name = || (!arg.is_empty()).then(|| arg.to_owned());
        Some(match kind {
            "lock" => {
                let ms: u64 = arg.parse().ok()?;
                StoreEvent::Lock(LockState {
                    unlocked_until: (ms > 0).then_some(UnixMillis(ms)),
                })
            }
            "grant" => StoreEvent::Granted(name()?),
            "deny" => StoreEvent::Denied(name()?),
            "forget" => StoreEvent::Forgotten(name()?),
            "user" => StoreEvent::UserPut(name()?),
            "delete" => StoreEvent::UserDeleted(name()?),
            "role" => StoreEvent::RoleChanged(name()?),
            "rules" => StoreEvent::RulesChanged(arg.parse().ok()?),
            _ => return None,
        })
    }
}

/// Subscribes to `channel` on the first reachable of `nodes` and forwards
/// events into the returned receiver until it is dropped. Reconnects (to the
/// next node) when the connection ends, and sends [`StoreEvent::Resync`]
/// after every successful subscribe. Must be called inside a tokio runtime.
pub fn subscribe(
    nodes: Vec<String>,
    channel: String,
    connect_timeout: Duration,
    tls_ca: Option<Vec<u8>>,
) -> mpsc::Receiver<StoreEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let node = &nodes[next % nodes.len()];
            next += 1;
            tokio::select! {
                _ = tx.closed() => return,
                result = forward(node, &channel, &tx, connect_timeout, tls_ca.as_deref()) => {
                    if let Err(e) = result {
                        let node = crate::config::redact_url(node);
                        tracing::debug!(node, error = %e, "event subscription ended");
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    rx
}

/// One subscription: connect, subscribe, announce `Resync`, forward.
async fn forward(
    node: &str,
    channel: &str,
    tx: &mpsc::Sender<StoreEvent>,
    connect_timeout: Duration,
    tls_ca: Option<&[u8]>,
) -> Result<(), String> {
    let client = crate::config::client(node, tls_ca).map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(connect_timeout, pubsub.subscribe(channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tx.send(StoreEvent::Resync)
        .await
        .map_err(|_| "receiver dropped")?;
    let mut messages = pubsub.into_on_message();
    while let Some(msg) = messages.next().await {
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        match StoreEvent::parse(&payload) {
            Some(event) => tx.send(event).await.map_err(|_| "receiver dropped")?,
            // A newer publisher's event: ignored (the epochs still cover
            // whatever it announced).
            None => tracing::debug!(payload, "unknown store event ignored"),
        }
    }
    Err("connection closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in [
            StoreEvent::Lock(LockState::default()),
            StoreEvent::Lock(LockState {
                unlocked_until: Some(UnixMillis(1_800_000_000_000)),
            }),
            StoreEvent::Granted("dev.01@site".into()),
            StoreEvent::Denied("dev01".into()),
            StoreEvent::Forgotten("dev01".into()),
            StoreEvent::UserPut("admin".into()),
            StoreEvent::UserDeleted("dev01".into()),
            StoreEvent::RoleChanged("site:4-line_2.v1".into()),
            StoreEvent::RulesChanged(0),
            StoreEvent::RulesChanged(u64::MAX),
            StoreEvent::Resync,
        ] {
            assert_eq!(StoreEvent::parse(&e.encode()), Some(e.clone()), "{e:?}");
        }
    }

    #[test]
    fn role_events_are_pinned() {
        // What the put_role and delete_role scripts publish.
        assert_eq!(StoreEvent::RoleChanged("ops".into()).encode(), "role:ops");
        assert_eq!(
            StoreEvent::parse("role:site:4"),
            Some(StoreEvent::RoleChanged("site:4".into())),
            "a role name may contain `:`; only the first one splits"
        );
        assert_eq!(StoreEvent::parse("role:"), None);
    }

    #[test]
    fn rules_events_are_pinned() {
        // What put_rule.lua, delete_rule.lua and rule_order.lua publish:
        // `'rules:' .. HINCRBY(...)`.
        assert_eq!(
            StoreEvent::parse("rules:17"),
            Some(StoreEvent::RulesChanged(17))
        );
        assert_eq!(StoreEvent::RulesChanged(17).encode(), "rules:17");
    }

    #[test]
    fn unknown_or_malformed_events_are_ignored() {
        for m in [
            "",
            "lock",
            "lock:x",
            "grant:",
            "role:",
            "rules:",
            "rules:-1",
            "rules:x",
            "rename:a:b",
            "hello",
        ] {
            assert_eq!(StoreEvent::parse(m), None, "{m:?}");
        }
        assert_eq!(
            StoreEvent::encode(&StoreEvent::Lock(LockState::default())),
            "lock:0"
        );
    }
}
