//! Test support for the Redis store's tests: the real servers
//! ([`servers`]), stores on fresh key prefixes, the caching stack the
//! binaries build on Redis ([`production_stack`]), and a `block_on` for
//! driving it from a thread that is not a tokio one.

#![allow(dead_code)] // each test binary uses a different part of this module

mod servers;
pub use servers::*;

use fleetgate_registry::decision::Windows;
use fleetgate_store_redis::{
    CachedStore, PollCache, RedisConfig, RedisStore, StoreEvent, TokioBridge,
};

/// Connects a store with a fresh prefix.
pub async fn store(url: &str, name: &str, windows: Windows, max_pending: usize) -> RedisStore {
    RedisStore::connect(url, windows, max_pending, &fresh_prefix(name))
        .await
        .expect("connect")
}

/// A conformance-suite store: a fresh prefix on the server at `url`.
///
/// Webhook events are recorded (the outbox case needs them, and every other
/// case then also runs the scripts' outbox appends).
pub async fn conformance_store(url: String, windows: Windows, max_pending: usize) -> RedisStore {
    store(&url, "conformance", windows, max_pending)
        .await
        .with_webhook_outbox(1000)
}

/// The stack the binaries build on Redis (`admin/src/bootstrap.rs`):
/// `CachedStore<TokioBridge<RedisStore>>` on a fresh prefix, with the event
/// listener and the epoch refresher running. Must run on tokio (the
/// listener, the refresher and the bridge's runtime are spawned here).
///
/// Returned in the state of a proxy that has run for a while: the
/// subscriber's first `Resync` has been applied (so it cannot empty the
/// cache in the middle of a test) and one epoch reading has been taken (so
/// the cache answers from the first call, not only after the refresher's
/// first reading).
pub async fn production_stack(
    url: &str,
    windows: Windows,
    max_pending: usize,
    cache_ttl: std::time::Duration,
) -> CachedStore<TokioBridge<RedisStore>> {
    use fleetgate_store_redis::cache::{spawn_event_listener, spawn_refresher, REVALIDATE_EVERY};

    let redis = std::sync::Arc::new(
        store(url, "production", windows, max_pending)
            .await
            .with_webhook_outbox(1000),
    );
    let cache = PollCache::new(cache_ttl, max_pending);
    let mut events = redis.subscribe_events();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
        .await
        .expect("the subscriber connects within 5 s");
    assert_eq!(first, Some(StoreEvent::Resync));
    cache.apply(&StoreEvent::Resync);
    spawn_event_listener(cache.clone(), events);
    let read_at = std::time::Instant::now();
    let epochs = redis.bucket_epochs().await.expect("bucket epochs");
    cache.apply_epochs(&epochs, read_at);
    spawn_refresher(cache.clone(), redis.clone(), REVALIDATE_EVERY);
    let bridge = TokioBridge::new(redis, tokio::runtime::Handle::current());
    CachedStore::new(std::sync::Arc::new(bridge), cache)
}

/// Runs `fut` to completion on the calling thread, which must not be in a
/// tokio runtime: how a monoio proxy worker awaits the store, so that every
/// [`TokioBridge`] call is spawned onto the runtime and answered through
/// its oneshot.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "block_on is for threads outside tokio"
    );
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            // A spurious wake-up only costs one more poll.
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A config with a fresh prefix, for tests that change other settings.
pub fn config(url: &str, name: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        prefix: fresh_prefix(name),
        ..RedisConfig::default()
    }
}

