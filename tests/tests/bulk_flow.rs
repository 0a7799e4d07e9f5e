//! Bulk decisions end to end, against the real `fleetgate` binary: 10,000
//! devices register over HTTP, one `POST /api/client-registry/requests/grant`
//! by prefix grants them all, and every device then collects its 201, also
//! after the gateway is killed with `kill -9` and started again (the grants
//! were durable before they were acknowledged). The same on one Redis,
//! with a fleet of ten hashing chunks (each chunk hashed while the one
//! before it commits).

use std::time::{Duration, Instant};

use fleetgate_tests::redis::RedisServer;
use fleetgate_tests::*;
use serde_json::json;

const DEVICES: usize = 10_000;
/// Threads that play the fleet.
const FLEET_THREADS: usize = 4;

fn name(i: usize) -> String {
    format!("fleet-{i:05}")
}

fn password(i: usize) -> String {
    format!("pw-{i:05}-secret")
}

/// Every device of `0..devices` polls once; returns the statuses seen, as
/// (status, count) sorted by status. Each fleet thread keeps one
/// keep-alive connection, as a NAT gateway in front of many devices would.
fn fleet_polls(g: &Gateway, devices: usize) -> Vec<(u16, usize)> {
    let http = g.http;
    let threads: Vec<_> = (0..FLEET_THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(http).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut seen = std::collections::BTreeMap::new();
                for i in (t..devices).step_by(FLEET_THREADS) {
                    let body = creds(&name(i), &password(i)).to_string();
                    let req = encode_request(
                        "POST",
                        "/api/client-registry/register",
                        &[],
                        body.as_bytes(),
                    );
                    std::io::Write::write_all(&mut writer, &req).unwrap();
                    let r = read_response(&mut reader).expect("a response");
                    *seen.entry(r.status).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = std::collections::BTreeMap::new();
    for t in threads {
        for (status, n) in t.join().unwrap() {
            *all.entry(status).or_insert(0) += n;
        }
    }
    all.into_iter().collect()
}

#[test]
fn ten_thousand_devices_granted_by_prefix_each_collect_their_201() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gateway::start_in(dir.path(), &[]);
    let token = g.admin_token();
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": 600_000}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fleet_polls(&g, DEVICES), vec![(202, DEVICES)]);
    // A device outside the prefix stays pending.
    assert_eq!(
        register(g.http, &creds("other-1", "pw-other-secret")).status,
        202
    );

    let started = Instant::now();
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/grant",
        json!({"selector": {"prefix": "fleet-"}})
            .to_string()
            .as_bytes(),
    );
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["granted"], DEVICES, "{}", body["granted"]);
    assert!(body.get("nextCursor").is_none(), "exactly the cap, no more");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), DEVICES);
    assert!(items.iter().all(|i| i["result"] == "granted"));
    assert_eq!(items[0]["username"], name(0));
    eprintln!("bulk grant of {DEVICES} devices took {took:?}");

    // Every device collects its 201, and can log in with its password.
    assert_eq!(fleet_polls(&g, DEVICES), vec![(201, DEVICES)]);
    assert_eq!(
        register(g.http, &creds("other-1", "pw-other-secret")).status,
        202
    );
    login(g.admin, &name(4321), &password(4321));
    let status = authed(g.admin, &token, "GET", "/api/client-registry", b"").json();
    assert_eq!(status["pending"], 1);

    // Durable before acknowledged: after kill -9, still every 201.
    g.process.kill9();
    drop(g);
    let g = Gateway::start_in(dir.path(), &[]);
    assert_eq!(fleet_polls(&g, DEVICES), vec![(201, DEVICES)]);
    let again = authed(
        g.admin,
        &g.admin_token(),
        "POST",
        "/api/client-registry/requests/grant",
        json!({"usernames": [name(0), name(9999)]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["granted"], 0);
    assert_eq!(again.json()["items"][1]["result"], "already_granted");
    // Not a hard limit, a sign of trouble: 10,000 hashes on two cores take
    // a few seconds.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// On one Redis: 5,000 devices (ten chunks of `registry::bulk::CHUNK`)
/// granted by one bulk call, each collects its 201, and the users survive
/// a restart of the gateway.
#[test]
fn a_bulk_grant_of_ten_chunks_on_redis_is_whole_and_collected() {
    const ON_REDIS: usize = 5_000;
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--store", url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start_in(dir.path(), &args);
    let token = g.admin_token();
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": 600_000}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fleet_polls(&g, ON_REDIS), vec![(202, ON_REDIS)]);
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/grant",
        json!({"selector": {"prefix": "fleet-"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["granted"], ON_REDIS, "{}", body["granted"]);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), ON_REDIS);
    assert!(items.iter().all(|i| i["result"] == "granted"));
    assert_eq!(fleet_polls(&g, ON_REDIS), vec![(201, ON_REDIS)]);
    drop(g);
    let g = Gateway::start_in(dir.path(), &args);
    login(g.admin, &name(4999), &password(4999));
    let users = authed(
        g.admin,
        &g.admin_token(),
        "GET",
        "/api/users?prefix=fleet-&limit=1",
        b"",
    );
    assert_eq!(users.status, 200, "{}", users.text());
    assert_eq!(users.json()["items"][0]["username"], name(0));
}
