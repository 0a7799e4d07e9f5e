//! The conformance suite every [`Store`] backend must pass.
//!
//! Each check builds a fresh store from a factory (so backends that share a
//! server can hand out isolated namespaces), drives it through the `Store`
//! trait only, and asserts what a device or an admin would observe. Backends
//! run it from their own tests: the embedded store in `embedded::tests`, the
//! Redis store (single server and cluster) in `store-redis/tests/`.

use std::future::Future;
use std::time::Duration;

pub mod outbox;

use crate::clock::UnixMillis;
use crate::decision::{Decision, LockState, Windows};
use crate::fingerprint::Fingerprint;
use crate::model::{
    Operation, Permission, PermissionContext, RequestState, Role, Transport, UserRecord,
};
use crate::rule::{
    DecidedBy, PutRuleResult, Rule, RuleAction, RuleClaim, RuleOrderResult, StoredRule,
};
use crate::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, ListState, Poll,
    SealOnCreate, Store, StoreError, MAX_PAGE,
};

/// The start of time in every check.
pub const T0: UnixMillis = UnixMillis(1_800_000_000_000);

/// Fixture: the fingerprint numbered `n`.
pub fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}

/// Fixture: a poll of `username` with fingerprint and sealed secret `n`.
pub fn poll(username: &str, n: u8) -> Poll<'_> {
    Poll {
        username,
        fingerprint: fp(n),
        transport: Transport::Http,
        source_addr: Some("127.0.0.1:40000".parse().unwrap()),
        client_id: None,
        roles: &[],
        permissions: &[],
        context: None,
        secret: SealOnCreate::Sealed(vec![n; 20]),
        preauthorized: false,
    }
}

/// Fixture: a user named `username` with a device-style credential.
pub fn user(username: &str) -> UserRecord {
    UserRecord {
        certificate: None,
        username: username.into(),
        password_hash: Some("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        roles: vec!["sensor".into()],
        permissions: vec![],
        created_at: T0,
        origin: crate::model::UserOrigin::Http,
        decided_by: None,
    }
}

async fn unlock<S: Store>(s: &S, until: UnixMillis) {
    s.set_lock_state(LockState {
        unlocked_until: Some(until),
    })
    .await
    .unwrap();
}

async fn decide<S: Store>(s: &S, username: &str, n: u8, now: UnixMillis) -> Decision {
    s.register(poll(username, n), now).await.unwrap().0
}

async fn grant<S: Store>(s: &S, username: &str, n: u8, now: UnixMillis) -> GrantResult {
    s.commit_grant(
        GrantCommit {
            certificate: None,
            username: username.into(),
            fingerprint: fp(n),
            user: user(username),
            granted_at: now,
        },
        now,
    )
    .await
    .unwrap()
}

/// Fixture: a role named `name` whose permissions are one read per
/// resource in `resources`, on MQTT.
pub fn role(name: &str, resources: &[&str]) -> Role {
    Role {
        name: name.into(),
        permissions: resources
            .iter()
            .map(|r| Permission {
                resource: (*r).into(),
                operation: Operation::Read,
                context: PermissionContext::Mqtt,
            })
            .collect(),
    }
}

/// A factory for a fresh, empty store with the given windows and cap.
///
/// A plain closure `Fn(Windows, usize) -> S` is a factory. A backend that
/// must connect first (Redis) wraps an async closure in [`AsyncFactory`].
pub trait Factory<S> {
    fn make(&self, windows: Windows, max_pending: usize) -> impl Future<Output = S>;
}

impl<S, F: Fn(Windows, usize) -> S> Factory<S> for F {
    async fn make(&self, windows: Windows, max_pending: usize) -> S {
        self(windows, max_pending)
    }
}

/// A factory whose stores are built by a future, e.g. after connecting to a
/// server: `AsyncFactory(|w, max| async move { connect(w, max).await })`.
pub struct AsyncFactory<F>(pub F);

impl<S, F, Fut> Factory<S> for AsyncFactory<F>
where
    F: Fn(Windows, usize) -> Fut,
    Fut: Future<Output = S>,
{
    async fn make(&self, windows: Windows, max_pending: usize) -> S {
        (self.0)(windows, max_pending).await
    }
}

/// Calls the macro `$m` with the name of every case of the suite, in the
/// order [`run_all`] runs them: `$m!(poll_lifecycle, lock_expires_by_itself,
/// ...)`. A backend that runs the cases one by one (one `#[test]` each, or
/// with exceptions) builds its list from this, so a case added here cannot
/// be missed there.
#[macro_export]
macro_rules! for_each_conformance_case {
    ($m:ident) => {
        $m!(
            poll_lifecycle,
            lock_expires_by_itself,
            grant_is_atomic_and_idempotent,
            grant_needs_the_request_that_was_seen,
            grants_commit_as_a_group,
            deny_then_forgotten,
            forget_frees_the_username,
            pending_expires_and_cap_holds,
            listing_is_keyset_paginated,
            denied_requests_are_listed_until_they_expire,
            users_put_list_delete,
            roles_put_get_list_delete,
            roles_are_global_and_apart_from_users,
            access_generation_follows_access_changes,
            user_access_updates_are_one_step,
            rules_put_order_delete_and_count_uses,
            preauthorized_polls_and_rule_decisions_are_recorded,
            audit_records_are_ordered_and_paged,
            audit_cap_evicts_the_oldest_and_retention_prunes,
            a_grant_and_its_audit_record_are_kept_once
        );
    };
}

macro_rules! suite {
    ($($case:ident),*) => {
        /// The name of every case, in order.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs every check.
        pub async fn run_all<S: Store>(f: &impl Factory<S>) {
            $($case(f).await;)*
        }
    };
}

for_each_conformance_case!(suite);

/// 423 → 202 → 202 → 409 → 423-while-pending, with the pending count.
pub async fn poll_lifecycle<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Locked);
    assert_eq!(
        s.get_request("dev01", T0).await.unwrap(),
        None,
        "locked stores nothing"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);

    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert_eq!(s.pending_count().await.unwrap(), 1);
    let t1 = T0.plus(Duration::from_secs(1));
    assert_eq!(decide(&s, "dev01", 1, t1).await, Decision::StillPending);
    let r = s.get_request("dev01", t1).await.unwrap().unwrap();
    assert_eq!(r.polls, 2);
    assert_eq!(r.first_seen, T0);
    assert_eq!(r.last_seen, t1);
    assert_eq!(r.state, RequestState::Pending);
    assert_eq!(r.sealed, vec![1; 20]);

    // A different credential for the same username changes nothing.
    assert_eq!(decide(&s, "dev01", 2, t1).await, Decision::Conflict);
    let after = s.get_request("dev01", t1).await.unwrap().unwrap();
    assert_eq!(after.fingerprint, fp(1));
    assert_eq!(after.polls, 2);

    s.set_lock_state(LockState::default()).await.unwrap();
    assert_eq!(
        decide(&s, "dev01", 1, t1).await,
        Decision::PendingWhileLocked
    );
    assert_eq!(decide(&s, "dev02", 1, t1).await, Decision::Locked);
    assert_eq!(s.pending_count().await.unwrap(), 1);
}

