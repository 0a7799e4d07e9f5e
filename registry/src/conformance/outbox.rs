//! The conformance case of the webhook outbox: every decision a store
//! records writes its events in the same transition, they are handed out
//! once, in commit order, and retired only by `outbox_ack`.
//!
//! Run by every backend that records webhook events (the factory returns a
//! store with recording on): the embedded store with and without its
//! journal (`embedded::tests`). The Redis backends do not record events
//! yet, so the case is not in [`super::run_all`].

use std::time::Duration;

use super::{decide, fp, unlock, user, Factory, T0};
use crate::decision::{Decision, LockState, Windows};
use crate::rule::DecidedBy;
use crate::store::{AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, Store};
use crate::webhook::EventType;

pub async fn outbox_holds_every_decision_until_acknowledged<S: Store>(f: &impl Factory<S>) {
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
    assert_eq!(
        kinds,
        [
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
        ],
        "every decision, in commit order"
    );
    assert_eq!(events[1].data["username"], "dev-a");
    assert_eq!(events[1].data["state"], "granted");
    assert_eq!(events[2].data["rule"], "deny-b");
    assert_eq!(events[2].data["action"], "deny");
    assert_eq!(events[3].data["state"], "denied");
    assert_eq!(
        events[3].data["decidedBy"],
        serde_json::json!({"rule": "deny-b"})
    );
    assert_eq!(events[4].data["username"], "dev-c");
    assert_eq!(events[5].data["roles"], serde_json::json!([]));
    assert_eq!(events[7].data["rule"], "autos");
    assert_eq!(
        events[8].data["decidedBy"],
        serde_json::json!({"rule": "autos"})
    );
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
