//! Webhooks end to end, against the real `fleetgate` binary and a receiver
//! that verifies every signature on its own (`tests/webhook_receiver.py`,
//! Python's hmac/hashlib/base64, not the gateway's code): each event type a
//! scripted session produces arrives signed, with the admin API's view and
//! no secret; retries follow the (shortened) schedule and `Retry-After`; a
//! 410 stops an endpoint; the schedule gives up; and a grant whose event
//! was never delivered survives `kill -9` and arrives after the restart,
//! with the same `webhook-id` on every copy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_tests::redis::RedisServer;
use fleetgate_tests::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver process, on a port of the test's choosing (so a test can
/// stop it and start it again on the same port).
struct Receiver {
    _process: Process,
    log: PathBuf,
}

impl Receiver {
    fn start(port: u16, log: &Path) -> Receiver {
        Receiver::start_with(port, log, &[])
    }

    /// An HTTPS receiver with this certificate chain and key (PEM files).
    fn start_tls(port: u16, log: &Path, cert: &Path, key: &Path) -> Receiver {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        Receiver::start_with(port, log, &["--tls-cert", cert, "--tls-key", key])
    }

    fn start_with(port: u16, log: &Path, extra: &[&str]) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook_receiver.py");
        let port_text = port.to_string();
        let mut args = vec![
            script.to_str().unwrap(),
            "--port",
            &port_text,
            "--secret",
            SECRET,
            "--log",
            log.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let process = spawn_program(Path::new("python3"), &args, &[]);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        poll_until(
            Duration::from_secs(20),
            || TcpStream::connect(addr).is_ok(),
            |up| *up,
        );
        Receiver {
            _process: process,
            log: log.to_owned(),
        }
    }

    fn lines(&self) -> Vec<Value> {
        read_log(&self.log)
    }
}

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn event_type(line: &Value) -> String {
    let body: Value = serde_json::from_str(line["body"].as_str().unwrap()).unwrap();
    body["type"].as_str().unwrap().to_owned()
}

fn body(line: &Value) -> Value {
    serde_json::from_str(line["body"].as_str().unwrap()).unwrap()
}

/// Waits until `done` holds for the receiver's log.
fn wait_for(receiver: &Receiver, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let (lines, _) = poll_until(Duration::from_secs(60), || receiver.lines(), |l| done(l));
    assert!(!lines.is_empty(), "{what}");
    lines
}

fn webhook_args(urls: &[String]) -> Vec<String> {
    webhook_args_with(urls, "200ms,400ms")
}

fn webhook_args_with(urls: &[String], schedule: &str) -> Vec<String> {
    let mut args = vec![
        "--webhook-secret".to_string(),
        SECRET.to_string(),
        "--webhook-poll-interval".to_string(),
        "50ms".to_string(),
        "--webhook-retry-schedule".to_string(),
        schedule.to_string(),
        "--webhook-timeout".to_string(),
        "2s".to_string(),
    ];
    for u in urls {
        args.push("--webhook-url".into());
        args.push(u.clone());
    }
    args
}

fn start_gateway(data_dir: Option<&Path>, args: &[String]) -> Gateway {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match data_dir {
        Some(dir) => Gateway::start_in(dir, &args),
        None => Gateway::start(&args),
    }
}

