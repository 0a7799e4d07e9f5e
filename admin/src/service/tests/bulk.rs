//! The bulk decision routes, `POST /api/client-registry/requests/grant`
//! and `.../deny`, as a client sees them: every result kind, the 10,000 cap
//! at the cap and over it, cursor paging, the selector's filters, the
//! overrides and the roles check, and the bodies that are refused.

use super::*;

const GRANT: &str = "/api/client-registry/requests/grant";
const DENY: &str = "/api/client-registry/requests/deny";

/// Creates pending requests for `names` (password `pw-<name>`), with one
/// unlock, over `transport`.
async fn pending_many<S: Store>(service: &AdminService<S>, names: &[String], transport: Transport) {
    let now = UnixMillis::now();
    service.registry().unlock(None, now).await.unwrap();
    for name in names {
        let body = json!({ "username": name, "password": format!("pw-{name}") }).to_string();
        let ctx = PollContext {
            transport: Some(transport),
            ..PollContext::default()
        };
        let outcome = service.registry().register(body.as_bytes(), ctx, now).await;
        assert!(
            matches!(outcome, RegisterOutcome::Pending { created: true, .. }),
            "{name}: {outcome:?}"
        );
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// The device polls again with its password: what it gets.
async fn repoll<S: Store>(service: &AdminService<S>, name: &str) -> RegisterOutcome {
    poll(service, name, &format!("pw-{name}")).await
}

fn results(body: &Value) -> Vec<(String, String)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["username"].as_str().unwrap().to_owned(),
                i["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, r)| ((*u).to_owned(), (*r).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_grant_answers_every_result_kind_in_order() {
    let service = service().await;
    let token = admin_token(&service).await;
    let all: Vec<String> = ["b-new", "b-done", "b-denied", "b-new2"]
        .map(String::from)
        .to_vec();
    pending_many(&service, &all, Transport::Http).await;
    let reply = post(
        &service,
        "/api/client-registry/requests/b-done/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = post(&service, "/api/client-registry/requests/b-denied/deny", &token, "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let pairing = get(&service, "/api/client-registry/requests/b-new", &token).await.body
        ["pairingId"]
        .clone();

    let body = json!({"usernames": ["b-new", "b-done", "b-denied", "ghost", "b-new", "b-new2"]});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["granted"], 2);
    assert!(reply.body.get("nextCursor").is_none(), "{}", reply.body);
    assert!(reply.body.get("denied").is_none());
    // In the order named, a repeated name answered once.
    assert_eq!(
        results(&reply.body),
        pairs(&[
            ("b-new", "granted"),
            ("b-done", "already_granted"),
            ("b-denied", "conflict"),
            ("ghost", "not_found"),
            ("b-new2", "granted"),
        ])
    );
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items[0]["pairingId"], pairing);
    assert!(items[3].get("pairingId").is_none(), "not_found has none");
    assert_eq!(items[0].as_object().unwrap().len(), 3, "{}", items[0]);

    // Durable and collectable; a plain bulk grant gives nothing.
    assert!(matches!(
        repoll(&service, "b-new").await,
        RegisterOutcome::Granted { .. }
    ));
    let user = get(&service, "/api/users/b-new2", &token).await;
    assert_eq!(user.body["roles"], json!([]));
    assert_eq!(user.body["permissions"], json!([]));
    assert!(matches!(
        repoll(&service, "b-denied").await,
        RegisterOutcome::Denied
    ));

    // Granting again: every one already granted, nothing new.
    let body = json!({"usernames": ["b-new", "b-new2"]});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.body["granted"], 0);
    assert_eq!(
        results(&reply.body),
        pairs(&[("b-new", "already_granted"), ("b-new2", "already_granted")])
    );
    // An empty list decides nothing.
    let reply = post(&service, GRANT, &token, r#"{"usernames": []}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"granted": 0, "items": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_grant_gives_exactly_the_overrides_and_checks_roles_first() {
    let service = service().await;
    let token = admin_token(&service).await;
    let all = names("ov", 3);
    pending_many(&service, &all, Transport::Http).await;
    let reply = put(
        &service,
        "/api/roles/sensors",
        &token,
        r#"{"permissions":[{"resource":"plant/#","operation":"read","context":"mqtt"}]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // One role unknown: 422 before anything is written.
    let body = json!({"selector": {"prefix": "ov"}, "roles": ["sensors", "ghost-role"]});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    assert_eq!(reply.body["rule"], "unknown_roles");
    assert!(reply.body["error"].as_str().unwrap().contains("ghost-role"));
    let pending = get(&service, "/api/client-registry/requests?prefix=ov", &token).await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 3);
    assert!(matches!(
        repoll(&service, "ov00000").await,
        RegisterOutcome::Pending { .. }
    ));

    let permission = json!({"resource": "plant/4/temp", "operation": "write", "context": "mqtt"});
    let body = json!({
        "selector": {"prefix": "ov"},
        "roles": ["sensors", "sensors"],
        "permissions": [permission],
    });
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["granted"], 3);
    for name in &all {
        let user = get(&service, &format!("/api/users/{name}"), &token).await;
        assert_eq!(user.body["roles"], json!(["sensors"]), "{name}");
        assert_eq!(user.body["permissions"], json!([permission]), "{name}");
    }
    // Overrides over the caps of a grant are 400, as on the single grant.
    let too_many: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
    let body = json!({"usernames": ["x"], "roles": too_many});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
}

