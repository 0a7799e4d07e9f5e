//! Storm control over real sockets: per-username and per-IP rate limits
//! (HTTP 429, MQTT 3 / 0x9F), `Retry-After` that rises under load, the
//! pending cap, the connection cap and in-flight shedding. Windows are
//! configured short so no test sleeps for long.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use fleetgate_tests::*;

fn unlock(g: &Gateway, token: &str) {
    let r = authed(g.admin, token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn retry_after(r: &Response) -> u32 {
    r.header("Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After on {}: {}", r.status, r.text()))
        .parse()
        .expect("whole seconds")
}

fn polls_of(g: &Gateway, token: &str, username: &str) -> u64 {
    let r = authed(
        g.admin,
        token,
        "GET",
        &format!("/api/client-registry/requests/{username}"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["polls"].as_u64().unwrap()
}

#[test]
fn per_username_limit_answers_429_without_touching_the_store() {
    let g = Gateway::start(&["--rate-limit-per-user", "3/2s"]);
    let token = g.admin_token();
    unlock(&g, &token);
    for _ in 0..3 {
        assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    }
    let r = register(g.http, &creds("dev01", "secret"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["status"], "rate_limited");
    assert!(
        (1..=2).contains(&retry_after(&r)),
        "{:?}",
        r.header("Retry-After")
    );
    // The refused poll never reached the store: the request saw 3 polls.
    assert_eq!(polls_of(&g, &token, "dev01"), 3);
    // Another device is not affected.
    assert_eq!(register(g.http, &creds("dev02", "secret")).status, 202);
    // One interval (2 s / 3) later, one more poll is allowed.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 429);
    assert_eq!(polls_of(&g, &token, "dev01"), 4);
}

#[test]
fn per_ip_limit_covers_many_usernames_behind_one_address() {
    let g = Gateway::start(&["--rate-limit-per-ip", "4/10s"]);
    for i in 0..4 {
        let r = register(g.http, &creds(&format!("nat-dev{i}"), "secret"));
        assert_eq!(r.status, 423, "{}", r.text());
    }
    let r = register(g.http, &creds("nat-dev9", "secret"));
    assert_eq!(r.status, 429);
    assert!(retry_after(&r) >= 1);
    // The admin API is not rate limited.
    assert_eq!(request(g.http, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn mqtt_rate_limit_is_connack_3_or_0x9f() {
    let g = Gateway::start(&["--rate-limit-per-user", "2/10s"]);
    let token = g.admin_token();
    unlock(&g, &token);
    let v3 = mqtt_connect(MqttLevel::V311, "c1", Some("flapper"), Some(b"secret-1"));
    let v5 = mqtt_connect(MqttLevel::V5, "c1", Some("flapper"), Some(b"secret-1"));
    assert_eq!(mqtt_exchange(g.mqtt, &v3), [0x20, 0x02, 0x00, 0x05]);
    assert_eq!(mqtt_exchange(g.mqtt, &v5), [0x20, 0x03, 0x00, 0x87, 0x00]);
    // Third and fourth within the window: rate limited.
    assert_eq!(mqtt_exchange(g.mqtt, &v3), [0x20, 0x02, 0x00, 0x03]);
    assert_eq!(mqtt_exchange(g.mqtt, &v5), [0x20, 0x03, 0x00, 0x9F, 0x00]);
    // The limited attempts did not reach the store.
    assert_eq!(polls_of(&g, &token, "flapper"), 2);
}

#[test]
fn retry_after_rises_with_pending_requests() {
    // Every 2 pending requests add one base (5 s) to the advice.
    let g = Gateway::start(&["--pacing-pending-scale", "2"]);
    let token = g.admin_token();
    unlock(&g, &token);
    let first = register(g.http, &creds("dev-first", "secret"));
    assert_eq!(first.status, 202);
    let idle = retry_after(&first);
    assert!((4..=6).contains(&idle), "idle advice {idle}");
    for i in 0..10 {
        assert_eq!(
            register(g.http, &creds(&format!("dev{i}"), "secret")).status,
            202
        );
    }
    // The ticker refreshes the load figures once a second.
    std::thread::sleep(Duration::from_millis(1500));
    // 11 pending at scale 2: factor ≥ 6.5, so ≥ 32 s × 0.8 jitter = 26 s.
    let loaded: Vec<u32> = (0..5)
        .map(|_| retry_after(&register(g.http, &creds("dev-first", "secret"))))
        .collect();
    assert!(
        loaded.iter().all(|s| *s >= 26),
        "advice under load: {loaded:?}"
    );
    // Locked answers are paced the same way.
    let locked = register(g.http, &creds("dev-locked-out", "whatever"));
    assert_eq!(locked.status, 202, "still unlocked");
    // Jitter spreads the fleet: not every answer is the same.
    let spread: std::collections::BTreeSet<u32> = (0..30)
        .map(|i| {
            retry_after(&register(
                g.http,
                &creds(&format!("dev{}", i % 10), "secret"),
            ))
        })
        .collect();
    assert!(spread.len() > 1, "no jitter: {spread:?}");
}

#[test]
fn max_pending_refuses_new_requests_but_serves_existing_ones() {
    let g = Gateway::start(&["--max-pending", "2"]);
    let token = g.admin_token();
    unlock(&g, &token);
    assert_eq!(register(g.http, &creds("dev1", "secret")).status, 202);
    assert_eq!(register(g.http, &creds("dev2", "secret")).status, 202);
    let r = register(g.http, &creds("dev3", "secret"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "unavailable");
    assert!(retry_after(&r) >= 1);
    // Existing requests keep being served, and can be granted.
    assert_eq!(register(g.http, &creds("dev1", "secret")).status, 202);
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/dev1/grant",
        b"",
    );
    assert_eq!(r.status, 200);
    // A grant frees a slot.
    assert_eq!(register(g.http, &creds("dev3", "secret")).status, 202);
}

#[test]
fn connections_past_the_per_worker_cap_get_503() {
    let g = Gateway::start(&["--workers", "1", "--max-connections", "2"]);
    let idle1 = TcpStream::connect(g.http).unwrap();
    let idle2 = TcpStream::connect(g.http).unwrap();
    // Let the worker accept both.
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(g.http).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_response(&mut BufReader::new(third.try_clone().unwrap())).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let _ = third.write_all(b"x");
    // Closing one idle connection makes room again.
    drop(idle1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(g.http, "GET", "/healthz", &[], b"").status, 200);
    drop(idle2);
}

#[test]
fn requests_past_the_in_flight_bound_are_shed_with_503() {
    // One worker, one request in flight at a time. An admin login spends
    // tens of milliseconds in argon2 while the worker awaits it, so a
    // second request arriving meanwhile must be shed, not queued.
    let g = Gateway::start(&["--workers", "1", "--max-inflight", "1"]);
    let login = encode_request(
        "POST",
        "/api/login",
        &[],
        creds("admin", ADMIN_PASSWORD).to_string().as_bytes(),
    );
    let mut slow = TcpStream::connect(g.http).unwrap();
    let mut fast = TcpStream::connect(g.http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fast.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(&login).unwrap();
    std::thread::sleep(Duration::from_millis(3));
    fast.write_all(&login).unwrap();
    let second = read_response(&mut BufReader::new(fast)).unwrap();
    let first = read_response(&mut BufReader::new(slow)).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 503, "{}", second.text());
    assert!(retry_after(&second) >= 1);
    // Once the first is done, requests are served again.
    assert_eq!(register(g.http, &creds("dev1", "secret")).status, 423);
}
