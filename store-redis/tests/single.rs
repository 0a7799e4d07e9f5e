//! The Redis store against one real `redis-server`: the shared conformance
//! suite, then what only a networked, shared store can get wrong: races
//! between instances, the cap under concurrency, outages and recovery,
//! events, the shared secret, lost script caches and `WAIT`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::conformance::{self, fp, poll, role, user, AsyncFactory, T0};
use fleetgate_registry::decision::{Decision, LockState, Windows};
use fleetgate_registry::model::RequestState;
use fleetgate_registry::store::{
    GrantCommit, GrantResult, ListQuery, ListState, Store, StoreError,
};
use fleetgate_store_redis::store::GROUP_MAX;
use fleetgate_store_redis::{RedisConfig, RedisStore, StoreEvent, WaitReplicas};
use support::RedisServer;

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let server = RedisServer::start();
            let url = server.url();
            conformance::$check(&AsyncFactory(|w, max| support::conformance_store(url.clone(), w, max)))
                .await;
        }
    )*};
}

// The whole suite, one test per check (each on its own server).
fleetgate_registry::for_each_conformance_case!(conformance_tests);

#[tokio::test]
async fn the_whole_suite_shares_one_server_under_prefixes() {
    // run_all on one server proves prefixes isolate stores.
    let server = RedisServer::start();
    let url = server.url();
    conformance::run_all(&AsyncFactory(|w, max| {
        support::conformance_store(url.clone(), w, max)
    }))
    .await;
}

#[tokio::test]
async fn outbox_records_every_decision_in_its_script() {
    let server = RedisServer::start();
    let url = server.url();
    conformance::outbox::outbox_holds_every_decision_until_acknowledged(
        &AsyncFactory(|w, max| support::conformance_store(url.clone(), w, max)),
        conformance::outbox::Order::PerUsername,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_is_shared_by_instances() {
    let server = RedisServer::start();
    support::outbox_is_shared_by_instances(&server.url()).await;
}

fn grant_of(username: &str, n: u8, now: UnixMillis) -> GrantCommit {
    GrantCommit {
        certificate: None,
        username: username.into(),
        fingerprint: fp(n),
        user: user(username),
        granted_at: now,
    }
}

async fn unlock(s: &RedisStore) {
    s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    })
    .await
    .unwrap();
}

/// Two admin instances (two stores, two connections, one namespace) grant
/// the same request many times at once: exactly one grant creates the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_from_two_instances_create_exactly_one_user() {
    let server = RedisServer::start();
    let config = support::config(&server.url(), "grants");
    let a = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    let b = Arc::new(RedisStore::connect_with(config).await.unwrap());
    unlock(&a).await;
    for round in 0..20 {
        let name = format!("dev{round:02}");
        assert_eq!(
            a.register(poll(&name, 1), T0).await.unwrap().0,
            Decision::Create
        );
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let name = name.clone();
                tokio::spawn(async move { s.commit_grant(grant_of(&name, 1, T0), T0).await })
            })
            .collect();
        let mut granted = 0;
        let mut already = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                GrantResult::Granted(_) => granted += 1,
                GrantResult::AlreadyGranted(_) => already += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((granted, already), (1, 7), "round {round}");
        assert_eq!(b.get_user(&name).await.unwrap(), Some(user(&name)));
    }
    assert_eq!(a.pending_count().await.unwrap(), 0);
}

/// Two admin instances change one user at once: one its roles, one its
/// permissions, while a third deletes other users under updates. Both
/// changes survive (compare-and-set, not read-then-overwrite), and a user
/// deleted during an update is never re-created by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_access_updates_lose_nothing_and_never_resurrect() {
    use fleetgate_registry::model::{Operation, Permission, PermissionContext};
    use fleetgate_registry::store::AccessChange;
    let server = RedisServer::start();
    let config = support::config(&server.url(), "cas");
    let a = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    let b = Arc::new(RedisStore::connect_with(config).await.unwrap());
    for round in 0..20 {
        let name = format!("dev{round:02}");
        a.put_user(user(&name)).await.unwrap();
        let perms = vec![Permission {
            resource: format!("r/{round}"),
            operation: Operation::Write,
            context: PermissionContext::Mqtt,
        }];
        let roles = AccessChange {
            roles: Some(vec![format!("role{round}")]),
            permissions: None,
        };
        let permissions = AccessChange {
            roles: None,
            permissions: Some(perms.clone()),
        };
        let (x, y) = tokio::join!(
            a.update_user_access(&name, &roles),
            b.update_user_access(&name, &permissions)
        );
        assert!(x.unwrap().is_some() && y.unwrap().is_some());
        let u = a.get_user(&name).await.unwrap().unwrap();
        assert_eq!(u.roles, [format!("role{round}")], "round {round}");
        assert_eq!(u.permissions, perms, "round {round}");

        let (updated, deleted) =
            tokio::join!(a.update_user_access(&name, &roles), b.delete_user(&name));
        assert!(deleted.unwrap(), "round {round}");
        let _ = updated.unwrap();
        assert_eq!(
            b.get_user(&name).await.unwrap(),
            None,
            "round {round}: re-created"
        );
    }
}

