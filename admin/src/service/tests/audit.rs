//! The audit log through the admin API: every admin action recorded with
//! the right actor, source, target and result, `GET /api/audit` paging and
//! its refusals, the source behind a trusted forwarder, and the count cap
//! under a flood of failed logins.

use super::*;
use fleetgate_registry::audit::AuditConfig;

const AUDIT: &str = "/api/audit";

/// One request from `peer`, with optional headers.
async fn send_from<S: Store>(
    service: &AdminService<S>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
    peer: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    let response = service
        .handle(
            request.body(Bytes::from(body.to_owned())).unwrap(),
            Some(peer.parse().unwrap()),
        )
        .await;
    let status = response.status();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, body)
}

/// Every record, oldest first, as `[actor, action, target, result]`.
fn rows(page: &Value) -> Vec<[String; 4]> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            [s("actor"), s("action"), s("target"), s("result")]
        })
        .collect()
}

fn row(actor: &str, action: &str, target: &str, result: &str) -> [String; 4] {
    [actor.into(), action.into(), target.into(), result.into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_is_recorded_in_order_with_actor_source_and_result() {
    let service = service().await;
    let peer = "192.0.2.9:4000";
    let as_admin = |method: Method, uri: &'static str, token: String, body: &'static str| {
        let service = &service;
        async move { send_from(service, method, uri, Some(&token), body, peer, None).await }
    };
    let login_body = json!({"username": "admin", "password": "not-the-password"}).to_string();
    let (status, _) = send_from(
        &service,
        Method::POST,
        "/api/login",
        None,
        &login_body,
        peer,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let login_body = json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string();
    let (status, body) = send_from(
        &service,
        Method::POST,
        "/api/login",
        None,
        &login_body,
        peer,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["token"].as_str().unwrap().to_owned();

    let (status, _) = as_admin(
        Method::POST,
        "/api/client-registry/unlock",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for d in ["dev-1", "dev-2", "dev-3", "dev-4"] {
        assert!(matches!(
            poll(&service, d, "device-secret-1").await,
            RegisterOutcome::Pending { created: true, .. }
        ));
    }
    let pairing = service
        .registry()
        .store()
        .get_request("dev-1", UnixMillis::now())
        .await
        .unwrap()
        .unwrap()
        .pairing_id()
        .to_string();
    let (status, _) = as_admin(
        Method::POST,
        "/api/client-registry/requests/dev-1/grant",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = as_admin(
        Method::POST,
        "/api/client-registry/requests/dev-2/deny",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_admin(
        Method::DELETE,
        "/api/client-registry/requests/dev-3",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_admin(
        Method::POST,
        "/api/client-registry/requests/grant",
        token.clone(),
        r#"{"usernames": ["dev-4", "ghost"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = as_admin(
        Method::PUT,
        "/api/roles/sensor",
        token.clone(),
        r#"{"permissions":[]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = as_admin(
        Method::PATCH,
        "/api/users/dev-1",
        token.clone(),
        r#"{"roles":["sensor"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = as_admin(
        Method::PUT,
        "/api/client-registry/rules/plant",
        token.clone(),
        r#"{"usernamePattern":"plant-[0-9]+","action":"grant"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = as_admin(
        Method::PUT,
        "/api/client-registry/rules/order",
        token.clone(),
        r#"{"names":["plant"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A refusal is recorded too, with the error the admin saw.
    let (status, _) = as_admin(Method::DELETE, "/api/users/admin", token.clone(), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = as_admin(
        Method::DELETE,
        "/api/client-registry/rules/plant",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_admin(Method::DELETE, "/api/roles/sensor", token.clone(), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_admin(Method::DELETE, "/api/users/dev-1", token.clone(), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_admin(Method::POST, "/api/client-registry/lock", token.clone(), "").await;
    assert_eq!(status, StatusCode::OK);
    // Reads are not recorded.
    let (status, _) = as_admin(Method::GET, "/api/users", token.clone(), "").await;
    assert_eq!(status, StatusCode::OK);

    let (status, page) = as_admin(
        Method::GET,
        "/api/audit?order=oldest&limit=1000",
        token.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        rows(&page),
        [
            row("admin", "login", "-", "unauthorized"),
            row("admin", "login", "-", "ok"),
            row("admin", "registry.unlock", "-", "ok"),
            row("admin", "request.grant", "dev-1", "ok"),
            row("admin", "request.deny", "dev-2", "ok"),
            row("admin", "request.delete", "dev-3", "ok"),
            row("admin", "request.grant", "dev-4", "ok"),
            row("admin", "request.grant", "ghost", "not_found"),
            row("admin", "role.put", "sensor", "ok"),
            row("admin", "user.update", "dev-1", "ok"),
            row("admin", "rule.put", "plant", "ok"),
            row("admin", "rule.order", "-", "ok"),
            row("admin", "user.delete", "admin", "conflict"),
            row("admin", "rule.delete", "plant", "ok"),
            row("admin", "role.delete", "sensor", "ok"),
            row("admin", "user.delete", "dev-1", "ok"),
            row("admin", "registry.lock", "-", "ok"),
        ]
    );
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().all(|r| r["source"] == "192.0.2.9"), "{page}");
    assert_eq!(items[3]["pairingId"], pairing.as_str());
    assert_eq!(items[6]["detail"], "bulk");
    assert!(items[6]["pairingId"].is_string());
    assert_eq!(items[11]["detail"], "plant");
    assert!(items[2]["detail"].as_str().unwrap().starts_with("until "));
    assert_eq!(items[0]["error"], "unknown user or wrong password");
    assert!(items[12]["error"]
        .as_str()
        .unwrap()
        .contains("cannot be deleted"));
    // Ids grow, and no secret is anywhere in the log.
    let ids: Vec<fleetgate_registry::audit::AuditId> = items
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let text = page.to_string();
    for secret in [
        "not-the-password",
        ADMIN_PASSWORD,
        "device-secret-1",
        &token,
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_is_the_client_behind_a_trusted_forwarder_only() {
    let service = service().await;
    let token = admin_token(&service).await;
    let unlock = "/api/client-registry/unlock";
    send_from(
        &service,
        Method::POST,
        unlock,
        Some(&token),
        "",
        "127.0.0.1:5000",
        Some("203.0.113.5"),
    )
    .await;
    send_from(
        &service,
        Method::POST,
        unlock,
        Some(&token),
        "",
        "198.51.100.1:5000",
        Some("203.0.113.6"),
    )
    .await;
    let (_, page) = send_from(
        &service,
        Method::GET,
        "/api/audit?actor=admin&limit=2",
        Some(&token),
        "",
        "127.0.0.1:1",
        None,
    )
    .await;
    let sources: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    // Newest first: the untrusted peer's header was ignored.
    assert_eq!(sources, ["198.51.100.1", "203.0.113.5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_route_pages_newest_first_and_filters() {
    let service = service().await;
    let token = admin_token(&service).await;
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        let reply = put(
            &service,
            &format!("/api/roles/{name}"),
            &token,
            r#"{"permissions":[]}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let mut seen = Vec::new();
    let mut uri = format!("{AUDIT}?limit=2&actor=admin");
    loop {
        let reply = get(&service, &uri, &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(reply.body["items"].as_array().unwrap().len() <= 2);
        seen.extend(
            rows(&reply.body)
                .into_iter()
                .map(|r| format!("{} {}", r[1], r[2])),
        );
        match reply.body["nextCursor"].as_str() {
            Some(c) => uri = format!("{AUDIT}?limit=2&actor=admin&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "role.put r5",
            "role.put r4",
            "role.put r3",
            "role.put r2",
            "role.put r1",
            "login -"
        ]
    );
    let reply = get(&service, &format!("{AUDIT}?target=r3"), &token).await;
    assert_eq!(rows(&reply.body), [row("admin", "role.put", "r3", "ok")]);
    assert_eq!(reply.body["nextCursor"], Value::Null);
    let reply = get(&service, &format!("{AUDIT}?actor=nobody"), &token).await;
    assert_eq!(reply.body, json!({"items": [], "nextCursor": null}));
    let reply = get(
        &service,
        &format!("{AUDIT}?since=2999-01-01T00:00:00Z"),
        &token,
    )
    .await;
    assert_eq!(reply.body["items"], json!([]));
    let reply = get(
        &service,
        &format!("{AUDIT}?since=2000-01-01T00:00:00.5Z&cursor=&actor="),
        &token,
    )
    .await;
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_route_refuses_what_it_cannot_read() {
    let service = service().await;
    let token = admin_token(&service).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=",
        "limit=-1",
        "cursor=abc",
        "cursor=1-",
        "cursor=-1-0",
        "since=yesterday",
        "since=2026-12-01T10:00:00+01:00",
        "since=2026-12-01%2010:00:00Z",
        "since=2026-13-01T10:00:00Z",
        "order=sideways",
        "order=",
    ] {
        let reply = get(&service, &format!("{AUDIT}?{query}"), &token).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
        assert_eq!(reply.body["status"], "invalid", "{query}");
    }
    let reply = get(
        &service,
        &format!("{AUDIT}?limit=1000&order=oldest"),
        &token,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Admin only.
    let reply = send(&service, Method::GET, AUDIT, None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    make_granted(&service, &token, "dev-9", "device-secret", "").await;
    let device = login(&service, "dev-9", "device-secret").await;
    let reply = get(&service, AUDIT, &device).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&service, Method::POST, AUDIT, Some(&token), "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Failed logins are attacker-triggered: at the cap, each one evicts the
/// oldest record and the count stays exactly at the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failed_logins_stays_at_the_cap() {
    let registry = Registry::new(
        EmbeddedStore::in_memory(Windows::default(), 100),
        Secrets::random(),
        RegistryConfig::default(),
    )
    .with_audit(AuditConfig {
        max_records: 5,
        ..AuditConfig::default()
    });
    registry
        .ensure_admin(Some(ADMIN_PASSWORD), UnixMillis::now())
        .await
        .unwrap();
    let service = AdminService::new(Arc::new(registry));
    for i in 0..12 {
        let body = json!({"username": format!("guess-{i}"), "password": "x"}).to_string();
        let (status, _) = send_from(
            &service,
            Method::POST,
            "/api/login",
            None,
            &body,
            &format!("198.51.100.{i}:1"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let token = admin_token(&service).await;
    let reply = get(&service, &format!("{AUDIT}?limit=1000"), &token).await;
    let actors: Vec<String> = rows(&reply.body)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        actors,
        ["admin", "guess-11", "guess-10", "guess-9", "guess-8"]
    );
}
