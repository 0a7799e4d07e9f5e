//! HTTP/1.1 request parsing (`proxy::http::codec::parse`): one register
//! poll as curl sends it, and two polls pipelined in one buffer.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench http_parse
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate_bench::fixtures::{http_pipelined_pair, HTTP_POLL};
use fleetgate_proxy::http::codec::{parse, Limits, Parsed};

/// Parses every request in `buf`; returns how many there were.
fn parse_all(buf: &[u8], limits: &Limits) -> usize {
    let mut rest = buf;
    let mut n = 0;
    while !rest.is_empty() {
        match parse(rest, limits) {
            Parsed::Complete(req) => {
                black_box(&req);
                rest = &rest[req.len..];
                n += 1;
            }
            other => panic!("the fixture must parse: {other:?}"),
        }
    }
    n
}

fn http_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("http_parse");

    group.throughput(Throughput::Bytes(HTTP_POLL.len() as u64));
    group.bench_function("register_poll", |b| {
        b.iter(|| parse_all(black_box(HTTP_POLL), &limits))
    });

    let pair = http_pipelined_pair();
    group.throughput(Throughput::Bytes(pair.len() as u64));
    group.bench_function("pipelined_pair", |b| {
        b.iter(|| parse_all(black_box(&pair), &limits))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = http_parse
}
criterion_main!(benches);
