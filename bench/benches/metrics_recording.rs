//! The metrics recording path of one answered request.
//!
//! - `worker_metrics/*`: `telemetry::WorkerMetrics::request`, what the proxy
//!   calls per request: one counter increment and one histogram record on
//!   handles resolved once per worker.
//! - `macros/*`: the same two updates through `metrics::counter!` and
//!   `metrics::histogram!` at the call site, which look the series up in
//!   the recorder on every call. This is what `WorkerMetrics` avoids.
//!
//! Each runs against the real recorder the binaries install
//! (`fleetgate_registry::metrics::install_recorder`: Prometheus, latency
//! histograms with fixed buckets), and against no recorder (`NoopRecorder`
//! in scope), which is the floor. The histogram buffers samples until the
//! exporter's upkeep drains them; the binaries run upkeep every second, so
//! the bench runs it (untimed) after every 100,000 records, which keeps the
//! buffer at the size a busy worker reaches and memory flat.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench metrics_recording
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate_proxy::telemetry::{Outcome, Transport, WorkerMetrics};
use fleetgate_registry::metrics as names;
use metrics::{with_local_recorder, NoopRecorder};
use metrics_exporter_prometheus::PrometheusHandle;

/// Records between two upkeep runs.
const UPKEEP_EVERY: u64 = 100_000;
/// A typical poll latency, in seconds.
const LATENCY: f64 = 0.000_35;

/// Times `iters` calls of `record`, running `upkeep` (untimed) every
/// [`UPKEEP_EVERY`] calls.
fn timed_with_upkeep(iters: u64, mut record: impl FnMut(), upkeep: impl Fn()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(UPKEEP_EVERY);
        let started = Instant::now();
        for _ in 0..n {
            record();
        }
        total += started.elapsed();
        upkeep();
        left -= n;
    }
    total
}

fn through_macros() {
    metrics::counter!(names::REQUESTS_TOTAL, "transport" => "http", "outcome" => names::outcome::PENDING)
        .increment(1);
    metrics::histogram!(names::REQUEST_DURATION_SECONDS, "transport" => "http")
        .record(black_box(LATENCY));
}

fn metrics_recording(c: &mut Criterion) {
    let handle: PrometheusHandle =
        fleetgate_registry::metrics::install_recorder().expect("the only recorder of this process");
    let prometheus = WorkerMetrics::new();
    let noop = with_local_recorder(&NoopRecorder, WorkerMetrics::new);

    let mut group = c.benchmark_group("metrics_recording");
    group.throughput(Throughput::Elements(1));
    group.bench_function("worker_metrics/prometheus", |b| {
        b.iter_custom(|iters| {
            timed_with_upkeep(
                iters,
                || prometheus.request(Transport::Http, Outcome::Pending, black_box(LATENCY)),
                || handle.run_upkeep(),
            )
        })
    });
    group.bench_function("worker_metrics/no_recorder", |b| {
        b.iter(|| noop.request(Transport::Http, Outcome::Pending, black_box(LATENCY)))
    });
    group.bench_function("macros/prometheus", |b| {
        b.iter_custom(|iters| timed_with_upkeep(iters, through_macros, || handle.run_upkeep()))
    });
    group.bench_function("macros/no_recorder", |b| {
        with_local_recorder(&NoopRecorder, || b.iter(through_macros))
    });
    group.finish();

    // The recorded series must show up, or the bench measured nothing.
    handle.run_upkeep();
    let text = handle.render();
    assert!(
        text.contains(r#"fleetgate_requests_total{transport="http",outcome="pending"}"#),
        "the Prometheus recorder saw no request"
    );
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = metrics_recording
}
criterion_main!(benches);
