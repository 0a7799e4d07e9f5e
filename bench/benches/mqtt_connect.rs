//! MQTT CONNECT parsing: our sans-IO `parse_connect` against the
//! `mqttbytes` crate (0.6, the standalone codec rumqtt published) on the
//! same bytes: an MQTT 3.1.1 CONNECT as `mosquitto_pub` sends it, and an
//! MQTT 5 CONNECT with properties and a will.
//!
//! Both sides start from a fresh `BytesMut` holding the packet, built
//! outside the timed region (`iter_batched_ref`), because `mqttbytes::*::read`
//! consumes its buffer; ours only borrows it. What is timed is what a
//! server does per CONNECT: `mqttbytes` splits the frame off, freezes it and
//! copies the strings into owned `String`s; ours borrows them.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench mqtt_connect
//! ```

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fleetgate_bench::fixtures::{MQTT_V311_CONNECT, MQTT_V5_CONNECT};
use fleetgate_proxy::mqtt::codec::{parse_connect, Parsed, DEFAULT_MAX_REMAINING};

fn ours(buf: &mut BytesMut) {
    match parse_connect(&buf[..], DEFAULT_MAX_REMAINING) {
        Parsed::Complete(connect) => {
            black_box(connect);
        }
        other => panic!("the fixture must parse: {other:?}"),
    }
}

fn mqttbytes_v4(buf: &mut BytesMut) {
    match mqttbytes::v4::read(buf, DEFAULT_MAX_REMAINING) {
        Ok(mqttbytes::v4::Packet::Connect(connect)) => {
            black_box(connect);
        }
        other => panic!("the fixture must parse: {other:?}"),
    }
}

fn mqttbytes_v5(buf: &mut BytesMut) {
    match mqttbytes::v5::read(buf, DEFAULT_MAX_REMAINING) {
        Ok(mqttbytes::v5::Packet::Connect(connect)) => {
            black_box(connect);
        }
        other => panic!("the fixture must parse: {other:?}"),
    }
}

fn mqtt_connect(c: &mut Criterion) {
    type Parser = fn(&mut BytesMut);
    let cases: [(&str, &[u8], Parser, Parser); 2] = [
        ("v311", MQTT_V311_CONNECT, ours, mqttbytes_v4),
        ("v5", MQTT_V5_CONNECT, ours, mqttbytes_v5),
    ];
    for (level, packet, ours, theirs) in cases {
        let mut group = c.benchmark_group(format!("mqtt_connect_{level}"));
        group.throughput(Throughput::Bytes(packet.len() as u64));
        let fresh = || BytesMut::from(packet);
        group.bench_function("fleetgate", |b| {
            b.iter_batched_ref(fresh, ours, BatchSize::SmallInput)
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_batched_ref(fresh, theirs, BatchSize::SmallInput)
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = mqtt_connect
}
criterion_main!(benches);
