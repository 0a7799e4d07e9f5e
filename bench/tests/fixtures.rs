//! The bench fixtures are what their annotations say, for our parsers and
//! for `mqttbytes` alike, so no bench times an error path by accident; and
//! quick mode switches on exactly when criterion will not measure.

use bytes::BytesMut;
use fleetgate_bench::fixtures::*;
use fleetgate_bench::pending::{
    fill_pending, now_or_never, unlocked_store, DeviceName, XorShift64,
};
use fleetgate_bench::quick_mode_from;
use fleetgate_bench::rss::parse_vm_rss;
use fleetgate_proxy::http::codec::{parse, Limits, Parsed};
use fleetgate_proxy::mqtt::codec::{self, parse_connect, Level, DEFAULT_MAX_REMAINING};
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::request::RegisterRequest;
use fleetgate_registry::store::Store;
use fleetgate_registry::UnixMillis;

#[test]
fn http_poll_and_pipelined_pair_parse_completely() {
    let limits = Limits::default();
    let Parsed::Complete(r) = parse(HTTP_POLL, &limits) else {
        panic!("HTTP_POLL must be complete");
    };
    assert_eq!(
        (r.method, r.path, r.len),
        ("POST", "/api/client-registry/register", HTTP_POLL.len())
    );
    assert_eq!(r.headers.len(), HTTP_POLL_HEADERS);
    assert_eq!(r.body, HTTP_POLL_BODY);
    assert_eq!(HTTP_POLL_BODY.len(), 40);
    assert!(r.keep_alive);

    let pair = http_pipelined_pair();
    let Parsed::Complete(first) = parse(&pair, &limits) else {
        panic!("the first of the pair must be complete");
    };
    assert_eq!(first.len, HTTP_POLL.len());
    let Parsed::Complete(second) = parse(&pair[first.len..], &limits) else {
        panic!("the second of the pair must be complete");
    };
    assert_eq!(first.len + second.len, pair.len());
}

#[test]
fn mqtt_v311_connect_reads_the_same_with_both_parsers() {
    let codec::Parsed::Complete(ours) = parse_connect(MQTT_V311_CONNECT, DEFAULT_MAX_REMAINING)
    else {
        panic!("ours must parse the 3.1.1 CONNECT");
    };
    assert_eq!(ours.level, Level::V311);
    assert_eq!(ours.len, MQTT_V311_CONNECT.len());

    let mut buf = BytesMut::from(MQTT_V311_CONNECT);
    let Ok(mqttbytes::v4::Packet::Connect(theirs)) =
        mqttbytes::v4::read(&mut buf, DEFAULT_MAX_REMAINING)
    else {
        panic!("mqttbytes must parse the 3.1.1 CONNECT");
    };
    assert!(buf.is_empty(), "mqttbytes consumed the whole packet");
    assert_eq!(theirs.client_id, ours.client_id);
    assert_eq!(theirs.keep_alive, ours.keep_alive);
    let login = theirs.login.expect("a login");
    assert_eq!(Some(login.username.as_str()), ours.username);
    assert_eq!(Some(login.password.as_bytes()), ours.password);
}

#[test]
fn mqtt_v5_connect_reads_the_same_with_both_parsers() {
    let codec::Parsed::Complete(ours) = parse_connect(MQTT_V5_CONNECT, DEFAULT_MAX_REMAINING)
    else {
        panic!("ours must parse the v5 CONNECT");
    };
    assert_eq!(ours.level, Level::V5);
    assert!(ours.will);

    let mut buf = BytesMut::from(MQTT_V5_CONNECT);
    let Ok(mqttbytes::v5::Packet::Connect(theirs)) =
        mqttbytes::v5::read(&mut buf, DEFAULT_MAX_REMAINING)
    else {
        panic!("mqttbytes must parse the v5 CONNECT");
    };
    assert!(buf.is_empty(), "mqttbytes consumed the whole packet");
    assert_eq!(theirs.client_id, ours.client_id);
    assert!(theirs.last_will.is_some());
    assert_eq!(
        theirs.login.map(|l| l.username),
        ours.username.map(str::to_owned)
    );
}

#[test]
fn register_bodies_are_valid() {
    let minimal = RegisterRequest::parse(REGISTER_BODY_MINIMAL).expect("valid");
    assert!(minimal.roles.is_empty() && minimal.permissions.is_empty());
    let full = RegisterRequest::parse(REGISTER_BODY_FULL).expect("valid");
    assert_eq!((full.roles.len(), full.permissions.len()), (2, 2));
    assert!(full.context.is_some());
}

#[test]
fn device_names_are_fixed_width_and_distinct() {
    assert_eq!(DeviceName::new(0).as_str(), "device-000000");
    assert_eq!(DeviceName::new(123).as_str(), "device-000123");
    assert_eq!(DeviceName::new(999_999).as_str(), "device-999999");
    let mut order = XorShift64::new(1).permutation(1000);
    order.sort_unstable();
    assert_eq!(order, (0..1000).collect::<Vec<_>>());
}

#[test]
fn fill_pending_creates_every_request() {
    let now = UnixMillis(1_800_000_000_000);
    let store = unlocked_store(500, now);
    fill_pending(&store, 500, now);
    assert_eq!(now_or_never(store.pending_count()), Ok(500));
    let r = now_or_never(store.get_request("device-000499", now))
        .unwrap()
        .expect("the last device is pending");
    assert_eq!(r.fingerprint, Fingerprint([7; 32]));
}

#[test]
fn quick_mode_follows_criterion_and_the_env() {
    let quick = |args: &[&str], env: Option<&str>| {
        quick_mode_from(args.iter().copied(), env.map(std::ffi::OsStr::new))
    };
    // `cargo bench` measures.
    assert!(!quick(&["store_decision", "--bench"], None));
    assert!(!quick(&["store_decision", "--bench", "repoll"], Some("0")));
    // `cargo bench -- --test`, `cargo test --benches`, `--list`: no measuring.
    assert!(quick(&["store_decision", "--bench", "--test"], None));
    assert!(quick(&["store_decision"], None));
    assert!(quick(&["store_decision", "--bench", "--list"], None));
    // The env switch.
    assert!(quick(&["store_decision", "--bench"], Some("1")));
}

#[test]
fn vm_rss_is_read_in_bytes() {
    let status = "Name:\tbench\nVmPeak:\t  10 kB\nVmRSS:\t   2048 kB\nThreads:\t1\n";
    assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
    assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    if cfg!(target_os = "linux") {
        assert!(fleetgate_bench::rss::vm_rss_bytes().unwrap() > 0);
    }
}