/// An unlock with a deadline locks again when the clock passes it.
pub async fn lock_expires_by_itself<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let until = T0.plus(Duration::from_secs(5));
    unlock(&s, until).await;
    assert!(s.lock_state().await.unwrap().is_unlocked(T0));
    assert!(!s.lock_state().await.unwrap().is_unlocked(until));
    assert_eq!(decide(&s, "dev01", 1, until).await, Decision::Locked);
}

/// Grant creates exactly one user; the device collects, even while locked;
/// a second grant is idempotent.
pub async fn grant_is_atomic_and_idempotent<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    let t1 = T0.plus(Duration::from_secs(2));
    let granted = match grant(&s, "dev01", 1, t1).await {
        GrantResult::Granted(r) => r,
        other => panic!("expected Granted, got {other:?}"),
    };
    assert_eq!(granted.state, RequestState::Granted { granted_at: t1 });
    assert!(
        granted.sealed.is_empty(),
        "the sealed secret is dropped at grant"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(s.get_user("dev01").await.unwrap(), Some(user("dev01")));
    match grant(&s, "dev01", 1, t1).await {
        GrantResult::AlreadyGranted(r) => assert_eq!(r, granted),
        other => panic!("expected AlreadyGranted, got {other:?}"),
    }

    s.set_lock_state(LockState::default()).await.unwrap();
    let (d, record) = s.register(poll("dev01", 1), t1).await.unwrap();
    assert_eq!(d, Decision::Collect);
    assert_eq!(
        record.unwrap().state,
        RequestState::Granted { granted_at: t1 }
    );
    assert_eq!(decide(&s, "dev01", 2, t1).await, Decision::Conflict);

    // After the collection window the user remains, and polls conflict.
    let late = t1.plus(Windows::default().collect_window);
    assert_eq!(decide(&s, "dev01", 1, late).await, Decision::Conflict);
    assert!(s.get_user("dev01").await.unwrap().is_some());
}

/// A grant names the request it saw; a replaced or unknown request fails.
pub async fn grant_needs_the_request_that_was_seen<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    assert_eq!(grant(&s, "ghost", 1, T0).await, GrantResult::NotFound);
    unlock(&s, T0.plus(Duration::from_secs(3600))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "dev01", 9, T0).await,
        GrantResult::Conflict(_)
    ));
    assert_eq!(s.get_user("dev01").await.unwrap(), None);
    // An existing user blocks a grant of the same name.
    s.put_user(user("taken")).await.unwrap();
    assert_eq!(decide(&s, "taken", 1, T0).await, Decision::Conflict);
    assert_eq!(s.get_request("taken", T0).await.unwrap(), None);
}

fn commit(username: &str, n: u8, now: UnixMillis) -> GrantCommit {
    GrantCommit {
        certificate: None,
        username: username.into(),
        fingerprint: fp(n),
        user: user(username),
        granted_at: now,
    }
}

/// `commit_grants` answers one result per grant, in order, each as
/// `commit_grant` would have answered it after the grants before it in the
/// same group: granted, already granted (also for a second grant of the
/// same request inside the group), not found, and every kind of conflict.
/// The granted ones are users and collectable afterwards, the pending count
/// drops by exactly as many, and a group of 300 commits whole.
pub async fn grants_commit_as_a_group<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 1000).await;
    assert_eq!(s.commit_grants(Vec::new(), T0).await.unwrap(), vec![]);
    unlock(&s, T0.plus(Duration::from_secs(3600))).await;
    for name in ["dev01", "dev02", "dev03", "dev04", "dev05"] {
        assert_eq!(decide(&s, name, 1, T0).await, Decision::Create);
    }
    assert_eq!(s.deny("dev04", None, T0).await.unwrap(), DenyResult::Denied);
    assert!(matches!(
        grant(&s, "dev05", 1, T0).await,
        GrantResult::Granted(_)
    ));
    s.put_user(user("taken")).await.unwrap();
    assert_eq!(s.pending_count().await.unwrap(), 3);

    let t1 = T0.plus(Duration::from_secs(1));
    let results = s
        .commit_grants(
            vec![
                commit("dev01", 1, t1),
                commit("dev02", 9, t1), // not the request that is pending
                commit("ghost", 1, t1),
                commit("dev01", 1, t1), // the same request again, same group
                commit("dev01", 2, t1), // another request of dev01, same group
                commit("taken", 1, t1),
                commit("dev04", 1, t1), // denied
                commit("dev05", 1, t1), // granted before
                commit("dev03", 1, t1),
            ],
            t1,
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 9);
    let granted = match &results[0] {
        GrantResult::Granted(r) => r.clone(),
        other => panic!("dev01: expected Granted, got {other:?}"),
    };
    assert_eq!(granted.state, RequestState::Granted { granted_at: t1 });
    assert!(
        matches!(results[1], GrantResult::Conflict(_)),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], GrantResult::NotFound);
    assert_eq!(results[3], GrantResult::AlreadyGranted(granted.clone()));
    assert!(
        matches!(results[4], GrantResult::Conflict(_)),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(results[5], GrantResult::Conflict(_)),
        "{:?}",
        results[5]
    );
    assert!(
        matches!(results[6], GrantResult::Conflict(_)),
        "{:?}",
        results[6]
    );
    assert!(
        matches!(results[7], GrantResult::AlreadyGranted(_)),
        "{:?}",
        results[7]
    );
    assert!(
        matches!(results[8], GrantResult::Granted(_)),
        "{:?}",
        results[8]
    );
    assert_eq!(
        s.pending_count().await.unwrap(),
        1,
        "dev02 is still pending"
    );
    assert_eq!(s.get_user("dev01").await.unwrap(), Some(user("dev01")));
    assert_eq!(s.get_user("dev02").await.unwrap(), None);
    assert_eq!(s.get_user("ghost").await.unwrap(), None);
    assert!(s.get_user("dev03").await.unwrap().is_some());
    let (d, record) = s.register(poll("dev01", 1), t1).await.unwrap();
    assert_eq!(d, Decision::Collect);
    assert_eq!(record, Some(granted));
    assert_eq!(decide(&s, "dev02", 1, t1).await, Decision::StillPending);

    // A larger group commits whole.
    let names: Vec<String> = (0..300).map(|i| format!("bulk{i:04}")).collect();
    for name in &names {
        assert_eq!(decide(&s, name, 3, t1).await, Decision::Create);
    }
    let t2 = t1.plus(Duration::from_secs(1));
    let results = s
        .commit_grants(names.iter().map(|n| commit(n, 3, t2)).collect(), t2)
        .await
        .unwrap();
    assert_eq!(results.len(), 300);
    for (name, result) in names.iter().zip(&results) {
        match result {
            GrantResult::Granted(r) => assert_eq!(&r.username, name),
            other => panic!("{name}: expected Granted, got {other:?}"),
        }
    }
    assert_eq!(s.pending_count().await.unwrap(), 1);
    let page = s
        .list_requests(
            &ListQuery {
                state: ListState::Granted,
                limit: 1000,
                cursor: None,
                prefix: Some("bulk".into()),
            },
            t2,
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 300);
    assert_eq!(decide(&s, "bulk0299", 3, t2).await, Decision::Collect);
}

