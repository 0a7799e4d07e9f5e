//! The embedded store's webhook outbox: the conformance case with and
//! without a journal, events that survive a reopen until acknowledged
//! (through compaction), and the cap.

use super::*;
use crate::conformance::outbox::{outbox_holds_every_decision_until_acknowledged, Order};
use crate::webhook::EventType;

#[test]
fn outbox_conformance_in_memory() {
    now_or_never(outbox_holds_every_decision_until_acknowledged(
        &|w, max| EmbeddedStore::in_memory(w, max).with_webhook_outbox(1000),
        Order::Commit,
    ));
}

#[test]
fn outbox_conformance_with_journal() {
    let dirs = std::sync::Mutex::new(Vec::new());
    now_or_never(outbox_holds_every_decision_until_acknowledged(
        &|w, max| {
            let d = tempfile::tempdir().unwrap();
            let s = EmbeddedStore::open(d.path(), w, max, T0)
                .unwrap()
                .with_webhook_outbox(1000);
            dirs.lock().unwrap().push(d);
            s
        },
        Order::Commit,
    ));
}

fn grant_one(s: &EmbeddedStore, name: &str, n: u8) {
    now_or_never(s.register(poll(name, n), T0)).unwrap();
    let result = now_or_never(s.commit_grant(
        GrantCommit {
            certificate: None,
            username: name.into(),
            fingerprint: Fingerprint([n; 32]),
            user: user(name),
            granted_at: T0,
        },
        T0,
    ))
    .unwrap();
    assert!(matches!(result, GrantResult::Granted(_)), "{result:?}");
}

#[test]
fn undelivered_events_survive_a_reopen_and_compaction_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let w = Windows::default();
    let far = T0.plus(Duration::from_secs(3600));
    let s = EmbeddedStore::open(dir.path(), w, 100, T0)
        .unwrap()
        .with_webhook_outbox(1000);
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(far),
    }))
    .unwrap();
    grant_one(&s, "dev-1", 1);
    let before = now_or_never(s.outbox_take(10)).unwrap();
    assert_eq!(before.len(), 2);
    drop(s); // as kill -9: nothing was acknowledged

    let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
    let after = now_or_never(s.outbox_take(10)).unwrap();
    assert_eq!(after, before, "same events, same ids, after the reopen");
    now_or_never(s.outbox_ack(&[after[0].id.clone()])).unwrap();
    drop(s);

    // Reopened twice: the first compacts (the ack is applied, the other
    // event is rewritten), the second replays the compacted journal.
    for _ in 0..2 {
        let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
        let left = now_or_never(s.outbox_take(10)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, before[1].id);
        assert_eq!(left[0].kind, EventType::RequestGranted);
        assert!(now_or_never(s.get_user("dev-1")).unwrap().is_some());
    }
}

#[test]
fn a_decision_and_its_events_are_one_journal_append() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path(), Windows::default(), 100, T0)
        .unwrap()
        .with_webhook_outbox(1000);
    let far = T0.plus(Duration::from_secs(3600));
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(far),
    }))
    .unwrap();
    let appends = s.journal_appends();
    grant_one(&s, "dev-1", 1);
    assert_eq!(s.journal_appends(), appends + 1, "one fdatasync for both");
    let text = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.contains(r#""op":"withEvents""#), "{last}");
    assert!(last.contains("request.granted"), "{last}");
}

#[test]
fn without_webhooks_nothing_is_recorded() {
    let s = EmbeddedStore::in_memory(Windows::default(), 100);
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(60))),
    }))
    .unwrap();
    grant_one(&s, "dev-1", 1);
    assert_eq!(now_or_never(s.outbox_depth()).unwrap(), 0);
}

#[test]
fn at_the_cap_the_oldest_undelivered_event_is_dropped_and_decisions_go_on() {
    let s = EmbeddedStore::in_memory(Windows::default(), 100).with_webhook_outbox(3);
    for i in 1..=3u64 {
        now_or_never(s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(i))),
        }))
        .unwrap();
    }
    assert_eq!(now_or_never(s.outbox_depth()).unwrap(), 3, "at the cap");
    now_or_never(s.set_lock_state(LockState::default())).unwrap();
    assert_eq!(now_or_never(s.outbox_depth()).unwrap(), 3);
    let kinds: Vec<_> = now_or_never(s.outbox_take(10))
        .unwrap()
        .iter()
        .map(|e| (e.kind, e.data["unlockedUntil"].clone()))
        .collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[2].0, EventType::RegistryLocked, "the newest is kept");
    assert_eq!(
        kinds[0].1,
        serde_json::json!(T0.plus(Duration::from_secs(2)).to_rfc3339()),
        "the oldest (1 s) went"
    );
}

#[test]
fn the_end_of_an_unlock_window_is_recorded_once_by_the_sweep() {
    let s = EmbeddedStore::in_memory(Windows::default(), 100).with_webhook_outbox(1000);
    let until = T0.plus(Duration::from_secs(300));
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(until),
    }))
    .unwrap();
    s.sweep(T0);
    s.sweep(until);
    let events = now_or_never(s.outbox_take(10)).unwrap();
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventType::RegistryUnlocked, EventType::RegistryLocked],
        "before the end nothing; at the end one event"
    );
    assert_eq!(events[1].at, until, "dated at the window's end");
    assert_eq!(events[1].data["expired"], true);
    assert_eq!(events[1].data["locked"], true);
    // Later sweeps record nothing more, and the store reads locked.
    s.sweep(until.plus(Duration::from_secs(10)));
    assert!(now_or_never(s.outbox_take(10)).unwrap().is_empty());
    assert_eq!(now_or_never(s.lock_state()).unwrap(), LockState::default());
    // An admin's lock is not "expired".
    now_or_never(s.set_lock_state(LockState::default())).unwrap();
    let lock = now_or_never(s.outbox_take(10)).unwrap();
    assert_eq!(lock[0].data["expired"], false);
    // Without webhooks, the sweep records nothing (and there is no outbox).
    let quiet = EmbeddedStore::in_memory(Windows::default(), 100);
    now_or_never(quiet.set_lock_state(LockState {
        unlocked_until: Some(until),
    }))
    .unwrap();
    quiet.sweep(until.plus(Duration::from_secs(1)));
    assert!(now_or_never(quiet.outbox_take(10)).unwrap().is_empty());
}
