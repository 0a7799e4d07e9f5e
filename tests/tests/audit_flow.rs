//! The audit log end to end, against the real `fleetgate` binary: a
//! scripted admin session (a failed login through the device port, a
//! login, unlock, grant, deny, delete, a role and a user change, a rule
//! put, a rule's auto-grant, lock) is listed by `GET /api/audit` in order
//! with the right actor, source and target; it survives `kill -9` on the
//! embedded store and a restart on Redis; the `--audit-log` file holds the
//! same records; and no password or token is in either.
//!
//! Sources: the admin client connects from 127.0.0.2 (not a trusted
//! forwarder, so its own address counts), the failed login comes through
//! a device port from 127.0.0.3 (forwarded in-process with the real
//! peer), and the devices poll from 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use fleetgate_tests::redis::RedisServer;
use fleetgate_tests::*;
use serde_json::{json, Value};

const ADMIN_HOST: &str = "127.0.0.2";
const WRONG_PASSWORD: &str = "wrong-guess-Zq81";
const DEVICE_PASSWORD: &str = "device-secret-Pw55";

fn from(
    host: &str,
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &Value,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request_from(
        host.parse::<IpAddr>().unwrap(),
        addr,
        method,
        path,
        &headers,
        &body,
    )
}

fn admin(g: &Gateway, token: &str, method: &str, path: &str, body: Value) -> Response {
    from(ADMIN_HOST, g.admin, Some(token), method, path, &body)
}

/// The scripted session; returns the admin's token.
fn script(g: &Gateway) -> String {
    let r = from(
        "127.0.0.3",
        g.http,
        None,
        "POST",
        "/api/login",
        &json!({"username": "admin", "password": WRONG_PASSWORD}),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = from(
        ADMIN_HOST,
        g.admin,
        None,
        "POST",
        "/api/login",
        &json!({"username": "admin", "password": ADMIN_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let ok = |r: Response, want: u16| assert_eq!(r.status, want, "{}", r.text());

    ok(
        admin(
            g,
            &token,
            "POST",
            "/api/client-registry/unlock",
            Value::Null,
        ),
        200,
    );
    for d in ["dev-a", "dev-b", "dev-c"] {
        ok(register(g.http, &creds(d, DEVICE_PASSWORD)), 202);
    }
    ok(
        admin(
            g,
            &token,
            "POST",
            "/api/client-registry/requests/dev-a/grant",
            Value::Null,
        ),
        200,
    );
    ok(
        admin(
            g,
            &token,
            "POST",
            "/api/client-registry/requests/dev-b/deny",
            Value::Null,
        ),
        204,
    );
    ok(
        admin(
            g,
            &token,
            "DELETE",
            "/api/client-registry/requests/dev-c",
            Value::Null,
        ),
        204,
    );
    ok(
        admin(
            g,
            &token,
            "PUT",
            "/api/roles/sensor",
            json!({"permissions": []}),
        ),
        200,
    );
    ok(
        admin(
            g,
            &token,
            "PATCH",
            "/api/users/dev-a",
            json!({"roles": ["sensor"]}),
        ),
        200,
    );
    ok(
        admin(
            g,
            &token,
            "PUT",
            "/api/client-registry/rules/plant",
            json!({"usernamePattern": "plant-[0-9]+", "action": "grant", "roles": ["sensor"]}),
        ),
        201,
    );
    ok(register(g.http, &creds("plant-1", DEVICE_PASSWORD)), 201);
    ok(
        admin(g, &token, "POST", "/api/client-registry/lock", Value::Null),
        200,
    );
    token
}

/// `[actor, source, action, target, result]` of every record, oldest first.
fn rows(records: &[Value]) -> Vec<[String; 5]> {
    records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            [
                s("actor"),
                s("source"),
                s("action"),
                s("target"),
                s("result"),
            ]
        })
        .collect()
}

fn expected() -> Vec<[String; 5]> {
    let r = |a: &str, s: &str, act: &str, t: &str, res: &str| {
        [a.into(), s.into(), act.into(), t.into(), res.into()]
    };
    vec![
        r("admin", "127.0.0.3", "login", "-", "unauthorized"),
        r("admin", ADMIN_HOST, "login", "-", "ok"),
        r("admin", ADMIN_HOST, "registry.unlock", "-", "ok"),
        r("admin", ADMIN_HOST, "request.grant", "dev-a", "ok"),
        r("admin", ADMIN_HOST, "request.deny", "dev-b", "ok"),
        r("admin", ADMIN_HOST, "request.delete", "dev-c", "ok"),
        r("admin", ADMIN_HOST, "role.put", "sensor", "ok"),
        r("admin", ADMIN_HOST, "user.update", "dev-a", "ok"),
        r("admin", ADMIN_HOST, "rule.put", "plant", "ok"),
        r("rule:plant", "127.0.0.1", "request.grant", "plant-1", "ok"),
        r("admin", ADMIN_HOST, "registry.lock", "-", "ok"),
    ]
}

/// Every record through the API, oldest first, following the cursor.
fn audit_log(g: &Gateway, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/api/audit?order=oldest&limit=4".to_owned();
    loop {
        let r = admin(g, token, "GET", &path, Value::Null);
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => path = format!("/api/audit?order=oldest&limit=4&cursor={c}"),
            None => return out,
        }
    }
}

/// The session's records: every record but the logins of later checks.
fn session(records: &[Value]) -> Vec<Value> {
    records.iter().take(expected().len()).cloned().collect()
}

fn file_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON record"))
        .collect()
}