/// Deny answers 403 for the window, then the username is free again.
pub async fn deny_then_forgotten<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let far = T0.plus(Duration::from_secs(24 * 3600));
    unlock(&s, far).await;
    assert_eq!(
        s.deny("dev01", None, T0).await.unwrap(),
        DenyResult::NotFound
    );
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert_eq!(s.deny("dev01", None, T0).await.unwrap(), DenyResult::Denied);
    assert_eq!(s.deny("dev01", None, T0).await.unwrap(), DenyResult::Denied);
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Denied);
    assert_eq!(decide(&s, "dev01", 2, T0).await, Decision::Conflict);
    assert!(matches!(
        grant(&s, "dev01", 1, T0).await,
        GrantResult::Conflict(_)
    ));
    let later = T0.plus(Windows::default().deny_window);
    assert_eq!(decide(&s, "dev01", 2, later).await, Decision::Create);

    assert_eq!(decide(&s, "dev02", 1, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "dev02", 1, T0).await,
        GrantResult::Granted(_)
    ));
    assert_eq!(
        s.deny("dev02", None, T0).await.unwrap(),
        DenyResult::AlreadyGranted
    );
}

/// Forgetting a request frees its username at once, whether it was pending
/// (its slot under the cap comes back) or denied (no deny window); a
/// granted request is not forgotten.
pub async fn forget_frees_the_username<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 1).await;
    let far = T0.plus(Duration::from_secs(24 * 3600));
    unlock(&s, far).await;
    assert_eq!(
        s.forget_request("dev01", T0).await.unwrap(),
        ForgetResult::NotFound
    );
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert_eq!(s.pending_count().await.unwrap(), 1);
    assert_eq!(
        s.forget_request("dev01", T0).await.unwrap(),
        ForgetResult::Forgotten
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(s.get_request("dev01", T0).await.unwrap(), None);
    // The cap is 1: the slot came back, so another device can register.
    assert_eq!(decide(&s, "dev02", 2, T0).await, Decision::Create);
    assert_eq!(s.deny("dev02", None, T0).await.unwrap(), DenyResult::Denied);
    assert_eq!(decide(&s, "dev02", 3, T0).await, Decision::Conflict);
    assert_eq!(
        s.forget_request("dev02", T0).await.unwrap(),
        ForgetResult::Forgotten
    );
    // Free at once, with other credentials even, not after the deny window.
    assert_eq!(decide(&s, "dev02", 3, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "dev02", 3, T0).await,
        GrantResult::Granted(_)
    ));
    assert_eq!(
        s.forget_request("dev02", T0).await.unwrap(),
        ForgetResult::Granted
    );
    assert_eq!(decide(&s, "dev02", 3, T0).await, Decision::Collect);
}

/// Pending requests that stop polling expire; the cap refuses new ones
/// while existing ones keep being served.
pub async fn pending_expires_and_cap_holds<S: Store>(f: &impl Factory<S>) {
    let windows = Windows {
        pending_ttl: Duration::from_secs(10),
        ..Windows::default()
    };
    let s = f.make(windows, 2).await;
    let far = T0.plus(Duration::from_secs(3600));
    unlock(&s, far).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert_eq!(decide(&s, "dev02", 1, T0).await, Decision::Create);
    match s.register(poll("dev03", 1), T0).await {
        Err(StoreError::PendingLimit { max: 2 }) => {}
        other => panic!("expected PendingLimit, got {other:?}"),
    }
    assert_eq!(s.get_request("dev03", T0).await.unwrap(), None);
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::StillPending);
    assert_eq!(s.pending_count().await.unwrap(), 2);

    // dev01 keeps polling; dev02 goes quiet and expires.
    let t9 = T0.plus(Duration::from_secs(9));
    assert_eq!(decide(&s, "dev01", 1, t9).await, Decision::StillPending);
    let t12 = T0.plus(Duration::from_secs(12));
    assert!(s.get_request("dev01", t12).await.unwrap().is_some());
    assert_eq!(s.get_request("dev02", t12).await.unwrap(), None);
    // Another device may take the expired username.
    assert_eq!(decide(&s, "dev02", 7, t12).await, Decision::Create);
    assert_eq!(
        s.get_request("dev02", t12)
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        fp(7)
    );
}

