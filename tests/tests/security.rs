//! The holes a security review found, each closed and shown through real
//! sockets against the real binary: no self-granted admin, no starving a
//! device by its name, caps on everything a device picks, write deadlines
//! and per-source connection caps, the admin API off the device ports,
//! login throttling, decisions that name what they decide, and tokens that
//! die with their user. The threat table in docs/SECURITY.md names each
//! test.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use fleetgate_tests::*;

fn unlock(g: &Gateway, token: &str) {
    let r = authed(
        g.admin,
        token,
        "POST",
        "/api/client-registry/unlock",
        br#"{"durationMs":600000}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn grant(g: &Gateway, token: &str, username: &str, body: &str) -> Response {
    authed(
        g.admin,
        token,
        "POST",
        &format!("/api/client-registry/requests/{username}/grant"),
        body.as_bytes(),
    )
}

fn request_of(g: &Gateway, token: &str, username: &str) -> Response {
    authed(
        g.admin,
        token,
        "GET",
        &format!("/api/client-registry/requests/{username}"),
        b"",
    )
}

#[test]
fn a_device_cannot_ask_for_the_admin_role() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token);
    let body =
        serde_json::json!({"username": "dev-admin", "password": "s3cret-pass", "roles": ["admin"]});
    let r = register(g.http, &body);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["rule"], "admin_role");
    assert_eq!(
        request_of(&g, &token, "dev-admin").status,
        404,
        "nothing stored"
    );

    // Roles a device may ask for are kept on the request, but a plain grant
    // (no body, as a "grant all" script sends) gives none of them: only
    // what the admin names is granted.
    let body =
        serde_json::json!({"username": "dev-ops", "password": "s3cret-pass", "roles": ["sensor"]});
    assert_eq!(register(g.http, &body).status, 202);
    let r = grant(&g, &token, "dev-ops", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let device = login(g.http, "dev-ops", "s3cret-pass");
    assert_eq!(
        authed(g.admin, &device, "GET", "/api/users", b"").status,
        403
    );
    let user = authed(g.admin, &token, "GET", "/api/users/dev-ops", b"").json();
    assert_eq!(user["roles"], serde_json::json!([]), "{user}");
    assert_eq!(user["permissions"], serde_json::json!([]), "{user}");
}

#[test]
fn requestable_roles_limit_what_a_device_may_ask_for() {
    let g = Gateway::start(&["--requestable-roles", "sensor,gateway"]);
    let token = g.admin_token();
    unlock(&g, &token);
    let ask = |name: &str, role: &str| {
        register(
            g.http,
            &serde_json::json!({"username": name, "password": "s3cret-pass", "roles": [role]}),
        )
    };
    let r = ask("dev-cam", "camera");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["rule"], "requestable_roles");
    assert!(r.json()["error"].as_str().unwrap().contains("camera"));
    assert_eq!(request_of(&g, &token, "dev-cam").status, 404);
    assert_eq!(ask("dev-gw", "gateway").status, 202);
    assert_eq!(ask("dev-adm", "admin").json()["rule"], "admin_role");
}

#[test]
fn knowing_a_devices_name_does_not_starve_it() {
    let broker = Mosquitto::start("");
    let upstream = broker.addr.to_string();
    // The default per-user budget (5 per 10 s) and per-IP budget.
    let g = Gateway::start(&[
        "--mqtt-upstream",
        &upstream,
        "--rate-limit-per-user",
        "5/10s",
        "--rate-limit-per-ip",
        "200/10s",
    ]);
    let token = g.admin_token();
    unlock(&g, &token);
    let owner = creds("plc-victim", "owner-pass-1");
    assert_eq!(register(g.http, &owner).status, 202);

    // Within 2 s: 50 polls with other credentials and 50 CONNECTs with a
    // wrong password for the owner's username.
    let started = Instant::now();
    let wrong = mqtt_connect(
        MqttLevel::V311,
        "attacker",
        Some("plc-victim"),
        Some(b"guess"),
    );
    let mut refused = 0;
    for i in 0..50 {
        let r = register(g.http, &creds("plc-victim", &format!("guess-{i}")));
        assert!(matches!(r.status, 409 | 429), "{}", r.status);
        let ack = mqtt_exchange(g.mqtt, &wrong);
        assert_ne!(ack, [0x20, 0x02, 0x00, 0x00], "an attacker got in");
        refused += 1;
    }
    assert_eq!(refused, 50);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The owner is still served from its own budget.
    let r = register(g.http, &owner);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(grant(&g, &token, "plc-victim", "").status, 200);
    assert_eq!(register(g.http, &owner).status, 201);

    // Now a user: 50 wrong-password CONNECTs, then the owner's CONNECT
    // passes to the broker.
    for _ in 0..50 {
        let ack = mqtt_exchange(g.mqtt, &wrong);
        assert!(
            ack == [0x20, 0x02, 0x00, 0x04] || ack == [0x20, 0x02, 0x00, 0x03],
            "{ack:?}"
        );
    }
    let port = g.mqtt.port().to_string();
    let (code, _, err) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "plc-victim-1",
            "-u",
            "plc-victim",
            "-P",
            "owner-pass-1",
            "-t",
            "plant/line1",
            "-m",
            "hello",
        ],
    );
    assert_eq!(code, 0, "the owner's CONNECT was refused: {err}");
}

