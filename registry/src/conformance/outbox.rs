//! The conformance case of the webhook outbox: every decision a store
//! records writes its events in the same transition, they are handed out
//! once, in commit order, and retired only by `outbox_ack`.
//!
//! Run by every backend that records webhook events (the factory returns a
//! store with recording on), so it is not in [`super::run_all`]: the
//! embedded store with and without its journal (`embedded::tests`), whose
//! outbox is in commit order, and the Redis stores (single, cluster and the
//! caching stack), whose outbox is in commit order per bucket only
//! ([`Order::PerUsername`]).

use std::time::Duration;

use super::{decide, fp, unlock, user, Factory, T0};
use crate::decision::{Decision, LockState, Windows};
use crate::rule::DecidedBy;
use crate::store::{AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, Store};
use crate::webhook::EventType;

/// The order a backend's outbox hands events out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Exactly the order the decisions committed in.
    Commit,
    /// The commit order of each username's events (and of the lock
    /// events); events of different usernames may come in any order.
    PerUsername,
}

pub async fn outbox_holds_every_decision_until_acknowledged<S: Store>(
    f: &impl Factory<S>,
    order: Order,
) {
    let s = f.make(Windows::default(), 100).await;
    let far = T0.plus(Duration::from_secs(24 * 3600));
    unlock(&s, far).await;
    assert_eq!(decide(&s, "dev-a", 1, T0).await, Decision::Create);
    assert_eq!(decide(&s, "dev-b", 2, T0).await, Decision::Create);
    assert_eq!(decide(&s, "dev-c", 3, T0).await, Decision::Create);
    assert_eq!(decide(&s, "auto-1", 4, T0).await, Decision::Create);
    // A poll is not a decision: nothing in the outbox for it.
    assert_eq!(decide(&s, "dev-a", 1, T0).await, Decision::StillPending);
    let granted = s
        .commit_grant(
            GrantCommit {
                certificate: None,
                username: "dev-a".into(),
                fingerprint: fp(1),
                user: user("dev-a"),
                granted_at: T0,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(granted, GrantResult::Granted(_)));
    let by = Some(DecidedBy::Rule("deny-b".into()));
    assert_eq!(s.deny("dev-b", by, T0).await.unwrap(), DenyResult::Denied);
    // Denying a denied request changes nothing and records nothing.
    assert_eq!(s.deny("dev-b", None, T0).await.unwrap(), DenyResult::Denied);
    assert_eq!(
        s.forget_request("dev-c", T0).await.unwrap(),
        ForgetResult::Forgotten
    );
    let change = AccessChange {
        roles: Some(vec![]),
        permissions: None,
    };
    assert!(s
        .update_user_access("dev-a", &change)
        .await
        .unwrap()
        .is_some());
    assert!(s.delete_user("dev-a").await.unwrap());
    assert!(!s.delete_user("dev-a").await.unwrap(), "no second event");
    let mut by_rule = user("auto-1");
    by_rule.decided_by = Some(DecidedBy::Rule("autos".into()));
    let granted = s
        .commit_grants(
            vec![GrantCommit {
                certificate: None,
                username: "auto-1".into(),
                fingerprint: fp(4),
                user: by_rule,
                granted_at: T0,
            }],
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(granted[0], GrantResult::Granted(_)));
    s.set_lock_state(LockState::default()).await.unwrap();

    let events = s.outbox_take(100).await.unwrap();
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    let committed = [
        EventType::RegistryUnlocked,
        EventType::RequestGranted,
        EventType::RuleMatched,
        EventType::RequestDenied,
        EventType::RequestDeleted,
        EventType::UserUpdated,
        EventType::UserDeleted,
        EventType::RuleMatched,
        EventType::RequestGranted,
        EventType::RegistryLocked,
    ];
    // Whose event each is: the username, or "" for the lock.
    let owner = |e: &crate::webhook::WebhookEvent| -> String {
        let d = if e.kind == EventType::RuleMatched {
            &e.data["request"]
        } else {
            &e.data
        };
        d["username"].as_str().unwrap_or("").to_owned()
    };
    match order {
        Order::Commit => assert_eq!(kinds, committed, "every decision, in commit order"),
        Order::PerUsername => {
            let mut got = kinds.clone();
            let mut want = committed.to_vec();
            got.sort_by_key(|k| k.as_str());
            want.sort_by_key(|k| k.as_str());
            assert_eq!(got, want, "every decision, once: {kinds:?}");
            let of = |who: &str| -> Vec<EventType> {
                events
                    .iter()
                    .filter(|e| owner(e) == who)
                    .map(|e| e.kind)
                    .collect()
            };
            use EventType::*;
            assert_eq!(of(""), [RegistryUnlocked, RegistryLocked]);
            assert_eq!(of("dev-a"), [RequestGranted, UserUpdated, UserDeleted]);
            assert_eq!(of("dev-b"), [RuleMatched, RequestDenied]);
            assert_eq!(of("auto-1"), [RuleMatched, RequestGranted]);
        }
    }
    let find = |kind: EventType, who: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && owner(e) == who)
            .unwrap_or_else(|| panic!("no {kind:?} event of {who:?}: {events:?}"))
    };
    let granted = find(EventType::RequestGranted, "dev-a");
    assert_eq!(granted.data["state"], "granted");
    let matched = find(EventType::RuleMatched, "dev-b");
    assert_eq!(matched.data["rule"], "deny-b");
    assert_eq!(matched.data["action"], "deny");
    let denied = find(EventType::RequestDenied, "dev-b");
    assert_eq!(denied.data["state"], "denied");
    assert_eq!(
        denied.data["decidedBy"],
        serde_json::json!({"rule": "deny-b"})
    );
    find(EventType::RequestDeleted, "dev-c");
    let updated = find(EventType::UserUpdated, "dev-a");
    assert_eq!(updated.data["roles"], serde_json::json!([]));
    let deleted = find(EventType::UserDeleted, "dev-a");
    assert_eq!(deleted.data["roles"], serde_json::json!([]));
    let matched = find(EventType::RuleMatched, "auto-1");
    assert_eq!(matched.data["rule"], "autos");
    assert_eq!(matched.data["action"], "grant");
    let auto = find(EventType::RequestGranted, "auto-1");
    assert_eq!(auto.data["decidedBy"], serde_json::json!({"rule": "autos"}));
    assert_eq!(find(EventType::RegistryLocked, "").data["locked"], true);
    for e in &events {
        let text = e.data.to_string();
        assert!(!text.contains("$argon2id"), "no password hash: {text}");
        assert!(!text.contains("sealed"), "no sealed credential: {text}");
    }
    let ids: std::collections::BTreeSet<&String> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), events.len(), "one id per event");

    // Handed out once; held until acknowledged.
    assert!(s.outbox_take(100).await.unwrap().is_empty());
    assert_eq!(s.outbox_depth().await.unwrap(), events.len());
    let first: Vec<String> = events[..5].iter().map(|e| e.id.clone()).collect();
    s.outbox_ack(&first).await.unwrap();
    s.outbox_ack(&first).await.unwrap();
    assert_eq!(s.outbox_depth().await.unwrap(), events.len() - 5);
    let rest: Vec<String> = events[5..].iter().map(|e| e.id.clone()).collect();
    s.outbox_ack(&rest).await.unwrap();
    assert_eq!(s.outbox_depth().await.unwrap(), 0);
}