/// Pages come in username order; every item present throughout is seen
/// exactly once even when new requests arrive between pages.
pub async fn listing_is_keyset_paginated<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 10_000).await;
    unlock(&s, T0.plus(Duration::from_secs(3600))).await;
    let names: Vec<String> = (0..250).map(|i| format!("dev{:04}", i * 2)).collect();
    for n in &names {
        assert_eq!(decide(&s, n, 1, T0).await, Decision::Create);
    }
    assert_eq!(decide(&s, "other1", 1, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "other1", 1, T0).await,
        GrantResult::Granted(_)
    ));

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = s
            .list_requests(
                &ListQuery {
                    state: ListState::Pending,
                    limit: 100,
                    cursor: cursor.clone(),
                    prefix: Some("dev".into()),
                },
                T0,
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 100);
        seen.extend(page.items.iter().map(|r| r.username.clone()));
        pages += 1;
        // Concurrent inserts before and after the cursor.
        let before = format!("dev{:04}", pages * 2 - 1);
        let after = format!("dev{:04}", 1000 + pages);
        assert_eq!(decide(&s, &before, 1, T0).await, Decision::Create);
        assert_eq!(decide(&s, &after, 1, T0).await, Decision::Create);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are ordered and never repeat an item");
    for n in &names {
        assert!(seen.contains(n), "{n} was skipped");
    }
    assert!(!seen.contains(&"other1".to_string()));

    let granted = s
        .list_requests(
            &ListQuery {
                state: ListState::Granted,
                limit: 10,
                cursor: None,
                prefix: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(granted.items.len(), 1);
    assert_eq!(granted.items[0].username, "other1");
    assert_eq!(granted.next_cursor, None);
}

/// Denied requests have a listing of their own, with the cursor paging and
/// the prefix filter of the pending one, capped at [`MAX_PAGE`] per page. A
/// denied request leaves it when it is forgotten and when its deny window
/// closes (before any sweep); a request denied again after the window is
/// listed once, with its new `denied_at`.
pub async fn denied_requests_are_listed_until_they_expire<S: Store>(f: &impl Factory<S>) {
    let windows = Windows::default();
    let s = f.make(windows, 10_000).await;
    let far = T0.plus(Duration::from_secs(24 * 3600));
    unlock(&s, far).await;
    let denied: Vec<String> = (0..=MAX_PAGE).map(|i| format!("den{i:04}")).collect();
    for n in &denied {
        assert_eq!(decide(&s, n, 1, T0).await, Decision::Create);
        assert_eq!(s.deny(n, None, T0).await.unwrap(), DenyResult::Denied);
    }
    // Same prefix, other states: never in the denied listing.
    assert_eq!(decide(&s, "den-pending", 1, T0).await, Decision::Create);
    assert_eq!(decide(&s, "den-granted", 1, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "den-granted", 1, T0).await,
        GrantResult::Granted(_)
    ));
    let query = |cursor: Option<String>, prefix: &str, limit: usize| ListQuery {
        state: ListState::Denied,
        limit,
        cursor,
        prefix: Some(prefix.into()).filter(|p: &String| !p.is_empty()),
    };

    // One more than the cap: a full page, then the last one.
    let first = s.list_requests(&query(None, "", 5000), T0).await.unwrap();
    assert_eq!(first.items.len(), MAX_PAGE, "a page is capped at MAX_PAGE");
    let names: Vec<&str> = first.items.iter().map(|r| r.username.as_str()).collect();
    assert_eq!(
        names,
        denied[..MAX_PAGE]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(first
        .items
        .iter()
        .all(|r| r.state == RequestState::Denied { denied_at: T0 }));
    let cursor = first.next_cursor.clone();
    assert_eq!(cursor.as_deref(), Some(denied[MAX_PAGE - 1].as_str()));
    let last = s.list_requests(&query(cursor, "", 5000), T0).await.unwrap();
    assert_eq!(last.items.len(), 1);
    assert_eq!(last.items[0].username, denied[MAX_PAGE]);
    assert_eq!(last.next_cursor, None);

    // The prefix filter, with small pages.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list_requests(&query(cursor, "den000", 3), T0)
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|r| r.username));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, denied[..10].to_vec());
    // Denied requests are not pending ones.
    let pending = s
        .list_requests(
            &ListQuery {
                state: ListState::Pending,
                limit: MAX_PAGE,
                cursor: None,
                prefix: Some("den".into()),
            },
            T0,
        )
        .await
        .unwrap();
    let pending: Vec<&str> = pending.items.iter().map(|r| r.username.as_str()).collect();
    assert_eq!(pending, ["den-pending"]);

    // Forgotten: gone from the listing at once.
    assert_eq!(
        s.forget_request("den0000", T0).await.unwrap(),
        ForgetResult::Forgotten
    );
    let page = s
        .list_requests(&query(None, "den000", 3), T0)
        .await
        .unwrap();
    let names: Vec<&str> = page.items.iter().map(|r| r.username.as_str()).collect();
    assert_eq!(names, ["den0001", "den0002", "den0003"]);

    // The window closes: nothing is listed, swept or not.
    let later = T0.plus(windows.deny_window);
    let before = T0.plus(windows.deny_window - Duration::from_millis(1));
    let page = s
        .list_requests(&query(None, "den000", 3), before)
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        3,
        "still denied 1 ms before the window closes"
    );
    let page = s
        .list_requests(&query(None, "", MAX_PAGE), later)
        .await
        .unwrap();
    assert_eq!(page.items, vec![], "expired denials are not listed");
    assert_eq!(page.next_cursor, None);

    // The username is free again; a second denial is listed once, anew.
    assert_eq!(decide(&s, "den0001", 2, later).await, Decision::Create);
    let page = s.list_requests(&query(None, "", 10), later).await.unwrap();
    assert_eq!(
        page.items,
        vec![],
        "a re-registered request is pending, not denied"
    );
    let again = later.plus(Duration::from_secs(1));
    assert_eq!(
        s.deny("den0001", None, again).await.unwrap(),
        DenyResult::Denied
    );
    let page = s.list_requests(&query(None, "", 10), again).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].username, "den0001");
    assert_eq!(page.items[0].fingerprint, fp(2));
    assert_eq!(
        page.items[0].state,
        RequestState::Denied { denied_at: again }
    );
}