#[test]
fn mqtt_fields_are_capped_before_they_are_used() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token);
    // A client id at the cap is fine (the request becomes pending: 5).
    let at_cap = "c".repeat(256);
    let ack = mqtt_exchange(
        g.mqtt,
        &mqtt_connect(
            MqttLevel::V311,
            &at_cap,
            Some("plc-cid-ok"),
            Some(b"s3cret-pass"),
        ),
    );
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x05]);
    let stored = request_of(&g, &token, "plc-cid-ok");
    assert_eq!(stored.status, 200);
    // One byte over: identifier rejected, nothing stored.
    let over = "c".repeat(257);
    let connect = |level| mqtt_connect(level, &over, Some("plc-cid-long"), Some(b"s3cret-pass"));
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311)),
        [0x20, 0x02, 0x00, 0x02]
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V5)),
        [0x20, 0x03, 0x00, 0x85, 0x00]
    );
    assert_eq!(request_of(&g, &token, "plc-cid-long").status, 404);

    // A 60 KiB username fails the username rule before anything is keyed
    // by it: not authorized, nothing stored, the gateway carries on.
    let huge = "u".repeat(60 * 1024);
    let ack = mqtt_exchange(
        g.mqtt,
        &mqtt_connect(MqttLevel::V311, "c1", Some(&huge), Some(b"s3cret-pass")),
    );
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x05]);
    // A password one byte over its cap, the same.
    let long_pw = vec![b'p'; 1025];
    let ack = mqtt_exchange(
        g.mqtt,
        &mqtt_connect(MqttLevel::V311, "c1", Some("plc-long-pw"), Some(&long_pw)),
    );
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x05]);
    assert_eq!(request_of(&g, &token, "plc-long-pw").status, 404);

    // HTTP `context`: 256 bytes is accepted, 257 is 422.
    let ctx = |n: usize, name: &str| {
        register(
            g.http,
            &serde_json::json!({"username": name, "password": "s3cret-pass", "context": "x".repeat(n)}),
        )
    };
    assert_eq!(ctx(256, "dev-ctx-ok").status, 202);
    let r = ctx(257, "dev-ctx-long");
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["rule"], "context_length");
}

#[test]
fn a_client_that_never_reads_is_closed_at_the_write_deadline() {
    // One worker with one connection slot, so the slot's release is seen.
    let g = Gateway::start(&[
        "--workers",
        "1",
        "--max-connections",
        "1",
        "--write-timeout",
        "1s",
    ]);
    // The stuck client: pipelines requests without ever reading, until
    // both sides' socket buffers are full and the gateway's write blocks.
    let mut stuck = TcpStream::connect(g.http).unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let one = encode_request("GET", "/healthz", &[], b"");
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        for _ in 0..2000 {
            match stuck.write_all(&batch) {
                Ok(()) => sent += batch.len(),
                Err(_) => break,
            }
        }
        (stuck, sent)
    });
    // While it holds the only slot, a new connection is refused...
    let (held, _) = poll_until(
        Duration::from_secs(5),
        || request(g.http, "GET", "/healthz", &[], b"").status,
        |status| *status == 503,
    );
    assert_eq!(held, 503);
    // ...and once the write deadline closes it, the slot is free.
    let (r, waited) = poll_until(
        Duration::from_secs(15),
        || request(g.http, "GET", "/healthz", &[], b"").status,
        |status| *status == 200,
    );
    assert_eq!(r, 200);
    let (mut stuck, sent) = writer.join().unwrap();
    assert!(sent > 1_000_000, "the client sent only {sent} bytes");
    // The stuck connection was closed by the gateway: after the buffered
    // responses, reading reaches the end (or a reset), never blocks.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match stuck.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    eprintln!("slot free after {waited:?}");
}

