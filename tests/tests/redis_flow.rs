//! Several gateway processes sharing one Redis (and one Redis Cluster):
//! two proxies without an admin of their own forward `/api/*` to one
//! `fleetgate-admin`. A device polls one proxy and collects its 201 from
//! the other. When Redis stops, devices get 503 with `Retry-After`, and
//! service comes back by itself with every grant intact.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetgate_tests::redis::{RedisCluster, RedisServer};
use fleetgate_tests::*;

/// One `fleetgate-admin` and two proxies on the store at `url`.
struct Deployment {
    admin: Process,
    admin_addr: SocketAddr,
    proxies: Vec<(Process, SocketAddr, SocketAddr)>,
    /// Each proxy's HTTPS listener.
    https: Vec<SocketAddr>,
    /// The data dir both proxies share (each generates the TLS certificate
    /// there only if the other has not: one pair wins).
    data_dir: tempfile::TempDir,
}

fn deploy(url: &str) -> Deployment {
    let prefix = format!("e2e{}", std::process::id());
    let mut admin = spawn(
        "fleetgate-admin",
        &[
            "--store",
            url,
            "--redis-prefix",
            &prefix,
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-password",
            ADMIN_PASSWORD,
        ],
        &[],
    );
    let admin_addr = admin.logged_addr("admin API listening");
    let upstream = format!("http://{admin_addr}");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let data = data_dir.path().to_str().expect("utf-8 path").to_owned();
    let mut https = Vec::new();
    let proxies = (0..2)
        .map(|_| {
            let mut p = spawn(
                "fleetgate",
                &[
                    "--store",
                    url,
                    "--redis-prefix",
                    &prefix,
                    "--admin-listen",
                    "off",
                    "--admin-upstream",
                    &upstream,
                    "--http-listen",
                    "127.0.0.1:0",
                    "--mqtt-listen",
                    "127.0.0.1:0",
                    "--https-listen",
                    "127.0.0.1:0",
                    "--mqtts-listen",
                    "off",
                    "--data-dir",
                    &data,
                    "--metrics-listen",
                    "off",
                    "--workers",
                    "2",
                    "--rate-limit-per-user",
                    "off",
                    "--rate-limit-per-ip",
                    "off",
                    "--admin-password",
                    ADMIN_PASSWORD,
                ],
                &[],
            );
            let http = p.logged_addr("device API listening");
            let mqtt = p.logged_addr("MQTT listening");
            https.push(p.logged_addr("HTTPS listening"));
            (p, http, mqtt)
        })
        .collect();
    Deployment {
        admin,
        admin_addr,
        proxies,
        https,
        data_dir,
    }
}

fn shared_state_across_instances(url: &str) {
    let d = deploy(url);
    let (p1, p2) = (d.proxies[0].1, d.proxies[1].1);
    let device = creds("plc-shared-1", "s3cret-pass");
    assert_eq!(register(p1, &device).status, 423);

    // Login through proxy 2 is forwarded to the separate admin; the rest
    // of the admin API is not on device ports (404), only on the admin.
    let token = login(p2, "admin", ADMIN_PASSWORD);
    let r = authed(p2, &token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/unlock",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Proxy 1 sees the unlock.
    let r = register(p1, &device);
    assert_eq!(r.status, 202, "{}", r.text());
    let pairing = r.json()["pairingId"].clone();
    // ... and proxy 2 sees the same pending request.
    assert_eq!(register(p2, &device).json()["pairingId"], pairing);
    assert_eq!(
        register(p2, &creds("plc-shared-1", "other-pass")).status,
        409
    );
    let r = authed(
        d.admin_addr,
        &token,
        "GET",
        "/api/client-registry/requests/plc-shared-1",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["polls"], 2);

    // Grant on the admin; collect from proxy 2; log in through either proxy.
    let r = authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/requests/plc-shared-1/grant",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Both proxies have the request cached as pending; each must answer 201
    // within the documented bound (the grant's event normally makes it the
    // very next poll, but asserting that would race the event).
    let (r, _) = poll_until(
        VISIBILITY_DEADLINE,
        || register(p2, &device),
        |r| r.status != 202,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["pairingId"], pairing);
    let (r, _) = poll_until(
        VISIBILITY_DEADLINE,
        || register(p1, &device),
        |r| r.status != 202,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    login(p1, "plc-shared-1", "s3cret-pass");
    login(p2, "plc-shared-1", "s3cret-pass");

    // MQTT on proxy 1 authenticates the same user (no upstream: 3).
    let connect = mqtt_connect(
        MqttLevel::V311,
        "c1",
        Some("plc-shared-1"),
        Some(b"s3cret-pass"),
    );
    assert_eq!(
        mqtt_exchange(d.proxies[0].2, &connect),
        [0x20, 0x02, 0x00, 0x03]
    );
    let wrong = mqtt_connect(
        MqttLevel::V311,
        "c1",
        Some("plc-shared-1"),
        Some(b"wrong-pass"),
    );
    assert_eq!(
        mqtt_exchange(d.proxies[1].2, &wrong),
        [0x20, 0x02, 0x00, 0x04]
    );

    // A CSR device over HTTPS: registered on proxy 1, granted by the admin
    // (which signs with the CA shared through the store), collected on
    // proxy 2, and logged in with its certificate on proxy 1.
    let (h1, h2) = (d.https[0], d.https[1]);
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "plc-cert-1", "/CN=plc-cert-1");
    let body = serde_json::json!({"username": "plc-cert-1", "csr": csr}).to_string();
    let path = "/api/client-registry/register";
    let (status, text) = curl_https(h1, None, "POST", path, Some(&body), &[]).unwrap();
    assert_eq!(status, 202, "{text}");
    let r = authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/requests/plc-cert-1/grant",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Proxy 2 has not seen this device yet, so its first poll reaches the
    // store; it is polled until the deadline all the same, because a cached
    // entry would be a legitimate reason for one more 202.
    let ((status, text), _) = poll_until(
        VISIBILITY_DEADLINE,
        || curl_https(h2, None, "POST", path, Some(&body), &[]).unwrap(),
        |(status, _)| *status != 202,
    );
    assert_eq!(status, 201, "{text}");
    let granted: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cert = dir.path().join("plc-cert-1.crt");
    std::fs::write(&cert, granted["certificate"].as_str().unwrap()).unwrap();
    let key = dir.path().join("plc-cert-1.key");
    let cert_args = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (status, text) = curl_https(h1, None, "POST", "/api/login", None, &cert_args).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"token\""), "{text}");
    // Both proxies present the one certificate they generated between them.
    let generated = d.data_dir.path().join("tls-cert.pem");
    for h in [h1, h2] {
        let (status, _) = curl_https(h, Some(&generated), "GET", "/healthz", None, &[]).unwrap();
        assert_eq!(status, 200);
    }
    drop(d.admin);
}

