//! The explicit (HTTP) registration flow end to end, against the real
//! `fleetgate` binary: every row of the decision order, the admin API's
//! auth, forwarding through the proxy, and survival of `kill -9`.

use std::time::Duration;

use fleetgate_tests::*;
use serde_json::json;

const REGISTER: &str = "/api/client-registry/register";

/// An idle gateway advises the 5 s base `Retry-After`, jittered ±20%.
fn assert_paced(r: &Response) {
    let secs: u32 = r
        .header("Retry-After")
        .expect("Retry-After on 202 and 423")
        .parse()
        .expect("whole seconds");
    assert!((4..=6).contains(&secs), "Retry-After {secs}");
}

fn unlock(g: &Gateway, token: &str, ms: u64) -> serde_json::Value {
    let r = authed(
        g.admin,
        token,
        "POST",
        "/api/client-registry/unlock",
        json!({"durationMs": ms}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn grant(g: &Gateway, token: &str, username: &str) -> serde_json::Value {
    let r = authed(
        g.admin,
        token,
        "POST",
        &format!("/api/client-registry/requests/{username}/grant"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn locked_unlock_pending_grant_collect_login() {
    let g = Gateway::start(&[]);
    let device = creds("sensor-0001", "s3cret-pass");

    // Locked by default: 423, nothing stored.
    let r = register(g.http, &device);
    assert_eq!(r.status, 423, "{}", r.text());
    assert_eq!(r.json()["status"], "locked");
    assert_paced(&r);

    let token = g.admin_token();
    let state = unlock(&g, &token, 300_000);
    assert_eq!(state["locked"], false);
    assert!(state["unlockedUntil"].as_str().unwrap().ends_with('Z'));

    // First poll creates the pending request; the second finds it.
    let r1 = register(g.http, &device);
    assert_eq!(r1.status, 202, "{}", r1.text());
    assert_eq!(r1.json()["status"], "pending");
    assert_paced(&r1);
    let pairing = r1.json()["pairingId"].as_str().unwrap().to_owned();
    assert_eq!(pairing.len(), 6);
    assert!(pairing.chars().all(|c| c.is_ascii_hexdigit()));
    let r2 = register(g.http, &device);
    assert_eq!(r2.status, 202);
    assert_eq!(r2.json()["pairingId"], pairing.as_str());

    // The admin sees the same pairing id, the poll count and the source.
    let list = authed(
        g.admin,
        &token,
        "GET",
        "/api/client-registry/requests?state=pending",
        b"",
    );
    assert_eq!(list.status, 200, "{}", list.text());
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["username"], "sensor-0001");
    assert_eq!(items[0]["pairingId"], pairing.as_str());
    assert_eq!(items[0]["transport"], "http");
    assert_eq!(items[0]["polls"], 2);
    assert!(items[0]["sourceAddr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let status = authed(g.admin, &token, "GET", "/api/client-registry", b"").json();
    assert_eq!(status["pending"], 1);

    // Grant, then the device collects 201 and can log in.
    let granted = grant(&g, &token, "sensor-0001");
    assert_eq!(granted["state"], "granted");
    let r = register(g.http, &device);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "granted");
    assert_eq!(r.json()["pairingId"], pairing.as_str());
    let device_token = login(g.http, "sensor-0001", "s3cret-pass");
    assert_eq!(device_token.split('.').count(), 3, "a JWT has three parts");

    // The password is stored only as a PHC hash: never in the data dir.
    for entry in std::fs::read_dir(&g.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"s3cret-pass"),
            "clear-text password found in the data dir"
        );
    }
    let journal = std::fs::read_to_string(g.data_dir.join("journal.log")).unwrap();
    assert!(journal.contains("$argon2id$"), "{journal}");
}

#[test]
fn every_row_of_the_decision_order() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();

    // 400: not JSON, wrong types, missing username, both or no credential.
    for body in [
        "not json".to_string(),
        json!({"username": 7, "password": "secret"}).to_string(),
        json!({"password": "secret"}).to_string(),
        json!({"username": "dev01", "password": "secret", "csr": "x"}).to_string(),
        json!({"username": "dev01"}).to_string(),
    ] {
        let r = request(g.http, "POST", REGISTER, &[], body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["status"], "invalid");
        assert!(r.json()["error"].as_str().is_some());
    }
    // Unknown fields are ignored.
    let r = register(
        g.http,
        &json!({"username": "dev01", "password": "secret", "color": "red"}),
    );
    assert_eq!(r.status, 423);

    // 413: a body over 64 KiB; exactly 64 KiB is parsed (and is bad JSON).
    let big = vec![b' '; 64 * 1024 + 1];
    let r = request(g.http, "POST", REGISTER, &[], &big);
    assert_eq!(r.status, 413, "{}", r.text());
    let at_cap = vec![b' '; 64 * 1024];
    assert_eq!(request(g.http, "POST", REGISTER, &[], &at_cap).status, 400);

    // 422: each policy rule, naming the rule.
    for (body, rule) in [
        (creds("ab", "secret"), "username_length"),
        (creds(&"u".repeat(129), "secret"), "username_length"),
        (creds("bad name", "secret"), "username_charset"),
        (creds("dev01", "four"), "password_length"),
    ] {
        let r = register(g.http, &body);
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_eq!(r.json()["status"], "policy");
        assert_eq!(r.json()["rule"], rule);
    }

    // 423 while locked, with nothing stored.
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 423);
    let one = authed(
        g.admin,
        &token,
        "GET",
        "/api/client-registry/requests/dev01",
        b"",
    );
    assert_eq!(one.status, 404);

    unlock(&g, &token, 300_000);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    // 409: same username, other credentials; the stored request is unchanged.
    let r = register(g.http, &creds("dev01", "hijack"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["status"], "conflict");
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    // Different requested roles are a different request too.
    let with_roles = json!({"username": "dev01", "password": "secret", "roles": ["sensor"]});
    assert_eq!(register(g.http, &with_roles).status, 409);

    // 403: denied, then 409 for anything else on that username.
    assert_eq!(register(g.http, &creds("dev02", "secret")).status, 202);
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/dev02/deny",
        b"",
    );
    assert_eq!(r.status, 204);
    let r = register(g.http, &creds("dev02", "secret"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["status"], "denied");
    assert_eq!(register(g.http, &creds("dev02", "other")).status, 409);

    // 409: the username of an existing user (the admin).
    assert_eq!(register(g.http, &creds("admin", "whatever")).status, 409);

    // 201 and idempotent collection, also while locked; other creds 409.
    grant(&g, &token, "dev01");
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 201);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 201);
    let r = authed(g.admin, &token, "POST", "/api/client-registry/lock", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["locked"], true);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 201);
    assert_eq!(register(g.http, &creds("dev01", "nope!")).status, 409);
    // Granting twice is idempotent.
    assert_eq!(grant(&g, &token, "dev01")["state"], "granted");
}

