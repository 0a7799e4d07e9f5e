//! The conformance suite against the stack the binaries build on Redis:
//! `CachedStore<TokioBridge<RedisStore>>`, with the event listener and the
//! epoch refresher running (`support::production_stack`). Each case is
//! driven from the test's own thread, which is not a tokio one, as a monoio
//! proxy worker drives it: every call crosses the bridge.
//!
//! The cache answers some polls itself. Where that documentedly differs
//! from a plain store (`src/cache.rs`), the case is listed in
//! [`CACHE_EXCEPTIONS`] with its reason, and three things are checked:
//! - the unchanged case still fails on the caching stack (otherwise the
//!   exception is stale and must go);
//! - the unchanged case passes on the same stack with the cache's own
//!   answers turned off (a cache ttl of zero; the bridge, the lock cache,
//!   the invalidations and the refresher all stay);
//! - a test in this file shows the documented difference itself.
//!
//! Every other case must pass on the caching stack unchanged. No assertion
//! of the suite is weakened for the plain backends (`single.rs`,
//! `cluster.rs` run it as it is).

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_registry::conformance::{self, fp, poll, user, AsyncFactory, Factory, T0};
use fleetgate_registry::decision::{Decision, LockState, Windows};
use fleetgate_registry::store::{GrantCommit, GrantResult, Store};
use fleetgate_store_redis::cache::STALE_BOUND;
use fleetgate_store_redis::{CachedStore, PollCache, RedisStore, TokioBridge};
use support::RedisServer;

/// The stack under test.
type Production = CachedStore<TokioBridge<RedisStore>>;

/// The cache ttl of the caching runs: the binaries' default
/// (`--poll-cache-ttl 30s`).
const PRODUCTION_TTL: Duration = Duration::from_secs(30);

/// A conformance case whose unchanged assertions do not hold on the
/// caching stack.
struct CacheException {
    case: &'static str,
    /// The documented behaviour of `src/cache.rs` that makes the difference.
    reason: &'static str,
    /// Part of the panic message the unchanged case gives on the caching
    /// stack, so that the exception covers this difference and no other.
    symptom: &'static str,
}

/// Every conformance case adjusted for the caching stack.
const CACHE_EXCEPTIONS: &[CacheException] = &[
    CacheException {
        case: "poll_lifecycle",
        reason: "a repeated poll within the cache ttl is answered by the cache, so `polls` and \
                 `last_seen` count only the polls that reached the store (the case expects 2 polls)",
        symptom: "left: 1\n right: 2",
    },
    CacheException {
        case: "pending_expires_and_cap_holds",
        reason: "the cache ttl runs on the wall clock, not on the caller's `now`: the case moves \
                 `now` 9 s on within milliseconds, so dev01's polls stay cached, never refresh \
                 `last_seen` in the store, and dev01 expires there at 10 s (in real time a poll \
                 reaches the store at least once per cache ttl, which must stay below `pending_ttl`)",
        symptom: "s.get_request(\"dev01\", t12).await.unwrap().is_some()",
    },
];

fn exception(case: &str) -> Option<&'static CacheException> {
    CACHE_EXCEPTIONS.iter().find(|e| e.case == case)
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A runtime for the stores' I/O (the binaries' tokio runtime) and one
/// Redis server; cases run on the test thread, outside the runtime.
struct Bench {
    runtime: tokio::runtime::Runtime,
    server: RedisServer,
}

impl Bench {
    fn new() -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Bench {
            runtime,
            server: RedisServer::start(),
        }
    }

    /// A conformance factory of caching stacks with `cache_ttl`.
    fn factory(&self, cache_ttl: Duration) -> impl Factory<Production> {
        let handle = self.runtime.handle().clone();
        let url = self.server.url();
        AsyncFactory(move |windows: Windows, max_pending: usize| {
            let (handle, url) = (handle.clone(), url.clone());
            async move {
                // Built on the runtime (it spawns tasks there), handed back
                // to the calling thread.
                let (tx, rx) = tokio::sync::oneshot::channel();
                handle.spawn(async move {
                    let stack =
                        support::production_stack(&url, windows, max_pending, cache_ttl).await;
                    let _ = tx.send(stack);
                });
                rx.await.expect("the stack is built")
            }
        })
    }
}