/// A device keeps polling while the admin grants: every answer is pending
/// or collect, never a lost grant, and once granted always collect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_racing_polls_is_never_lost() {
    let server = RedisServer::start();
    let s = Arc::new(support::store(&server.url(), "race", Windows::default(), 100).await);
    unlock(&s).await;
    for round in 0..10 {
        let name = format!("dev{round:02}");
        assert_eq!(
            s.register(poll(&name, 1), T0).await.unwrap().0,
            Decision::Create
        );
        let poller = {
            let s = s.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    seen.push(s.register(poll(&name, 1), T0).await.unwrap().0);
                }
                seen
            })
        };
        tokio::task::yield_now().await;
        let g = s.commit_grant(grant_of(&name, 1, T0), T0).await.unwrap();
        assert!(matches!(g, GrantResult::Granted(_)), "{g:?}");
        let seen = poller.await.unwrap();
        let first_collect = seen.iter().position(|d| *d == Decision::Collect);
        for (i, d) in seen.iter().enumerate() {
            match first_collect {
                Some(c) if i >= c => assert_eq!(*d, Decision::Collect, "grant lost after {c}"),
                _ => assert_eq!(*d, Decision::StillPending),
            }
        }
        let (d, r) = s.register(poll(&name, 1), T0).await.unwrap();
        assert_eq!(d, Decision::Collect);
        assert_eq!(r.unwrap().state, RequestState::Granted { granted_at: T0 });
    }
}

/// Many devices try to create at once through two instances: the cap is
/// never exceeded, and exactly `max` get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_pass_the_cap() {
    let server = RedisServer::start();
    let mut config = support::config(&server.url(), "cap");
    config.max_pending = 10;
    let a = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    let b = Arc::new(RedisStore::connect_with(config).await.unwrap());
    unlock(&a).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let name = format!("dev{i:03}");
                s.register(poll(&name, 1), T0).await.map(|r| r.0)
            })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Decision::Create) => created += 1,
            Err(StoreError::PendingLimit { max: 10 }) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, refused), (10, 50));
    assert_eq!(a.pending_count().await.unwrap(), 10);
    let slots = server.cli(&["get", &a.key_space().pending_slots()]);
    assert_eq!(slots.trim(), "10", "the reservation counter matches");

    // Denying one frees one slot.
    let listed = a
        .list_requests(
            &ListQuery {
                state: ListState::Pending,
                limit: 1,
                cursor: None,
                prefix: None,
            },
            T0,
        )
        .await
        .unwrap();
    let first = &listed.items[0].username;
    a.deny(first, None, T0).await.unwrap();
    assert_eq!(
        b.register(poll("late", 1), T0).await.unwrap().0,
        Decision::Create
    );
    assert!(matches!(
        b.register(poll("later", 1), T0).await,
        Err(StoreError::PendingLimit { .. })
    ));
}

/// Expired pending requests give their slots back when swept, and Redis
/// holds every request with a TTL.
#[tokio::test]
async fn expiry_uses_ttls_and_sweep_frees_slots() {
    let server = RedisServer::start();
    let windows = Windows {
        pending_ttl: Duration::from_secs(10),
        ..Windows::default()
    };
    let s = support::store(&server.url(), "sweep", windows, 3).await;
    let now = UnixMillis::now();
    s.set_lock_state(LockState {
        unlocked_until: Some(now.plus(Duration::from_secs(3600))),
    })
    .await
    .unwrap();
    for name in ["dev1", "dev2", "dev3"] {
        assert_eq!(
            s.register(poll(name, 1), now).await.unwrap().0,
            Decision::Create
        );
    }
    let key = s.key_space().user_keys("dev1").request;
    let ttl: i64 = server.cli(&["pttl", &key]).trim().parse().unwrap();
    assert!((9_000..=10_000).contains(&ttl), "pttl {ttl}");
    assert!(matches!(
        s.register(poll("dev4", 1), now).await,
        Err(StoreError::PendingLimit { max: 3 })
    ));

    let later = now.plus(Duration::from_secs(11));
    assert_eq!(s.pending_count().await.unwrap(), 3, "not swept yet");
    assert_eq!(s.sweep(later, 100).await.unwrap(), 3);
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(
        server.cli(&["get", &s.key_space().pending_slots()]).trim(),
        "0"
    );
    assert_eq!(
        s.register(poll("dev4", 1), later).await.unwrap().0,
        Decision::Create
    );

    // Granted and denied records carry their windows as TTLs too.
    s.commit_grant(grant_of("dev4", 1, later), later)
        .await
        .unwrap();
    let key = s.key_space().user_keys("dev4").request;
    let ttl: i64 = server.cli(&["pttl", &key]).trim().parse().unwrap();
    assert!(ttl > 590_000, "granted pttl {ttl}");
    let user_ttl: i64 = server
        .cli(&["pttl", &s.key_space().user_keys("dev4").user])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(user_ttl, -1, "users never expire");
}