/// 10,001 pending requests: a selector grants the cap, 10,000, and answers
/// the cursor of the 10,000th; the next call from it grants the last one
/// and has no cursor. 10,000 usernames are accepted, 10,001 refused, and a
/// limit past the cap too, before anything is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_grant_cap_is_ten_thousand_and_a_selector_pages_on() {
    let service = service_on(EmbeddedStore::in_memory(Windows::default(), 20_000)).await;
    let token = admin_token(&service).await;
    let all = names("cap", 10_001);
    pending_many(&service, &all, Transport::Http).await;

    let over = json!({"usernames": all});
    let reply = post(&service, GRANT, &token, &over.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body["error"].as_str().unwrap().contains("10000"));
    for limit in [json!(0), json!(-1), json!(10_001), json!("5")] {
        let body = json!({"selector": {"prefix": "cap"}, "limit": limit});
        let reply = post(&service, GRANT, &token, &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "limit {limit}");
    }
    assert_eq!(service.registry().status(UnixMillis::now()).await.unwrap().pending, 10_001);

    let reply = post(&service, GRANT, &token, r#"{"selector": {"prefix": "cap"}}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body["error"]);
    assert_eq!(reply.body["granted"], 10_000);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 10_000);
    assert!(items.iter().all(|i| i["result"] == "granted"));
    assert_eq!(items[0]["username"], "cap00000");
    assert_eq!(reply.body["nextCursor"], "cap09999");

    let body = json!({"selector": {"prefix": "cap"}, "cursor": "cap09999"});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(results(&reply.body), pairs(&[("cap10000", "granted")]));
    assert!(reply.body.get("nextCursor").is_none());
    assert_eq!(service.registry().status(UnixMillis::now()).await.unwrap().pending, 0);
    assert!(matches!(
        repoll(&service, "cap10000").await,
        RegisterOutcome::Granted { .. }
    ));

    // Exactly at the cap, by name: accepted (all already granted now).
    let at_cap = json!({"usernames": &all[..10_000]});
    let reply = post(&service, GRANT, &token, &at_cap.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["granted"], 0);
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_limit_pages_with_the_listing_cursor() {
    let service = service().await;
    let token = admin_token(&service).await;
    pending_many(&service, &names("pg", 25), Transport::Http).await;
    pending_many(&service, &names("other", 3), Transport::Http).await;
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let mut body = json!({"selector": {"prefix": "pg"}, "limit": 10});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let reply = post(&service, DENY, &token, &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let page = results(&reply.body);
        assert!(page.iter().all(|(_, r)| r == "denied"));
        assert_eq!(reply.body["denied"], page.len());
        sizes.push(page.len());
        seen.extend(page.into_iter().map(|(u, _)| u));
        match reply.body.get("nextCursor") {
            Some(c) => {
                assert_eq!(c.as_str(), seen.last().map(String::as_str));
                cursor = Some(c.as_str().unwrap().to_owned());
            }
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(seen, names("pg", 25));
    // The other prefix was not touched.
    let other = get(&service, "/api/client-registry/requests?prefix=other", &token).await;
    assert_eq!(other.body["items"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_narrows_by_transport_and_pairing_ids() {
    let service = service().await;
    let token = admin_token(&service).await;
    pending_many(&service, &names("h", 3), Transport::Http).await;
    pending_many(&service, &names("m", 2), Transport::Mqtt).await;

    let reply = post(&service, GRANT, &token, r#"{"selector": {"transport": "mqtt"}}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        results(&reply.body),
        pairs(&[("m00000", "granted"), ("m00001", "granted")])
    );

    // Pairing ids: only the requests whose id is listed; an id that no
    // pending request has matches nothing.
    let id = |name: &str| {
        let service = &service;
        let token = &token;
        let name = name.to_owned();
        async move {
            get(service, &format!("/api/client-registry/requests/{name}"), token)
                .await
                .body["pairingId"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (a, c) = (id("h00000").await, id("h00002").await);
    let body = json!({"selector": {"pairingIds": [a, c, "000000"]}});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        results(&reply.body),
        pairs(&[("h00000", "granted"), ("h00002", "granted")])
    );
    assert_eq!(reply.body["items"][0]["pairingId"], json!(a));
    assert!(matches!(
        repoll(&service, "h00001").await,
        RegisterOutcome::Pending { .. }
    ));
    // Transport and prefix together narrow further.
    let body = json!({"selector": {"prefix": "h", "transport": "mqtt"}});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.body, json!({"granted": 0, "items": []}));
}

/// A request replaced after the admin read it (another credential, so
/// another pairing id) is never granted to the newcomer: a pairing-id
/// selector names the request that was read. (A replacement between the
/// read and the commit is a `conflict` from the store's fingerprint check:
/// the conformance case `grants_commit_as_a_group`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_request_is_not_granted_by_the_pairing_id_that_was_read() {
    let service = service().await;
    let token = admin_token(&service).await;
    pending_many(&service, &names("sq", 1), Transport::Http).await;
    let seen = get(&service, "/api/client-registry/requests/sq00000", &token).await.body
        ["pairingId"]
        .clone();
    // Replace the request: forget it, and a squatter polls the name.
    let reply = delete(&service, "/api/client-registry/requests/sq00000", &token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(matches!(
        poll(&service, "sq00000", "squatter-pw").await,
        RegisterOutcome::Pending { created: true, .. }
    ));
    let body = json!({"selector": {"pairingIds": [seen]}});
    let reply = post(&service, GRANT, &token, &body.to_string()).await;
    assert_eq!(reply.body, json!({"granted": 0, "items": []}));
    assert_eq!(
        get(&service, "/api/users/sq00000", &token).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_deny_answers_every_result_kind() {
    let service = service().await;
    let token = admin_token(&service).await;
    let all: Vec<String> = ["d-new", "d-granted", "d-denied"].map(String::from).to_vec();
    pending_many(&service, &all, Transport::Http).await;
    post(&service, "/api/client-registry/requests/d-granted/grant", &token, "").await;
    post(&service, "/api/client-registry/requests/d-denied/deny", &token, "").await;
    let body = json!({"usernames": ["d-new", "d-granted", "d-denied", "ghost"]});
    let reply = post(&service, DENY, &token, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["denied"], 1);
    assert!(reply.body.get("granted").is_none());
    assert_eq!(
        results(&reply.body),
        pairs(&[
            ("d-new", "denied"),
            ("d-granted", "conflict"),
            ("d-denied", "already_denied"),
            ("ghost", "not_found"),
        ])
    );
    assert!(matches!(
        repoll(&service, "d-new").await,
        RegisterOutcome::Denied
    ));
    assert!(matches!(
        repoll(&service, "d-granted").await,
        RegisterOutcome::Granted { .. }
    ));
    let over = json!({"usernames": names("x", 10_001)});
    let reply = post(&service, DENY, &token, &over.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bulk_bodies_are_400_and_decide_nothing() {
    let service = service().await;
    let token = admin_token(&service).await;
    pending_many(&service, &names("bad", 1), Transport::Http).await;
    for (uri, body) in [
        (GRANT, ""),
        (GRANT, "{"),
        (GRANT, "[]"),
        (GRANT, "{}"),
        (GRANT, r#"{"usernames": "bad00000"}"#),
        (GRANT, r#"{"usernames": ["bad00000"], "selector": {}}"#),
        (GRANT, r#"{"usernames": ["bad00000"], "limit": 5}"#),
        (GRANT, r#"{"usernames": ["bad00000"], "cursor": "a"}"#),
        (GRANT, r#"{"usernames": ["bad00000"], "role": ["x"]}"#),
        (GRANT, r#"{"usernames": ["bad00000"], "pairingId": "abcdef"}"#),
        (GRANT, r#"{"selector": {"prefx": "bad"}}"#),
        (GRANT, r#"{"selector": {"transport": "coap"}}"#),
        (GRANT, r#"{"selector": {"pairingIds": "abc"}}"#),
        (GRANT, r#"{"selector": "bad"}"#),
        (DENY, r#"{"usernames": ["bad00000"], "roles": []}"#),
        (DENY, r#"{"selector": {}, "permissions": []}"#),
        (DENY, ""),
    ] {
        let reply = post(&service, uri, &token, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri} {body:?}: {}", reply.body);
        assert_eq!(reply.body["status"], "invalid");
    }
    assert!(matches!(
        repoll(&service, "bad00000").await,
        RegisterOutcome::Pending { .. }
    ));
    // The routes need an admin token, like every decision.
    let reply = send(&service, Method::POST, GRANT, None, r#"{"usernames": []}"#).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// The bulk routes' path is also that of a request named `grant` or
/// `deny`: GET and DELETE still reach that request, and its single grant
/// is one segment longer, so no device name is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_named_grant_and_deny_stay_reachable() {
    let service = service().await;
    let token = admin_token(&service).await;
    let reply = get(&service, GRANT, &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    pending_many(&service, &["grant".to_owned(), "deny".to_owned()], Transport::Http).await;
    let reply = get(&service, GRANT, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "grant");
    let reply = post(&service, "/api/client-registry/requests/grant/grant", &token, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = delete(&service, DENY, &token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = send(&service, Method::PUT, DENY, Some(&token), "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers[header::ALLOW], "GET, POST, DELETE");
}

/// The bulk routes read bodies up to `MAX_BULK_BODY` (room for 10,000
/// names), one byte more is 413; the other routes keep `MAX_BODY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_body_at_its_cap_is_read_and_one_byte_over_is_413() {
    let service = service().await;
    let token = admin_token(&service).await;
    let mut at_cap = json!({"usernames": ["ghost"]}).to_string();
    at_cap.push_str(&" ".repeat(MAX_BULK_BODY - at_cap.len()));
    let reply = post(&service, DENY, &token, &at_cap).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    at_cap.push(' ');
    let reply = post(&service, DENY, &token, &at_cap).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body["error"].as_str().unwrap().contains(&MAX_BULK_BODY.to_string()));
    // 10,000 names of the longest a device may have (64 bytes) fit.
    let longest: Vec<String> = (0..10_000).map(|i| format!("{i:0>64}")).collect();
    let body = json!({"usernames": longest}).to_string();
    assert!(body.len() <= MAX_BULK_BODY, "{}", body.len());
}

/// Two bulk grants of the same 300 requests at once: every request is
/// granted exactly once over both answers (the other says
/// `already_granted`), and each device has one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bulk_grants_create_one_user_each() {
    let service = Arc::new(service().await);
    let token = admin_token(&service).await;
    let all = names("race", 300);
    pending_many(&service, &all, Transport::Http).await;
    let body = json!({"usernames": all}).to_string();
    let calls = (0..2).map(|_| {
        let (service, token, body) = (Arc::clone(&service), token.clone(), body.clone());
        tokio::spawn(async move { post(&service, GRANT, &token, &body).await })
    });
    let mut granted = std::collections::HashMap::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        for (u, r) in results(&reply.body) {
            assert!(r == "granted" || r == "already_granted", "{u}: {r}");
            *granted.entry(u).or_insert(0) += usize::from(r == "granted");
        }
    }
    assert_eq!(granted.len(), 300);
    assert!(granted.values().all(|n| *n == 1), "{granted:?}");
}