/// A change whose pub/sub event never arrives (here: a proxy with no
/// subscriber at all, the extreme of a lost event without a reconnect)
/// still reaches the proxy's cache within `STALE_BOUND`, through the bucket
/// epochs. Shared by the single-server and cluster tests. Returns the
/// slowest time to visibility seen.
pub async fn lost_events_reach_the_cache_within_the_bound(url: &str) -> std::time::Duration {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fleetgate_registry::conformance::{fp, poll, user, T0};
    use fleetgate_registry::decision::{Decision, LockState};
    use fleetgate_registry::store::{DenyResult, GrantCommit, GrantResult, Store};
    use fleetgate_store_redis::cache::{spawn_refresher, REVALIDATE_EVERY, STALE_BOUND};
    use fleetgate_store_redis::{CachedStore, PollCache};

    let config = config(url, "lost-events");
    let admin = RedisStore::connect_with(config.clone()).await.unwrap();
    let proxy = Arc::new(RedisStore::connect_with(config).await.unwrap());
    let cache = PollCache::new(Duration::from_secs(30), 1000);
    spawn_refresher(cache.clone(), proxy.clone(), REVALIDATE_EVERY);
    let cached = CachedStore::new(proxy, cache);
    admin
        .set_lock_state(LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
        })
        .await
        .unwrap();

    // Waits until the cache answers `name`'s polls itself: the store's poll
    // count stops moving across a refresh.
    async fn cached_as_pending(cached: &CachedStore<RedisStore>, admin: &RedisStore, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (d, _) = cached.register(poll(name, 1), T0).await.unwrap();
            assert!(
                matches!(d, Decision::Create | Decision::StillPending),
                "{d:?}"
            );
            let before = admin.get_request(name, T0).await.unwrap().unwrap().polls;
            tokio::time::sleep(Duration::from_millis(300)).await;
            cached.register(poll(name, 1), T0).await.unwrap();
            let after = admin.get_request(name, T0).await.unwrap().unwrap().polls;
            if after == before {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never answered from the cache"
            );
        }
    }

    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let name = format!("lost-{i:02}");
        cached_as_pending(&cached, &admin, &name).await;
        // Granted (even rounds) or denied (odd) on the other instance; the
        // proxy hears nothing.
        let want = if i % 2 == 0 {
            let grant = GrantCommit {
                certificate: None,
                username: name.clone(),
                fingerprint: fp(1),
                user: user(&name),
                granted_at: T0,
            };
            let r = admin.commit_grant(grant, T0).await.unwrap();
            assert!(matches!(r, GrantResult::Granted(_)), "{r:?}");
            Decision::Collect
        } else {
            assert_eq!(
                admin.deny(&name, None, T0).await.unwrap(),
                DenyResult::Denied
            );
            Decision::Denied
        };
        let acked = Instant::now();
        loop {
            let (d, _) = cached.register(poll(&name, 1), T0).await.unwrap();
            if d == want {
                break;
            }
            assert_eq!(d, Decision::StillPending);
            let waited = acked.elapsed();
            // The bound plus a margin for a loaded machine.
            assert!(
                waited < STALE_BOUND + Duration::from_secs(1),
                "{name}: still pending {waited:?} after the change"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slowest = slowest.max(acked.elapsed());
    }
    slowest
}