/// The denied index (`{t}:denied`, `{t}:dexp`) holds exactly the denied
/// records: forget and a create after the window drop their entry, the
/// sweep drops the expired rest, and the hash carries the deny window as
/// its TTL, so no entry outlives its record past the next sweep.
#[tokio::test]
async fn the_denied_index_never_outlives_its_records() {
    let server = RedisServer::start();
    let windows = Windows {
        deny_window: Duration::from_secs(10),
        ..Windows::default()
    };
    let s = support::store(&server.url(), "denied", windows, 1000).await;
    let now = UnixMillis::now();
    s.set_lock_state(LockState {
        unlocked_until: Some(now.plus(Duration::from_secs(3600))),
    })
    .await
    .unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("d{i:03}")).collect();
    for n in &names {
        assert_eq!(
            s.register(poll(n, 1), now).await.unwrap().0,
            Decision::Create
        );
        s.deny(n, None, now).await.unwrap();
    }
    // (names in the denied indexes, names in their expiry zsets), summed
    // over the 64 buckets.
    let sizes = || {
        let card = |k: &str| -> usize { server.cli(&["zcard", k]).trim().parse().unwrap() };
        (0..fleetgate_store_redis::keys::BUCKETS).fold((0, 0), |(d, e), b| {
            let bk = s.key_space().bucket_keys(b);
            (d + card(&bk.denied), e + card(&bk.denied_expiry))
        })
    };
    // The last one denied, read at once (real time passes while the 200 are
    // made; the window is 10 s of it).
    let key = s.key_space().user_keys("d199").request;
    let ttl: i64 = server.cli(&["pttl", &key]).trim().parse().unwrap();
    assert!((8_000..=10_000).contains(&ttl), "denied pttl {ttl}");
    assert_eq!(sizes(), (200, 200));

    s.forget_request("d000", now).await.unwrap();
    assert_eq!(sizes(), (199, 199), "forget drops the entry");
    let later = now.plus(Duration::from_secs(10));
    assert_eq!(
        s.register(poll("d001", 2), later).await.unwrap().0,
        Decision::Create
    );
    assert_eq!(sizes(), (198, 198), "a create after the window drops it");
    // 198 denied, swept at most 100 per bucket per call.
    assert_eq!(s.sweep(later, 100).await.unwrap(), 198);
    assert_eq!(sizes(), (0, 0), "the sweep drops the rest");
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

/// Every method answers Unavailable within the timeout while Redis is
/// down. The calls run concurrently (so the test takes one timeout, not
/// twelve); each sends its first command in the order listed.
async fn assert_all_unavailable(s: &RedisStore, bound: Duration) {
    type Check<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + 'a>>;
    fn check<'a, T>(f: impl std::future::Future<Output = Result<T, StoreError>> + 'a) -> Check<'a> {
        Box::pin(async move { f.await.map(|_| ()) })
    }
    let list = ListQuery {
        state: ListState::Pending,
        limit: 10,
        cursor: None,
        prefix: None,
    };
    let calls: Vec<(&str, Check<'_>)> = vec![
        ("register", check(s.register(poll("dev01", 1), T0))),
        ("lock_state", check(s.lock_state())),
        (
            "set_lock_state",
            check(s.set_lock_state(LockState::default())),
        ),
        ("pending_count", check(s.pending_count())),
        ("get_request", check(s.get_request("dev01", T0))),
        ("list_requests", check(s.list_requests(&list, T0))),
        (
            "commit_grant",
            check(s.commit_grant(grant_of("dev01", 1, T0), T0)),
        ),
        ("deny", check(s.deny("dev01", None, T0))),
        ("get_user", check(s.get_user("dev01"))),
        ("put_user", check(s.put_user(user("u1")))),
        ("delete_user", check(s.delete_user("u1"))),
        ("ping", check(s.ping())),
    ];
    let started = Instant::now();
    let timed_calls = calls.into_iter().map(|(name, call)| async move {
        let r = call.await;
        (name, r, started.elapsed())
    });
    for (name, r, took) in futures_util::future::join_all(timed_calls).await {
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "{name}: expected Unavailable, got {r:?}"
        );
        assert!(took <= bound, "{name} took {took:?}");
    }
}

async fn time_to_recover(s: &RedisStore) -> Duration {
    let t = Instant::now();
    while s.ping().await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_within_the_timeout_when_stopped_then_recovers() {
    let mut server = RedisServer::start();
    let mut config = support::config(&server.url(), "outage");
    config.op_timeout = Duration::from_millis(500);
    let s = RedisStore::connect_with(config).await.unwrap();
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );

    server.stop();
    assert_all_unavailable(&s, Duration::from_millis(650)).await;
    // Again, now that the reconnection attempts are under way.
    assert_all_unavailable(&s, Duration::from_millis(650)).await;

    server.restart();
    let took = time_to_recover(&s).await;
    assert!(took < Duration::from_secs(2), "recovered after {took:?}");
    eprintln!("recovered {took:?} after the restart");
    // The restarted server is empty (no persistence) and has no scripts:
    // the store reloads them on NOSCRIPT, and a fresh Redis is locked.
    assert_eq!(s.lock_state().await.unwrap(), LockState::default());
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Locked
    );
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_within_the_timeout_when_frozen_then_recovers() {
    let server = RedisServer::start();
    let mut config = support::config(&server.url(), "frozen");
    config.op_timeout = Duration::from_millis(500);
    let s = RedisStore::connect_with(config).await.unwrap();
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );

    // SIGSTOP: the socket stays open, nothing answers (a "slow" Redis).
    server.signal("STOP");
    assert_all_unavailable(&s, Duration::from_millis(650)).await;
    server.signal("CONT");
    let took = time_to_recover(&s).await;
    assert!(took < Duration::from_secs(2), "recovered after {took:?}");
    // The commands that timed out had been sent; Redis ran them, in order,
    // when it thawed. `Unavailable` means "outcome unknown", never "not
    // applied": the grant happened, the lock was set, u1 was created and
    // deleted. Each answer below also belongs to its own question, so the
    // late replies to the timed-out commands were not handed to new ones.
    let r = s.get_request("dev01", T0).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Granted { granted_at: T0 });
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Collect
    );
    assert_eq!(s.get_user("dev01").await.unwrap(), Some(user("dev01")));
    assert_eq!(s.get_user("u1").await.unwrap(), None);
    assert_eq!(s.pending_count().await.unwrap(), 0);
    // set_lock_state timed out at its first step (taking a version), so
    // the lock state did not change anywhere.
    assert!(s.lock_state().await.unwrap().is_unlocked(T0));
    assert_lock_copies_agree(&server, &s);
}