#[test]
fn pending_request_survives_a_lock_and_can_still_be_granted() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token, 300_000);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    authed(g.admin, &token, "POST", "/api/client-registry/lock", b"");
    let r = register(g.http, &creds("dev01", "secret"));
    assert_eq!(r.status, 423);
    assert_eq!(r.json()["status"], "locked");
    assert!(
        r.json()["pairingId"].is_string(),
        "the request is still pending"
    );
    grant(&g, &token, "dev01");
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 201);
}

#[test]
fn the_lock_expires_by_itself() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    unlock(&g, &token, 1500);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    std::thread::sleep(Duration::from_millis(1700));
    let status = authed(g.admin, &token, "GET", "/api/client-registry", b"").json();
    assert_eq!(status["locked"], true);
    assert_eq!(status["unlockedUntil"], serde_json::Value::Null);
    assert_eq!(register(g.http, &creds("dev02", "secret")).status, 423);
    // dev01 stays pending while locked.
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 423);
    assert_eq!(status["pending"], 1);
}

#[test]
fn pending_requests_expire_when_polling_stops() {
    let g = Gateway::start(&["--pending-ttl", "1s"]);
    let token = g.admin_token();
    unlock(&g, &token, 300_000);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    assert_eq!(register(g.http, &creds("dev01", "other")).status, 409);
    std::thread::sleep(Duration::from_millis(1200));
    // Forgotten: the username is free for a new request.
    assert_eq!(register(g.http, &creds("dev01", "other")).status, 202);
}