macro_rules! cached_conformance {
    ($($case:ident),* $(,)?) => {
        /// Every case this file runs, in the suite's order.
        const CASES: &[&str] = &[$(stringify!($case)),*];
        $(
            #[test]
            fn $case() {
                let bench = Bench::new();
                let case = stringify!($case);
                match exception(case) {
                    None => support::block_on(conformance::$case(&bench.factory(PRODUCTION_TTL))),
                    Some(exception) => {
                        let unchanged = catch_unwind(AssertUnwindSafe(|| {
                            support::block_on(conformance::$case(&bench.factory(PRODUCTION_TTL)))
                        }));
                        let Err(payload) = unchanged else {
                            panic!(
                                "{case} now passes on the caching stack: drop its exception ({})",
                                exception.reason
                            );
                        };
                        let message = panic_message(&*payload);
                        assert!(
                            message.contains(exception.symptom),
                            "{case} fails on the caching stack, but not as its exception says \
                             ({:?}): {message}",
                            exception.symptom
                        );
                        support::block_on(conformance::$case(&bench.factory(Duration::ZERO)));
                    }
                }
            }
        )*
    };
}

fleetgate_registry::for_each_conformance_case!(cached_conformance);

#[test]
fn outbox_records_every_decision_through_the_caching_stack() {
    let bench = Bench::new();
    support::block_on(
        conformance::outbox::outbox_holds_every_decision_until_acknowledged(
            &bench.factory(PRODUCTION_TTL),
            conformance::outbox::Order::PerUsername,
        ),
    );
}

#[test]
fn every_case_of_the_suite_runs_here_and_every_exception_is_a_case() {
    // The list comes from the suite's own macro; this holds the generated
    // tests to it, and each exception to a real case.
    assert_eq!(
        CASES,
        conformance::CASES,
        "this file's case list is the suite's"
    );
    for e in CACHE_EXCEPTIONS {
        assert!(
            CASES.contains(&e.case),
            "exception for unknown case {}",
            e.case
        );
        assert!(!e.reason.is_empty() && !e.symptom.is_empty());
    }
}

fn unlocked() -> LockState {
    LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    }
}

/// The difference behind both exceptions: a repeated poll within the cache
/// ttl is answered by the cache and never reaches the store, so the
/// store's `polls` and `last_seen` stay as they were; the first poll after
/// the ttl reaches the store and counts.
#[test]
fn a_repeated_poll_reaches_the_store_only_after_the_cache_ttl() {
    let bench = Bench::new();
    let ttl = Duration::from_millis(500);
    let stack = support::block_on(bench.factory(ttl).make(Windows::default(), 100));
    support::block_on(async {
        stack.set_lock_state(unlocked()).await.unwrap();
        let created = Instant::now();
        let (d, _) = stack.register(poll("dev01", 1), T0).await.unwrap();
        assert_eq!(d, Decision::Create);
        let t1 = T0.plus(Duration::from_secs(1));
        let (d, _) = stack.register(poll("dev01", 1), t1).await.unwrap();
        assert!(
            created.elapsed() < ttl,
            "too slow a machine for a {ttl:?} ttl"
        );
        assert_eq!(d, Decision::StillPending);
        let r = stack.get_request("dev01", t1).await.unwrap().unwrap();
        assert_eq!(
            (r.polls, r.last_seen),
            (1, T0),
            "answered by the cache, not counted"
        );

        std::thread::sleep(ttl.saturating_sub(created.elapsed()));
        let t2 = T0.plus(Duration::from_secs(2));
        let (d, _) = stack.register(poll("dev01", 1), t2).await.unwrap();
        assert_eq!(d, Decision::StillPending);
        let r = stack.get_request("dev01", t2).await.unwrap().unwrap();
        assert_eq!(
            (r.polls, r.last_seen),
            (2, t2),
            "past the ttl, the poll reached the store"
        );
    });
}