/// Every bucket's copy of the lock state equals the global key.
fn assert_lock_copies_agree(server: &RedisServer, s: &RedisStore) {
    let global = server.cli(&["get", &s.key_space().lock()]);
    for b in 0..fleetgate_store_redis::keys::BUCKETS {
        let copy = server.cli(&["get", &s.key_space().bucket_keys(b).lock]);
        assert_eq!(copy, global, "bucket {b}");
    }
}

/// Two admins flipping the lock at once leave every bucket on the same,
/// latest state; a copy that missed a write is repaired by the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_copies_converge_and_are_repaired() {
    let server = RedisServer::start();
    let config = support::config(&server.url(), "lockcopies");
    let a = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    let b = Arc::new(RedisStore::connect_with(config).await.unwrap());
    let tasks: Vec<_> = (0..20u64)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let state = LockState {
                    unlocked_until: (i % 3 != 0).then(|| T0.plus(Duration::from_secs(i))),
                };
                s.set_lock_state(state).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_lock_copies_agree(&server, &a);

    // Lose one bucket's copy, as a half-failed call would.
    let bucket = fleetgate_store_redis::keys::bucket_of("dev01");
    server.cli(&["del", &a.key_space().bucket_keys(bucket).lock]);
    unlock(&a).await;
    server.cli(&["set", &a.key_space().bucket_keys(bucket).lock, "1:0"]);
    assert_eq!(
        a.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Locked
    );
    a.sweep(T0, 100).await.unwrap();
    assert_lock_copies_agree(&server, &a);
    assert_eq!(
        a.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );
}

#[tokio::test]
async fn connect_to_nothing_fails_within_the_connect_timeout() {
    let server = RedisServer::start();
    let url = server.url();
    drop(server);
    let mut config = support::config(&url, "nothing");
    config.connect_timeout = Duration::from_millis(300);
    let (r, took) = timed(RedisStore::connect_with(config)).await;
    assert!(r.is_err());
    assert!(took < Duration::from_millis(600), "took {took:?}");
    let bad = RedisConfig {
        url: "http://127.0.0.1:1".into(),
        ..RedisConfig::default()
    };
    assert!(matches!(
        RedisStore::connect_with(bad).await,
        Err(fleetgate_store_redis::ConnectError::Config(_))
    ));
}

#[tokio::test]
async fn scripts_are_reloaded_after_the_cache_is_flushed() {
    let server = RedisServer::start();
    let s = support::store(&server.url(), "flush", Windows::default(), 100).await;
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );
    assert_eq!(server.cli(&["script", "flush"]).trim(), "OK");
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::StillPending
    );
    assert_eq!(server.cli(&["script", "flush"]).trim(), "OK");
    assert!(matches!(
        s.commit_grant(grant_of("dev01", 1, T0), T0).await.unwrap(),
        GrantResult::Granted(_)
    ));
}