/// Users can be created, listed in pages, and deleted with their grant.
pub async fn users_put_list_delete<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    for i in 0..5 {
        s.put_user(user(&format!("user{i}"))).await.unwrap();
    }
    let q = |cursor| ListQuery {
        state: ListState::Pending,
        limit: 3,
        cursor,
        prefix: None,
    };
    let p1 = s.list_users(&q(None)).await.unwrap();
    assert_eq!(
        p1.items
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["user0", "user1", "user2"]
    );
    let p2 = s.list_users(&q(p1.next_cursor)).await.unwrap();
    assert_eq!(p2.items.len(), 2);
    assert_eq!(p2.next_cursor, None);

    unlock(&s, T0.plus(Duration::from_secs(3600))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    assert!(matches!(
        grant(&s, "dev01", 1, T0).await,
        GrantResult::Granted(_)
    ));
    assert!(s.delete_user("dev01").await.unwrap());
    assert!(!s.delete_user("dev01").await.unwrap());
    assert_eq!(s.get_user("dev01").await.unwrap(), None);
    assert_eq!(s.get_request("dev01", T0).await.unwrap(), None);
    // The username is free again.
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
}

/// Roles are created, read, listed in name order, replaced and deleted.
pub async fn roles_put_get_list_delete<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    assert_eq!(
        s.list_roles().await.unwrap(),
        vec![],
        "a fresh store has no roles"
    );
    assert_eq!(s.get_role("sensors").await.unwrap(), None);
    assert!(!s.delete_role("sensors").await.unwrap());

    // Put out of order; the listing is sorted by name (byte order).
    for r in [
        role("sensors", &["plant/+/temp"]),
        role("Ops", &["#"]),
        role("actuators.v2", &["plant/+/cmd", "plant/+/ack"]),
        role("site:4-line_2", &[]),
    ] {
        s.put_role(r).await.unwrap();
    }
    let names = |roles: Vec<Role>| roles.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_roles().await.unwrap()),
        ["Ops", "actuators.v2", "sensors", "site:4-line_2"]
    );
    assert_eq!(
        s.get_role("actuators.v2").await.unwrap(),
        Some(role("actuators.v2", &["plant/+/cmd", "plant/+/ack"])),
        "permissions come back in the order they were put"
    );
    assert_eq!(
        s.get_role("site:4-line_2").await.unwrap(),
        Some(role("site:4-line_2", &[])),
        "a role may have no permissions"
    );
    assert_eq!(
        s.get_role("ops").await.unwrap(),
        None,
        "names are case-sensitive"
    );

    // Put replaces the whole role.
    let mut replaced = role("sensors", &["plant/+/humidity"]);
    replaced.permissions[0].operation = Operation::ReadWrite;
    replaced.permissions[0].context = PermissionContext::Http;
    s.put_role(replaced.clone()).await.unwrap();
    assert_eq!(s.get_role("sensors").await.unwrap(), Some(replaced.clone()));
    assert_eq!(s.list_roles().await.unwrap().len(), 4);

    assert!(s.delete_role("Ops").await.unwrap());
    assert!(!s.delete_role("Ops").await.unwrap());
    assert_eq!(s.get_role("Ops").await.unwrap(), None);
    assert_eq!(
        names(s.list_roles().await.unwrap()),
        ["actuators.v2", "sensors", "site:4-line_2"]
    );
    // A deleted name can be defined again.
    s.put_role(role("Ops", &["ops/#"])).await.unwrap();
    assert_eq!(
        s.get_role("Ops").await.unwrap(),
        Some(role("Ops", &["ops/#"]))
    );
    assert_eq!(s.get_role("sensors").await.unwrap(), Some(replaced));
}

/// Roles are one namespace for the whole store, apart from users: a user
/// and a role may share a name, deleting one leaves the other, and a user
/// keeps naming a role that was deleted.
pub async fn roles_are_global_and_apart_from_users<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    s.put_role(role("sensor", &["plant/#"])).await.unwrap();
    // `user()` holds the role `sensor`; this one is also named `sensor`.
    s.put_user(user("sensor")).await.unwrap();
    s.put_user(user("dev01")).await.unwrap();
    assert!(s.delete_user("sensor").await.unwrap());
    assert_eq!(
        s.get_role("sensor").await.unwrap(),
        Some(role("sensor", &["plant/#"]))
    );
    assert!(s.delete_role("sensor").await.unwrap());
    let dev = s.get_user("dev01").await.unwrap().unwrap();
    assert_eq!(
        dev.roles,
        ["sensor"],
        "a user keeps the name of a deleted role"
    );
    assert_eq!(s.list_roles().await.unwrap(), vec![]);
    // Role changes leave requests and users alone.
    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev02", 1, T0).await, Decision::Create);
    s.put_role(role("sensor", &[])).await.unwrap();
    assert_eq!(decide(&s, "dev02", 1, T0).await, Decision::StillPending);
    assert_eq!(s.pending_count().await.unwrap(), 1);
}

/// Where a store can tell (`access_generation` is `Some`), the number moves
/// after every change to a user or to any role, so a live session that
/// compares it never misses a change, and stays put while nothing changes,
/// so the session need not re-read anything. (`None` is always allowed: the
/// caller then re-reads.)
pub async fn access_generation_follows_access_changes<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let moved = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(a), Some(b)) => a != b,
        _ => true,
    };
    let steady = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let g = s.access_generation("dev01");
    assert!(steady(g, s.access_generation("dev01")), "nothing changed");
    s.put_user(user("dev01")).await.unwrap();
    let after_put = s.access_generation("dev01");
    assert!(moved(g, after_put), "put_user moves it");
    s.put_role(role("sensor", &["plant/#"])).await.unwrap();
    let after_role = s.access_generation("dev01");
    assert!(moved(after_put, after_role), "put_role moves it");
    assert!(
        steady(after_role, s.access_generation("dev01")),
        "nothing changed"
    );
    assert!(s.delete_role("sensor").await.unwrap());
    let after_role_delete = s.access_generation("dev01");
    assert!(moved(after_role, after_role_delete), "delete_role moves it");
    assert!(s.delete_user("dev01").await.unwrap());
    let after_delete = s.access_generation("dev01");
    assert!(
        moved(after_role_delete, after_delete),
        "delete_user moves it"
    );
    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    let pending = s.access_generation("dev01");
    assert!(matches!(
        grant(&s, "dev01", 1, T0).await,
        GrantResult::Granted(_)
    ));
    assert!(
        moved(pending, s.access_generation("dev01")),
        "a grant (a user re-created) moves it"
    );
}