#[test]
fn two_proxies_and_an_admin_share_one_redis() {
    let redis = RedisServer::start();
    shared_state_across_instances(&redis.url());
}

#[test]
fn two_proxies_and_an_admin_share_one_redis_cluster() {
    let cluster = RedisCluster::start();
    shared_state_across_instances(&cluster.url());
}

/// Every proxy's event subscription is killed (`CLIENT KILL TYPE pubsub`
/// on every node) just before each grant, so the grant's event is lost.
/// Each proxy must still answer 201 within the documented bound: the
/// resubscribe flushes its cache, and the bucket epochs it re-reads four
/// times a second cover an event lost without a reconnect.
fn lost_events_across_instances(url: &str, nodes: &[&RedisServer]) {
    let d = deploy(url);
    let (p1, p2) = (d.proxies[0].1, d.proxies[1].1);
    let token = login(d.admin_addr, "admin", ADMIN_PASSWORD);
    let r = authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/unlock",
        br#"{"durationMs":600000}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let name = format!("plc-lost-{i}");
        let device = creds(&name, "s3cret-pass");
        for p in [p1, p2, p1, p2] {
            assert_eq!(register(p, &device).status, 202);
        }
        for node in nodes {
            node.cli(&["client", "kill", "type", "pubsub"]);
        }
        let path = format!("/api/client-registry/requests/{name}/grant");
        let r = authed(d.admin_addr, &token, "POST", &path, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        for p in [p2, p1] {
            let (r, took) = poll_until(
                VISIBILITY_DEADLINE,
                || register(p, &device),
                |r| r.status != 202,
            );
            assert_eq!(r.status, 201, "{}", r.text());
            slowest = slowest.max(took);
        }
    }
    eprintln!("slowest 201 after a lost event: {slowest:?}");
}

#[test]
fn a_grant_whose_event_is_lost_reaches_every_proxy_within_the_bound() {
    let redis = RedisServer::start();
    lost_events_across_instances(&redis.url(), &[&redis]);
}

#[test]
fn a_grant_whose_event_is_lost_reaches_every_proxy_within_the_bound_on_a_cluster() {
    let cluster = RedisCluster::start();
    let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
    lost_events_across_instances(&cluster.url(), &nodes);
}

#[test]
fn redis_outage_gives_503_then_recovers_with_grants_intact() {
    // Persistence on, so a restarted server still has what it acknowledged.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let d = deploy(&redis.url());
    let p1 = d.proxies[0].1;
    let token = login(d.admin_addr, "admin", ADMIN_PASSWORD);
    authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/unlock",
        br#"{"durationMs":600000}"#,
    );
    assert_eq!(register(p1, &creds("dev-granted", "secret-1")).status, 202);
    assert_eq!(register(p1, &creds("dev-pending", "secret-2")).status, 202);
    let r = authed(
        d.admin_addr,
        &token,
        "POST",
        "/api/client-registry/requests/dev-granted/grant",
        b"",
    );
    assert_eq!(r.status, 200);

    redis.stop();
    // The device keeps polling. Its proxy may answer from its cache until
    // it notices the outage (within a second); then every poll gets 503.
    let outage = Instant::now();
    let r = loop {
        let t = Instant::now();
        let r = register(p1, &creds("dev-pending", "secret-2"));
        let took = t.elapsed();
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
        if r.status != 202 {
            break r;
        }
        assert!(
            outage.elapsed() < Duration::from_secs(3),
            "still 202 from cache"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "unavailable");
    // Devices learn that the store is down, never the internal error.
    assert_eq!(r.json()["error"], "store unavailable");
    assert!(r.header("Retry-After").is_some());
    // A poll that is not cached gets 503 at once.
    assert_eq!(register(p1, &creds("dev-new", "secret-3")).status, 503);
    let ready = request(p1, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"], "store unavailable");
    let admin_view = authed(d.admin_addr, &token, "GET", "/api/client-registry", b"");
    assert_eq!(admin_view.status, 503, "{}", admin_view.text());

    redis.restart();
    // Service comes back by itself.
    let back = Instant::now();
    loop {
        let r = register(p1, &creds("dev-pending", "secret-2"));
        if r.status == 202 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "still {} after restart",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = back.elapsed();
    assert!(
        recovered < Duration::from_secs(3),
        "recovered after {recovered:?}"
    );
    // The acknowledged grant survived.
    assert_eq!(register(p1, &creds("dev-granted", "secret-1")).status, 201);
    login(p1, "dev-granted", "secret-1");
    assert_eq!(request(p1, "GET", "/readyz", &[], b"").status, 200);
}