/// The staleness `src/cache.rs` documents: a grant or denial made on
/// another instance whose event this proxy never hears is answered stale
/// (still pending, no such user) while the last epoch reading is younger
/// than `STALE_BOUND`, and correctly after the bound, or at once after a
/// new epoch reading.
#[test]
fn a_lost_event_is_stale_within_the_bound_and_fresh_after_it() {
    let bench = Bench::new();
    let handle = bench.runtime.handle().clone();
    let config = support::config(&bench.server.url(), "lost-event");
    let (admin, proxy) = bench.runtime.block_on(async {
        (
            RedisStore::connect_with(config.clone()).await.unwrap(),
            Arc::new(RedisStore::connect_with(config).await.unwrap()),
        )
    });
    let admin = TokioBridge::new(Arc::new(admin), handle.clone());
    // No event listener (every event is lost) and no refresher: epoch
    // readings happen exactly where this test takes them.
    let cache = PollCache::new(Duration::from_secs(30), 1000);
    let stack = CachedStore::new(
        Arc::new(TokioBridge::new(proxy.clone(), handle)),
        cache.clone(),
    );
    let read_epochs = || {
        let at = Instant::now();
        let epochs = bench.runtime.block_on(proxy.bucket_epochs()).unwrap();
        cache.apply_epochs(&epochs, at);
        at
    };
    let grant = GrantCommit {
        certificate: None,
        username: "dev01".into(),
        fingerprint: fp(1),
        user: user("dev01"),
        granted_at: T0,
    };

    // The first reading drops everything (nothing to compare with yet).
    read_epochs();
    support::block_on(stack.set_lock_state(unlocked())).unwrap();
    let register = |name| {
        support::block_on(stack.register(poll(name, 1), T0))
            .unwrap()
            .0
    };
    assert_eq!(register("dev01"), Decision::Create);
    assert_eq!(register("dev02"), Decision::Create);
    // Nothing changed in any bucket: the entries stay, trusted anew.
    let read_at = read_epochs();
    assert!(matches!(
        support::block_on(admin.commit_grant(grant, T0)).unwrap(),
        GrantResult::Granted(_)
    ));
    assert_eq!(
        support::block_on(admin.deny("dev02", None, T0)).unwrap(),
        fleetgate_registry::store::DenyResult::Denied
    );

    // Within the bound: stale.
    let (d1, d2) = (register("dev01"), register("dev02"));
    let stale_user = support::block_on(stack.get_user("dev01")).unwrap();
    assert!(
        read_at.elapsed() < STALE_BOUND,
        "too slow a machine for this test"
    );
    assert_eq!(d1, Decision::StillPending, "the grant is not seen yet");
    assert_eq!(d2, Decision::StillPending, "the denial is not seen yet");
    assert_eq!(stale_user, None, "the cache still says there is no user");
    assert_eq!(
        support::block_on(admin.get_user("dev01")).unwrap(),
        Some(user("dev01"))
    );

    // A new reading sees dev02's bucket epoch move (and dev01's).
    read_epochs();
    assert_eq!(register("dev02"), Decision::Denied);
    assert_eq!(register("dev01"), Decision::Collect);

    // And without any new reading, the bound alone ends staleness.
    assert_eq!(register("dev03"), Decision::Create);
    let read_at = read_epochs();
    support::block_on(admin.deny("dev03", None, T0)).unwrap();
    assert_eq!(register("dev03"), Decision::StillPending, "stale");
    std::thread::sleep(STALE_BOUND.saturating_sub(read_at.elapsed()));
    assert_eq!(register("dev03"), Decision::Denied, "fresh after the bound");
}