/// `update_user_access` changes exactly what it names, of a user that
/// exists, and never creates one: an update of a deleted (or never
/// created) user is `None` and leaves no user behind.
pub async fn user_access_updates_are_one_step<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let perms = vec![Permission {
        resource: "devices/{username}/#".into(),
        operation: Operation::ReadWrite,
        context: PermissionContext::Mqtt,
    }];
    let only_perms = AccessChange {
        roles: None,
        permissions: Some(perms.clone()),
    };
    assert_eq!(
        s.update_user_access("ghost", &only_perms).await.unwrap(),
        None
    );
    assert_eq!(s.get_user("ghost").await.unwrap(), None, "not created");

    s.put_user(user("dev01")).await.unwrap();
    let before = s.access_generation("dev01");
    let u = s
        .update_user_access("dev01", &only_perms)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.roles.as_slice(), &u.permissions),
        (&["sensor".to_owned()][..], &perms)
    );
    if let (Some(a), Some(b)) = (before, s.access_generation("dev01")) {
        assert_ne!(a, b, "an access update moves the access generation");
    }
    let only_roles = AccessChange {
        roles: Some(vec![]),
        permissions: None,
    };
    let u = s
        .update_user_access("dev01", &only_roles)
        .await
        .unwrap()
        .unwrap();
    assert!(u.roles.is_empty());
    assert_eq!(u.permissions, perms, "the other field is kept");
    assert_eq!(s.get_user("dev01").await.unwrap(), Some(u.clone()));
    assert_eq!(u.created_at, user("dev01").created_at, "the same user");
    let all = ListQuery {
        state: ListState::Pending,
        limit: 10,
        cursor: None,
        prefix: None,
    };
    let listed = s.list_users(&all).await.unwrap();
    assert_eq!(listed.items, vec![u]);

    assert!(s.delete_user("dev01").await.unwrap());
    assert_eq!(
        s.update_user_access("dev01", &only_roles).await.unwrap(),
        None
    );
    assert_eq!(s.get_user("dev01").await.unwrap(), None, "stays deleted");
}

pub fn rule(name: &str, max_uses: Option<u64>) -> Rule {
    Rule {
        name: name.into(),
        username_pattern: Some("dev[0-9]+".into()),
        source_cidrs: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        transport: Some(Transport::Http),
        require_csr: false,
        action: RuleAction::Grant,
        roles: vec!["sensor".into()],
        permissions: vec![],
        max_uses,
        expires_at: Some(T0.plus(Duration::from_secs(3600))),
        while_locked: true,
    }
}

fn rule_names(rules: &[StoredRule]) -> Vec<&str> {
    rules.iter().map(|r| r.rule.name.as_str()).collect()
}

/// Rules: created last, replaced in place with their uses kept, capped in
/// the same step, reordered only by a full list, deleted with their
/// counter; the version moves with every change of the list; a claim
/// counts exactly up to `maxUses`.
pub async fn rules_put_order_delete_and_count_uses<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let (v0, none) = s.list_rules().await.unwrap();
    assert!(none.is_empty(), "a fresh store has no rules");
    for name in ["a", "b", "c"] {
        assert_eq!(
            s.put_rule(rule(name, Some(2)), 3).await.unwrap(),
            PutRuleResult::Created
        );
    }
    assert_eq!(
        s.put_rule(rule("d", None), 3).await.unwrap(),
        PutRuleResult::Full,
        "the cap is checked in the put"
    );
    let (v1, rules) = s.list_rules().await.unwrap();
    assert_ne!(v0, v1);
    assert_eq!(s.rules_version().await.unwrap(), v1);
    assert_eq!(rule_names(&rules), ["a", "b", "c"]);
    assert_eq!(
        rules[0].rule,
        rule("a", Some(2)),
        "the rule round-trips whole"
    );

    assert_eq!(s.claim_rule_use("b").await.unwrap(), RuleClaim::Claimed(1));
    assert_eq!(s.claim_rule_use("b").await.unwrap(), RuleClaim::Claimed(2));
    assert_eq!(s.claim_rule_use("b").await.unwrap(), RuleClaim::Exhausted);
    assert_eq!(s.claim_rule_use("nope").await.unwrap(), RuleClaim::Gone);
    assert_eq!(
        s.rules_version().await.unwrap(),
        v1,
        "uses do not move the version"
    );
    // Replacing keeps the position and the count; a higher maxUses gives
    // exactly the difference.
    assert_eq!(
        s.put_rule(rule("b", Some(3)), 3).await.unwrap(),
        PutRuleResult::Replaced
    );
    let (_, rules) = s.list_rules().await.unwrap();
    assert_eq!(rule_names(&rules), ["a", "b", "c"]);
    assert_eq!(rules[1].uses, 2);
    assert_eq!(s.claim_rule_use("b").await.unwrap(), RuleClaim::Claimed(3));
    assert_eq!(s.claim_rule_use("b").await.unwrap(), RuleClaim::Exhausted);
    // Unlimited rules count without a cap.
    s.put_rule(rule("a", None), 3).await.unwrap();
    for n in 1..=3 {
        assert_eq!(s.claim_rule_use("a").await.unwrap(), RuleClaim::Claimed(n));
    }

    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for bad in [
        &["a", "b"][..],
        &["a", "b", "b"],
        &["a", "b", "x"],
        &["a", "b", "c", "d"],
    ] {
        assert_eq!(
            s.set_rule_order(&names(bad)).await.unwrap(),
            RuleOrderResult::Mismatch,
            "{bad:?}"
        );
    }
    assert_eq!(
        s.set_rule_order(&names(&["c", "a", "b"])).await.unwrap(),
        RuleOrderResult::Applied
    );
    let (v2, rules) = s.list_rules().await.unwrap();
    assert_ne!(v2, v1);
    assert_eq!(rule_names(&rules), ["c", "a", "b"]);
    assert_eq!(rules[2].uses, 3, "the order keeps the counts");

    assert!(s.delete_rule("a").await.unwrap());
    assert!(!s.delete_rule("a").await.unwrap());
    let (v3, rules) = s.list_rules().await.unwrap();
    assert_ne!(v3, v2);
    assert_eq!(rule_names(&rules), ["c", "b"]);
    // A re-created rule starts from zero and goes last.
    s.put_rule(rule("a", Some(1)), 3).await.unwrap();
    assert_eq!(s.claim_rule_use("a").await.unwrap(), RuleClaim::Claimed(1));
    assert_eq!(
        rule_names(&s.list_rules().await.unwrap().1),
        ["c", "b", "a"]
    );
    // Rules are apart from roles and users.
    assert!(s.list_roles().await.unwrap().is_empty());
}