#[tokio::test]
async fn wait_for_replicas_that_do_not_exist_is_not_an_acknowledgement() {
    let server = RedisServer::start();
    let mut config = support::config(&server.url(), "wait");
    config.wait_replicas = Some(WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(100),
    });
    let s = RedisStore::connect_with(config.clone()).await.unwrap();
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );
    assert!(matches!(
        s.commit_grant(grant_of("dev01", 1, T0), T0).await,
        Err(StoreError::Unavailable(_))
    ));
    // The write is on the master; the admin's retry sees it, still without
    // an acknowledgement of durability.
    assert!(matches!(
        s.commit_grant(grant_of("dev01", 1, T0), T0).await.unwrap(),
        GrantResult::AlreadyGranted(_)
    ));
    assert!(matches!(
        s.put_user(user("u1")).await,
        Err(StoreError::Unavailable(_))
    ));
    // Role writes wait too; the write is applied, not acknowledged.
    assert!(matches!(
        s.put_role(role("sensors", &["t/#"])).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(
        s.get_role("sensors").await.unwrap(),
        Some(role("sensors", &["t/#"]))
    );
    assert!(matches!(
        s.delete_role("sensors").await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(s.get_role("sensors").await.unwrap(), None);

    // WAIT 0 is always satisfied.
    config.wait_replicas = Some(WaitReplicas {
        replicas: 0,
        timeout: Duration::from_millis(100),
    });
    let s0 = RedisStore::connect_with(config).await.unwrap();
    s0.put_user(user("u2")).await.unwrap();
    assert!(s0.delete_user("u2").await.unwrap());
    s0.put_role(role("ops", &[])).await.unwrap();
    assert!(s0.delete_role("ops").await.unwrap());
    assert!(!s0.delete_role("ops").await.unwrap());
}

/// The `calls=` figure of one command in `INFO commandstats`.
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["info", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A group of grants is pipelines of at most `GROUP_MAX` with one `WAIT`
/// each: 300 grants send 300 scripts and 300 / `GROUP_MAX` (rounded up)
/// `WAIT`s, not one per grant (with `WAIT 0`, always satisfied). With
/// a replica count nobody meets, the group is applied but answered
/// `Unavailable`, and a retry of the group answers `AlreadyGranted` for
/// each. After `SCRIPT FLUSH` the group still commits.
#[tokio::test]
async fn a_group_of_grants_is_a_few_pipelines_and_one_wait_each() {
    let server = RedisServer::start();
    let mut config = support::config(&server.url(), "group");
    config.wait_replicas = Some(WaitReplicas {
        replicas: 0,
        timeout: Duration::from_millis(100),
    });
    let s = RedisStore::connect_with(config.clone()).await.unwrap();
    unlock(&s).await;
    let names: Vec<String> = (0..300).map(|i| format!("dev{i:03}")).collect();
    for name in &names {
        s.register(poll(name, 1), T0).await.unwrap();
    }
    let waits = command_calls(&server, "wait");
    let results = s
        .commit_grants(names.iter().map(|n| grant_of(n, 1, T0)).collect(), T0)
        .await
        .unwrap();
    assert!(results.iter().all(|r| matches!(r, GrantResult::Granted(_))));
    assert_eq!(
        command_calls(&server, "wait") - waits,
        300u64.div_ceil(GROUP_MAX as u64),
        "one WAIT per pipeline of {GROUP_MAX} for 300 grants"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(
        s.register(poll("dev299", 1), T0).await.unwrap().0,
        Decision::Collect
    );

    // Nobody acknowledges: applied, not acknowledged; the retry sees it.
    config.wait_replicas = Some(WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(100),
    });
    config.prefix = "group1".into();
    let strict = RedisStore::connect_with(config).await.unwrap();
    unlock(&strict).await;
    for name in &names[..20] {
        strict.register(poll(name, 1), T0).await.unwrap();
    }
    assert_eq!(server.cli(&["script", "flush"]).trim(), "OK");
    let group: Vec<GrantCommit> = names[..20].iter().map(|n| grant_of(n, 1, T0)).collect();
    assert!(matches!(
        strict.commit_grants(group.clone(), T0).await,
        Err(StoreError::Unavailable(_))
    ));
    let retried = strict.commit_grants(group, T0).await.unwrap();
    assert!(retried
        .iter()
        .all(|r| matches!(r, GrantResult::AlreadyGranted(_))));
}

/// A bulk grant of 12,000 in one `commit_grants` call (what one
/// 100,000-device fleet sends a dozen times): every grant is applied and
/// visible to another instance, and polls on the same store keep being
/// answered meanwhile, well within the operation timeout, because the
/// pipelines run on their own connection in groups of `GROUP_MAX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_grant_of_twelve_thousand_commits_while_polls_are_answered() {
    const N: usize = 12_000;
    let server = RedisServer::start();
    let mut config = support::config(&server.url(), "bulk");
    config.max_pending = N + 100;
    let s = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    unlock(&s).await;
    let names: Vec<String> = (0..N).map(|i| format!("bulk{i:05}")).collect();
    for chunk in names.chunks(500) {
        let creates = chunk.iter().map(|n| s.register(poll(n, 1), T0));
        for r in futures_util::future::join_all(creates).await {
            assert_eq!(r.unwrap().0, Decision::Create);
        }
    }
    // Devices that stay pending, polled all the time the grants run.
    const POLLERS: usize = 50;
    let pollers: Vec<String> = (0..POLLERS).map(|i| format!("poller{i:02}")).collect();
    for name in &pollers {
        s.register(poll(name, 1), T0).await.unwrap();
    }

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let name = &pollers[i % pollers.len()];
                i += 1;
                let t = Instant::now();
                let (d, _) = s.register(poll(name, 1), T0).await.expect("poll answered");
                latencies.push(t.elapsed());
                assert_eq!(d, Decision::StillPending);
            }
            latencies
        })
    };
    let started = Instant::now();
    let results = s
        .commit_grants(names.iter().map(|n| grant_of(n, 1, T0)).collect(), T0)
        .await
        .expect("the whole bulk commits");
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = polling.await.unwrap();
    assert_eq!(results.len(), N);
    for (name, r) in names.iter().zip(&results) {
        assert!(
            matches!(r, GrantResult::Granted(rec) if &rec.username == name),
            "{name}: {r:?}"
        );
    }

    // Polls were answered throughout, none near the 1 s timeout.
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    eprintln!(
        "{N} grants in {took:?}; {} polls meanwhile, p99 {p99:?}, max {max:?}",
        latencies.len()
    );
    assert!(
        latencies.len() >= 50,
        "only {} polls answered in {took:?}",
        latencies.len()
    );
    assert!(p99 < Duration::from_millis(250), "poll p99 {p99:?}");
    assert!(max < config.op_timeout, "slowest poll {max:?}");

    // Visible to another instance: every user exists, every request is
    // granted and collects, and nothing of them is pending any more.
    let other = RedisStore::connect_with(config).await.unwrap();
    assert_eq!(other.pending_count().await.unwrap(), POLLERS);
    for chunk in names.chunks(500) {
        let users = chunk.iter().map(|n| other.get_user(n));
        for (name, u) in chunk
            .iter()
            .zip(futures_util::future::join_all(users).await)
        {
            assert!(u.unwrap().is_some(), "{name} has no user");
        }
    }
    for name in names.iter().step_by(97) {
        let (d, _) = other.register(poll(name, 1), T0).await.unwrap();
        assert_eq!(d, Decision::Collect, "{name}");
    }
}