/// Unlocks the registry for 10 minutes; it must answer 200.
fn unlock(g: &Gateway, token: &str) {
    let r = admin(
        g,
        token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": 600_000}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn admin(g: &Gateway, token: &str, method: &str, path: &str, body: Value) -> Response {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    authed(g.admin, token, method, path, &body)
}

/// An unlock window that closes by itself is announced once, by the
/// sweep (every 5 s), as `registry.locked` with `"expired": true`, dated at
/// the window's end. `store_args` picks the store.
fn the_end_of_an_unlock_window_arrives_on(store_args: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(port, &dir.path().join("hooks.jsonl"));
    let mut args = webhook_args(&[format!("http://127.0.0.1:{port}/ok")]);
    args.extend_from_slice(store_args);
    let g = start_gateway(None, &args);
    let token = g.admin_token();
    let r = admin(
        &g,
        &token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": 1000}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let until = r.json()["unlockedUntil"].as_str().unwrap().to_owned();
    let lines = wait_for(&receiver, "registry.locked after the window", |l| {
        l.iter().any(|l| event_type(l) == "registry.locked")
    });
    let locked: Vec<Value> = lines
        .iter()
        .filter(|l| event_type(l) == "registry.locked")
        .map(body)
        .collect();
    assert_eq!(locked[0]["data"]["expired"], true, "{locked:?}");
    assert_eq!(locked[0]["timestamp"], until.as_str());
    // The next sweep (5 s later) announces nothing more.
    std::thread::sleep(Duration::from_millis(5500));
    let again = receiver
        .lines()
        .iter()
        .filter(|l| event_type(l) == "registry.locked")
        .count();
    assert_eq!(again, 1);
    assert_eq!(
        authed(g.admin, &token, "GET", "/api/client-registry", b"").json()["locked"],
        true
    );
}

#[test]
fn the_end_of_an_unlock_window_arrives() {
    the_end_of_an_unlock_window_arrives_on(&[]);
}

#[test]
fn the_end_of_an_unlock_window_arrives_on_redis() {
    let redis = RedisServer::start();
    the_end_of_an_unlock_window_arrives_on(&[
        "--store".into(),
        redis.url(),
        "--redis-prefix".into(),
        format!("ends{}", std::process::id()),
    ]);
}

#[test]
fn every_event_type_arrives_signed_with_the_admin_view_and_no_secret() {
    every_event_type_arrives(&[]);
}

#[test]
fn every_event_type_arrives_the_same_on_redis() {
    let redis = RedisServer::start();
    let prefix = format!("hooks{}", std::process::id());
    every_event_type_arrives(&[
        "--store".into(),
        redis.url(),
        "--redis-prefix".into(),
        prefix,
    ]);
}

/// A scripted session on a gateway started with `store_args`: every event
/// type arrives once per decision, signed, with the admin view and no
/// secret.
fn every_event_type_arrives(store_args: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(port, &dir.path().join("hooks.jsonl"));
    let mut args = webhook_args(&[format!("http://127.0.0.1:{port}/ok")]);
    args.extend_from_slice(store_args);
    let g = start_gateway(None, &args);
    let token = g.admin_token();
    let ok = |r: Response, want: u16| assert_eq!(r.status, want, "{}", r.text());

    unlock(&g, &token);
    for (name, pw) in [
        ("dev-a", "pw-a-secret"),
        ("dev-b", "pw-b-secret"),
        ("dev-c", "pw-c-secret"),
    ] {
        assert_eq!(register(g.http, &creds(name, pw)).status, 202);
        // A re-poll emits nothing more.
        assert_eq!(register(g.http, &creds(name, pw)).status, 202);
    }
    let requests = "/api/client-registry/requests";
    ok(
        admin(
            &g,
            &token,
            "POST",
            &format!("{requests}/dev-a/grant"),
            Value::Null,
        ),
        200,
    );
    ok(
        admin(
            &g,
            &token,
            "POST",
            &format!("{requests}/dev-b/deny"),
            Value::Null,
        ),
        204,
    );
    ok(
        admin(
            &g,
            &token,
            "DELETE",
            &format!("{requests}/dev-c"),
            Value::Null,
        ),
        204,
    );
    ok(
        admin(
            &g,
            &token,
            "PATCH",
            "/api/users/dev-a",
            json!({"permissions": []}),
        ),
        200,
    );
    ok(
        admin(&g, &token, "DELETE", "/api/users/dev-a", Value::Null),
        204,
    );
    let r = admin(
        &g,
        &token,
        "PUT",
        "/api/client-registry/rules/autos",
        json!({"usernamePattern": "auto-[0-9]+", "action": "grant"}),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    assert_eq!(
        register(g.http, &creds("auto-1", "pw-auto-secret")).status,
        201
    );
    ok(
        admin(&g, &token, "POST", "/api/client-registry/lock", Value::Null),
        200,
    );

    let all = [
        "registry.unlocked",
        "request.pending",
        "request.granted",
        "request.denied",
        "request.deleted",
        "user.updated",
        "user.deleted",
        "rule.matched",
        "registry.locked",
    ];
    let lines = wait_for(&receiver, "every event type", |lines| {
        let seen: BTreeSet<String> = lines.iter().map(event_type).collect();
        all.iter().all(|t| seen.contains(*t))
            && lines
                .iter()
                .filter(|l| event_type(l) == "request.granted")
                .count()
                >= 2
            && lines
                .iter()
                .filter(|l| event_type(l) == "request.pending")
                .count()
                >= 4
    });
    for line in &lines {
        assert_eq!(line["valid"], true, "signature checked in Python: {line}");
        let text = line["body"].as_str().unwrap();
        for secret in [
            "pw-a-secret",
            "pw-b-secret",
            "pw-c-secret",
            "pw-auto-secret",
            "$argon2",
            "sealed",
            "passwordHash",
            &SECRET[6..],
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let b = body(line);
        assert!(b["timestamp"].as_str().unwrap().ends_with('Z'), "{b}");
        assert!(line["id"].as_str().unwrap().starts_with("msg_"));
    }
    // One request.pending per new request, none for the re-polls.
    let pending: Vec<String> = lines
        .iter()
        .filter(|l| event_type(l) == "request.pending")
        .map(|l| body(l)["data"]["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pending.len(), 4, "{pending:?}");
    let of = |t: &str, user: &str| -> Value {
        lines
            .iter()
            .map(body)
            .find(|b| {
                b["type"] == t
                    && (b["data"]["username"] == user || b["data"]["request"]["username"] == user)
            })
            .unwrap_or_else(|| panic!("no {t} for {user}"))
    };
    let granted = of("request.granted", "dev-a");
    assert_eq!(granted["data"]["state"], "granted");
    assert!(granted["data"]["pairingId"].is_string());
    assert!(
        granted["data"].get("decidedBy").is_none(),
        "an admin decided"
    );
    assert_eq!(of("request.denied", "dev-b")["data"]["state"], "denied");
    assert_eq!(of("request.deleted", "dev-c")["data"]["username"], "dev-c");
    assert_eq!(
        of("user.updated", "dev-a")["data"]["permissions"],
        json!([])
    );
    assert_eq!(of("user.deleted", "dev-a")["data"]["hasPassword"], true);
    let by_rule = of("request.granted", "auto-1");
    assert_eq!(by_rule["data"]["decidedBy"], json!({"rule": "autos"}));
    let matched = of("rule.matched", "auto-1");
    assert_eq!(matched["data"]["rule"], "autos");
    assert_eq!(matched["data"]["action"], "grant");
    let locked = lines
        .iter()
        .map(body)
        .find(|b| b["type"] == "registry.locked")
        .unwrap();
    assert_eq!(locked["data"]["locked"], true);
    // Each outbox event arrives once (`request.pending` is best effort and
    // not retried, so it cannot be doubled either): no id twice.
    let mut ids = BTreeSet::new();
    for l in &lines {
        assert!(ids.insert(l["id"].as_str().unwrap()), "{l} arrived twice");
    }
}

#[test]
fn retries_follow_the_schedule_and_retry_after_and_410_stops_an_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(port, &dir.path().join("hooks.jsonl"));
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let g = start_gateway(
        None,
        &webhook_args(&[
            url("/flaky/2"),
            url("/retry-after/1"),
            url("/gone"),
            url("/flaky/99"),
        ]),
    );
    let token = g.admin_token();
    unlock(&g, &token);
    wait_for(&receiver, "the first 410", |l| {
        l.iter().any(|l| l["path"] == "/gone")
    });
    let r = admin(&g, &token, "POST", "/api/client-registry/lock", Value::Null);
    assert_eq!(r.status, 200);

    // Both events: 3 attempts on /flaky/2 (500, 500, 200), 2 on
    // /retry-after/1 (503, 200), and the full schedule of 3 on /flaky/99.
    let lines = wait_for(&receiver, "every retry", |lines| {
        let count = |path: &str| lines.iter().filter(|l| l["path"] == path).count();
        count("/flaky/2") == 6 && count("/retry-after/1") == 4 && count("/flaky/99") == 6
    });
    let mut g = g;
    g.process
        .wait_for_line("webhook delivery given up", Duration::from_secs(30));
    let mut attempts: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for l in &lines {
        assert_eq!(l["valid"], true, "{l}");
        attempts
            .entry((
                l["path"].as_str().unwrap().into(),
                l["id"].as_str().unwrap().into(),
            ))
            .or_default()
            .push(l["received"].as_f64().unwrap());
    }
    let ids: BTreeSet<&String> = attempts.keys().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 2, "two events: {ids:?}");
    for ((path, _), at) in &attempts {
        let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
        match path.as_str() {
            "/flaky/2" | "/flaky/99" => {
                assert_eq!(at.len(), 3, "{path}: the first try and the 2 retries");
                assert!(gaps[0] >= 0.2 && gaps[1] >= 0.4, "{path} waited {gaps:?}");
            }
            "/retry-after/1" => {
                assert_eq!(at.len(), 2, "{path}");
                assert!(gaps[0] >= 1.0, "Retry-After: 1 honoured, waited {gaps:?}");
            }
            "/gone" => assert_eq!(at.len(), 1, "a 410 is not retried"),
            other => panic!("unexpected path {other}"),
        }
    }
    // The 410 disabled /gone: the lock event never went there.
    let gone = read_log(&receiver.log)
        .iter()
        .filter(|l| l["path"] == "/gone")
        .count();
    assert_eq!(gone, 1, "only the first event reached /gone");
    let metrics = request(g.metrics, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("fleetgate_webhook_endpoints_disabled_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetgate_webhook_gave_up_total 2"),
        "{metrics}"
    );
}

#[test]
fn an_undelivered_grant_survives_kill_9_and_arrives_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // Long enough a schedule that the events are still being retried when
    // the receiver comes up after the restart.
    let args = webhook_args_with(
        &[format!("http://127.0.0.1:{port}/ok")],
        "300ms,600ms,1s,2s,4s,8s,16s",
    );
    // The receiver is down: every attempt is refused and retried.
    let mut g = start_gateway(Some(&data), &args);
    let token = g.admin_token();
    unlock(&g, &token);
    assert_eq!(register(g.http, &creds("kept-1", "pw-kept")).status, 202);
    let r = admin(
        &g,
        &token,
        "POST",
        "/api/client-registry/requests/kept-1/grant",
        Value::Null,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    g.process.kill9();
    drop(g);

    let g = start_gateway(Some(&data), &args);
    let receiver = Receiver::start(port, &dir.path().join("hooks.jsonl"));
    let lines = wait_for(&receiver, "the grant after the restart", |lines| {
        lines.iter().any(|l| event_type(l) == "request.granted")
            && lines.iter().any(|l| event_type(l) == "registry.unlocked")
    });
    for l in &lines {
        assert_eq!(l["valid"], true, "{l}");
    }
    let granted = lines
        .iter()
        .find(|l| event_type(l) == "request.granted")
        .unwrap();
    assert_eq!(body(granted)["data"]["username"], "kept-1");
    // Every copy of one event carries the same id and the same body.
    let mut by_id: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in &lines {
        by_id
            .entry(l["id"].as_str().unwrap())
            .or_default()
            .insert(l["body"].as_str().unwrap());
    }
    assert!(by_id.values().all(|bodies| bodies.len() == 1), "{by_id:?}");
    // Delivered events are retired: a second restart sends nothing again.
    poll_until(
        Duration::from_secs(30),
        || request(g.metrics, "GET", "/metrics", &[], b"").text(),
        |m| m.contains("fleetgate_webhook_outbox_depth 0"),
    );
    let delivered = receiver.lines().len();
    drop(g);
    let mut g = start_gateway(Some(&data), &args);
    g.process
        .wait_for_line("embedded store opened", Duration::from_secs(30));
    let line = g
        .process
        .log
        .iter()
        .find(|l| l.contains("embedded store opened"))
        .cloned()
        .unwrap();
    assert!(line.contains("events=0"), "{line}");
    assert_eq!(receiver.lines().len(), delivered);
}

/// Two gateways on one Redis share the outbox: each event is delivered by
/// one of them, never by both; a gateway's held events are not taken while
/// it lives; and when it is killed with `kill -9`, the other one takes them
/// over and delivers them, with their ids.
#[test]
fn on_redis_each_event_is_delivered_once_and_a_killed_gateways_events_are_taken_over() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(port, &dir.path().join("hooks.jsonl"));
    let prefix = format!("shared{}", std::process::id());
    let gateway_to = |url: String| {
        let mut args = webhook_args_with(&[url], "300ms,600ms,1s,2s,4s,8s,16s");
        args.extend([
            "--store".into(),
            redis.url(),
            "--redis-prefix".into(),
            prefix.clone(),
            "--webhook-claim-idle".into(),
            "1s".into(),
        ]);
        start_gateway(None, &args)
    };
    let live = format!("http://127.0.0.1:{port}/ok");
    // Nothing listens there: every attempt is refused and retried.
    let dead = format!("http://127.0.0.1:{}/ok", free_port());
    let grant_all = |g: &Gateway, token: &str, names: &[&str]| {
        for name in names {
            let pw = format!("pw-{name}-secret");
            assert_eq!(register(g.http, &creds(name, &pw)).status, 202);
            let path = format!("/api/client-registry/requests/{name}/grant");
            let r = admin(g, token, "POST", &path, Value::Null);
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    let granted = |lines: &[Value]| -> BTreeSet<String> {
        lines
            .iter()
            .map(body)
            .filter(|b| b["type"] == "request.granted")
            .map(|b| b["data"]["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let once = |lines: &[Value]| {
        let mut ids = BTreeSet::new();
        for l in lines {
            assert_eq!(l["valid"], true, "{l}");
            assert!(ids.insert(l["id"].as_str().unwrap()), "{l} arrived twice");
        }
    };

    // Both gateways deliver to the receiver: every event once.
    let a = gateway_to(live.clone());
    let b = gateway_to(live.clone());
    let token = a.admin_token();
    unlock(&a, &token);
    let first: Vec<String> = (0..12).map(|i| format!("both-{i:02}")).collect();
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    grant_all(&a, &token, &first[..6]);
    grant_all(&b, &b.admin_token(), &first[6..]);
    let want: BTreeSet<String> = first.iter().map(|s| s.to_string()).collect();
    wait_for(&receiver, "the first grants", |l| granted(l) == want);
    // Time for a second delivery to show up, if there were one.
    std::thread::sleep(Duration::from_secs(1));
    once(&receiver.lines());
    let delivered = receiver.lines().len();
    drop(a);
    drop(b);

    // `holder` is alone when the decisions are made, so it holds every
    // event, and cannot deliver them.
    let mut holder = gateway_to(dead);
    let token = holder.admin_token();
    let second = ["held-1", "held-2", "held-3"];
    grant_all(&holder, &token, &second);
    holder
        .process
        .wait_for_line("webhook endpoint configured", Duration::from_secs(10));
    // Let the holder read them (it polls every 50 ms).
    std::thread::sleep(Duration::from_millis(500));
    // A live peer does not take them over while the holder lives, though
    // that is three take-over idle times.
    let mut peer = gateway_to(live);
    std::thread::sleep(Duration::from_secs(3));
    let lines = receiver.lines();
    let new: Vec<&Value> = lines[delivered..]
        .iter()
        .filter(|l| event_type(l) != "request.pending")
        .collect();
    assert!(new.is_empty(), "taken from a live holder: {new:?}");

    holder.process.kill9();
    let lines = wait_for(&receiver, "the held grants after kill -9", |l| {
        second.iter().all(|n| granted(l).contains(*n))
    });
    once(&lines);
    peer.process
        .wait_for_line("took over entries", Duration::from_secs(10));
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with
/// `openssl` in `dir`: (ca.pem, server.pem, server.key).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let (ca, ca_key, cert, csr, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("server.pem"),
        p("server.csr"),
        p("san.ext"),
    );
    let s = |path: &PathBuf| path.to_str().unwrap().to_owned();
    let (ca_s, ca_key_s, cert_s, csr_s, ext_s) = (s(&ca), s(&ca_key), s(&cert), s(&csr), s(&ext));
    let (ok, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=webhook test CA",
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
    ]);
    assert!(ok, "the CA: {out}");
    // The server's key and CSR, as the device tests make theirs.
    std::fs::write(&csr, make_csr(dir, "server", "/CN=127.0.0.1")).unwrap();
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (ok, out) = openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &csr_s,
        "-CA",
        &ca_s,
        "-CAkey",
        &ca_key_s,
        "-CAcreateserial",
        "-extfile",
        &ext_s,
        "-out",
        &cert_s,
    ]);
    assert!(ok, "the server certificate: {out}");
    (ca, cert, p("server.key"))
}

/// An `https://` endpoint gets the events when its certificate chains to
/// `--webhook-ca-cert`; a gateway that trusts only the system's roots
/// refuses the same receiver and delivers nothing to it.
#[test]
fn https_endpoints_are_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let port = free_port();
    let receiver = Receiver::start_tls(port, &dir.path().join("hooks.jsonl"), &cert, &key);
    let url = format!("https://127.0.0.1:{port}/ok");

    // Only the system's roots: the handshake fails, nothing arrives, and
    // the failure is counted.
    let untrusting = start_gateway(None, &webhook_args_with(std::slice::from_ref(&url), "5s"));
    unlock(&untrusting, &untrusting.admin_token());
    let failed = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("fleetgate_webhook_deliveries_total{result=\"failed\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (metrics, _) = poll_until(
        Duration::from_secs(30),
        || request(untrusting.metrics, "GET", "/metrics", &[], b"").text(),
        |m| failed(m) >= 1,
    );
    assert!(failed(&metrics) >= 1, "{metrics}");
    assert!(receiver.lines().is_empty(), "{:?}", receiver.lines());
    drop(untrusting);

    let mut args = webhook_args(&[url]);
    args.extend(["--webhook-ca-cert".into(), ca.to_str().unwrap().into()]);
    let trusting = start_gateway(None, &args);
    unlock(&trusting, &trusting.admin_token());
    let lines = wait_for(&receiver, "the unlock over https", |l| {
        l.iter().any(|l| event_type(l) == "registry.unlocked")
    });
    assert_eq!(lines[0]["valid"], true, "{}", lines[0]);
}

#[test]
fn bad_webhook_flags_are_usage_errors_that_never_echo_the_secret() {
    let bin = bin_dir().join("fleetgate");
    let bin = bin.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cases: [&[&str]; 4] = [
        // A URL without a secret.
        &["--webhook-url", "http://127.0.0.1:9/in"],
        // A secret that is not whsec_ + base64 of 24 to 64 bytes.
        &[
            "--webhook-url",
            "http://127.0.0.1:9/in",
            "--webhook-secret",
            "whsec_c2hvcnQ=",
        ],
        // https is not supported yet.
        &[
            "--webhook-url",
            "https://127.0.0.1:9/in",
            "--webhook-secret",
            SECRET,
            "--webhook-ca-cert",
            "/no/such/ca.pem",
        ],
        &[
            "--webhook-url",
            "http://127.0.0.1:9/in",
            "--webhook-secret",
            SECRET,
            "--webhook-claim-idle",
            "10ms",
        ],
    ];
    for extra in cases {
        let mut args = vec!["--data-dir", data];
        args.extend_from_slice(extra);
        let (code, _, err) = run_tool(bin, &args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains("--webhook"), "{extra:?}: {err}");
        assert!(
            !err.contains("c2hvcnQ") && !err.contains(&SECRET[6..]),
            "{err}"
        );
    }
}