/// A preauthorized poll creates while locked (and only that changes); a
/// rule's deny and grant keep its name on the request and the user.
pub async fn preauthorized_polls_and_rule_decisions_are_recorded<S: Store>(f: &impl Factory<S>) {
    let s = f.make(Windows::default(), 100).await;
    let mut p = poll("dev01", 1);
    p.preauthorized = true;
    assert_eq!(s.register(p, T0).await.unwrap().0, Decision::Create);
    assert_eq!(s.pending_count().await.unwrap(), 1);
    assert_eq!(
        decide(&s, "dev01", 1, T0).await,
        Decision::PendingWhileLocked,
        "a later plain poll sees the pending request, still locked"
    );
    assert_eq!(decide(&s, "dev02", 1, T0).await, Decision::Locked);

    let by = DecidedBy::Rule("lan".into());
    let mut commit = GrantCommit {
        certificate: None,
        username: "dev01".into(),
        fingerprint: fp(1),
        user: user("dev01"),
        granted_at: T0,
    };
    commit.user.decided_by = Some(by.clone());
    let GrantResult::Granted(granted) = s.commit_grant(commit, T0).await.unwrap() else {
        panic!("the preauthorized request is grantable while locked");
    };
    assert_eq!(granted.decided_by, Some(by.clone()));
    let stored = s.get_request("dev01", T0).await.unwrap().unwrap();
    assert_eq!(stored.decided_by, Some(by.clone()));
    assert_eq!(stored.view().decided_by, Some(by.clone()));
    let u = s.get_user("dev01").await.unwrap().unwrap();
    assert_eq!(u.decided_by, Some(by.clone()));
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Collect
    );

    let mut p = poll("dev03", 3);
    p.preauthorized = true;
    assert_eq!(s.register(p, T0).await.unwrap().0, Decision::Create);
    let deny_by = DecidedBy::Rule("blocklist".into());
    assert_eq!(
        s.deny("dev03", Some(deny_by.clone()), T0).await.unwrap(),
        DenyResult::Denied
    );
    let denied = s.get_request("dev03", T0).await.unwrap().unwrap();
    assert!(matches!(denied.state, RequestState::Denied { .. }));
    assert_eq!(denied.decided_by, Some(deny_by));
    assert_eq!(decide(&s, "dev03", 3, T0).await, Decision::Denied);
    // An admin's decisions name no rule.
    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev04", 4, T0).await, Decision::Create);
    s.deny("dev04", None, T0).await.unwrap();
    assert_eq!(
        s.get_request("dev04", T0)
            .await
            .unwrap()
            .unwrap()
            .decided_by,
        None
    );
}

fn audit_entry(at: u64, actor: &str, target: Option<&str>) -> crate::audit::AuditEntry {
    let mut e = crate::audit::AuditEntry::new(
        UnixMillis(T0.0 + at),
        actor,
        Some("192.0.2.7".parse().unwrap()),
        crate::audit::AuditAction::Grant,
    )
    .pairing_id(Some("ABC-DEF".into()));
    if let Some(t) = target {
        e = e.target(t);
    }
    e
}

fn audit_query(order: crate::audit::AuditOrder, limit: usize) -> crate::audit::AuditQuery {
    crate::audit::AuditQuery {
        since: None,
        actor: None,
        target: None,
        limit,
        cursor: None,
        order,
    }
}

async fn audit_walk<S: Store>(s: &S, mut q: crate::audit::AuditQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = s.list_audit(&q).await.unwrap();
        pages.push(page.items.iter().map(|r| r.entry.actor.clone()).collect());
        match page.next_cursor {
            Some(c) => q.cursor = Some(c.parse().expect("the cursor is an id")),
            None => return pages,
        }
        assert!(pages.len() < 100, "the walk ends");
    }
}

/// `commit_grant_recorded` stores the audit entry only with a grant that
/// creates the user, or leaves it to the caller (`None`): done as the
/// registry does it (recording a `None` itself), every decision has
/// exactly one record, in the order the decisions were made.
pub async fn a_grant_and_its_audit_record_are_kept_once<S: Store>(f: &impl Factory<S>) {
    use crate::audit::AuditOrder;
    let s = f.make(Windows::default(), 100).await;
    unlock(&s, T0.plus(Duration::from_secs(60))).await;
    assert_eq!(decide(&s, "dev01", 1, T0).await, Decision::Create);
    // As `Registry::grant_audited` and the admin service do it.
    let grant_recorded = |name: &'static str, actor: &'static str| {
        let s = &s;
        async move {
            let entry = audit_entry(10, actor, Some(name));
            let (result, stored) = s
                .commit_grant_recorded(commit(name, 1, T0), entry.clone(), 1000, T0)
                .await
                .unwrap();
            if let Some(record) = &stored {
                assert!(
                    matches!(result, GrantResult::Granted(_)),
                    "stored only with a grant that was written: {result:?}"
                );
                assert_eq!(record.entry, entry);
            } else {
                s.append_audit(vec![entry], 1000).await.unwrap();
            }
            (result, stored.is_some())
        }
    };
    let (first, _) = grant_recorded("dev01", "a0").await;
    assert!(matches!(first, GrantResult::Granted(_)), "{first:?}");
    let (again, stored) = grant_recorded("dev01", "a1").await;
    assert!(matches!(again, GrantResult::AlreadyGranted(_)), "{again:?}");
    assert!(!stored, "nothing is written for a grant already made");
    let (ghost, stored) = grant_recorded("ghost", "a2").await;
    assert_eq!(ghost, GrantResult::NotFound);
    assert!(!stored);
    s.append_audit(vec![audit_entry(20, "a3", None)], 1000)
        .await
        .unwrap();
    assert_eq!(
        audit_walk(&s, audit_query(AuditOrder::Oldest, 10)).await,
        [vec!["a0", "a1", "a2", "a3"]]
    );
    assert!(s.get_user("dev01").await.unwrap().is_some());
}

