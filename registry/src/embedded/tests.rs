//! Tests of the embedded store: the shared conformance suite, durability
//! across a reopen, and concurrent use from several threads.

use std::sync::Arc;
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::Duration;

use super::*;
use crate::conformance::{self, T0};
use crate::fingerprint::Fingerprint;
use crate::model::Transport;
use crate::store::{Poll, SealOnCreate};

/// Runs a future that must complete without suspending: the embedded store
/// never waits on I/O, so a `Pending` here is a bug.
fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        TaskPoll::Ready(v) => v,
        TaskPoll::Pending => panic!("the embedded store suspended"),
    }
}

#[test]
fn conformance_suite() {
    now_or_never(conformance::run_all(&|w, max| {
        EmbeddedStore::in_memory(w, max)
    }));
}

#[test]
fn conformance_suite_with_journal() {
    let dirs = std::sync::Mutex::new(Vec::new());
    now_or_never(conformance::run_all(&|w, max| {
        let d = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(d.path(), w, max, T0).unwrap();
        dirs.lock().unwrap().push(d);
        s
    }));
}

fn poll(username: &str, n: u8) -> Poll<'_> {
    Poll {
        username,
        fingerprint: Fingerprint([n; 32]),
        transport: Transport::Http,
        source_addr: None,
        client_id: None,
        roles: &[],
        permissions: &[],
        context: None,
        secret: SealOnCreate::Sealed(vec![n; 8]),
        preauthorized: false,
    }
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        certificate: None,
        username: name.into(),
        password_hash: Some("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        roles: vec![],
        permissions: vec![],
        created_at: T0,
        origin: crate::model::UserOrigin::Http,
        decided_by: None,
    }
}

#[test]
fn users_and_grants_survive_reopen_pending_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let w = Windows::default();
    {
        let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
        now_or_never(s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        }))
        .unwrap();
        for name in ["dev01", "dev02", "dev03"] {
            now_or_never(s.register(poll(name, 1), T0)).unwrap();
        }
        let r = now_or_never(s.commit_grant(
            GrantCommit {
                certificate: None,
                username: "dev01".into(),
                fingerprint: Fingerprint([1; 32]),
                user: user("dev01"),
                granted_at: T0,
            },
            T0,
        ))
        .unwrap();
        assert!(matches!(r, GrantResult::Granted(_)));
        now_or_never(s.put_user(user("ops"))).unwrap();
        now_or_never(s.put_user(user("gone"))).unwrap();
        assert!(now_or_never(s.delete_user("gone")).unwrap());
        // Dropped without any shutdown step, like a crash.
    }
    let t1 = T0.plus(Duration::from_secs(5));
    let s = EmbeddedStore::open(dir.path(), w, 100, t1).unwrap();
    assert!(now_or_never(s.get_user("dev01")).unwrap().is_some());
    assert!(now_or_never(s.get_user("ops")).unwrap().is_some());
    assert!(now_or_never(s.get_user("gone")).unwrap().is_none());
    // Locked after restart, and the grant is still collectable.
    assert_eq!(
        now_or_never(s.register(poll("dev01", 1), t1)).unwrap().0,
        Decision::Collect
    );
    assert_eq!(now_or_never(s.get_request("dev02", t1)).unwrap(), None);
    assert_eq!(now_or_never(s.pending_count()).unwrap(), 0);

    // A restart after the collection window compacts the grant away.
    let late = T0.plus(w.collect_window);
    drop(s);
    let s = EmbeddedStore::open(dir.path(), w, 100, late).unwrap();
    assert_eq!(now_or_never(s.get_request("dev01", late)).unwrap(), None);
    assert!(now_or_never(s.get_user("dev01")).unwrap().is_some());
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    assert_eq!(
        journal.lines().count(),
        2,
        "compacted to the two users:\n{journal}"
    );
}

