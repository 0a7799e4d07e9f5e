//! Tests of [`AdminService::handle`], driven with in-memory requests against
//! a registry on the in-memory embedded store, as a client would see them:
//! status codes, headers and JSON bodies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

use fleetgate_registry::decision::{Decision, LockState, Windows};
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::{
    Operation, Permission, PermissionContext, RequestRecord, RequestState, Role, Transport,
    UserRecord,
};
use fleetgate_registry::registry::{PollContext, RegisterOutcome};
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, Page, Poll, Store,
    StoreError,
};
use fleetgate_registry::token::{DEFAULT_EXPIRE_HOURS, MAX_EXPIRE_HOURS};
use fleetgate_registry::{Registry, RegistryConfig, UnixMillis};

use super::routes::Route;
use super::views::Health;
use super::*;

const ADMIN_PASSWORD: &str = "adminpass";

/// A service over a fresh registry whose `admin` has [`ADMIN_PASSWORD`].
async fn service_on<S: Store>(store: S) -> AdminService<S> {
    let registry = Registry::new(store, Secrets::random(), RegistryConfig::default());
    registry
        .ensure_admin(Some(ADMIN_PASSWORD), UnixMillis::now())
        .await
        .unwrap();
    AdminService::new(Arc::new(registry))
}

async fn service() -> AdminService<EmbeddedStore> {
    service_on(EmbeddedStore::in_memory(Windows::default(), 1000)).await
}

