//! The Redis store against a real Redis Cluster: three masters with one
//! replica each, started on loopback by the test. The whole conformance
//! suite runs on it (every script touches one bucket's hash tag, so a
//! cross-slot script would fail here), then the races, events and `WAIT`,
//! and finally a master failover during a stream of grants.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::conformance::{self, poll, user, AsyncFactory, T0};
use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::RequestState;
use fleetgate_registry::store::{GrantCommit, GrantResult, Store, StoreError};
use fleetgate_store_redis::{RedisStore, StoreEvent, WaitReplicas};
use support::RedisCluster;

fn grant_of(username: &str, now: UnixMillis) -> GrantCommit {
    GrantCommit {
        certificate: None,
        username: username.into(),
        fingerprint: Fingerprint([1; 32]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_passes_the_suite_and_keeps_transitions_atomic() {
    let cluster = RedisCluster::start();
    let url = cluster.url();

    // The whole conformance suite.
    conformance::run_all(&AsyncFactory(|w, max| {
        support::conformance_store(url.clone(), w, max)
    }))
    .await;

    // The webhook outbox: every script's append is in its own slot, and
    // the consumer group works per stream across the masters.
    conformance::outbox::outbox_holds_every_decision_until_acknowledged(
        &AsyncFactory(|w, max| support::conformance_store(url.clone(), w, max)),
        conformance::outbox::Order::PerUsername,
    )
    .await;
    support::outbox_is_shared_by_instances(&url).await;

    // Two instances grant the same requests at once: one user each.
    let mut config = support::config(&url, "cgrants");
    config.wait_replicas = Some(WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(500),
    });
    let a = Arc::new(RedisStore::connect_with(config.clone()).await.unwrap());
    let b = Arc::new(RedisStore::connect_with(config).await.unwrap());
    assert!(a.is_cluster());
    let mut events = a.subscribe_events();
    assert_eq!(next_event(&mut events).await, StoreEvent::Resync);
    unlock(&a).await;
    assert!(matches!(next_event(&mut events).await, StoreEvent::Lock(_)));
    for round in 0..10 {
        let name = format!("dev{round:02}");
        assert_eq!(
            b.register(poll(&name, 1), T0).await.unwrap().0,
            Decision::Create
        );
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let name = name.clone();
                tokio::spawn(async move { s.commit_grant(grant_of(&name, T0), T0).await })
            })
            .collect();
        let mut granted = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                GrantResult::Granted(_) => granted += 1,
                GrantResult::AlreadyGranted(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(granted, 1, "round {round}");
        // Published by the grant script on whichever master holds the
        // bucket; the subscription is on one node and sees it.
        assert_eq!(next_event(&mut events).await, StoreEvent::Granted(name));
    }

    // The cap holds under concurrency across buckets on three masters.
    let mut config = support::config(&url, "ccap");
    config.max_pending = 7;
    let c = Arc::new(RedisStore::connect_with(config).await.unwrap());
    unlock(&c).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let name = format!("dev{i:03}");
                c.register(poll(&name, 1), T0).await.map(|r| r.0)
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Decision::Create) => created += 1,
            Err(StoreError::PendingLimit { max: 7 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 7);
    assert_eq!(c.pending_count().await.unwrap(), 7);

    // One secret for every instance on the cluster.
    assert_eq!(
        a.load_or_create_secret().await.unwrap(),
        b.load_or_create_secret().await.unwrap()
    );
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("an event within 2 s")
        .expect("subscription open")
}

/// Grants keep coming while one master is killed. Grants are acknowledged
/// only after `WAIT 1`, so every acknowledged grant is on a replica, and is
/// still there after that replica took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_grants_survive_a_master_failover() {
    let cluster = RedisCluster::start();
    let mut config = support::config(&cluster.url(), "failover");
    config.wait_replicas = Some(WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(200),
    });
    let s = Arc::new(RedisStore::connect_with(config).await.unwrap());
    unlock(&s).await;
    let victim_key = s.key_space().user_keys("dev00000").request;

    // Stream grants: create a request, grant it, and remember when each
    // grant was acknowledged. A grant that fails is retried a few times,
    // then left unacknowledged.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let s = s.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failures = 0;
            // The slowest call: even during the failover, every call must
            // answer within the operation timeout (1 s).
            let mut slowest = Duration::ZERO;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("dev{i:05}");
                i += 1;
                let t = Instant::now();
                let created = s.register(poll(&name, 1), T0).await;
                slowest = slowest.max(t.elapsed());
                if !matches!(created, Ok((Decision::Create, _))) {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                for _ in 0..5 {
                    let t = Instant::now();
                    let granted = s.commit_grant(grant_of(&name, T0), T0).await;
                    slowest = slowest.max(t.elapsed());
                    match granted {
                        Ok(GrantResult::Granted(_) | GrantResult::AlreadyGranted(_)) => {
                            acknowledged.push((name.clone(), Instant::now()));
                            break;
                        }
                        Ok(other) => panic!("{name}: {other:?}"),
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            (acknowledged, failures, slowest)
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let victim = cluster.master_of(&victim_key);
        let killed_at = Instant::now();
        cluster.nodes[victim].stop();
        let promoted = cluster.wait_for_master_of(&victim_key, Duration::from_secs(15));
        eprintln!(
            "node {promoted} took over from node {victim} {:?} after the kill",
            killed_at.elapsed()
        );
        // The old master comes back as a replica of the new one, so that
        // grants on its slots can be acknowledged again.
        cluster.nodes[victim].restart();
        cluster.wait_ready(Duration::from_secs(15));
        eprintln!("replica back {:?} after the kill", killed_at.elapsed());
        (cluster, promoted, Instant::now())
    })
    .await
    .unwrap();
    let (ref mut nodes, promoted, healed_at) = cluster;
    // Keep granting on the new topology for a while.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, failures, slowest) = worker.await.unwrap();
    eprintln!(
        "{} grants acknowledged, {failures} calls failed during the failover, slowest call {slowest:?}",
        acknowledged.len()
    );
    assert!(
        slowest < Duration::from_millis(1200),
        "a call took {slowest:?}"
    );

    for (name, _) in &acknowledged {
        assert_eq!(
            s.get_user(name).await.unwrap(),
            Some(user(name)),
            "{name} lost"
        );
        let r = s.get_request(name, T0).await.unwrap().unwrap();
        assert_eq!(r.state, RequestState::Granted { granted_at: T0 });
    }
    // The store followed the promoted master (new topology, script cache
    // reloaded on NOSCRIPT): grants on its slots were acknowledged after.
    let on_promoted = acknowledged
        .iter()
        .filter(|(_, at)| *at > healed_at)
        .any(|(name, _)| nodes.master_of(&s.key_space().user_keys(name).request) == promoted);
    assert!(
        on_promoted,
        "no grant on the promoted master's slots after the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_reaches_the_cache_within_the_stale_bound_on_a_cluster() {
    let cluster = RedisCluster::start();
    let slowest = support::lost_events_reach_the_cache_within_the_bound(&cluster.url()).await;
    eprintln!("slowest visibility without events: {slowest:?}");
}

/// The `calls=` figure of one command in `INFO commandstats`, summed over
/// every node of the cluster.
fn command_calls(cluster: &RedisCluster, command: &str) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["info", "commandstats"])
                .lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |c| c.parse().unwrap())
        })
        .sum()
}