/// Roles are global to a namespace: every instance on it sees the same
/// roles at once, and another namespace on the same server has its own.
#[tokio::test]
async fn instances_on_one_redis_share_the_roles() {
    let server = RedisServer::start();
    let config = support::config(&server.url(), "roles");
    let a = RedisStore::connect_with(config.clone()).await.unwrap();
    let b = RedisStore::connect_with(config).await.unwrap();
    let other = support::store(&server.url(), "roles", Windows::default(), 1).await;
    a.put_role(role("sensors", &["plant/#"])).await.unwrap();
    assert_eq!(
        b.get_role("sensors").await.unwrap(),
        Some(role("sensors", &["plant/#"]))
    );
    assert_eq!(b.list_roles().await.unwrap().len(), 1);
    assert_eq!(other.list_roles().await.unwrap(), vec![]);
    assert!(b.delete_role("sensors").await.unwrap());
    assert_eq!(a.get_role("sensors").await.unwrap(), None);
}

#[tokio::test]
async fn instances_on_one_redis_share_the_secret() {
    let server = RedisServer::start();
    let config = support::config(&server.url(), "secret");
    let a = RedisStore::connect_with(config.clone()).await.unwrap();
    let b = RedisStore::connect_with(config).await.unwrap();
    let other = support::store(&server.url(), "secret", Windows::default(), 1).await;
    let sa = a.load_or_create_secret().await.unwrap();
    assert_eq!(b.load_or_create_secret().await.unwrap(), sa);
    assert_eq!(a.load_or_create_secret().await.unwrap(), sa, "stable");
    assert_ne!(other.load_or_create_secret().await.unwrap(), sa);
    assert_ne!(sa, [0u8; 32]);
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("an event within 2 s")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_publish_events_and_the_subscriber_resyncs() {
    let mut server = RedisServer::start();
    let a = support::store(&server.url(), "events", Windows::default(), 100).await;
    let mut rx = a.subscribe_events();
    assert_eq!(next_event(&mut rx).await, StoreEvent::Resync);

    let lock = LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(60))),
    };
    a.set_lock_state(lock).await.unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::Lock(lock));
    a.register(poll("dev01", 1), T0).await.unwrap();
    a.register(poll("dev02", 1), T0).await.unwrap();
    a.commit_grant(grant_of("dev01", 1, T0), T0).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Granted("dev01".into())
    );
    a.deny("dev02", None, T0).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Denied("dev02".into())
    );
    a.put_user(user("u1")).await.unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::UserPut("u1".into()));
    a.delete_user("dev01").await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::UserDeleted("dev01".into())
    );
    a.put_role(role("site:4", &["t/#"])).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::RoleChanged("site:4".into())
    );
    // Deleting a role that does not exist changes nothing and says nothing;
    // deleting one that does, says so.
    assert!(!a.delete_role("ghost").await.unwrap());
    assert!(a.delete_role("site:4").await.unwrap());
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::RoleChanged("site:4".into())
    );
    a.set_lock_state(LockState::default()).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Lock(LockState::default())
    );
    a.publish_event(&StoreEvent::Granted("x".into()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::Granted("x".into()));

    // The subscription survives a restart, and says it may have missed events.
    server.restart();
    assert_eq!(next_event(&mut rx).await, StoreEvent::Resync);
    time_to_recover(&a).await;
    a.set_lock_state(lock).await.unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::Lock(lock));
}