/// What a client sees of a response.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// Sends one request. Checks the invariants every response keeps: JSON
/// with its content type (empty for 204), and error bodies with a
/// `status` short name and an `error` message.
async fn send<S: Store>(
    service: &AdminService<S>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = service
        .handle(request.body(body.into()).unwrap(), None)
        .await;
    let (parts, bytes) = response.into_parts();
    let body = if parts.status == StatusCode::NO_CONTENT {
        assert!(bytes.is_empty(), "204 with a body: {bytes:?}");
        assert!(parts.headers.get(header::CONTENT_TYPE).is_none());
        Value::Null
    } else {
        assert_eq!(parts.headers[header::CONTENT_TYPE], "application/json");
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    if parts.status.is_client_error() || parts.status.is_server_error() {
        assert!(body["status"].is_string(), "{body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get<S: Store>(service: &AdminService<S>, uri: &str, token: &str) -> Reply {
    send(service, Method::GET, uri, Some(token), "").await
}

async fn post<S: Store>(service: &AdminService<S>, uri: &str, token: &str, body: &str) -> Reply {
    send(service, Method::POST, uri, Some(token), body.to_owned()).await
}

async fn put<S: Store>(service: &AdminService<S>, uri: &str, token: &str, body: &str) -> Reply {
    send(service, Method::PUT, uri, Some(token), body.to_owned()).await
}

async fn patch<S: Store>(service: &AdminService<S>, uri: &str, token: &str, body: &str) -> Reply {
    send(service, Method::PATCH, uri, Some(token), body.to_owned()).await
}

async fn delete<S: Store>(service: &AdminService<S>, uri: &str, token: &str) -> Reply {
    send(service, Method::DELETE, uri, Some(token), "").await
}

async fn try_login<S: Store>(service: &AdminService<S>, username: &str, password: &str) -> Reply {
    let body = json!({ "username": username, "password": password }).to_string();
    send(service, Method::POST, "/api/login", None, body).await
}

async fn login<S: Store>(service: &AdminService<S>, username: &str, password: &str) -> String {
    let reply = try_login(service, username, password).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["token"].as_str().unwrap().to_owned()
}

async fn admin_token<S: Store>(service: &AdminService<S>) -> String {
    login(service, "admin", ADMIN_PASSWORD).await
}

/// One register poll from a device, as the proxy would make it.
async fn poll<S: Store>(
    service: &AdminService<S>,
    username: &str,
    password: &str,
) -> RegisterOutcome {
    let body = json!({ "username": username, "password": password }).to_string();
    service
        .registry()
        .register(body.as_bytes(), PollContext::default(), UnixMillis::now())
        .await
}

/// Unlocks the registry and creates a pending request for `username`.
async fn make_pending<S: Store>(service: &AdminService<S>, username: &str, password: &str) {
    let now = UnixMillis::now();
    service.registry().unlock(None, now).await.unwrap();
    let outcome = poll(service, username, password).await;
    assert!(
        matches!(outcome, RegisterOutcome::Pending { created: true, .. }),
        "{outcome:?}"
    );
}

/// Creates, grants (with `grant_body`) and returns the view of a device.
async fn make_granted<S: Store>(
    service: &AdminService<S>,
    token: &str,
    username: &str,
    password: &str,
    grant_body: &str,
) -> Value {
    make_pending(service, username, password).await;
    let uri = format!("/api/client-registry/requests/{username}/grant");
    let reply = post(service, &uri, token, grant_body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

fn rfc3339(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

// ---- login ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_a_token_with_the_users_roles() {
    let service = service().await;
    let token = admin_token(&service).await;
    let claims = service.registry().tokens().verify(&token).unwrap();
    assert_eq!(claims.sub, "admin");
    assert_eq!(claims.roles, vec!["admin".to_string()]);
    assert_eq!(claims.exp - claims.iat, DEFAULT_EXPIRE_HOURS * 3600);

    let body = json!({"username": "admin", "password": ADMIN_PASSWORD, "expireTimeInHours": 2});
    let reply = send(&service, Method::POST, "/api/login", None, body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let claims = service
        .registry()
        .tokens()
        .verify(reply.body["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 2 * 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_wrong_password_unknown_user_and_passwordless_user() {
    let service = service().await;
    for (username, password) in [("admin", "wrongpass"), ("nobody", ADMIN_PASSWORD)] {
        let reply = try_login(&service, username, password).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{username}");
        assert_eq!(reply.body["status"], "unauthorized");
        assert!(reply.body.get("token").is_none());
    }
    // A certificate-only user has no password to log in with.
    service
        .registry()
        .store()
        .put_user(UserRecord {
            certificate: None,
            username: "certonly".into(),
            password_hash: None,
            roles: vec!["admin".into()],
            permissions: vec![],
            created_at: UnixMillis::now(),
            origin: fleetgate_registry::model::UserOrigin::Http,
            decided_by: None,
        })
        .await
        .unwrap();
    let reply = try_login(&service, "certonly", "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["status"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_expiry_must_be_in_range() {
    let service = service().await;
    for hours in [
        json!(0),
        json!(-1),
        json!(MAX_EXPIRE_HOURS + 1),
        json!(1.5),
        json!("2"),
    ] {
        let body =
            json!({"username": "admin", "password": ADMIN_PASSWORD, "expireTimeInHours": hours});
        let reply = send(&service, Method::POST, "/api/login", None, body.to_string()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{hours}");
        assert_eq!(reply.body["status"], "invalid");
    }
    let body = json!({"username": "admin", "password": ADMIN_PASSWORD, "expireTimeInHours": MAX_EXPIRE_HOURS});
    let reply = send(&service, Method::POST, "/api/login", None, body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn login_with_malformed_body_is_400() {
    let service = service().await;
    for body in [
        "",
        "{",
        "[]",
        r#"{"username":"admin"}"#,
        r#"{"password":"x"}"#,
    ] {
        let reply = send(&service, Method::POST, "/api/login", None, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(reply.body["status"], "invalid");
    }
}

// ---- authorization ----

#[tokio::test]
async fn admin_routes_need_a_valid_token() {
    let service = service().await;
    let registry = service.registry();
    let expired = registry.tokens().issue(
        "admin",
        &["admin".into()],
        UnixMillis(1_000_000_000),
        UnixMillis(1_000_000_000),
        1,
    );
    let foreign = fleetgate_registry::token::Tokens::new(&[7; 32]).issue(
        "admin",
        &["admin".into()],
        UnixMillis::now(),
        UnixMillis::now(),
        1,
    );
    for token in [
        None,
        Some("garbage"),
        Some(expired.as_str()),
        Some(foreign.as_str()),
    ] {
        let reply = send(&service, Method::GET, "/api/client-registry", token, "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.body["status"], "unauthorized");
    }
    // Not a Bearer token.
    let request = Request::builder()
        .uri("/api/users")
        .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW5wYXNz")
        .body(Bytes::new())
        .unwrap();
    let response = service.handle(request, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive_and_api_token_query_works() {
    let service = service().await;
    let token = admin_token(&service).await;
    let request = Request::builder()
        .uri("/api/client-registry")
        .header(header::AUTHORIZATION, format!("bearer  {token}"))
        .body(Bytes::new())
        .unwrap();
    assert_eq!(service.handle(request, None).await.status(), StatusCode::OK);

    let uri = format!("/api/client-registry?apiToken={token}");
    let reply = send(&service, Method::GET, &uri, None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["locked"], true);

    let reply = send(
        &service,
        Method::GET,
        "/api/client-registry?apiToken=",
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = send(
        &service,
        Method::GET,
        "/api/client-registry?apiToken=x.y.z",
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_token_is_403() {
    let service = service().await;
    let admin = admin_token(&service).await;
    make_granted(&service, &admin, "dev01", "secret1", "").await;
    let device = login(&service, "dev01", "secret1").await;
    for uri in [
        "/api/client-registry",
        "/api/users",
        "/api/client-registry/requests",
    ] {
        let reply = get(&service, uri, &device).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(reply.body["status"], "forbidden");
    }
    // The registry is unlocked (by `make_granted`); the device cannot lock it.
    let reply = post(&service, "/api/client-registry/lock", &device, "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let status = service.registry().status(UnixMillis::now()).await.unwrap();
    assert!(status.unlocked_until.is_some());
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/deny",
        &device,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_read_from_the_stored_user_not_the_token() {
    let service = service().await;
    let admin = admin_token(&service).await;
    let store = service.registry().store();
    let mut user = store.get_user("admin").await.unwrap().unwrap();
    user.roles.clear();
    store.put_user(user).await.unwrap();
    // The token still says `admin`, the stored user no longer does.
    let reply = get(&service, "/api/users", &admin).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn token_issued_before_its_user_was_created_is_401() {
    let service = service().await;
    let an_hour_ago = UnixMillis(UnixMillis::now().0 - 3_600_000);
    let old =
        service
            .registry()
            .tokens()
            .issue("admin", &["admin".into()], an_hour_ago, an_hour_ago, 24);
    let reply = get(&service, "/api/users", &old).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["status"], "unauthorized");
}

// ---- lock state ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_unlock_and_lock() {
    let service = service().await;
    let token = admin_token(&service).await;

    let reply = get(&service, "/api/client-registry", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"locked": true, "unlockedUntil": null, "pending": 0})
    );

    let before = SystemTime::now();
    let reply = post(
        &service,
        "/api/client-registry/unlock",
        &token,
        r#"{"durationMs": 60000}"#,
    )
    .await;
    let after = SystemTime::now();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["locked"], false);
    assert_eq!(reply.body["pending"], 0);
    let until = rfc3339(&reply.body["unlockedUntil"]);
    let minute = Duration::from_secs(60);
    // Millisecond precision: allow the truncation.
    assert!(until + Duration::from_millis(1) >= before + minute && until <= after + minute);

    // A device can now create a pending request, and it is counted.
    assert!(matches!(
        poll(&service, "dev01", "secret1").await,
        RegisterOutcome::Pending { created: true, .. }
    ));
    let reply = get(&service, "/api/client-registry", &token).await;
    assert_eq!(reply.body["locked"], false);
    assert_eq!(reply.body["pending"], 1);

    let reply = post(&service, "/api/client-registry/lock", &token, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"locked": true, "unlockedUntil": null, "pending": 1})
    );
    assert!(matches!(
        poll(&service, "dev02", "secret2").await,
        RegisterOutcome::Locked { pairing_id: None }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_without_body_uses_the_default_duration() {
    let service = service().await;
    let token = admin_token(&service).await;
    for body in ["", "{}"] {
        let before = SystemTime::now();
        let reply = post(&service, "/api/client-registry/unlock", &token, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{body:?}");
        let until = rfc3339(&reply.body["unlockedUntil"]);
        let default = service.registry().config().default_unlock;
        assert!(
            until + Duration::from_millis(1) >= before + default,
            "{body:?}"
        );
        assert!(until <= SystemTime::now() + default, "{body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_only_body_is_malformed_json_not_an_empty_one() {
    // Schemathesis found a grant with the body "\n" answered 200: an optional
    // body may be absent, but a present one must be a JSON object.
    let service = service().await;
    let token = admin_token(&service).await;
    make_pending(&service, "dev-ws", "secret-ws-1").await;
    for uri in [
        "/api/client-registry/unlock",
        "/api/client-registry/requests/dev-ws/grant",
        "/api/client-registry/requests/dev-ws/deny",
    ] {
        for body in ["\n", "  \t ", "\r\n"] {
            let reply = post(&service, uri, &token, body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri} {body:?}");
            assert_eq!(
                reply.body["error"], "invalid JSON body: expected a JSON object",
                "{uri} {body:?}"
            );
        }
    }
    // Nothing was decided by the refused requests.
    let reply = get(&service, "/api/client-registry/requests/dev-ws", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["state"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_duration_out_of_range_is_400_and_stays_locked() {
    let service = service().await;
    let token = admin_token(&service).await;
    let max = service.registry().config().max_unlock.as_millis();
    for body in [
        json!({"durationMs": 0}).to_string(),
        json!({"durationMs": max + 1}).to_string(),
        json!({"durationMs": -5}).to_string(),
        json!({"durationMs": "60000"}).to_string(),
        json!({"duration": 60000}).to_string(),
        "{".to_string(),
    ] {
        let reply = post(&service, "/api/client-registry/unlock", &token, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["status"], "invalid");
    }
    let reply = get(&service, "/api/client-registry", &token).await;
    assert_eq!(reply.body["locked"], true);
    let reply = post(
        &service,
        "/api/client-registry/unlock",
        &token,
        &json!({"durationMs": max}).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

// ---- requests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_pending_requests() {
    let service = service().await;
    let token = admin_token(&service).await;
    for i in 1..=5 {
        make_pending(&service, &format!("dev0{i}"), "secret1").await;
    }
    make_pending(&service, "other", "secret1").await;

    let names = |reply: &Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = get(
        &service,
        "/api/client-registry/requests?limit=2&prefix=dev",
        &token,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(names(&reply), ["dev01", "dev02"]);
    assert_eq!(reply.body["nextCursor"], "dev02");
    let first = &reply.body["items"][0];
    assert_eq!(first["state"], "pending");
    assert_eq!(first["transport"], "http");
    assert_eq!(first["polls"], 1);
    assert!(first["pairingId"].is_string());
    assert!(first.get("sealed").is_none() && first.get("fingerprint").is_none());

    let reply = get(
        &service,
        "/api/client-registry/requests?limit=2&prefix=dev&cursor=dev02",
        &token,
    )
    .await;
    assert_eq!(names(&reply), ["dev03", "dev04"]);
    let reply = get(
        &service,
        "/api/client-registry/requests?limit=2&prefix=dev&cursor=dev04",
        &token,
    )
    .await;
    assert_eq!(names(&reply), ["dev05"]);
    assert_eq!(reply.body["nextCursor"], Value::Null);

    // Defaults: state=pending, limit=100, no prefix.
    let reply = get(&service, "/api/client-registry/requests", &token).await;
    assert_eq!(
        names(&reply),
        ["dev01", "dev02", "dev03", "dev04", "dev05", "other"]
    );
    assert_eq!(reply.body["nextCursor"], Value::Null);

    // Query values are percent-decoded: `dev%30` is `dev0`, `+` is a space.
    let reply = get(
        &service,
        "/api/client-registry/requests?prefix=dev%30&cursor=dev%303",
        &token,
    )
    .await;
    assert_eq!(names(&reply), ["dev04", "dev05"]);
    let reply = get(
        &service,
        "/api/client-registry/requests?prefix=dev+",
        &token,
    )
    .await;
    assert_eq!(names(&reply), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_granted_requests() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_granted(&service, &token, "dev01", "secret1", "").await;
    make_pending(&service, "dev02", "secret2").await;
    let reply = get(
        &service,
        "/api/client-registry/requests?state=granted",
        &token,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["username"], "dev01");
    assert_eq!(items[0]["state"], "granted");
    let reply = get(
        &service,
        "/api/client-registry/requests?state=pending",
        &token,
    )
    .await;
    assert_eq!(reply.body["items"][0]["username"], "dev02");
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 1);
}

/// The usernames of a listing's page, in order.
fn listed(reply: &Reply) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["username"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_denied_requests() {
    let service = service().await;
    let token = admin_token(&service).await;
    for (name, secret) in [
        ("dev01", "secret1"),
        ("dev02", "secret2"),
        ("dev03", "secret3"),
    ] {
        make_pending(&service, name, secret).await;
    }
    for name in ["dev01", "dev03"] {
        let uri = format!("/api/client-registry/requests/{name}/deny");
        let reply = post(&service, &uri, &token, "").await;
        assert!(reply.status.is_success(), "deny {name}: {:?}", reply.status);
    }
    let reply = get(
        &service,
        "/api/client-registry/requests?state=denied&limit=1",
        &token,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(listed(&reply), ["dev01"]);
    assert_eq!(reply.body["items"][0]["state"], "denied");
    assert!(
        reply.body["items"][0]["deniedAt"].is_string(),
        "{:?}",
        reply.body
    );
    let cursor = reply.body["nextCursor"].as_str().unwrap().to_owned();
    let uri = format!("/api/client-registry/requests?state=denied&cursor={cursor}");
    let reply = get(&service, &uri, &token).await;
    assert_eq!(listed(&reply), ["dev03"]);
    assert!(reply.body["nextCursor"].is_null());
    let reply = get(
        &service,
        "/api/client-registry/requests?state=pending",
        &token,
    )
    .await;
    assert_eq!(listed(&reply), ["dev02"]);
    // Forgotten: no longer listed.
    let reply = delete(&service, "/api/client-registry/requests/dev03", &token).await;
    assert!(reply.status.is_success());
    let reply = get(
        &service,
        "/api/client-registry/requests?state=denied&prefix=dev0",
        &token,
    )
    .await;
    assert_eq!(listed(&reply), ["dev01"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_with_bad_parameters_is_400() {
    let service = service().await;
    let token = admin_token(&service).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=",
        "state=collected",
        "state=",
        "prefix=%zz",
    ] {
        let uri = format!("/api/client-registry/requests?{query}");
        let reply = get(&service, &uri, &token).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.body["status"], "invalid");
    }
    for query in ["limit=1", "limit=1000"] {
        let uri = format!("/api/client-registry/requests?{query}");
        assert_eq!(
            get(&service, &uri, &token).await.status,
            StatusCode::OK,
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_one_request_or_404() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_pending(&service, "dev01", "secret1").await;
    let reply = get(&service, "/api/client-registry/requests/dev01", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "dev01");
    assert_eq!(reply.body["state"], "pending");
    // The path segment is percent-decoded.
    let reply = get(&service, "/api/client-registry/requests/dev%301", &token).await;
    assert_eq!(reply.body["username"], "dev01");
    let reply = get(&service, "/api/client-registry/requests/dev99", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_lets_the_device_collect_and_log_in() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_pending(&service, "dev01", "secret1").await;
    assert!(matches!(
        poll(&service, "dev01", "secret1").await,
        RegisterOutcome::Pending { created: false, .. }
    ));
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "dev01");
    assert_eq!(reply.body["state"], "granted");
    assert!(reply.body["grantedAt"].is_string());
    assert!(matches!(
        poll(&service, "dev01", "secret1").await,
        RegisterOutcome::Granted { .. }
    ));
    let device = login(&service, "dev01", "secret1").await;
    assert_eq!(
        service.registry().tokens().verify(&device).unwrap().sub,
        "dev01"
    );
    let reply = get(&service, "/api/client-registry", &token).await;
    assert_eq!(reply.body["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_overrides_roles_and_permissions() {
    let service = service().await;
    let token = admin_token(&service).await;
    let role =
        json!({"permissions": [{"resource": "s/#", "operation": "read", "context": "mqtt"}]});
    let reply = put(&service, "/api/roles/sensor", &token, &role.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = json!({
        "roles": ["sensor"],
        "permissions": [{"resource": "telemetry/#", "operation": "write", "context": "mqtt"}]
    });
    let view = make_granted(&service, &token, "dev01", "secret1", &body.to_string()).await;
    assert_eq!(view["roles"], json!(["sensor"]));
    assert_eq!(view["permissions"][0]["resource"], "telemetry/#");
    let reply = get(&service, "/api/users/dev01", &token).await;
    assert_eq!(reply.body["roles"], json!(["sensor"]));
    assert_eq!(reply.body["permissions"][0]["operation"], "write");
}

/// What a device asks for is a hint for the admin, never a grant: a grant
/// without a body gives no roles and no permissions, and a grant naming a
/// role that is not defined is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grant_gives_nothing_the_device_asked_for() {
    let service = service().await;
    let token = admin_token(&service).await;
    let role =
        json!({"permissions": [{"resource": "#", "operation": "readWrite", "context": "mqtt"}]});
    let reply = put(&service, "/api/roles/fleet", &token, &role.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let now = UnixMillis::now();
    service.registry().unlock(None, now).await.unwrap();
    for name in ["greedy1", "greedy2"] {
        let ask = json!({
            "username": name, "password": "secret1", "roles": ["fleet"],
            "permissions": [{"resource": "#", "operation": "readWrite", "context": "mqtt"}]
        })
        .to_string();
        let outcome = service
            .registry()
            .register(ask.as_bytes(), PollContext::default(), now)
            .await;
        assert!(
            matches!(outcome, RegisterOutcome::Pending { created: true, .. }),
            "{outcome:?}"
        );
    }
    let uri = "/api/client-registry/requests/greedy1/grant";
    let reply = post(&service, uri, &token, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let user = get(&service, "/api/users/greedy1", &token).await.body;
    assert_eq!(user["roles"], json!([]), "{user}");
    assert_eq!(user["permissions"], json!([]), "{user}");
    // The request still shows what was asked, for the admin to copy.
    let request = get(&service, "/api/client-registry/requests/greedy2", &token)
        .await
        .body;
    assert_eq!(request["roles"], json!(["fleet"]), "{request}");
    assert_eq!(request["permissions"][0]["resource"], "#", "{request}");

    let uri = "/api/client-registry/requests/greedy2/grant";
    let reply = post(&service, uri, &token, r#"{"roles":["fleet","ghost"]}"#).await;
    assert_policy(&reply, "unknown_roles");
    assert!(
        reply.body["error"].as_str().unwrap().contains("`ghost`"),
        "{}",
        reply.body
    );
    let request = get(&service, "/api/client-registry/requests/greedy2", &token)
        .await
        .body;
    assert_eq!(
        request["state"], "pending",
        "nothing was written: {request}"
    );
    let reply = post(&service, uri, &token, r#"{"roles":["fleet","fleet"]}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let user = get(&service, "/api/users/greedy2", &token).await.body;
    assert_eq!(user["roles"], json!(["fleet"]), "named once: {user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_is_idempotent() {
    let service = service().await;
    let token = admin_token(&service).await;
    let first = make_granted(&service, &token, "dev01", "secret1", "").await;
    let again = post(
        &service,
        "/api/client-registry/requests/dev01/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["state"], "granted");
    assert_eq!(again.body["grantedAt"], first["grantedAt"]);
    assert_eq!(again.body["pairingId"], first["pairingId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_errors() {
    let service = service().await;
    let token = admin_token(&service).await;
    let reply = post(
        &service,
        "/api/client-registry/requests/dev99/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], "not_found");

    make_pending(&service, "dev01", "secret1").await;
    for body in [
        r#"{"roles": [""]}"#,
        r#"{"roles": "admin"}"#,
        r#"{"role": ["admin"]}"#,
        r#"{"permissions": [{"resource": "x", "operation": "delete", "context": "mqtt"}]}"#,
        "{",
    ] {
        let uri = "/api/client-registry/requests/dev01/grant";
        let reply = post(&service, uri, &token, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["status"], "invalid");
    }
    // None of those granted anything.
    let reply = get(&service, "/api/client-registry/requests/dev01", &token).await;
    assert_eq!(reply.body["state"], "pending");

    // A denied request cannot be granted.
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/deny",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["status"], "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_then_the_device_is_refused() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_pending(&service, "dev01", "secret1").await;
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/deny",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        poll(&service, "dev01", "secret1").await,
        RegisterOutcome::Denied
    );
    let reply = get(&service, "/api/client-registry/requests/dev01", &token).await;
    assert_eq!(reply.body["state"], "denied");
    assert!(reply.body["deniedAt"].is_string());

    let reply = post(
        &service,
        "/api/client-registry/requests/dev99/deny",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_after_grant_is_409() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_granted(&service, &token, "dev01", "secret1", "").await;
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/deny",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["status"], "conflict");
    // Still granted.
    let reply = get(&service, "/api/client-registry/requests/dev01", &token).await;
    assert_eq!(reply.body["state"], "granted");
}

// ---- users ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_and_get() {
    let service = service().await;
    let token = admin_token(&service).await;
    make_granted(&service, &token, "dev01", "secret1", "").await;
    make_granted(&service, &token, "dev02", "secret2", "").await;

    let reply = get(&service, "/api/users", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let names: Vec<&str> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "dev01", "dev02"]);
    assert_eq!(reply.body["nextCursor"], Value::Null);

    let reply = get(&service, "/api/users?limit=1&cursor=admin", &token).await;
    assert_eq!(reply.body["items"][0]["username"], "dev01");
    assert_eq!(reply.body["nextCursor"], "dev01");
    let reply = get(&service, "/api/users?limit=0", &token).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = get(&service, "/api/users/admin", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["roles"], json!(["admin"]));
    assert_eq!(reply.body["origin"], "bootstrap");
    assert_eq!(reply.body["hasPassword"], true);
    assert!(reply.body.get("passwordHash").is_none());
    assert!(!reply.body.to_string().contains("argon2"));

    let reply = get(&service, "/api/users/dev01", &token).await;
    assert_eq!(reply.body["origin"], "http");
    let reply = get(&service, "/api/users/nobody", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_its_login_and_tokens() {
    let service = service().await;
    let admin = admin_token(&service).await;
    // A second administrator, created through a grant.
    make_granted(
        &service,
        &admin,
        "ops01",
        "secret1",
        r#"{"roles":["admin"]}"#,
    )
    .await;
    let ops = login(&service, "ops01", "secret1").await;
    assert_eq!(
        get(&service, "/api/users", &ops).await.status,
        StatusCode::OK
    );

    let reply = send(
        &service,
        Method::DELETE,
        "/api/users/ops01",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = try_login(&service, "ops01", "secret1").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(&service, "/api/users", &ops).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["status"], "unauthorized");
    let reply = get(&service, "/api/users/ops01", &admin).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let reply = send(
        &service,
        Method::DELETE,
        "/api/users/ops01",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_admin_cannot_be_deleted() {
    let service = service().await;
    let admin = admin_token(&service).await;
    let reply = send(
        &service,
        Method::DELETE,
        "/api/users/admin",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["status"], "conflict");
    assert_eq!(
        get(&service, "/api/users/admin", &admin).await.status,
        StatusCode::OK
    );
}

// ---- roles ----

/// A 422 with the rule it names, in the device API's error shape.
fn assert_policy(reply: &Reply, rule: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], "policy", "{}", reply.body);
    assert_eq!(reply.body["rule"], rule, "{}", reply.body);
}

fn assert_status(reply: &Reply, status: StatusCode, short: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["status"], short, "{}", reply.body);
    assert!(reply.body.get("rule").is_none(), "{}", reply.body);
}

fn admin_role_json() -> Value {
    json!({"name": "admin", "permissions": [
        {"resource": "#", "operation": "readWrite", "context": "mqtt"},
        {"resource": "/#", "operation": "readWrite", "context": "http"},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_put_get_list_delete() {
    let service = service().await;
    let token = admin_token(&service).await;
    // The built-in role exists from the start.
    let reply = get(&service, "/api/roles", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"items": [admin_role_json()]}));

    let sensors = json!({"permissions": [
        {"resource": "plant/+/temp", "operation": "write", "context": "mqtt"},
        {"resource": "/api/telemetry", "operation": "read", "context": "http"},
    ]});
    let reply = put(&service, "/api/roles/sensors", &token, &sensors.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let expected = json!({"name": "sensors", "permissions": sensors["permissions"]});
    assert_eq!(reply.body, expected);
    let reply = get(&service, "/api/roles/sensors", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, expected);
    // A role as read can be written back, `name` included.
    let reply = put(
        &service,
        "/api/roles/sensors",
        &token,
        &expected.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // A name with every allowed character, percent-encoded in the path.
    let reply = put(
        &service,
        "/api/roles/Site.4%3Aline_2-a",
        &token,
        r#"{"permissions":[]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"name": "Site.4:line_2-a", "permissions": []})
    );

    let names = |reply: &Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = get(&service, "/api/roles", &token).await;
    assert_eq!(names(&reply), ["Site.4:line_2-a", "admin", "sensors"]);

    // PUT replaces the whole list.
    let replaced =
        json!({"permissions": [{"resource": "plant/#", "operation": "read", "context": "mqtt"}]});
    let reply = put(
        &service,
        "/api/roles/sensors",
        &token,
        &replaced.to_string(),
    )
    .await;
    assert_eq!(reply.body["permissions"], replaced["permissions"]);
    let reply = get(&service, "/api/roles/sensors", &token).await;
    assert_eq!(reply.body["permissions"], replaced["permissions"]);

    let reply = delete(&service, "/api/roles/sensors", &token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_status(
        &get(&service, "/api/roles/sensors", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_status(
        &delete(&service, "/api/roles/sensors", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let reply = get(&service, "/api/roles", &token).await;
    assert_eq!(names(&reply), ["Site.4:line_2-a", "admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_role_cannot_be_deleted_or_emptied() {
    let service = service().await;
    let token = admin_token(&service).await;
    assert_status(
        &delete(&service, "/api/roles/admin", &token).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let reply = put(
        &service,
        "/api/roles/admin",
        &token,
        r#"{"permissions":[]}"#,
    )
    .await;
    assert_policy(&reply, "admin_role");
    let reply = get(&service, "/api/roles/admin", &token).await;
    assert_eq!(reply.body, admin_role_json(), "unchanged");
    // It can be narrowed; admin-API access comes from the role's name.
    let narrowed =
        json!({"permissions": [{"resource": "#", "operation": "read", "context": "mqtt"}]});
    let reply = put(&service, "/api/roles/admin", &token, &narrowed.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        get(&service, "/api/roles/admin", &token).await.body["permissions"],
        narrowed["permissions"]
    );
    // The next start keeps the admin's change.
    assert!(!service.registry().ensure_admin_role().await.unwrap());
    assert_eq!(
        get(&service, "/api/users", &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_put_errors() {
    let service = service().await;
    let token = admin_token(&service).await;
    let empty = r#"{"permissions":[]}"#;
    // Names: 1 to 64 bytes from [A-Za-z0-9._:-].
    let long = "r".repeat(65);
    for uri in [
        "/api/roles/two%20words".to_owned(),
        "/api/roles/a%2Fb".to_owned(),
        "/api/roles/caf%C3%A9".to_owned(),
        "/api/roles/a+b".to_owned(),
        format!("/api/roles/{long}"),
    ] {
        assert_policy(&put(&service, &uri, &token, empty).await, "role_name");
    }
    let at_cap = format!("/api/roles/{}", "r".repeat(64));
    assert_eq!(
        put(&service, &at_cap, &token, empty).await.status,
        StatusCode::OK
    );

    // Bodies: JSON, with `permissions`, nothing unknown, `name` = the path.
    for body in [
        "",
        "not json",
        "{}",
        r#"{"permissions":"all"}"#,
        r#"{"permissions":[],"role":"x"}"#,
        r#"{"name":"other","permissions":[]}"#,
        r#"{"permissions":[{"resource":"a","operation":"fly","context":"mqtt"}]}"#,
    ] {
        let reply = put(&service, "/api/roles/sensors", &token, body).await;
        assert_status(&reply, StatusCode::BAD_REQUEST, "invalid");
    }
    // The caps of a user's direct permissions.
    let perms = |n: usize, resource: &str| {
        let p: Vec<Value> = (0..n)
            .map(|_| json!({"resource": resource, "operation": "read", "context": "mqtt"}))
            .collect();
        json!({ "permissions": p }).to_string()
    };
    let reply = put(&service, "/api/roles/sensors", &token, &perms(64, "t/#")).await;
    assert_eq!(reply.status, StatusCode::OK, "64 permissions are allowed");
    assert_policy(
        &put(&service, "/api/roles/sensors", &token, &perms(65, "t/#")).await,
        "permissions_count",
    );
    assert_policy(
        &put(&service, "/api/roles/sensors", &token, &perms(1, "")).await,
        "resource_length",
    );
    assert_policy(
        &put(
            &service,
            "/api/roles/sensors",
            &token,
            &perms(1, &"x".repeat(257)),
        )
        .await,
        "resource_length",
    );
    assert_eq!(
        get(&service, "/api/roles/sensors", &token).await.body["permissions"]
            .as_array()
            .unwrap()
            .len(),
        64,
        "refused PUTs changed nothing"
    );
    // Reading or deleting a name no role could have is a plain 404.
    assert_status(
        &get(&service, "/api/roles/two%20words", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_status(
        &delete(&service, "/api/roles/two%20words", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_number_of_roles_is_capped() {
    use fleetgate_registry::request::DEFINED_ROLES_MAX;
    let service = service().await;
    let token = admin_token(&service).await;
    // `admin` plus these fill the table (written straight to the store,
    // which has no cap of its own; the cap is the API's).
    for i in 1..DEFINED_ROLES_MAX {
        service
            .registry()
            .store()
            .put_role(Role {
                name: format!("role{i:04}"),
                permissions: vec![],
            })
            .await
            .unwrap();
    }
    let empty = r#"{"permissions":[]}"#;
    assert_policy(
        &put(&service, "/api/roles/one-more", &token, empty).await,
        "defined_roles_count",
    );
    assert_status(
        &get(&service, "/api/roles/one-more", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // At the cap, an existing role can still be replaced.
    assert_eq!(
        put(&service, "/api/roles/role0001", &token, empty)
            .await
            .status,
        StatusCode::OK
    );
    let reply = get(&service, "/api/roles", &token).await;
    assert_eq!(
        reply.body["items"].as_array().unwrap().len(),
        DEFINED_ROLES_MAX
    );
    // Deleting one makes room.
    assert_eq!(
        delete(&service, "/api/roles/role0001", &token).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put(&service, "/api/roles/one-more", &token, empty)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_routes_need_an_admin_token() {
    let service = service().await;
    let admin = admin_token(&service).await;
    make_granted(&service, &admin, "dev01", "secret1", "").await;
    let device = login(&service, "dev01", "secret1").await;
    let body = r#"{"permissions":[]}"#;
    let requests = [
        (Method::GET, "/api/roles", ""),
        (Method::GET, "/api/roles/admin", ""),
        (Method::PUT, "/api/roles/sensors", body),
        (Method::DELETE, "/api/roles/admin", ""),
        (Method::PATCH, "/api/users/dev01", r#"{"roles":["admin"]}"#),
    ];
    for (method, uri, body) in requests.clone() {
        let reply = send(&service, method.clone(), uri, None, body).await;
        assert_status(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        let reply = send(&service, method.clone(), uri, Some(&device), body).await;
        assert_status(&reply, StatusCode::FORBIDDEN, "forbidden");
    }
    // Nothing changed: no role was created, the device is no admin.
    assert_status(
        &get(&service, "/api/roles/sensors", &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        get(&service, "/api/users/dev01", &admin).await.body["roles"],
        json!([])
    );
    assert_eq!(
        get(&service, "/api/roles/admin", &admin).await.body,
        admin_role_json()
    );
}

/// The JSON of a role as the API shows it, byte for byte.
#[test]
fn role_json_is_pinned() {
    let role = Role {
        name: "sensors".into(),
        permissions: vec![Permission {
            resource: "t/#".into(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Mqtt,
        }],
    };
    assert_eq!(
        serde_json::to_string(&role).unwrap(),
        r#"{"name":"sensors","permissions":[{"resource":"t/#","operation":"readWrite","context":"mqtt"}]}"#
    );
}

// ---- a user's roles and permissions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_replaces_what_it_names_and_keeps_the_users_tokens() {
    let service = service().await;
    let admin = admin_token(&service).await;
    make_granted(
        &service,
        &admin,
        "dev01",
        "secret1",
        r#"{"permissions":[{"resource":"own/#","operation":"read","context":"mqtt"}]}"#,
    )
    .await;
    let device = login(&service, "dev01", "secret1").await;
    let before = get(&service, "/api/users/dev01", &admin).await.body;
    let sensors =
        r#"{"permissions":[{"resource":"plant/#","operation":"write","context":"mqtt"}]}"#;
    assert_eq!(
        put(&service, "/api/roles/sensors", &admin, sensors)
            .await
            .status,
        StatusCode::OK
    );

    // Roles only: the permissions stay.
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        r#"{"roles":["sensors","sensors"]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut expected = before.clone();
    expected["roles"] = json!(["sensors"]);
    assert_eq!(
        reply.body, expected,
        "the user view, duplicates dropped, nothing else changed"
    );
    assert_eq!(
        get(&service, "/api/users/dev01", &admin).await.body,
        expected
    );

    // Permissions only: the roles stay.
    let perms = json!([{"resource": "b/#", "operation": "readWrite", "context": "http"}]);
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        &json!({"permissions": perms}).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["roles"], json!(["sensors"]));
    assert_eq!(reply.body["permissions"], perms);

    // The effective permissions are the union.
    let user = service
        .registry()
        .store()
        .get_user("dev01")
        .await
        .unwrap()
        .unwrap();
    let effective = service
        .registry()
        .effective_permissions(&user)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&effective).unwrap(),
        json!([
            {"resource": "b/#", "operation": "readWrite", "context": "http"},
            {"resource": "plant/#", "operation": "write", "context": "mqtt"},
        ])
    );

    // Both at once, to empty lists.
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        r#"{"roles":[],"permissions":[]}"#,
    )
    .await;
    assert_eq!(reply.body["roles"], json!([]));
    assert_eq!(reply.body["permissions"], json!([]));
    assert_eq!(
        reply.body["createdAt"], before["createdAt"],
        "createdAt (the token gen) is kept"
    );

    // The device's token, issued before every PATCH, still works, and the
    // admin API reads the roles from the store: given `admin`, it is let in.
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        r#"{"roles":["admin"]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        get(&service, "/api/users", &device).await.status,
        StatusCode::OK
    );
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        r#"{"roles":["sensors"]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_status(
        &get(&service, "/api/users", &device).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // And its password still logs in.
    login(&service, "dev01", "secret1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_errors() {
    let service = service().await;
    let admin = admin_token(&service).await;
    make_granted(&service, &admin, "dev01", "secret1", "").await;
    let before = get(&service, "/api/users/dev01", &admin).await.body;

    assert_status(
        &patch(&service, "/api/users/nobody", &admin, r#"{"roles":[]}"#).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for body in [
        "",
        "{}",
        r#"{"roles":null,"permissions":null}"#,
        "[]",
        r#"{"role":["admin"]}"#,
        r#"{"roles":"admin"}"#,
        r#"{"permissions":[{"resource":"a","operation":"fly","context":"mqtt"}]}"#,
    ] {
        let reply = patch(&service, "/api/users/dev01", &admin, body).await;
        assert_status(&reply, StatusCode::BAD_REQUEST, "invalid");
    }

    // Unknown roles: 422, naming each of them.
    let reply = patch(
        &service,
        "/api/users/dev01",
        &admin,
        r#"{"roles":["admin","ghost","nope"]}"#,
    )
    .await;
    assert_policy(&reply, "unknown_roles");
    let message = reply.body["error"].as_str().unwrap();
    assert!(
        message.contains("`ghost`") && message.contains("`nope`"),
        "{message}"
    );
    assert!(!message.contains("`admin`"), "{message}");

    // The caps of a grant's overrides.
    let roles: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
    assert_policy(
        &patch(
            &service,
            "/api/users/dev01",
            &admin,
            &json!({ "roles": roles }).to_string(),
        )
        .await,
        "roles_count",
    );
    assert_policy(
        &patch(&service, "/api/users/dev01", &admin, r#"{"roles":[""]}"#).await,
        "role_length",
    );
    let perms: Vec<Value> = (0..65)
        .map(|_| json!({"resource": "t", "operation": "read", "context": "mqtt"}))
        .collect();
    assert_policy(
        &patch(
            &service,
            "/api/users/dev01",
            &admin,
            &json!({ "permissions": perms }).to_string(),
        )
        .await,
        "permissions_count",
    );
    assert_policy(
        &patch(
            &service,
            "/api/users/dev01",
            &admin,
            r#"{"permissions":[{"resource":"","operation":"read","context":"mqtt"}]}"#,
        )
        .await,
        "resource_length",
    );

    // The built-in admin keeps the admin role.
    assert_put_role(&service, &admin, "ops").await;
    for body in [r#"{"roles":[]}"#, r#"{"roles":["ops"]}"#] {
        assert_policy(
            &patch(&service, "/api/users/admin", &admin, body).await,
            "admin_role",
        );
    }
    assert_eq!(
        get(&service, "/api/users/admin", &admin).await.body["roles"],
        json!(["admin"])
    );
    let reply = patch(
        &service,
        "/api/users/admin",
        &admin,
        r#"{"roles":["ops","admin"]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["roles"], json!(["ops", "admin"]));
    assert_eq!(
        get(&service, "/api/users", &admin).await.status,
        StatusCode::OK,
        "still an admin"
    );

    // No refused PATCH changed dev01.
    assert_eq!(get(&service, "/api/users/dev01", &admin).await.body, before);
}

async fn assert_put_role<S: Store>(service: &AdminService<S>, token: &str, name: &str) {
    let reply = put(
        service,
        &format!("/api/roles/{name}"),
        token,
        r#"{"permissions":[]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

// ---- HTTP-level behaviour ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_at_the_cap_is_read_and_one_byte_over_is_413() {
    let service = service().await;
    // A wrong-password login padded with whitespace to exactly MAX_BODY.
    let mut at_cap = json!({"username": "admin", "password": "wrongpass"}).to_string();
    at_cap.push_str(&" ".repeat(MAX_BODY - at_cap.len()));
    assert_eq!(at_cap.len(), MAX_BODY);
    let reply = send(&service, Method::POST, "/api/login", None, at_cap.clone()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    at_cap.push(' ');
    let reply = send(&service, Method::POST, "/api/login", None, at_cap).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body["status"], "too_large");
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let service = service().await;
    for (method, uri, allow) in [
        (Method::GET, "/api/login", "POST"),
        (Method::POST, "/api/client-registry", "GET"),
        (Method::GET, "/api/client-registry/unlock", "POST"),
        (
            Method::PUT,
            "/api/client-registry/requests/dev01",
            "GET, DELETE",
        ),
        (
            Method::GET,
            "/api/client-registry/requests/dev01/grant",
            "POST",
        ),
        (Method::PUT, "/api/users/dev01", "GET, PATCH, DELETE"),
        (Method::POST, "/api/roles", "GET"),
        (Method::PATCH, "/api/roles/sensors", "GET, PUT, DELETE"),
        (Method::POST, "/healthz", "GET"),
    ] {
        // No token: the method is checked before authorization.
        let reply = send(&service, method.clone(), uri, None, "").await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert_eq!(reply.headers[header::ALLOW], allow, "{method} {uri}");
        assert_eq!(reply.body["status"], "invalid");
    }
}

#[tokio::test]
async fn unknown_path_is_404() {
    let service = service().await;
    // `/` is the UI's redirect (see the UI test at the end).
    for uri in [
        "/api",
        "/api/",
        "/api/nope",
        "/api/users/",
        "/api/roles/",
        "/api/roles/a/b",
        "/api/client-registry/requests/dev01/grant/again",
        "/api/client-registry/register",
        "/healthz/",
    ] {
        let reply = send(&service, Method::GET, uri, None, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.body["status"], "not_found");
    }
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let service = service().await;
    let reply = send(&service, Method::GET, "/healthz", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ok"}));
    let reply = send(&service, Method::GET, "/readyz", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ready"}));
}

#[test]
fn routes_parse() {
    let parse = |p: &str| Route::parse(p).unwrap();
    assert_eq!(parse("/api/login"), Some(Route::Login));
    assert_eq!(parse("/api/client-registry"), Some(Route::RegistryStatus));
    assert_eq!(
        parse("/api/client-registry/requests/a%2Fb/deny"),
        Some(Route::Deny("a/b".into()))
    );
    assert_eq!(parse("/api/users/a+b"), Some(Route::User("a+b".into())));
    assert_eq!(parse("/api/roles"), Some(Route::Roles));
    assert_eq!(
        parse("/api/roles/site%3A4"),
        Some(Route::Role("site:4".into()))
    );
    assert_eq!(parse("/api/roles/"), None);
    assert!(Route::parse("/api/roles/%ff").is_err());
    assert_eq!(parse("/api/client-registry/requests//grant"), None);
    assert!(Route::parse("/api/users/%ff").is_err());
}

/// The JSON of one request as the API shows it, byte for byte, in each of
/// its states: `state` is `"pending"`, `"granted"` or `"denied"`, only the
/// matching timestamp appears, and the field order is fixed.
#[test]
fn request_view_json_is_pinned() {
    let record = |state| RequestRecord {
        username: "dev01".into(),
        fingerprint: Fingerprint([7; 32]),
        state,
        transport: Transport::Mqtt,
        sealed: Vec::new(),
        roles: vec!["device".into()],
        permissions: vec![Permission {
            resource: "t/#".into(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Mqtt,
        }],
        context: None,
        source_addr: Some("192.0.2.1:1883".parse().unwrap()),
        client_id: Some("c1".into()),
        first_seen: UnixMillis(1_700_000_000_000),
        last_seen: UnixMillis(1_700_000_001_000),
        polls: 3,
        certificate: None,
        decided_by: None,
    };
    let json = |state| serde_json::to_string(&record(state).view()).unwrap();
    let pairing_id = Fingerprint([7; 32]).pairing_id();
    let expected = |state: &str, decided: &str| {
        format!(
            r#"{{"username":"dev01","state":"{state}","transport":"mqtt","pairingId":"{pairing_id}","context":null,"roles":["device"],"permissions":[{{"resource":"t/#","operation":"readWrite","context":"mqtt"}}],"clientId":"c1","sourceAddr":"192.0.2.1:1883","firstSeen":"2023-11-14T22:13:20.000Z","lastSeen":"2023-11-14T22:13:21.000Z","polls":3{decided}}}"#
        )
    };
    assert_eq!(json(RequestState::Pending), expected("pending", ""));
    assert_eq!(
        json(RequestState::Granted {
            granted_at: UnixMillis(1_700_000_002_000)
        }),
        expected("granted", r#","grantedAt":"2023-11-14T22:13:22.000Z""#)
    );
    assert_eq!(
        json(RequestState::Denied {
            denied_at: UnixMillis(1_700_000_003_000)
        }),
        expected("denied", r#","deniedAt":"2023-11-14T22:13:23.000Z""#)
    );
}

/// The health answers, byte for byte.
#[test]
fn health_json_is_pinned() {
    assert_eq!(
        serde_json::to_string(&Health::Ok).unwrap(),
        r#"{"status":"ok"}"#
    );
    assert_eq!(
        serde_json::to_string(&Health::Ready).unwrap(),
        r#"{"status":"ready"}"#
    );
}

// ---- store outages ----

/// The embedded store, with a switch that makes every call fail the way an
/// unreachable backend would.
struct FlakyStore {
    inner: EmbeddedStore,
    down: AtomicBool,
}

impl FlakyStore {
    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("test outage".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for FlakyStore {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        self.up()?;
        self.inner.register(poll, now).await
    }
    async fn lock_state(&self) -> Result<LockState, StoreError> {
        self.up()?;
        self.inner.lock_state().await
    }
    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        self.up()?;
        self.inner.set_lock_state(state).await
    }
    async fn pending_count(&self) -> Result<usize, StoreError> {
        self.up()?;
        self.inner.pending_count().await
    }
    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.up()?;
        self.inner.get_request(username, now).await
    }
    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        self.up()?;
        self.inner.list_requests(query, now).await
    }
    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        self.up()?;
        self.inner.commit_grant(grant, now).await
    }
    async fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        self.up()?;
        self.inner.commit_grants(grants, now).await
    }
    async fn deny(
        &self,
        username: &str,
        by: Option<fleetgate_registry::rule::DecidedBy>,
        now: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        self.up()?;
        self.inner.deny(username, by, now).await
    }
    async fn rules_version(&self) -> Result<u64, StoreError> {
        self.up()?;
        self.inner.rules_version().await
    }
    async fn list_rules(
        &self,
    ) -> Result<(u64, Vec<fleetgate_registry::rule::StoredRule>), StoreError> {
        self.up()?;
        self.inner.list_rules().await
    }
    async fn put_rule(
        &self,
        rule: fleetgate_registry::rule::Rule,
        max: usize,
    ) -> Result<fleetgate_registry::rule::PutRuleResult, StoreError> {
        self.up()?;
        self.inner.put_rule(rule, max).await
    }
    async fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        self.up()?;
        self.inner.delete_rule(name).await
    }
    async fn set_rule_order(
        &self,
        names: &[String],
    ) -> Result<fleetgate_registry::rule::RuleOrderResult, StoreError> {
        self.up()?;
        self.inner.set_rule_order(names).await
    }
    async fn claim_rule_use(
        &self,
        name: &str,
    ) -> Result<fleetgate_registry::rule::RuleClaim, StoreError> {
        self.up()?;
        self.inner.claim_rule_use(name).await
    }
    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        self.up()?;
        self.inner.forget_request(username, now).await
    }
    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.up()?;
        self.inner.get_user(username).await
    }
    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        self.up()?;
        self.inner.list_users(query).await
    }
    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.up()?;
        self.inner.put_user(user).await
    }
    async fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.up()?;
        self.inner.update_user_access(username, change).await
    }
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        self.up()?;
        self.inner.delete_user(username).await
    }
    async fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        self.up()?;
        self.inner.get_role(name).await
    }
    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        self.up()?;
        self.inner.list_roles().await
    }
    async fn put_role(&self, role: Role) -> Result<(), StoreError> {
        self.up()?;
        self.inner.put_role(role).await
    }
    async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        self.up()?;
        self.inner.delete_role(name).await
    }
    async fn append_audit(
        &self,
        entries: Vec<fleetgate_registry::audit::AuditEntry>,
        max: usize,
    ) -> Result<Vec<fleetgate_registry::audit::AuditRecord>, StoreError> {
        self.up()?;
        self.inner.append_audit(entries, max).await
    }

    async fn list_audit(
        &self,
        query: &fleetgate_registry::audit::AuditQuery,
    ) -> Result<Page<fleetgate_registry::audit::AuditRecord>, StoreError> {
        self.up()?;
        self.inner.list_audit(query).await
    }

    async fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        self.up()?;
        self.inner.prune_audit(before).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.up()?;
        self.inner.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_503_with_retry_after() {
    let service = service_on(FlakyStore {
        inner: EmbeddedStore::in_memory(Windows::default(), 1000),
        down: AtomicBool::new(false),
    })
    .await;
    let token = admin_token(&service).await;
    make_pending(&service, "dev01", "secret1").await;
    service
        .registry()
        .store()
        .down
        .store(true, Ordering::SeqCst);

    let mut checks = vec![
        send(&service, Method::GET, "/readyz", None, "").await,
        get(&service, "/api/client-registry", &token).await,
        post(
            &service,
            "/api/client-registry/requests/dev01/grant",
            &token,
            "",
        )
        .await,
        try_login(&service, "admin", ADMIN_PASSWORD).await,
    ];
    checks.push(send(&service, Method::GET, "/api/users", Some(&token), "").await);
    checks.push(get(&service, "/api/roles", &token).await);
    checks.push(get(&service, "/api/roles/admin", &token).await);
    checks.push(
        put(
            &service,
            "/api/roles/sensors",
            &token,
            r#"{"permissions":[]}"#,
        )
        .await,
    );
    checks.push(
        send(
            &service,
            Method::DELETE,
            "/api/roles/sensors",
            Some(&token),
            "",
        )
        .await,
    );
    checks.push(
        patch(
            &service,
            "/api/users/admin",
            &token,
            r#"{"permissions":[]}"#,
        )
        .await,
    );
    for reply in checks {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["status"], "unavailable");
        assert_eq!(reply.headers[header::RETRY_AFTER], "5");
    }
    // Liveness does not depend on the store.
    let reply = send(&service, Method::GET, "/healthz", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);

    service
        .registry()
        .store()
        .down
        .store(false, Ordering::SeqCst);
    let reply = post(
        &service,
        "/api/client-registry/requests/dev01/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "current_thread")]
async fn grant_works_on_a_current_thread_runtime() {
    let service = service().await;
    let token = admin_token(&service).await;
    let view = make_granted(&service, &token, "dev01", "secret1", "").await;
    assert_eq!(view["state"], "granted");
}

#[test]
fn service_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<AdminService<EmbeddedStore>>();
}

// ---- login queue and throttle ----

/// 150 logins at once: the queue takes what it can (2 hashing at a time,
/// 64 waiting) and sheds the rest with 503 at once; a grant made meanwhile
/// has slots of its own and finishes while logins are still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_and_never_delays_a_grant() {
    let service = Arc::new(service().await);
    let token = admin_token(&service).await;
    make_pending(&service, "dev-flood", "s3cret-pass").await;
    let logins: Vec<_> = (0..150)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                try_login(&service, &format!("user{i}"), "wrong-password")
                    .await
                    .status
            })
        })
        .collect();
    // Let the flood reach the queue, then grant.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = post(
        &service,
        "/api/client-registry/requests/dev-flood/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let still_queued = logins.iter().filter(|h| !h.is_finished()).count();
    assert!(
        still_queued > 0,
        "the grant waited for the whole login flood"
    );
    let mut statuses = Vec::new();
    for h in logins {
        statuses.push(h.await.unwrap());
    }
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(shed > 0, "the login queue is not bounded: {statuses:?}");
    assert!(statuses.iter().all(|s| *s != StatusCode::OK));
}

#[tokio::test]
async fn failed_logins_get_429_with_retry_after() {
    let service = service().await;
    let first_failure = std::time::Instant::now();
    for _ in 0..5 {
        let reply = try_login(&service, "admin", "wrong-password").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = try_login(&service, "admin", "wrong-password").await;
    let elapsed = first_failure.elapsed().as_secs();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.body["status"], "rate_limited");
    // The rest of the 300 s window that began at the first failure (five
    // argon2 checks take seconds on a loaded machine), rounded up.
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (300 - elapsed - 1..=300).contains(&retry),
        "Retry-After {retry} after {elapsed} s"
    );
}

// ---- the web UI through the service ----

#[tokio::test]
async fn the_ui_is_served_without_a_token_and_the_api_is_not_sniffed() {
    let service = service().await;
    let request = Request::builder().uri("/").body(Bytes::new()).unwrap();
    let response = service.handle(request, None).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()[header::LOCATION], "/ui/");
    let request = Request::builder().uri("/ui/").body(Bytes::new()).unwrap();
    let response = service.handle(request, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    // The page holds no data: the API behind it still needs the token.
    let reply = send(&service, Method::GET, "/api/users", None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // `/ui` paths are the UI's only: an API-looking path under it is 404.
    let request = Request::builder()
        .uri("/ui/api/users")
        .body(Bytes::new())
        .unwrap();
    let response = service.handle(request, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

mod audit;
mod bulk;
mod openapi;
mod rules;
