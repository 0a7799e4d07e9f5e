//! The GCRA rate limiter (`proxy::limiter::Limiter::check`) at the proxy's
//! defaults: `--rate-limit-per-user 5/10s`, `--rate-limit-keys 1000000`,
//! keyed by username as the register route keys it.
//!
//! - `hot_key_allowed`: one device polling at exactly its sustained rate
//!   (the clock moves 2 s per check), so every check is allowed and
//!   updates the bucket in place.
//! - `hot_key_denied`: one device flapping far over its budget (the clock
//!   stands still), so every check is refused without a write.
//! - `rotating_100k_allowed`, `rotating_500k_allowed`: 100,000 or 500,000
//!   devices in turn, each at its sustained rate, so every check finds a
//!   different bucket, spread over all shards.
//!
//! The clock is computed, not read: `Instant::now()` would cost as much as
//! the check itself.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench rate_limiter
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate_bench::pending::DeviceName;
use fleetgate_proxy::limiter::{device_key, Limiter, Rate, Verdict};

/// Every device's password (the per-device key is username + credential).
const PASSWORD: &[u8] = b"s3cret-pass";

/// The proxy's default `--rate-limit-per-user`.
const PER_USER: Rate = Rate {
    limit: 5,
    window: Duration::from_secs(10),
};
/// The proxy's default `--rate-limit-keys`.
const MAX_KEYS: usize = 1_000_000;
/// The rotating fleets: 100,000 devices, and the 500,000 of the keep-alive
/// comparison with nginx (half the default key cap: every shard's keys fill
/// exactly one generation, so every check moves its key between them).
const ROTATING_KEYS: [u32; 2] = [100_000, 500_000];

fn rate_limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limiter");
    group.throughput(Throughput::Elements(1));
    let sustained = PER_USER.window / PER_USER.limit;

    // Each limiter and clock lives across criterion's samples, so buckets
    // are updated in place rather than re-created per sample.
    let hot = Limiter::new(PER_USER, MAX_KEYS);
    let mut now = Instant::now();
    group.bench_function("hot_key_allowed", |b| {
        b.iter(|| {
            now += sustained;
            let v = hot.check(&device_key(black_box("device-000123"), PASSWORD), now);
            debug_assert_eq!(v, Verdict::Allow);
            v
        })
    });

    let flapping = Limiter::new(PER_USER, MAX_KEYS);
    let frozen = Instant::now();
    for _ in 0..PER_USER.limit {
        flapping.check(&device_key("device-000123", PASSWORD), frozen);
    }
    group.bench_function("hot_key_denied", |b| {
        b.iter(|| {
            let v = flapping.check(&device_key(black_box("device-000123"), PASSWORD), frozen);
            debug_assert!(matches!(v, Verdict::Deny { .. }));
            v
        })
    });

    for keys in ROTATING_KEYS {
        let rotating = Limiter::new(PER_USER, MAX_KEYS);
        let step = sustained / keys;
        let mut now = Instant::now();
        for i in 0..keys {
            now += step;
            rotating.check(&device_key(DeviceName::new(i).as_str(), PASSWORD), now);
        }
        let mut i = 0u32;
        let name = format!("rotating_{}k_allowed", keys / 1000);
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                now += step;
                let name = DeviceName::new(i);
                i = if i + 1 == keys { 0 } else { i + 1 };
                let v = rotating.check(&device_key(black_box(name.as_str()), PASSWORD), now);
                debug_assert_eq!(v, Verdict::Allow);
                v
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = rate_limiter
}
criterion_main!(benches);