#[test]
fn one_source_cannot_hold_every_connection() {
    let g = Gateway::start(&["--max-connections-per-ip", "3"]);
    // Three keep-alive connections, each served once (so each is surely
    // accepted and counted), then held open.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(g.http).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&encode_request("GET", "/healthz", &[], b""))
                .unwrap();
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            assert_eq!(read_response(&mut reader).unwrap().status, 200);
            s
        })
        .collect();
    // A fourth from the same source is refused with 503.
    let r = request(g.http, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("too many connections"), "{}", r.text());
    // The cap spans listeners: an MQTT connection from the same source is
    // closed without a CONNACK.
    let mut mqtt = TcpStream::connect(g.mqtt).unwrap();
    mqtt.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = mqtt.write_all(&mqtt_connect(
        MqttLevel::V311,
        "c",
        Some("plc-x"),
        Some(b"s3cret-pass"),
    ));
    let mut buf = [0u8; 4];
    assert!(
        matches!(mqtt.read(&mut buf), Ok(0) | Err(_)),
        "MQTT was served"
    );
    // Another source is not affected.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        request_from(other, g.http, "GET", "/healthz", &[], b"").status,
        200
    );
    // Closing one frees a slot.
    drop(held);
    let (status, _) = poll_until(
        Duration::from_secs(5),
        || request(g.http, "GET", "/healthz", &[], b"").status,
        |s| *s == 200,
    );
    assert_eq!(status, 200);
}

#[test]
fn the_device_ports_serve_no_admin_api_by_default() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    for (method, path) in [
        ("GET", "/api/users"),
        ("GET", "/api/client-registry"),
        ("POST", "/api/client-registry/unlock"),
        ("POST", "/api/client-registry/requests/dev01/grant"),
        ("GET", "/api"),
    ] {
        let r = authed(g.http, &token, method, path, b"");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        let https = g.https.unwrap();
        let auth = format!("Authorization: Bearer {token}");
        let (status, text) = curl_https(https, None, method, path, None, &["-H", &auth]).unwrap();
        assert_eq!(status, 404, "HTTPS {method} {path}: {text}");
    }
    // What a device needs still works there: login and the CA.
    assert!(!login(g.http, "admin", ADMIN_PASSWORD).is_empty());
    let ca = request(g.http, "GET", "/api/certificates/ca", &[], b"");
    assert_eq!(ca.status, 200);
    assert!(ca.text().contains("BEGIN CERTIFICATE"));
    // The admin port has it all.
    assert_eq!(
        authed(g.admin, &token, "GET", "/api/users", b"").status,
        200
    );
}

#[test]
fn failed_logins_are_throttled_per_source_and_never_lock_out_others() {
    let g = Gateway::start(&[]);
    let wrong = creds("admin", "not-the-password");
    let right = creds("admin", ADMIN_PASSWORD);
    let post = |from: &str, body: &serde_json::Value| {
        request_from(
            from.parse().unwrap(),
            g.admin,
            "POST",
            "/api/login",
            &[],
            body.to_string().as_bytes(),
        )
    };
    for _ in 0..5 {
        assert_eq!(post("127.0.0.1", &wrong).status, 401);
    }
    let r = post("127.0.0.1", &wrong);
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // The throttled source is refused even with the right password...
    assert_eq!(post("127.0.0.1", &right).status, 429);
    // ...and the real admin on another host is not.
    assert_eq!(post("127.0.0.2", &right).status, 200);
    // Through a device port too (the proxy hands over the device's address).
    let r = request_from(
        "127.0.0.1".parse().unwrap(),
        g.http,
        "POST",
        "/api/login",
        &[],
        right.to_string().as_bytes(),
    );
    assert_eq!(r.status, 429);
}