/// Audit records keep their order (also when the clock goes back), their
/// fields, and page both ways with exact filters.
pub async fn audit_records_are_ordered_and_paged<S: Store>(f: &impl Factory<S>) {
    use crate::audit::{AuditOrder, AUDIT_PAGE_MAX};
    let s = f.make(Windows::default(), 100).await;
    assert!(s
        .list_audit(&audit_query(AuditOrder::Newest, 10))
        .await
        .unwrap()
        .items
        .is_empty());
    let first = s
        .append_audit(
            vec![
                audit_entry(10, "a0", Some("dev-1")),
                audit_entry(10, "a1", Some("dev-2")),
                audit_entry(20, "a2", Some("dev-1")),
            ],
            1000,
        )
        .await
        .unwrap();
    // The clock went back: the ids still grow, the entries keep their time.
    let second = s
        .append_audit(
            vec![
                audit_entry(5, "a3", None),
                audit_entry(30, "a4", Some("dev-1")),
            ],
            1000,
        )
        .await
        .unwrap();
    let ids: Vec<_> = first.iter().chain(&second).map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(second[0].entry.at, UnixMillis(T0.0 + 5));
    assert!(second[0].id.ms >= T0.0 + 20);
    s.append_audit(
        vec![
            audit_entry(40, "a5", None),
            audit_entry(50, "a6", Some("dev-2")),
        ],
        1000,
    )
    .await
    .unwrap();

    let newest = audit_walk(&s, audit_query(AuditOrder::Newest, 3)).await;
    assert_eq!(
        newest,
        [vec!["a6", "a5", "a4"], vec!["a3", "a2", "a1"], vec!["a0"]]
    );
    let oldest = audit_walk(&s, audit_query(AuditOrder::Oldest, 4)).await;
    assert_eq!(
        oldest,
        [vec!["a0", "a1", "a2", "a3"], vec!["a4", "a5", "a6"]]
    );

    // Every field comes back as written.
    let page = s
        .list_audit(&audit_query(AuditOrder::Oldest, 1))
        .await
        .unwrap();
    assert_eq!(page.items[0].entry, audit_entry(10, "a0", Some("dev-1")));
    assert_eq!(page.items[0].id, ids[0]);

    let mut by_target = audit_query(AuditOrder::Newest, 10);
    by_target.target = Some("dev-1".into());
    assert_eq!(audit_walk(&s, by_target).await, [vec!["a4", "a2", "a0"]]);
    let mut by_actor = audit_query(AuditOrder::Oldest, 10);
    by_actor.actor = Some("a5".into());
    assert_eq!(audit_walk(&s, by_actor).await, [vec!["a5"]]);
    let mut since = audit_query(AuditOrder::Oldest, 10);
    since.since = Some(UnixMillis(T0.0 + 40));
    assert_eq!(audit_walk(&s, since.clone()).await, [vec!["a5", "a6"]]);
    since.order = AuditOrder::Newest;
    assert_eq!(audit_walk(&s, since).await, [vec!["a6", "a5"]]);

    // A follower passes the last id it has and gets only what came after.
    let mut follow = audit_query(AuditOrder::Oldest, 10);
    follow.cursor = Some(ids[4]);
    assert_eq!(audit_walk(&s, follow.clone()).await, [vec!["a5", "a6"]]);
    s.append_audit(vec![audit_entry(60, "a7", None)], 1000)
        .await
        .unwrap();
    assert_eq!(audit_walk(&s, follow).await, [vec!["a5", "a6", "a7"]]);

    // The page cap holds whatever the caller asks.
    let many: Vec<_> = (0..AUDIT_PAGE_MAX + 5)
        .map(|i| audit_entry(100 + i as u64, "bulk", Some("x")))
        .collect();
    s.append_audit(many, 10_000).await.unwrap();
    let page = s
        .list_audit(&audit_query(AuditOrder::Newest, AUDIT_PAGE_MAX * 10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), AUDIT_PAGE_MAX);
    assert!(page.next_cursor.is_some());
}

/// The count cap evicts the oldest records in the write that passes it,
/// and the retention cut drops records by the time of their id.
pub async fn audit_cap_evicts_the_oldest_and_retention_prunes<S: Store>(f: &impl Factory<S>) {
    use crate::audit::AuditOrder;
    let s = f.make(Windows::default(), 100).await;
    let max = 5;
    for i in 0..12u64 {
        s.append_audit(vec![audit_entry(i * 10, &format!("f{i}"), None)], max)
            .await
            .unwrap();
    }
    let kept = audit_walk(&s, audit_query(AuditOrder::Oldest, 100)).await;
    assert_eq!(
        kept,
        [vec!["f7", "f8", "f9", "f10", "f11"]],
        "exactly the cap, newest kept"
    );
    // A batch larger than the cap keeps its own newest.
    let batch: Vec<_> = (0..8u64)
        .map(|i| audit_entry(200 + i, &format!("b{i}"), None))
        .collect();
    s.append_audit(batch, max).await.unwrap();
    let kept = audit_walk(&s, audit_query(AuditOrder::Oldest, 100)).await;
    assert_eq!(kept, [vec!["b3", "b4", "b5", "b6", "b7"]]);

    assert_eq!(s.prune_audit(UnixMillis(T0.0 + 205)).await.unwrap(), 2);
    let kept = audit_walk(&s, audit_query(AuditOrder::Newest, 100)).await;
    assert_eq!(kept, [vec!["b7", "b6", "b5"]]);
    assert_eq!(s.prune_audit(UnixMillis(T0.0 + 205)).await.unwrap(), 0);
    assert_eq!(s.prune_audit(UnixMillis(T0.0 + 10_000)).await.unwrap(), 3);
    assert!(s
        .list_audit(&audit_query(AuditOrder::Newest, 10))
        .await
        .unwrap()
        .items
        .is_empty());
}