#[test]
fn roles_survive_reopen_and_compaction() {
    use conformance::role;
    let dir = tempfile::tempdir().unwrap();
    let w = Windows::default();
    {
        let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
        now_or_never(s.put_role(role("sensors", &["plant/#"]))).unwrap();
        now_or_never(s.put_role(role("gone", &["x"]))).unwrap();
        now_or_never(s.put_role(role("ops", &["a"]))).unwrap();
        // Replaced, then deleted: the journal holds both, replay keeps the last.
        now_or_never(s.put_role(role("ops", &["ops/#", "alerts/#"]))).unwrap();
        assert!(now_or_never(s.delete_role("gone")).unwrap());
        now_or_never(s.put_user(user("dev01"))).unwrap();
        // Dropped without any shutdown step, like a crash.
    }
    let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
    assert_eq!(
        now_or_never(s.list_roles()).unwrap(),
        vec![
            role("ops", &["ops/#", "alerts/#"]),
            role("sensors", &["plant/#"])
        ]
    );
    assert_eq!(now_or_never(s.get_role("gone")).unwrap(), None);
    // Compacted to one line per live role, before the users.
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    let ops: Vec<&str> = journal
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l[9..]).unwrap();
            match v["op"].as_str().unwrap() {
                "putRole" => "putRole",
                "putUser" => "putUser",
                other => panic!("unexpected {other} in the compacted journal:\n{journal}"),
            }
        })
        .collect();
    assert_eq!(ops, ["putRole", "putRole", "putUser"], "{journal}");
    // A change after the reopen is durable too.
    assert!(now_or_never(s.delete_role("sensors")).unwrap());
    drop(s);
    let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
    assert_eq!(
        now_or_never(s.list_roles()).unwrap(),
        vec![role("ops", &["ops/#", "alerts/#"])]
    );
}

#[test]
fn sweep_frees_expired_records_and_fixes_the_count() {
    let w = Windows {
        pending_ttl: Duration::from_secs(10),
        ..Windows::default()
    };
    let s = EmbeddedStore::in_memory(w, 100);
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    }))
    .unwrap();
    for i in 0..10 {
        now_or_never(s.register(poll(&format!("dev{i:02}"), 1), T0)).unwrap();
    }
    assert_eq!(now_or_never(s.pending_count()).unwrap(), 10);
    assert_eq!(s.sweep(T0.plus(Duration::from_secs(9))), 0);
    assert_eq!(s.sweep(T0.plus(Duration::from_secs(10))), 10);
    assert_eq!(now_or_never(s.pending_count()).unwrap(), 0);
}

#[test]
fn concurrent_polls_from_many_threads_keep_exact_counts() {
    // Four threads create and re-poll disjoint devices while a fifth grants;
    // the pending count and every record must come out exact.
    let s = Arc::new(EmbeddedStore::in_memory(Windows::default(), 1_000_000));
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    }))
    .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let name = format!("t{t}-dev{i}");
                    for round in 0..3 {
                        let d = now_or_never(s.register(poll(&name, 1), T0)).unwrap().0;
                        let want = if round == 0 {
                            Decision::Create
                        } else {
                            Decision::StillPending
                        };
                        assert_eq!(d, want, "{name} round {round}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(now_or_never(s.pending_count()).unwrap(), 8000);
    let r = now_or_never(s.get_request("t3-dev1999", T0))
        .unwrap()
        .unwrap();
    assert_eq!(r.polls, 3);
}

/// A deny and a grant of the same pending request, raced from two threads
/// many times (with a journal, so the grant really waits on fsync): the two
/// answers always agree with each other and with the final state. Before
/// the deny took the journal mutex, a deny could answer `Denied` between
/// the grant's check and its apply, and the grant then won.
#[test]
fn a_racing_deny_and_grant_never_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EmbeddedStore::open(dir.path(), Windows::default(), 10_000, T0).unwrap());
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    }))
    .unwrap();
    let (mut denied_won, mut granted_won) = (0, 0);
    for i in 0..200 {
        let name = format!("race-{i:03}");
        assert_eq!(
            now_or_never(s.register(poll(&name, 1), T0)).unwrap().0,
            Decision::Create
        );
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let granter = {
            let (s, name, barrier) = (s.clone(), name.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let grant = GrantCommit {
                    certificate: None,
                    username: name.clone(),
                    fingerprint: Fingerprint([1; 32]),
                    user: user(&name),
                    granted_at: T0,
                };
                now_or_never(s.commit_grant(grant, T0)).unwrap()
            })
        };
        barrier.wait();
        let deny = now_or_never(s.deny(&name, None, T0)).unwrap();
        let grant = granter.join().unwrap();
        let user_exists = now_or_never(s.get_user(&name)).unwrap().is_some();
        let state = now_or_never(s.get_request(&name, T0))
            .unwrap()
            .unwrap()
            .state;
        match (&deny, &grant) {
            (DenyResult::Denied, GrantResult::Conflict(_)) => {
                denied_won += 1;
                assert!(!user_exists, "{name}: denied, yet a user was created");
                assert!(
                    matches!(state, RequestState::Denied { .. }),
                    "{name}: {state:?}"
                );
            }
            (DenyResult::AlreadyGranted, GrantResult::Granted(_)) => {
                granted_won += 1;
                assert!(user_exists, "{name}: granted without a user");
                assert!(
                    matches!(state, RequestState::Granted { .. }),
                    "{name}: {state:?}"
                );
            }
            other => panic!("{name}: answers disagree: {other:?}"),
        }
    }
    assert_eq!(denied_won + granted_won, 200);
}