/// A page of a listing reads 64 buckets but only the page's records; here,
/// with names spread over all buckets and a prefix filter.
#[tokio::test]
async fn listing_filters_by_prefix_and_skips_expired_entries() {
    let server = RedisServer::start();
    let windows = Windows {
        pending_ttl: Duration::from_secs(10),
        ..Windows::default()
    };
    let s = support::store(&server.url(), "list", windows, 1000).await;
    unlock(&s).await;
    for i in 0..200 {
        let name = format!("{}{i:03}", if i % 2 == 0 { "cam" } else { "dev" });
        s.register(poll(&name, 1), T0).await.unwrap();
    }
    // The odd half keeps polling; the even half expires.
    let t9 = T0.plus(Duration::from_secs(9));
    for i in (1..200).step_by(2) {
        s.register(poll(&format!("dev{i:03}"), 1), t9)
            .await
            .unwrap();
    }
    let t12 = T0.plus(Duration::from_secs(12));
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = s
            .list_requests(
                &ListQuery {
                    state: ListState::Pending,
                    limit: 30,
                    cursor: cursor.clone(),
                    prefix: None,
                },
                t12,
            )
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|r| r.username));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (1..200).step_by(2).map(|i| format!("dev{i:03}")).collect();
    assert_eq!(seen, expected);
    let cams = s
        .list_requests(
            &ListQuery {
                state: ListState::Pending,
                limit: 10,
                cursor: None,
                prefix: Some("cam".into()),
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(cams.items.len(), 10);
    assert!(cams.items.iter().all(|r| r.username.starts_with("cam")));
    assert_eq!(cams.next_cursor.as_deref(), Some("cam018"));
}

/// A pending hash that Redis already dropped by TTL leaves index entries
/// behind; re-creating the username cleans them and reuses their slot.
#[tokio::test]
async fn ttl_dropped_requests_give_their_slot_back() {
    let server = RedisServer::start();
    let windows = Windows {
        pending_ttl: Duration::from_millis(150),
        ..Windows::default()
    };
    let s = support::store(&server.url(), "ttl", windows, 1).await;
    let now = UnixMillis::now();
    s.set_lock_state(LockState {
        unlocked_until: Some(now.plus(Duration::from_secs(60))),
    })
    .await
    .unwrap();
    assert_eq!(
        s.register(poll("dev1", 1), now).await.unwrap().0,
        Decision::Create
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = s.key_space().user_keys("dev1").request;
    assert_eq!(
        server.cli(&["exists", &key]).trim(),
        "0",
        "Redis dropped it"
    );
    assert_eq!(
        s.pending_count().await.unwrap(),
        1,
        "its index entry is left"
    );
    let later = now.plus(Duration::from_millis(300));
    assert_eq!(s.get_request("dev1", later).await.unwrap(), None);
    // The cap is 1: only a reused slot lets this in.
    assert_eq!(
        s.register(poll("dev1", 2), later).await.unwrap().0,
        Decision::Create
    );
    assert_eq!(s.pending_count().await.unwrap(), 1);
    assert_eq!(
        server.cli(&["get", &s.key_space().pending_slots()]).trim(),
        "1"
    );
}

/// Listing stays correct (and, measured, fast) over many pending requests.
/// The normal run uses 20,000 devices; the 1,000,000-device measurement in
/// docs/BENCHMARKS.md is the same test with
/// `FLEETGATE_LISTING_DEVICES=1000000 cargo test --release -p
/// fleetgate-store-redis --test single -- --nocapture listing_stays_fast`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_stays_fast_with_a_million_pending() {
    let n: usize = std::env::var("FLEETGATE_LISTING_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    assert!(
        (1000..=9_999_999).contains(&n),
        "FLEETGATE_LISTING_DEVICES out of range"
    );
    let n_devices = n;
    let server = RedisServer::start();
    let s =
        Arc::new(support::store(&server.url(), "million", Windows::default(), 2 * n_devices).await);
    unlock(&s).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..256)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in (t..n_devices).step_by(256) {
                    let name = format!("dev{i:07}");
                    let d = s.register(poll(&name, 1), T0).await.unwrap().0;
                    assert_eq!(d, Decision::Create);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let fill = started.elapsed();
    eprintln!(
        "created {n_devices} pending requests in {fill:?} ({:.0}/s)",
        n_devices as f64 / fill.as_secs_f64()
    );
    assert_eq!(s.pending_count().await.unwrap(), n_devices);
    let memory = server.cli(&["info", "memory"]);
    let used = memory
        .lines()
        .find(|l| l.starts_with("used_memory_human:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    eprintln!("redis {used}");

    let query = |limit, cursor: Option<&str>, prefix: Option<&str>| ListQuery {
        state: ListState::Pending,
        limit,
        cursor: cursor.map(str::to_owned),
        prefix: prefix.map(str::to_owned),
    };
    let middle = format!("dev{:07}", n_devices / 2);
    let last = format!("dev{:07}", n_devices - 51);
    let prefix = format!("dev{:07}", n_devices - 1)[..9].to_owned();
    for (label, q, want) in [
        ("first page, 100", query(100, None, None), 100),
        ("middle page, 100", query(100, Some(&middle), None), 100),
        ("last page, 100", query(100, Some(&last), None), 50),
        (
            "prefix page, 100",
            query(100, None, Some(&prefix)),
            (n_devices - 1) % 10 + 1,
        ),
        ("first page, 1000", query(1000, None, None), 1000),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let page = s.list_requests(&q, T0).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(page.items.len(), want, "{label}");
            let names: Vec<&str> = page.items.iter().map(|r| r.username.as_str()).collect();
            assert!(
                names.windows(2).all(|w| w[0] < w[1]),
                "{label}: not in order"
            );
            if let Some(c) = &q.cursor {
                assert!(
                    names[0] > c.as_str(),
                    "{label}: starts at or before the cursor"
                );
            }
        }
        times.sort();
        eprintln!(
            "{label}: median {:?}, max {:?} (20 runs)",
            times[10], times[19]
        );
    }
    let t = Instant::now();
    s.pending_count().await.unwrap();
    eprintln!("pending_count: {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..1000 {
        let d = s.register(poll("dev0000001", 1), T0).await.unwrap().0;
        assert_eq!(d, Decision::StillPending);
    }
    eprintln!(
        "repeated poll of a known pending request, sequential: {:?} each",
        t.elapsed() / 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_reaches_the_cache_within_the_stale_bound() {
    let server = RedisServer::start();
    let slowest = support::lost_events_reach_the_cache_within_the_bound(&server.url()).await;
    eprintln!("slowest visibility without events: {slowest:?}");
}

/// Runs `openssl` with `args` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rediss://` against a real `redis-server` listening only on TLS, with a
/// server certificate from a private CA: the store works with that CA
/// (`--redis-ca-cert`), and refuses a server it cannot verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=test redis CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let config = |tls_ca: Option<Vec<u8>>| RedisConfig {
        url: url.clone(),
        prefix: support::fresh_prefix("tls"),
        tls_ca,
        ..RedisConfig::default()
    };
    // Wait for the TLS listener, then use the store for real.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match RedisStore::connect_with(config(Some(ca.clone()))).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no TLS Redis: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    unlock(&store).await;
    assert_eq!(
        store.register(poll("dev-tls", 1), T0).await.unwrap().0,
        Decision::Create
    );
    assert_eq!(
        store.register(poll("dev-tls", 1), T0).await.unwrap().0,
        Decision::StillPending
    );
    let granted = store
        .commit_grant(grant_of("dev-tls", 1, T0), T0)
        .await
        .unwrap();
    assert!(matches!(granted, GrantResult::Granted(_)));
    // Events arrive over TLS too.
    let mut events = store.subscribe_events();
    assert_eq!(next_event(&mut events).await, StoreEvent::Resync);
    store.put_user(user("dev-tls2")).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::UserPut("dev-tls2".into())
    );
    // Without the CA the server cannot be verified: refused.
    assert!(RedisStore::connect_with(config(None)).await.is_err());
    // Plain TCP to the TLS port is no Redis either.
    let plain = RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        connect_timeout: Duration::from_millis(500),
        ..config(None)
    };
    assert!(RedisStore::connect_with(plain).await.is_err());
}