#[test]
fn decisions_name_the_request_they_decide() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token);
    let r = register(g.http, &creds("dev-pair", "s3cret-pass"));
    let pairing = r.json()["pairingId"].as_str().unwrap().to_owned();
    let other = if pairing == "000000" {
        "000001"
    } else {
        "000000"
    };
    // Another pairing id: 409, and nothing changes.
    let r = grant(
        &g,
        &token,
        "dev-pair",
        &format!(r#"{{"pairingId":"{other}"}}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let deny = |body: String| {
        authed(
            g.admin,
            &token,
            "POST",
            "/api/client-registry/requests/dev-pair/deny",
            body.as_bytes(),
        )
    };
    assert_eq!(deny(format!(r#"{{"pairingId":"{other}"}}"#)).status, 409);
    assert_eq!(
        request_of(&g, &token, "dev-pair").json()["state"],
        "pending"
    );
    // The one the admin saw: granted.
    let r = grant(
        &g,
        &token,
        "dev-pair",
        &format!(r#"{{"pairingId":"{pairing}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        register(g.http, &creds("dev-pair", "s3cret-pass")).status,
        201
    );
}

#[test]
fn deleting_a_request_frees_its_username_at_once() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token);
    let delete = |name: &str| {
        authed(
            g.admin,
            &token,
            "DELETE",
            &format!("/api/client-registry/requests/{name}"),
            b"",
        )
        .status
    };
    assert_eq!(delete("dev-gone"), 404);
    assert_eq!(
        register(g.http, &creds("dev-gone", "first-pass")).status,
        202
    );
    assert_eq!(delete("dev-gone"), 204);
    assert_eq!(delete("dev-gone"), 404);
    // Free for other credentials at once (no 409).
    assert_eq!(
        register(g.http, &creds("dev-gone", "second-pass")).status,
        202
    );
    // A denied request, forgotten, blocks nothing for the deny window.
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/dev-gone/deny",
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        register(g.http, &creds("dev-gone", "second-pass")).status,
        403
    );
    assert_eq!(delete("dev-gone"), 204);
    assert_eq!(
        register(g.http, &creds("dev-gone", "third-pass")).status,
        202
    );
    // A granted one is not a request to forget: delete the user instead.
    assert_eq!(grant(&g, &token, "dev-gone", "").status, 200);
    assert_eq!(delete("dev-gone"), 409);
}

#[test]
fn a_token_dies_with_its_user_even_when_the_name_comes_back() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token);
    let make_operator = || {
        assert_eq!(register(g.http, &creds("ops-1", "s3cret-pass")).status, 202);
        let r = grant(&g, &token, "ops-1", r#"{"roles":["admin"]}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        login(g.admin, "ops-1", "s3cret-pass")
    };
    let old = make_operator();
    assert_eq!(authed(g.admin, &old, "GET", "/api/users", b"").status, 200);
    let r = authed(g.admin, &token, "DELETE", "/api/users/ops-1", b"");
    assert_eq!(r.status, 204);
    // The same name again, moments later (usually within the same second).
    let new = make_operator();
    let r = authed(g.admin, &old, "GET", "/api/users", b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(authed(g.admin, &new, "GET", "/api/users", b"").status, 200);
}

#[test]
fn content_length_is_digits_only_and_expect_continue_is_answered() {
    let g = Gateway::start(&[]);
    let r = request(
        g.http,
        "POST",
        "/api/client-registry/register",
        &[("Content-Length", "+5")],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // curl's way of sending a larger body: head first, body after `100`.
    let body = creds("dev-expect", "s3cret-pass").to_string();
    let mut s = TcpStream::connect(g.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /api/client-registry/register HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim)
        .expect("a 100 Continue before the body");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let r = read_response(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(r.status, 423, "{}", r.text());
}

#[test]
fn redis_passwords_never_reach_the_log() {
    let port = free_port();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{port}");
    let mut p = spawn(
        "fleetgate-admin",
        &[
            "--store",
            &url,
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-password",
            ADMIN_PASSWORD,
        ],
        &[],
    );
    let log = p.collect_log(Duration::from_secs(30));
    let status = p.child.wait().unwrap();
    assert!(!status.success(), "started without a Redis");
    assert!(!log.is_empty());
    for line in &log {
        assert!(!line.contains("hunter2"), "password in the log: {line}");
    }
}
