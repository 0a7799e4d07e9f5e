//! The implicit (MQTT) registration flow end to end: real Mosquitto clients
//! (`mosquitto_pub`, `mosquitto_sub`) against the real `fleetgate`, with a
//! real Mosquitto broker upstream. Every row of the CONNACK table is
//! checked byte for byte over raw sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fleetgate_tests::*;

fn unlock(g: &Gateway, token: &str) {
    let r = authed(g.admin, token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn grant(g: &Gateway, token: &str, username: &str) {
    grant_with(g, token, username, b"");
}

/// Grants with a body (roles and permissions overrides).
fn grant_with(g: &Gateway, token: &str, username: &str, body: &[u8]) {
    let r = authed(
        g.admin,
        token,
        "POST",
        &format!("/api/client-registry/requests/{username}/grant"),
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn request_of(g: &Gateway, token: &str, username: &str) -> Option<serde_json::Value> {
    let r = authed(
        g.admin,
        token,
        "GET",
        &format!("/api/client-registry/requests/{username}"),
        b"",
    );
    match r.status {
        200 => Some(r.json()),
        404 => None,
        s => panic!("unexpected {s}: {}", r.text()),
    }
}

const V3_NOT_AUTHORIZED: [u8; 4] = [0x20, 0x02, 0x00, 0x05];
const V3_BAD_CREDENTIALS: [u8; 4] = [0x20, 0x02, 0x00, 0x04];
const V3_UNAVAILABLE: [u8; 4] = [0x20, 0x02, 0x00, 0x03];
const V5_NOT_AUTHORIZED: [u8; 5] = [0x20, 0x03, 0x00, 0x87, 0x00];
const V5_BAD_CREDENTIALS: [u8; 5] = [0x20, 0x03, 0x00, 0x86, 0x00];
const V5_UNAVAILABLE: [u8; 5] = [0x20, 0x03, 0x00, 0x88, 0x00];

fn connect(level: MqttLevel, client: &str, user: &str, pw: &str) -> Vec<u8> {
    mqtt_connect(level, client, Some(user), Some(pw.as_bytes()))
}

#[test]
fn mosquitto_clients_register_then_pass_through_to_the_broker() {
    let broker = Mosquitto::start("");
    let upstream = broker.addr.to_string();
    let g = Gateway::start(&["--mqtt-upstream", &upstream]);
    let token = g.admin_token();
    let port = g.mqtt.port().to_string();
    unlock(&g, &token);

    for (user, version) in [("plc-311", "mqttv311"), ("plc-v5", "mqttv5")] {
        // A new client is refused as not authorised, and becomes pending.
        let (code, _out, err) = run_tool(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-i",
                &format!("cid-{user}"),
                "-u",
                user,
                "-P",
                "plc-secret-1",
                "-t",
                "plant/line1",
                "-m",
                "hello",
            ],
        );
        assert_ne!(code, 0, "{user}: refused clients exit non-zero");
        assert!(err.to_lowercase().contains("not authori"), "{user}: {err}");
        let req = request_of(&g, &token, user).expect("the request is pending");
        assert_eq!(req["state"], "pending");
        assert_eq!(req["transport"], "mqtt");
        assert_eq!(req["clientId"], format!("cid-{user}"));
        assert!(req["sourceAddr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        // A granted user may do only what it is given: here, the plant.
        let plant =
            br#"{"permissions":[{"resource":"plant/#","operation":"readWrite","context":"mqtt"}]}"#;
        grant_with(&g, &token, user, plant);
    }

    // Granted: a subscriber and a publisher through the gateway; the message
    // travels via the upstream broker.
    let sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "plc-v5",
            "-P",
            "plc-secret-1",
            "-t",
            "plant/#",
            "-C",
            "1",
            "-W",
            "15",
            "-v",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // Publish until the subscriber has its message (it may still be subscribing).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut published = 0;
    while Instant::now() < deadline {
        let (code, _, err) = run_tool(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv311",
                "-u",
                "plc-311",
                "-P",
                "plc-secret-1",
                "-t",
                "plant/line1",
                "-m",
                "through-the-gateway",
                "-q",
                "1",
            ],
        );
        assert_eq!(code, 0, "granted publisher: {err}");
        published += 1;
        std::thread::sleep(Duration::from_millis(200));
        if published > 3 {
            break;
        }
    }
    let out = sub.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "subscriber failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "plant/line1 through-the-gateway");

    // A wrong password for a granted user is refused.
    let (code, _, err) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "plc-311",
            "-P",
            "wrong-secret",
            "-t",
            "x",
            "-m",
            "y",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.to_lowercase().contains("bad user name or password"),
        "{err}"
    );
}

#[test]
fn every_connack_row_byte_for_byte() {
    let mut g = Gateway::start(&[]);
    let token = g.admin_token();

    // Unknown user, registry locked: 5 / 0x87, nothing stored.
    assert_eq!(
        mqtt_exchange(
            g.mqtt,
            &connect(MqttLevel::V311, "c1", "dev-locked", "secret-1")
        ),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(
            g.mqtt,
            &connect(MqttLevel::V5, "c1", "dev-locked", "secret-1")
        ),
        V5_NOT_AUTHORIZED
    );
    assert!(request_of(&g, &token, "dev-locked").is_none());

    unlock(&g, &token);
    // Unknown user, unlocked, policy ok: 5 / 0x87, and pending.
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c2", "dev-a", "secret-a")),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V5, "c3", "dev-b", "secret-b")),
        V5_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V31, "c4", "dev-c", "secret-c")),
        V3_NOT_AUTHORIZED
    );
    for u in ["dev-a", "dev-b", "dev-c"] {
        let r = request_of(&g, &token, u).unwrap_or_else(|| panic!("{u} pending"));
        assert_eq!(r["state"], "pending");
        assert_eq!(r["transport"], "mqtt");
    }
    // Stays pending on reconnect (polls counted).
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c2", "dev-a", "secret-a")),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(request_of(&g, &token, "dev-a").unwrap()["polls"], 2);

    // Fails policy (username < 3, password < 5, no password): nothing stored.
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c5", "ab", "secret-x")),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V5, "c5", "dev-short", "1234")),
        V5_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(
            g.mqtt,
            &mqtt_connect(MqttLevel::V311, "c5", Some("dev-nopw"), None)
        ),
        V3_NOT_AUTHORIZED
    );
    for u in ["ab", "dev-short", "dev-nopw"] {
        assert!(
            request_of(&g, &token, u).is_none(),
            "{u} must not be stored"
        );
    }

    // A pending request with other credentials: 5 / 0x87, nothing changed.
    let before = request_of(&g, &token, "dev-a").unwrap();
    assert_eq!(
        mqtt_exchange(
            g.mqtt,
            &connect(MqttLevel::V311, "c6", "dev-a", "hijack-pw")
        ),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V5, "c6", "dev-a", "hijack-pw")),
        V5_NOT_AUTHORIZED
    );
    let after = request_of(&g, &token, "dev-a").unwrap();
    assert_eq!(before["pairingId"], after["pairingId"]);
    assert_eq!(before["polls"], after["polls"]);

    // Existing user, wrong password: 4 / 0x86 (twice: the second from the
    // negative cache).
    grant(&g, &token, "dev-a");
    for _ in 0..2 {
        assert_eq!(
            mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c7", "dev-a", "wrong-pw")),
            V3_BAD_CREDENTIALS
        );
        assert_eq!(
            mqtt_exchange(g.mqtt, &connect(MqttLevel::V5, "c7", "dev-a", "wrong-pw")),
            V5_BAD_CREDENTIALS
        );
    }

    // Granted user with the right password, but no upstream configured:
    // 3 / 0x88, as the startup log warned.
    g_log_mentions_missing_upstream(&mut g);
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c8", "dev-a", "secret-a")),
        V3_UNAVAILABLE
    );
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V5, "c8", "dev-a", "secret-a")),
        V5_UNAVAILABLE
    );
}

