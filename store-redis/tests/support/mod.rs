//! Test support for the Redis store's tests: the real servers
//! ([`servers`]) and stores on fresh key prefixes.

#![allow(dead_code)] // each test binary uses a different part of this module

mod servers;
pub use servers::*;

use fleetgate_registry::decision::Windows;
use fleetgate_store_redis::{RedisConfig, RedisStore};

/// Connects a store with a fresh prefix.
pub async fn store(url: &str, name: &str, windows: Windows, max_pending: usize) -> RedisStore {
    RedisStore::connect(url, windows, max_pending, &fresh_prefix(name))
        .await
        .expect("connect")
}

/// A conformance-suite store: a fresh prefix on the server at `url`.
pub async fn conformance_store(url: String, windows: Windows, max_pending: usize) -> RedisStore {
    store(&url, "conformance", windows, max_pending).await
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
            assert_eq!(admin.deny(&name, T0).await.unwrap(), DenyResult::Denied);
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
