//! The full registration decision on the embedded store: `Store::register`
//! for a device whose request is already pending (decision `StillPending`:
//! one shard lock, a map lookup, the decision, and a refresh of
//! `last_seen` and the poll count), with 1,000 and with 1,000,000 pending
//! requests. Each poll picks a random device from the set, so the large
//! store is read the way a storm reads it: all over memory, not in order.
//!
//! The secret is passed as `SealOnCreate::Lazy`, as `Registry` passes it, so
//! a re-poll allocates nothing. The future is polled once with a no-op waker:
//! the embedded store never suspends.
//!
//! In quick mode (`-- --test`, or `FLEETGATE_BENCH_QUICK=1`) the large case
//! is filled with 100,000 requests instead of 1,000,000, and its id says so.
//! Each store is filled the first time its bench runs, so a filter that
//! skips it also skips the fill.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench store_decision
//! ```

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fleetgate_bench::pending::{
    fill_pending, now_or_never, plain_poll, unlocked_store, DeviceName, XorShift64,
    BENCH_FINGERPRINT,
};
use fleetgate_bench::{quick_mode, QUICK_LARGE_PENDING};
use fleetgate_registry::decision::Decision;
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::fingerprint::CredentialKind;
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::{SealOnCreate, Store};
use fleetgate_registry::UnixMillis;

const SMALL: u32 = 1_000;
const LARGE: u32 = 1_000_000;

fn store_decision(c: &mut Criterion) {
    let quick = quick_mode();
    let large = if quick {
        println!(
            "quick mode: the {LARGE}-pending case is filled with {QUICK_LARGE_PENDING} requests"
        );
        QUICK_LARGE_PENDING
    } else {
        LARGE
    };
    let now = UnixMillis::now();
    let secrets = Secrets::derive(&[42; 32]);

    let mut group = c.benchmark_group("store_decision");
    group.throughput(Throughput::Elements(1));
    for (size, label) in [
        (SMALL, SMALL.to_string()),
        (
            large,
            if quick {
                format!("{large}_quick")
            } else {
                large.to_string()
            },
        ),
    ] {
        let mut store: Option<EmbeddedStore> = None;
        let mut rng = XorShift64::new(0xdec1_5104);
        group.bench_function(BenchmarkId::new("repoll_pending", label), |b| {
            let store = store.get_or_insert_with(|| {
                let started = Instant::now();
                let s = unlocked_store(size as usize, now);
                fill_pending(&s, size, now);
                println!(
                    "filled {size} pending requests in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                s
            });
            b.iter(|| {
                let name = DeviceName::new(rng.below(size));
                let username = name.as_str();
                let poll = plain_poll(
                    black_box(username),
                    BENCH_FINGERPRINT,
                    SealOnCreate::Lazy {
                        secrets: &secrets,
                        fingerprint: BENCH_FINGERPRINT,
                        username,
                        kind: CredentialKind::Password,
                        secret: b"s3cret-pass1",
                    },
                );
                let (decision, _) =
                    now_or_never(store.register(poll, now)).expect("no store error");
                debug_assert_eq!(decision, Decision::StillPending);
                decision
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = store_decision
}
criterion_main!(benches);