/// The Redis outbox shared by several instances of one namespace, on the
/// server or cluster at `url`: each event is handed to one instance; an
/// instance's unacknowledged events are taken over, with their ids, once
/// it has been gone for the take-over idle time; a live instance's held
/// events are not; and each stream keeps at most its cap.
pub async fn outbox_is_shared_by_instances(url: &str) {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use fleetgate_registry::conformance::{fp, poll, user, T0};
    use fleetgate_registry::decision::{Decision, LockState};
    use fleetgate_registry::store::{GrantCommit, GrantResult, Store};

    let idle = Duration::from_millis(600);
    let config = config(url, "outbox");
    let connect = || async {
        RedisStore::connect_with(config.clone())
            .await
            .unwrap()
            .with_webhook_outbox_claiming(1000, idle)
    };
    let (a, b) = (connect().await, connect().await);
    a.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    })
    .await
    .unwrap();
    for i in 0..30u8 {
        let name = format!("dev{i:02}");
        assert_eq!(
            a.register(poll(&name, i), T0).await.unwrap().0,
            Decision::Create
        );
        let granted = b
            .commit_grant(
                GrantCommit {
                    certificate: None,
                    username: name.clone(),
                    fingerprint: fp(i),
                    user: user(&name),
                    granted_at: T0,
                },
                T0,
            )
            .await
            .unwrap();
        assert!(matches!(granted, GrantResult::Granted(_)), "{granted:?}");
    }
    assert_eq!(a.outbox_depth().await.unwrap(), 31);

    // Two readers: disjoint, and together every event.
    let from_a = a.outbox_take(12).await.unwrap();
    assert_eq!(from_a.len(), 12, "a takes what it asks for");
    let from_b = b.outbox_take(100).await.unwrap();
    let ids_a: BTreeSet<String> = from_a.iter().map(|e| e.id.clone()).collect();
    let ids_b: BTreeSet<String> = from_b.iter().map(|e| e.id.clone()).collect();
    assert!(ids_a.is_disjoint(&ids_b), "an event went to both instances");
    assert_eq!(ids_a.len() + ids_b.len(), 31, "every event, once");
    assert!(a.outbox_take(100).await.unwrap().is_empty());

    // b dies holding its events: a takes them over, same ids, once they
    // have been idle long enough, and not before.
    let ack_a: Vec<String> = ids_a.iter().cloned().collect();
    a.outbox_ack(&ack_a).await.unwrap();
    drop(b);
    let start = std::time::Instant::now();
    let mut taken_over = BTreeSet::new();
    while taken_over.len() < ids_b.len() && start.elapsed() < Duration::from_secs(10) {
        for e in a.outbox_take(100).await.unwrap() {
            assert!(
                start.elapsed() >= idle / 2,
                "taken over after {:?}, before the idle time",
                start.elapsed()
            );
            taken_over.insert(e.id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(taken_over, ids_b, "b's events, with their ids");
    let ack: Vec<String> = taken_over.into_iter().collect();
    a.outbox_ack(&ack).await.unwrap();
    assert_eq!(a.outbox_depth().await.unwrap(), 0);

    // A live holder keeps its events through many idle times: it touches
    // them on every take.
    let c = connect().await;
    c.set_lock_state(LockState::default()).await.unwrap();
    let held = c.outbox_take(100).await.unwrap();
    assert_eq!(held.len(), 1);
    let until = std::time::Instant::now() + idle * 3;
    while std::time::Instant::now() < until {
        assert!(c.outbox_take(100).await.unwrap().is_empty());
        assert!(
            a.outbox_take(100).await.unwrap().is_empty(),
            "a live instance's held event was taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.outbox_ack(&[held[0].id.clone()]).await.unwrap();
    // Acknowledging twice, or an id never handed out here, changes nothing.
    c.outbox_ack(&[held[0].id.clone(), "msg_unknown".into()])
        .await
        .unwrap();
    assert_eq!(c.outbox_depth().await.unwrap(), 0);

    // The end of an unlock window: recorded once, by the first sweep
    // after it, whichever instance runs it.
    let until = T0.plus(Duration::from_secs(300));
    a.set_lock_state(LockState {
        unlocked_until: Some(until),
    })
    .await
    .unwrap();
    let unlocked = a.outbox_take(100).await.unwrap();
    assert_eq!(unlocked.len(), 1);
    a.outbox_ack(&[unlocked[0].id.clone()]).await.unwrap();
    a.sweep(T0, 1000).await.unwrap();
    assert!(
        a.outbox_take(100).await.unwrap().is_empty(),
        "not before the end"
    );
    c.sweep(until, 1000).await.unwrap();
    a.sweep(until.plus(Duration::from_secs(5)), 1000)
        .await
        .unwrap();
    let ended = a.outbox_take(100).await.unwrap();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].at, until);
    assert_eq!(ended[0].data["expired"], true);
    assert_eq!(a.lock_state().await.unwrap(), LockState::default());
    a.outbox_ack(&[ended[0].id.clone()]).await.unwrap();

    // The cap: 65 over 65 streams is one entry each; the lock's stream
    // keeps the newest lock event only.
    let capped = RedisStore::connect_with(config.clone())
        .await
        .unwrap()
        .with_webhook_outbox_claiming(65, idle);
    for _ in 0..3 {
        capped.set_lock_state(LockState::default()).await.unwrap();
    }
    let events = capped.outbox_take(100).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(capped.outbox_depth().await.unwrap(), 1);
}