fn assert_no_secret(text: &str, token: &str) {
    for secret in [ADMIN_PASSWORD, WRONG_PASSWORD, DEVICE_PASSWORD, token] {
        assert!(
            !text.contains(secret),
            "a secret ({}…) is in the audit log",
            &secret[..4]
        );
    }
}

#[test]
fn an_admin_session_is_listed_in_order_survives_kill_9_and_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let file_arg = file.to_str().unwrap().to_owned();
    let args = ["--audit-log", file_arg.as_str()];
    let mut g = Gateway::start_in(&dir.path().join("data"), &args);
    let token = script(&g);

    let before = session(&audit_log(&g, &token));
    assert_eq!(rows(&before), expected());
    assert_eq!(
        before[3]["pairingId"].as_str().map(str::len),
        Some(6),
        "{}",
        before[3]
    );
    assert!(before[9]["pairingId"].is_string());

    // The file gets the same records (written off the request path: wait
    // for the writer, then kill it).
    poll_until(
        Duration::from_secs(10),
        || file_records(&file).len(),
        |n| *n >= expected().len(),
    );
    let in_file = file_records(&file);
    assert_eq!(in_file[..expected().len()], before[..]);

    g.process.kill9();
    let g = Gateway::start_in(&dir.path().join("data"), &args);
    let token_after = login(g.admin, "admin", ADMIN_PASSWORD);
    let after = session(&audit_log(&g, &token_after));
    assert_eq!(after, before, "the audit log is durable across kill -9");

    let api_text = serde_json::to_string(&audit_log(&g, &token_after)).unwrap();
    assert_no_secret(&api_text, &token);
    assert_no_secret(&std::fs::read_to_string(&file).unwrap(), &token);
    for f in ["audit.log", "journal.log"] {
        let bytes = std::fs::read(dir.path().join("data").join(f)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            ADMIN_PASSWORD,
            WRONG_PASSWORD,
            DEVICE_PASSWORD,
            token.as_str(),
        ] {
            assert!(!text.contains(secret), "a secret is in {f}");
        }
    }
}

#[test]
fn an_admin_session_is_listed_in_order_on_redis_and_survives_a_restart() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = format!("audit{}", std::process::id());
    let args = ["--store", url.as_str(), "--redis-prefix", prefix.as_str()];
    let mut g = Gateway::start(&args);
    let token = script(&g);
    let before = session(&audit_log(&g, &token));
    assert_eq!(rows(&before), expected());
    g.process.kill9();
    let g = Gateway::start(&args);
    let token_after = login(g.admin, "admin", ADMIN_PASSWORD);
    let all = audit_log(&g, &token_after);
    assert_eq!(session(&all), before);
    assert_no_secret(&serde_json::to_string(&all).unwrap(), &token);
}

#[test]
fn an_audit_log_that_cannot_be_opened_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("audit.jsonl");
    let out = std::process::Command::new(bin_dir().join("fleetgate"))
        .args(["--audit-log", missing.to_str().unwrap()])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env_remove("FLEETGATE_AUDIT_LOG")
        .output()
        .expect("run fleetgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--audit-log"), "{stderr}");
}