/// What Redis holds that this version cannot read is `Corrupt` (500: a bug,
/// a version mismatch or a foreign writer in the namespace), whether it is
/// a record that does not decode or a key of the wrong type; a Redis that
/// refuses for now (OOM, READONLY) or is stopped is `Unavailable` (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_namespace_is_corrupt_and_an_outage_is_not() {
    let mut server = RedisServer::start();
    let mut config = support::config(&server.url(), "garbage");
    config.op_timeout = Duration::from_millis(500);
    let s = RedisStore::connect_with(config).await.unwrap();
    unlock(&s).await;
    assert_eq!(
        s.register(poll("dev01", 1), T0).await.unwrap().0,
        Decision::Create
    );
    s.put_user(user("u1")).await.unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    async fn write(raw: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<redis::Value>(raw).await.unwrap();
    }
    fn corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
        match r {
            Err(e @ StoreError::Corrupt(_)) => assert!(e.is_internal()),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    let pending = ListQuery {
        state: ListState::Pending,
        limit: 10,
        cursor: None,
        prefix: None,
    };

    // A request whose state no version wrote.
    let request = s.key_space().user_keys("dev01").request;
    write(&mut raw, &["HSET", &request, "state", "haunted"]).await;
    corrupt("get_request", s.get_request("dev01", T0).await);
    corrupt("list_requests", s.list_requests(&pending, T0).await);
    // A request key that is not a hash at all (WRONGTYPE), read by a
    // command and by a script.
    write(&mut raw, &["DEL", &request]).await;
    write(&mut raw, &["SET", &request, "not a hash"]).await;
    corrupt("get_request", s.get_request("dev01", T0).await);
    corrupt("register", s.register(poll("dev01", 1), T0).await);
    corrupt("deny", s.deny("dev01", None, T0).await);
    // A user that is not JSON.
    let u1 = s.key_space().user_keys("u1").user;
    write(&mut raw, &["SET", &u1, "{\"username\":"]).await;
    corrupt("get_user", s.get_user("u1").await);
    corrupt("list_users", s.list_users(&pending).await);
    // A bucket epoch that is not a number.
    let epoch = s.key_space().bucket_keys(3).epoch;
    write(&mut raw, &["SET", &epoch, "many"]).await;
    corrupt("bucket_epochs", s.bucket_epochs().await);
    // A secret of the wrong length.
    write(&mut raw, &["SET", &s.key_space().secret(), "short"]).await;
    corrupt("secret", s.load_or_create_secret().await);
    // A lock state that does not parse.
    write(&mut raw, &["SET", &s.key_space().lock(), "open sesame"]).await;
    corrupt("lock_state", s.lock_state().await);
    // A role that is not JSON, and one stored under another name.
    let roles = s.key_space().roles();
    write(&mut raw, &["HSET", &roles, "bad", "[1,"]).await;
    corrupt("get_role", s.get_role("bad").await);
    corrupt("list_roles", s.list_roles().await);
    write(
        &mut raw,
        &[
            "HSET",
            &roles,
            "bad",
            r#"{"name":"other","permissions":[]}"#,
        ],
    )
    .await;
    corrupt("get_role", s.get_role("bad").await);
    // A roles key that is not a hash (WRONGTYPE), read and written by script.
    write(&mut raw, &["DEL", &roles]).await;
    write(&mut raw, &["SET", &roles, "not a hash"]).await;
    corrupt("list_roles", s.list_roles().await);
    corrupt("put_role", s.put_role(role("r", &[])).await);
    corrupt("delete_role", s.delete_role("r").await);
    write(&mut raw, &["DEL", &roles]).await;

    // Redis refusing writes for now is an outage, not corruption.
    write(&mut raw, &["CONFIG", "SET", "maxmemory", "1"]).await;
    let oom = s.put_user(user("u2")).await;
    assert!(matches!(oom, Err(StoreError::Unavailable(_))), "{oom:?}");
    write(&mut raw, &["CONFIG", "SET", "maxmemory", "0"]).await;
    write(&mut raw, &["REPLICAOF", "127.0.0.1", "1"]).await;
    let readonly = s.put_user(user("u2")).await;
    assert!(
        matches!(readonly, Err(StoreError::Unavailable(_))),
        "{readonly:?}"
    );
    write(&mut raw, &["REPLICAOF", "NO", "ONE"]).await;
    s.put_user(user("u2")).await.unwrap();

    // And a stopped server is still an outage.
    server.stop();
    for (what, r) in [
        ("get_request", s.get_request("dev01", T0).await.map(|_| ())),
        (
            "list_requests",
            s.list_requests(&pending, T0).await.map(|_| ()),
        ),
        ("get_user", s.get_user("u1").await.map(|_| ())),
    ] {
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "{what}: expected Unavailable, got {r:?}"
        );
    }
}