/// A group of grants on a cluster goes as one pipeline per bucket, each
/// with one `WAIT 1` on the bucket's master: 1,000 grants (plus the first
/// two again at the end) cost at most one `WAIT` per bucket, not one per
/// grant. Results come back in the order given, and a repeat in the same
/// group sees the first grant (`AlreadyGranted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_grants_is_one_pipeline_per_bucket() {
    use fleetgate_store_redis::keys::BUCKETS;

    let cluster = RedisCluster::start();
    let mut config = support::config(&cluster.url(), "cgroup");
    config.wait_replicas = Some(WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(500),
    });
    let s = RedisStore::connect_with(config).await.unwrap();
    unlock(&s).await;
    let names: Vec<String> = (0..1000).map(|i| format!("dev{i:04}")).collect();
    for chunk in names.chunks(200) {
        let creates = chunk.iter().map(|n| s.register(poll(n, 1), T0));
        for r in futures_util::future::join_all(creates).await {
            assert_eq!(r.unwrap().0, Decision::Create);
        }
    }
    let mut group: Vec<GrantCommit> = names.iter().map(|n| grant_of(n, T0)).collect();
    group.push(grant_of(&names[0], T0));
    group.push(grant_of(&names[1], T0));
    let waits = command_calls(&cluster, "wait");
    let results = s.commit_grants(group, T0).await.unwrap();
    let sent_waits = command_calls(&cluster, "wait") - waits;
    assert_eq!(results.len(), 1002);
    for (name, r) in names.iter().zip(&results) {
        assert!(
            matches!(r, GrantResult::Granted(rec) if &rec.username == name),
            "{name}: {r:?}"
        );
    }
    for (name, r) in names[..2].iter().zip(&results[1000..]) {
        assert!(
            matches!(r, GrantResult::AlreadyGranted(rec) if &rec.username == name),
            "{name} again: {r:?}"
        );
    }
    assert!(
        (1..=BUCKETS as u64).contains(&sent_waits),
        "{sent_waits} WAITs for 1002 grants"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
}