#[test]
fn admin_api_requires_an_admin_token() {
    let g = Gateway::start(&[]);
    let token = g.admin_token();
    // No token, a garbage token: 401.
    let r = request(g.admin, "GET", "/api/client-registry", &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = authed(g.admin, "not-a-jwt", "GET", "/api/client-registry", b"");
    assert_eq!(r.status, 401);
    // Wrong password: 401.
    let r = request(
        g.admin,
        "POST",
        "/api/login",
        &[],
        creds("admin", "wrong-password").to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    // A device's token: 403.
    unlock(&g, &token, 300_000);
    register(g.http, &creds("dev01", "secret"));
    grant(&g, &token, "dev01");
    let device_token = login(g.admin, "dev01", "secret");
    let r = authed(g.admin, &device_token, "GET", "/api/client-registry", b"");
    assert_eq!(r.status, 403, "{}", r.text());
    // ?apiToken= works for compatibility.
    let r = request(
        g.admin,
        "GET",
        &format!("/api/client-registry?apiToken={token}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    // A deleted user can no longer log in, and its token stops working.
    let r = authed(g.admin, &token, "DELETE", "/api/users/dev01", b"");
    assert_eq!(r.status, 204);
    let r = request(
        g.admin,
        "POST",
        "/api/login",
        &[],
        creds("dev01", "secret").to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    let r = authed(g.admin, &device_token, "GET", "/api/users", b"");
    assert_eq!(r.status, 401);
}

#[test]
fn the_proxy_forwards_the_admin_api_in_single_port_mode() {
    let g = Gateway::start(&["--admin-on-device-port", "on"]);
    // Login, admin calls and a device login all through the device port.
    let token = login(g.http, "admin", ADMIN_PASSWORD);
    let r = authed(g.http, &token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["locked"], false);
    assert_eq!(register(g.http, &creds("dev01", "secret")).status, 202);
    let r = authed(
        g.http,
        &token,
        "POST",
        "/api/client-registry/requests/dev01/grant",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = login(g.http, "dev01", "secret");
    assert!(!t.is_empty());
    let r = request(g.http, "GET", "/api/users", &[], b"");
    assert_eq!(r.status, 401);
    let r = authed(g.http, &token, "GET", "/api/users/dev01", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["username"], "dev01");
    assert!(
        r.json().get("passwordHash").is_none(),
        "no credential leaks"
    );
    // Paths outside /api are not forwarded.
    assert_eq!(request(g.http, "GET", "/nothing", &[], b"").status, 404);
    // Wrong method on the register route.
    let r = request(g.http, "GET", REGISTER, &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
}

#[test]
fn grants_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gateway::start_in(dir.path(), &[]);
    let token = g.admin_token();
    unlock(&g, &token, 300_000);
    for d in ["dev01", "dev02", "dev03"] {
        assert_eq!(register(g.http, &creds(d, "secret")).status, 202);
    }
    grant(&g, &token, "dev01");
    grant(&g, &token, "dev02");
    g.process.kill9();
    drop(g);

    let g = Gateway::start_in(dir.path(), &[]);
    // Granted users log in, and their grants can still be collected, even
    // though the restarted registry is locked.
    for d in ["dev01", "dev02"] {
        login(g.http, d, "secret");
        assert_eq!(register(g.http, &creds(d, "secret")).status, 201, "{d}");
    }
    // The pending request lived in memory only.
    assert_eq!(register(g.http, &creds("dev03", "secret")).status, 423);
    let token = g.admin_token();
    let users = authed(g.admin, &token, "GET", "/api/users", b"").json();
    let names: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "dev01", "dev02"]);
}
