//! The permission-enforcing MQTT relay end to end: real `mosquitto_pub` /
//! `mosquitto_sub` (3.1.1 and 5) and hand-built packets through the real
//! `fleetgate` to a real Mosquitto upstream, with roles and permissions set
//! through the admin API.
//!
//! A watcher subscribed to `#` directly on the upstream broker sees what
//! the gateway let through, so "never reaches the broker" is observed, not
//! assumed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetgate_tests::redis::RedisServer;
use fleetgate_tests::*;
use serde_json::json;

const PASSWORD: &str = "relay-secret-1";

/// A gateway in front of a Mosquitto, unlocked, with an admin token.
struct Setup {
    broker: Mosquitto,
    g: Gateway,
    token: String,
}

impl Setup {
    fn start() -> Setup {
        let broker = Mosquitto::start("");
        let upstream = broker.addr.to_string();
        let g = Gateway::start(&["--mqtt-upstream", &upstream]);
        let token = g.admin_token();
        let r = authed(g.admin, &token, "POST", "/api/client-registry/unlock", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        Setup { broker, g, token }
    }

    /// Registers `username` over HTTP and grants it with no overrides: the
    /// user exists with no permissions at all.
    fn user(&self, username: &str) {
        assert_eq!(
            register(self.g.http, &creds(username, PASSWORD)).status,
            202
        );
        let r = authed(
            self.g.admin,
            &self.token,
            "POST",
            &format!("/api/client-registry/requests/{username}/grant"),
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["permissions"], json!([]), "{}", r.text());
    }

    /// Registers `username` and grants it exactly `permissions`.
    fn user_with(&self, username: &str, permissions: serde_json::Value) {
        assert_eq!(
            register(self.g.http, &creds(username, PASSWORD)).status,
            202
        );
        let r = authed(
            self.g.admin,
            &self.token,
            "POST",
            &format!("/api/client-registry/requests/{username}/grant"),
            json!({ "permissions": permissions }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }

    fn patch(&self, username: &str, body: serde_json::Value) {
        let r = authed(
            self.g.admin,
            &self.token,
            "PATCH",
            &format!("/api/users/{username}"),
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// `mosquitto_sub -t '#'` on the upstream broker itself, for `wait`.
    fn watch_broker(&self) -> Child {
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.broker.addr.port().to_string(),
            ])
            .args(["-t", "#", "-v", "-W", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    fn mqtt(&self, level: MqttLevel, client_id: &str, username: &str) -> Client {
        Client::connect(self.g.mqtt, level, client_id, username)
    }
}

/// Kills a `mosquitto_sub` by PID and returns what it printed.
fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("mosquitto_sub output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw MQTT client through the gateway, after a successful CONNECT.
struct Client {
    s: TcpStream,
    level: MqttLevel,
}

impl Client {
    fn connect(mqtt: SocketAddr, level: MqttLevel, client_id: &str, username: &str) -> Client {
        let mut s = TcpStream::connect(mqtt).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&mqtt_connect(
            level,
            client_id,
            Some(username),
            Some(PASSWORD.as_bytes()),
        ))
        .unwrap();
        let mut c = Client { s, level };
        let connack = c.packet();
        assert_eq!(connack[0], 0x20, "CONNACK: {connack:?}");
        // 3.1.1: [0x20, 2, flags, code]; 5: [0x20, len, flags, reason, ...].
        assert_eq!(connack[3], 0, "{username} is let through: {connack:?}");
        c
    }

    /// Reads one whole packet.
    fn packet(&mut self) -> Vec<u8> {
        let mut head = [0u8; 2];
        self.s.read_exact(&mut head).expect("a packet");
        let mut len = usize::from(head[1] & 0x7f);
        let mut out = head.to_vec();
        let mut shift = 7;
        let mut more = head[1] & 0x80 != 0;
        while more {
            let mut b = [0u8; 1];
            self.s.read_exact(&mut b).unwrap();
            out.push(b[0]);
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            more = b[0] & 0x80 != 0;
        }
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        out.extend_from_slice(&body);
        out
    }

    fn props(&self) -> &'static [u8] {
        if self.level == MqttLevel::V5 {
            &[0]
        } else {
            &[]
        }
    }

    fn publish(&mut self, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        body.extend_from_slice(self.props());
        body.extend_from_slice(payload);
        self.send(0x30 | (qos << 1), &body);
    }

    fn subscribe(&mut self, packet_id: u16, filters: &[&str]) {
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend_from_slice(self.props());
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(0); // QoS 0
        }
        self.send(0x82, &body);
    }

    fn send(&mut self, first: u8, body: &[u8]) {
        assert!(body.len() < 128, "short packets only");
        let mut p = vec![first, body.len() as u8];
        p.extend_from_slice(body);
        self.s.write_all(&p).unwrap();
    }

    fn ping(&mut self) -> Vec<u8> {
        self.s.write_all(&[0xC0, 0x00]).unwrap();
        self.packet()
    }
}

#[test]
fn a_new_user_connects_but_may_publish_and_subscribe_nowhere() {
    let t = Setup::start();
    t.user("relay-new");
    let watcher = t.watch_broker();
    for (level, cid) in [(MqttLevel::V311, "n3"), (MqttLevel::V5, "n5")] {
        let mut c = t.mqtt(level, cid, "relay-new");
        c.publish("devices/relay-new/t", 0, 0, b"qos0-denied");
        c.publish("devices/relay-new/t", 1, 7, b"qos1-denied");
        let ack = c.packet();
        match level {
            // MQTT 5: PUBACK with reason 0x87 from the gateway.
            MqttLevel::V5 => assert_eq!(ack, [0x40, 0x04, 0x00, 0x07, 0x87, 0x00]),
            // 3.1.1 (`--mqtt-deny-publish ack`): acknowledged and discarded.
            _ => assert_eq!(ack, [0x40, 0x02, 0x00, 0x07]),
        }
        c.publish("devices/relay-new/t", 2, 8, b"qos2-denied");
        let rec = c.packet();
        match level {
            MqttLevel::V5 => assert_eq!(rec, [0x50, 0x04, 0x00, 0x08, 0x87, 0x00]),
            _ => assert_eq!(rec, [0x50, 0x02, 0x00, 0x08]),
        }
        c.subscribe(9, &["devices/relay-new/#"]);
        let suback = c.packet();
        match level {
            MqttLevel::V5 => assert_eq!(suback, [0x90, 0x04, 0x00, 0x09, 0x00, 0x87]),
            _ => assert_eq!(suback, [0x90, 0x03, 0x00, 0x09, 0x80]),
        }
        // The session is still up, and still relayed.
        assert_eq!(c.ping(), [0xD0, 0x00]);
    }
    // A real client gets the same: mosquitto_pub at QoS 1 over MQTT 5.
    let (_, _, err) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &t.g.mqtt.port().to_string(),
            "-V",
            "mqttv5",
            "-u",
            "relay-new",
            "-P",
            PASSWORD,
            "-q",
            "1",
            "-t",
            "devices/relay-new/t",
            "-m",
            "x",
        ],
    );
    assert!(err.to_lowercase().contains("not authori"), "{err}");
    let seen = stop(watcher);
    assert!(
        !seen.contains("denied"),
        "nothing denied reached the broker: {seen}"
    );
    assert!(!seen.contains("devices/relay-new/t x"), "{seen}");
}

#[test]
fn granted_topics_work_end_to_end_and_denied_ones_never_arrive() {
    let t = Setup::start();
    t.user("relay-pub");
    t.user("relay-sub");
    // A role every device may share, with the whole-level placeholder.
    let r = authed(
        t.g.admin,
        &t.token,
        "PUT",
        "/api/roles/own-devices",
        json!({"permissions": [
            {"resource": "devices/{username}/#", "operation": "readWrite", "context": "mqtt"}
        ]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    t.patch("relay-pub", json!({"roles": ["own-devices"]}));
    // The subscriber may read every device's temperature, directly.
    t.patch(
        "relay-sub",
        json!({"permissions": [
            {"resource": "devices/+/temp", "operation": "read", "context": "mqtt"}
        ]}),
    );
    let watcher = t.watch_broker();
    let port = t.g.mqtt.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311"])
        .args([
            "-u",
            "relay-sub",
            "-P",
            PASSWORD,
            "-t",
            "devices/+/temp",
            "-v",
        ])
        .args(["-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(500));
    for version in ["mqttv311", "mqttv5"] {
        // Another device's topic: dropped at the gateway (QoS 0).
        let (code, _, err) = run_tool(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-u",
                "relay-pub",
                "-P",
                PASSWORD,
                "-t",
                "devices/relay-sub/temp",
                "-m",
                "spoofed",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "relay-pub",
            "-P",
            PASSWORD,
            "-q",
            "1",
            "-t",
            "devices/relay-pub/temp",
            "-m",
            "21.5",
        ],
    );
    assert_eq!(code, 0, "its own topic is allowed: {err}");
    let out = sub.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.trim(), "devices/relay-pub/temp 21.5", "{got}");
    let seen = stop(watcher);
    assert!(seen.contains("devices/relay-pub/temp 21.5"), "{seen}");
    assert!(
        !seen.contains("spoofed"),
        "a denied publish never reaches the broker: {seen}"
    );
}

#[test]
fn suback_codes_are_exact_for_mixed_filters() {
    let t = Setup::start();
    t.user_with(
        "relay-mix",
        json!([{"resource": "devices/{username}/#", "operation": "read", "context": "mqtt"}]),
    );
    for (level, cid, refused) in [(MqttLevel::V311, "m3", 0x80), (MqttLevel::V5, "m5", 0x87)] {
        let mut c = t.mqtt(level, cid, "relay-mix");
        // allowed, denied (`#` is not covered by `devices/relay-mix/#`),
        // allowed (a subset), denied (another device).
        c.subscribe(
            3,
            &[
                "devices/relay-mix/#",
                "#",
                "devices/relay-mix/+/x",
                "devices/other/x",
            ],
        );
        let suback = c.packet();
        let codes = &suback[suback.len() - 4..];
        assert_eq!(
            codes,
            [0x00, refused, 0x00, refused],
            "{level:?}: {suback:?}"
        );
        assert_eq!(
            u16::from_be_bytes([suback[2], suback[3]]),
            3,
            "packet id kept"
        );
        assert_eq!(c.ping(), [0xD0, 0x00]);
    }
}

#[test]
fn a_user_cannot_take_over_another_users_session() {
    let t = Setup::start();
    t.user("relay-victim");
    t.user("relay-thief");
    let mut victim = t.mqtt(MqttLevel::V311, "shared-id", "relay-victim");
    // Same client id, other user: at the broker these are two client ids
    // (namespaced by user), so the victim's session is not taken over.
    let mut thief = t.mqtt(MqttLevel::V311, "shared-id", "relay-thief");
    assert_eq!(thief.ping(), [0xD0, 0x00]);
    assert_eq!(
        victim.ping(),
        [0xD0, 0x00],
        "the victim's session is still up"
    );
    // The same user reconnecting with its own id does take its session over
    // (the broker's usual rule): the old connection is closed.
    let _again = t.mqtt(MqttLevel::V311, "shared-id", "relay-victim");
    let mut buf = [0u8; 8];
    let n = victim.s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the broker closed the user's older connection");
}

#[test]
fn deleting_a_user_cuts_its_live_session_within_a_second() {
    let t = Setup::start();
    t.user("relay-gone");
    let mut c = t.mqtt(MqttLevel::V5, "gone-1", "relay-gone");
    assert_eq!(c.ping(), [0xD0, 0x00]);
    let r = authed(t.g.admin, &t.token, "DELETE", "/api/users/relay-gone", b"");
    assert_eq!(r.status, 204);
    let deleted = Instant::now();
    c.s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    let n = c.s.read(&mut buf).unwrap_or(0);
    let took = deleted.elapsed();
    assert_eq!(n, 0, "the session is closed, not answered: {:?}", &buf[..n]);
    assert!(
        took < Duration::from_secs(1),
        "closed {took:?} after the delete"
    );
}

#[test]
fn a_permission_change_reaches_a_live_session_within_a_second() {
    let t = Setup::start();
    t.user("relay-live");
    let watcher = t.watch_broker();
    let mut c = t.mqtt(MqttLevel::V5, "live-1", "relay-live");
    c.publish("devices/relay-live/t", 1, 1, b"before");
    assert_eq!(c.packet(), [0x40, 0x04, 0x00, 0x01, 0x87, 0x00], "denied");
    t.patch(
        "relay-live",
        json!({"permissions": [
            {"resource": "devices/{username}/#", "operation": "write", "context": "mqtt"}
        ]}),
    );
    // The session re-reads its user every 500 ms: within a second the same
    // connection's next publish goes to the broker, which acknowledges it.
    std::thread::sleep(Duration::from_millis(1000));
    c.publish("devices/relay-live/t", 1, 2, b"after");
    let ack = c.packet();
    assert_eq!(&ack[..4], [0x40, ack[1], 0x00, 0x02], "{ack:?}");
    assert!(
        ack.len() == 4 || ack[4] == 0x00,
        "the broker's success: {ack:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = stop(watcher);
    assert!(seen.contains("devices/relay-live/t after"), "{seen}");
    assert!(!seen.contains("before"), "{seen}");
}

/// Publishes QoS 1 to `topic` every 50 ms until the broker acknowledges
/// it, and
/// returns how long that took, failing after `deadline`.
fn publish_until_allowed(c: &mut Client, topic: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    let mut id = 100;
    loop {
        id += 1;
        c.publish(topic, 1, id, b"probe");
        let ack = c.packet();
        assert_eq!(
            &ack[..4],
            [0x40, ack[1], (id >> 8) as u8, id as u8],
            "{ack:?}"
        );
        // The broker's answers are success codes (0x00, or 0x10 "no
        // matching subscribers"); the gateway's refusal is 0x87.
        if ack.len() == 4 || ack[4] < 0x80 {
            return start.elapsed();
        }
        assert_eq!(ack[4], 0x87, "denied until the change arrives: {ack:?}");
        assert!(
            start.elapsed() < deadline,
            "still denied after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two gateways on one Redis, each with its own admin API: a session
/// relayed by one follows changes made through the other within a second
/// (the role it holds is defined, then the user is deleted), through the
/// Redis events and the per-worker access cache.
#[test]
fn over_redis_changes_made_on_another_instance_reach_a_live_session_within_a_second() {
    let redis = RedisServer::start();
    let broker = Mosquitto::start("");
    let (url, upstream) = (redis.url(), broker.addr.to_string());
    let prefix = format!("relay{}", std::process::id());
    let args = [
        "--store",
        &url,
        "--redis-prefix",
        &prefix,
        "--mqtt-upstream",
        &upstream,
    ];
    let (a, b) = (Gateway::start(&args), Gateway::start(&args));
    let token = b.admin_token();
    let call = |method: &str, path: &str, body: serde_json::Value| {
        let r = authed(b.admin, &token, method, path, body.to_string().as_bytes());
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
    };
    call("POST", "/api/client-registry/unlock", json!({}));
    call("PUT", "/api/roles/relay-fleet", json!({"permissions": []}));
    let name = "relay-redis-1";
    assert_eq!(register(a.http, &creds(name, PASSWORD)).status, 202);
    call(
        "POST",
        &format!("/api/client-registry/requests/{name}/grant"),
        json!({"roles": ["relay-fleet"]}),
    );
    let mut c = Client::connect(a.mqtt, MqttLevel::V5, "redis-1", name);
    let topic = format!("devices/{name}/t");
    c.publish(&topic, 1, 1, b"denied");
    assert_eq!(
        c.packet(),
        [0x40, 0x04, 0x00, 0x01, 0x87, 0x00],
        "no access yet"
    );

    // The role the user holds gains the topic, on the other instance.
    call(
        "PUT",
        "/api/roles/relay-fleet",
        json!({"permissions": [
            {"resource": "devices/{username}/#", "operation": "write", "context": "mqtt"}
        ]}),
    );
    let took = publish_until_allowed(&mut c, &topic, Duration::from_secs(3));
    assert!(
        took < Duration::from_secs(1),
        "allowed {took:?} after the role change"
    );

    // The user is deleted on the other instance: the session is cut.
    let r = authed(
        b.admin,
        &token,
        "DELETE",
        &format!("/api/users/{name}"),
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let deleted = Instant::now();
    c.s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    let n = c.s.read(&mut buf).unwrap_or(0);
    let took = deleted.elapsed();
    assert_eq!(n, 0, "closed, not answered: {:?}", &buf[..n]);
    assert!(
        took < Duration::from_secs(1),
        "closed {took:?} after the delete"
    );
}