fn g_log_mentions_missing_upstream(g: &mut Gateway) {
    // Panics unless the startup log says why granted clients are refused.
    g.process
        .wait_for_line("no --mqtt-upstream", Duration::from_secs(5));
}

#[test]
fn malformed_and_silent_clients_are_closed() {
    let g = Gateway::start(&["--mqtt-connect-timeout", "700ms"]);
    // v5 with a reserved flag set: CONNACK 0x81, then closed.
    let mut bad = connect(MqttLevel::V5, "c1", "dev-x", "secret-x");
    bad[9] |= 0x01;
    assert_eq!(mqtt_exchange(g.mqtt, &bad), [0x20, 0x03, 0x00, 0x81, 0x00]);
    // v3.1.1 with the same fault: closed without a CONNACK.
    let mut bad = connect(MqttLevel::V311, "c1", "dev-x", "secret-x");
    bad[9] |= 0x01;
    assert_eq!(mqtt_exchange(g.mqtt, &bad), Vec::<u8>::new());
    // Not a CONNECT at all (an HTTP request on the MQTT port).
    assert!(mqtt_exchange(g.mqtt, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    // A declared remaining length over the limit, without the payload.
    assert!(mqtt_exchange(g.mqtt, &[0x10, 0xff, 0xff, 0xff, 0x7f]).is_empty());

    // A client that sends nothing is closed after the connect timeout.
    let mut s = TcpStream::connect(g.mqtt).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    // Half a CONNECT, then silence: closed too.
    let mut s = TcpStream::connect(g.mqtt).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&connect(MqttLevel::V311, "c", "dev-y", "secret-y")[..10])
        .unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    // The gateway still serves well-formed clients.
    assert_eq!(
        mqtt_exchange(g.mqtt, &connect(MqttLevel::V311, "c9", "dev-z", "secret-z")),
        V3_NOT_AUTHORIZED
    );
}

#[test]
fn granted_connect_is_relayed_and_deletion_revokes() {
    let broker = Mosquitto::start("");
    let upstream = broker.addr.to_string();
    let g = Gateway::start(&["--mqtt-upstream", &upstream]);
    let token = g.admin_token();
    unlock(&g, &token);
    // Register over HTTP; MQTT login uses the same user.
    let r = register(g.http, &creds("dev-http", "secret-h"));
    assert_eq!(r.status, 202);
    grant(&g, &token, "dev-http");

    // CONNECT plus a pipelined PINGREQ: the broker answers both, through the
    // relay (the CONNECT reaches it with the client id namespaced).
    let mut wire = connect(MqttLevel::V311, "c-h", "dev-http", "secret-h");
    wire.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
    let mut s = TcpStream::connect(g.mqtt).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&wire).unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        got,
        [0x20, 0x02, 0x00, 0x00, 0xD0, 0x00],
        "CONNACK 0 then PINGRESP from the broker"
    );
    // The relayed connection stays usable.
    s.write_all(&[0xC0, 0x00]).unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(pong, [0xD0, 0x00]);
    drop(s);

    // Deleting the user revokes it at once, cache or not.
    let r = authed(g.admin, &token, "DELETE", "/api/users/dev-http", b"");
    assert_eq!(r.status, 204);
    authed(g.admin, &token, "POST", "/api/client-registry/lock", b"");
    assert_eq!(
        mqtt_exchange(
            g.mqtt,
            &connect(MqttLevel::V311, "c-h", "dev-http", "secret-h")
        ),
        V3_NOT_AUTHORIZED
    );
}