fn commit(name: &str, n: u8) -> GrantCommit {
    GrantCommit {
        certificate: None,
        username: name.into(),
        fingerprint: Fingerprint([n; 32]),
        user: user(name),
        granted_at: T0,
    }
}

/// A group of grants is one journal line with one `fdatasync`; after a
/// crash (the store dropped without any shutdown step) the whole group is
/// replayed. Cut anywhere inside that line, as a crash during the write
/// would leave it, the group is dropped whole (none of it was acknowledged)
/// and everything written before it survives.
#[test]
fn a_group_of_grants_replays_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let w = Windows::default();
    let names: Vec<String> = (0..500).map(|i| format!("dev{i:04}")).collect();
    {
        let s = EmbeddedStore::open(dir.path(), w, 1000, T0).unwrap();
        now_or_never(s.set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        }))
        .unwrap();
        now_or_never(s.put_user(user("ops"))).unwrap();
        for name in &names {
            now_or_never(s.register(poll(name, 1), T0)).unwrap();
        }
        let results =
            now_or_never(s.commit_grants(names.iter().map(|n| commit(n, 1)).collect(), T0))
                .unwrap();
        assert!(results.iter().all(|r| matches!(r, GrantResult::Granted(_))));
        assert_eq!(s.journal_appends(), 2, "one for `ops`, one for the group");
    }
    let journal = std::fs::read(dir.path().join("journal.log")).unwrap();
    let lines: Vec<&[u8]> = journal.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 2);
    assert!(String::from_utf8_lossy(lines[1]).contains(r#"{"op":"grants","grants":[{"user":"#));

    let t1 = T0.plus(Duration::from_secs(1));
    let s = EmbeddedStore::open(dir.path(), w, 1000, t1).unwrap();
    for name in &names {
        assert!(now_or_never(s.get_user(name)).unwrap().is_some(), "{name}");
        assert_eq!(
            now_or_never(s.register(poll(name, 1), t1)).unwrap().0,
            Decision::Collect,
            "{name}"
        );
    }
    drop(s);

    // The group's line cut at many places, down to its last byte (the
    // newline missing): never one grant of the group, always `ops`.
    let group = lines[1];
    let cuts = (0..group.len()).step_by(4099).chain([group.len() - 1]);
    for cut in cuts {
        let torn = tempfile::tempdir().unwrap();
        let mut bytes = lines[0].to_vec();
        bytes.extend_from_slice(&group[..cut]);
        std::fs::write(torn.path().join("journal.log"), &bytes).unwrap();
        let s = EmbeddedStore::open(torn.path(), w, 1000, t1).unwrap();
        assert!(
            now_or_never(s.get_user("ops")).unwrap().is_some(),
            "cut {cut}"
        );
        let users = now_or_never(s.list_users(&ListQuery {
            state: ListState::Pending,
            limit: 1000,
            cursor: None,
            prefix: Some("dev".into()),
        }))
        .unwrap();
        assert_eq!(users.items.len(), 0, "cut at {cut} of {}", group.len());
    }
}

/// Single grants that arrive while another caller holds the journal share
/// one append: eight threads each commit one grant while the journal is
/// held; once it is let go, the first of them to get it writes all eight
/// with one `fdatasync`, and each thread gets its own answer.
#[test]
fn concurrent_single_grants_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Windows::default(), 100, T0).unwrap());
    now_or_never(store.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(60))),
    }))
    .unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("dev{i}")).collect();
    for name in &names {
        now_or_never(store.register(poll(name, 1), T0)).unwrap();
    }
    let held = store.journal();
    let threads: Vec<_> = names
        .iter()
        .cloned()
        .map(|name| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let r = now_or_never(store.commit_grant(commit(&name, 1), T0)).unwrap();
                (name, r)
            })
        })
        .collect();
    // Wait until all eight are queued behind the held journal.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.grant_queue.lock().unwrap().len() < names.len() {
        assert!(std::time::Instant::now() < deadline, "grants never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = held.as_ref().unwrap().appends();
    drop(held);
    for t in threads {
        let (name, r) = t.join().unwrap();
        match r {
            GrantResult::Granted(record) => assert_eq!(record.username, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        store.journal_appends() - before,
        1,
        "one append for eight grants"
    );
    assert_eq!(now_or_never(store.pending_count()).unwrap(), 0);
}

/// How many names the shards' denied indexes hold, and how many denied
/// records `open` holds: the two must always agree.
fn denied_index_sizes(store: &EmbeddedStore) -> (usize, usize) {
    store.shards.iter().fold((0, 0), |(index, records), shard| {
        let s = lock(shard);
        let denied = s.open.values().filter(|r| !r.is_pending()).count();
        (index + s.denied.len(), records + denied)
    })
}

#[test]
fn the_denied_index_never_outlives_its_records() {
    let windows = crate::decision::Windows::default();
    let store = EmbeddedStore::in_memory(windows, 1000);
    let far = T0.plus(Duration::from_secs(24 * 3600));
    now_or_never(store.set_lock_state(LockState {
        unlocked_until: Some(far),
    }))
    .unwrap();
    for i in 0..100 {
        let name = format!("d{i:03}");
        now_or_never(store.register(poll(&name, 1), T0)).unwrap();
        now_or_never(store.deny(&name, None, T0)).unwrap();
    }
    assert_eq!(denied_index_sizes(&store), (100, 100));
    // Forget drops the entry with the record.
    now_or_never(store.forget_request("d000", T0)).unwrap();
    assert_eq!(denied_index_sizes(&store), (99, 99));
    // After the window, a new poll replaces an unswept denial.
    let later = T0.plus(windows.deny_window);
    let (decision, _) = now_or_never(store.register(poll("d001", 2), later)).unwrap();
    assert_eq!(decision, Decision::Create);
    assert_eq!(denied_index_sizes(&store), (98, 98));
    // The sweep drops the rest, index and records alike.
    store.sweep(later);
    assert_eq!(denied_index_sizes(&store), (0, 0));
}

#[test]
fn rules_their_order_and_uses_survive_reopen_and_compaction() {
    use conformance::rule;
    let dir = tempfile::tempdir().unwrap();
    let w = Windows::default();
    let names = |s: &EmbeddedStore| -> Vec<(String, u64)> {
        now_or_never(s.list_rules())
            .unwrap()
            .1
            .into_iter()
            .map(|r| (r.rule.name, r.uses))
            .collect()
    };
    {
        let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
        for n in ["a", "b", "gone", "c"] {
            now_or_never(s.put_rule(rule(n, Some(5)), 10)).unwrap();
        }
        assert!(now_or_never(s.delete_rule("gone")).unwrap());
        let order = ["c", "a", "b"].map(String::from);
        now_or_never(s.set_rule_order(&order)).unwrap();
        now_or_never(s.claim_rule_use("a")).unwrap();
        now_or_never(s.claim_rule_use("a")).unwrap();
        // Dropped without any shutdown step, like a crash.
    }
    let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
    let want = vec![("c".into(), 0), ("a".into(), 2), ("b".into(), 0)];
    assert_eq!(names(&s), want);
    assert_eq!(
        now_or_never(s.list_rules()).unwrap().1[0].rule,
        rule("c", Some(5))
    );
    // The compacted journal replays to the same list, and counting goes on.
    drop(s);
    let s = EmbeddedStore::open(dir.path(), w, 100, T0).unwrap();
    assert_eq!(names(&s), want);
    assert_eq!(
        now_or_never(s.claim_rule_use("a")).unwrap(),
        crate::rule::RuleClaim::Claimed(3)
    );
}

#[test]
fn concurrent_claims_never_pass_max_uses() {
    let s = Arc::new(EmbeddedStore::in_memory(Windows::default(), 100));
    now_or_never(s.put_rule(conformance::rule("r", Some(7)), 10)).unwrap();
    let claimed: usize = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                (0..10)
                    .filter(|_| {
                        matches!(
                            now_or_never(s.claim_rule_use("r")).unwrap(),
                            crate::rule::RuleClaim::Claimed(_)
                        )
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(claimed, 7);
}

mod audited_grants;
mod outbox;
