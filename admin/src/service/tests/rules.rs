//! The auto-approval rule routes (`/api/client-registry/rules...`), and
//! rules deciding devices' first polls through the admin's registry.

use super::*;
use fleetgate_registry::rule::{Rule, RULES_MAX};

const RULES: &str = "/api/client-registry/rules";

async fn put_rule<S: Store>(
    service: &AdminService<S>,
    token: &str,
    name: &str,
    body: Value,
) -> Reply {
    put(
        service,
        &format!("{RULES}/{name}"),
        token,
        &body.to_string(),
    )
    .await
}

async fn define_sensor_role<S: Store>(service: &AdminService<S>, token: &str) {
    let reply = put(service, "/api/roles/sensor", token, r#"{"permissions":[]}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn poll_from<S: Store>(
    service: &AdminService<S>,
    username: &str,
    source: &str,
) -> RegisterOutcome {
    let body =
        json!({ "username": username, "password": "secret1", "roles": ["asked"] }).to_string();
    let ctx = PollContext {
        source_addr: Some(source.parse().unwrap()),
        ..PollContext::default()
    };
    service
        .registry()
        .register(body.as_bytes(), ctx, UnixMillis::now())
        .await
}

fn names(reply: &Reply) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rules_put_get_list_order_delete() {
    let service = service().await;
    let token = admin_token(&service).await;
    define_sensor_role(&service, &token).await;
    let reply = get(&service, RULES, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"items": []}));

    let body = json!({
        "usernamePattern": "plant4-[0-9]+", "sourceCidrs": ["10.4.0.0/16", "2001:db8:4::/48"],
        "transport": "http", "action": "grant", "roles": ["sensor"], "maxUses": 100,
        "expiresAt": "2099-01-01T00:00:00Z", "whileLocked": true
    });
    let reply = put_rule(&service, &token, "plant4", body.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "name": "plant4", "usernamePattern": "plant4-[0-9]+",
            "sourceCidrs": ["10.4.0.0/16", "2001:db8:4::/48"], "transport": "http",
            "requireCsr": false, "action": "grant", "roles": ["sensor"], "permissions": [],
            "maxUses": 100, "expiresAt": "2099-01-01T00:00:00.000Z", "whileLocked": true,
            "uses": 0
        })
    );
    let reply = put_rule(&service, &token, "plant4", body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "replacing is 200: {}",
        reply.body
    );
    for name in ["blocklist", "lab"] {
        let reply = put_rule(&service, &token, name, json!({"action": "deny"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let reply = get(&service, RULES, &token).await;
    assert_eq!(
        names(&reply),
        ["plant4", "blocklist", "lab"],
        "new rules go last"
    );
    let reply = get(&service, &format!("{RULES}/lab"), &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["action"], "deny");

    let order = json!({"names": ["lab", "plant4", "blocklist"]}).to_string();
    let reply = put(&service, &format!("{RULES}/order"), &token, &order).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(names(&reply), ["lab", "plant4", "blocklist"]);
    assert_eq!(
        names(&get(&service, RULES, &token).await),
        ["lab", "plant4", "blocklist"]
    );
    let partial = json!({"names": ["lab"]}).to_string();
    assert_policy(
        &put(&service, &format!("{RULES}/order"), &token, &partial).await,
        "rule_order",
    );
    let unknown = json!({"names": ["lab", "plant4", "nope"]}).to_string();
    assert_policy(
        &put(&service, &format!("{RULES}/order"), &token, &unknown).await,
        "rule_order",
    );

    let reply = delete(&service, &format!("{RULES}/lab"), &token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_status(
        &delete(&service, &format!("{RULES}/lab"), &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_status(
        &get(&service, &format!("{RULES}/lab"), &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        names(&get(&service, RULES, &token).await),
        ["plant4", "blocklist"]
    );
}

#[tokio::test]
async fn rule_put_errors_name_what_is_wrong() {
    let service = service().await;
    let token = admin_token(&service).await;
    let cases = [
        (
            json!({"action": "grant", "usernamePattern": "plant4-("}),
            "username_pattern",
        ),
        (
            json!({"action": "grant", "sourceCidrs": ["10.0.0.0/8", "10.0.0.0/33"]}),
            "source_cidrs",
        ),
        (
            json!({"action": "grant", "sourceCidrs": ["not-a-network"]}),
            "source_cidrs",
        ),
        (
            json!({"action": "grant", "roles": ["undefined"]}),
            "unknown_roles",
        ),
        (json!({"action": "grant", "roles": ["admin"]}), "admin_role"),
        (
            json!({"action": "deny", "roles": ["sensor"]}),
            "rule_action",
        ),
        (json!({"action": "grant", "maxUses": 0}), "max_uses"),
        (
            json!({"action": "grant", "expiresAt": "next week"}),
            "expires_at",
        ),
        (json!({"name": "other", "action": "grant"}), "rule_name"),
    ];
    for (body, rule) in cases {
        let reply = put_rule(&service, &token, "r1", body.clone()).await;
        assert_policy(&reply, rule);
        if rule == "username_pattern" || rule == "source_cidrs" {
            let message = reply.body["error"].as_str().unwrap_or_default().to_owned();
            assert!(
                !message.is_empty(),
                "a clear error for {body}: {}",
                reply.body
            );
        }
    }
    let reply = put_rule(
        &service,
        &token,
        "r1",
        json!({"action": "grant", "sourceCidrs": ["10.0.0.0/33"]}),
    )
    .await;
    assert!(
        reply.body.to_string().contains("10.0.0.0/33"),
        "the entry is named: {}",
        reply.body
    );
    assert_policy(
        &put_rule(&service, &token, "bad%20name", json!({"action": "grant"})).await,
        "rule_name",
    );
    // Wrong JSON shapes are 400, as on every route.
    for body in [
        json!({"action": "approve"}),
        json!({"action": "grant", "colour": "red"}),
        json!({}),
    ] {
        assert_status(
            &put_rule(&service, &token, "r1", body).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
    }
    assert_eq!(
        get(&service, RULES, &token).await.body,
        json!({"items": []}),
        "nothing was stored"
    );
    // Without an admin token nothing is answered.
    assert_eq!(
        get(&service, RULES, "").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_number_of_rules_is_capped() {
    let service = service().await;
    let token = admin_token(&service).await;
    let filler = |i: usize| -> Rule {
        serde_json::from_value(json!({"name": format!("rule{i:04}"), "action": "deny"})).unwrap()
    };
    for i in 0..RULES_MAX - 1 {
        service
            .registry()
            .store()
            .put_rule(filler(i), RULES_MAX)
            .await
            .unwrap();
    }
    let reply = put_rule(&service, &token, "last", json!({"action": "deny"})).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "the 1,000th rule fits: {}",
        reply.body
    );
    assert_policy(
        &put_rule(&service, &token, "one-too-many", json!({"action": "deny"})).await,
        "rules_count",
    );
    let reply = put_rule(
        &service,
        &token,
        "rule0000",
        json!({"action": "deny", "whileLocked": true}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "replacing at the cap works: {}",
        reply.body
    );
    assert_eq!(names(&get(&service, RULES, &token).await).len(), RULES_MAX);
}

#[tokio::test]
async fn a_granting_rule_grants_matching_devices_on_their_first_poll_and_names_itself() {
    let service = service().await;
    let token = admin_token(&service).await;
    define_sensor_role(&service, &token).await;
    let rule = json!({"usernamePattern": "plant4-.*", "sourceCidrs": ["10.4.0.0/16"],
        "action": "grant", "roles": ["sensor"]});
    assert_eq!(
        put_rule(&service, &token, "plant4", rule).await.status,
        StatusCode::CREATED
    );
    service
        .registry()
        .unlock(None, UnixMillis::now())
        .await
        .unwrap();

    let outcome = poll_from(&service, "plant4-1", "10.4.1.1:5000").await;
    assert!(
        matches!(outcome, RegisterOutcome::Granted { .. }),
        "{outcome:?}"
    );
    let user = get(&service, "/api/users/plant4-1", &token).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.body["decidedBy"], json!({"rule": "plant4"}));
    assert_eq!(
        user.body["roles"],
        json!(["sensor"]),
        "the rule's roles, not the device's wish"
    );
    let request = get(&service, "/api/client-registry/requests/plant4-1", &token).await;
    assert_eq!(request.body["state"], "granted");
    assert_eq!(request.body["decidedBy"], json!({"rule": "plant4"}));
    // The device collects its 201 again on the next poll.
    let again = poll_from(&service, "plant4-1", "10.4.1.1:5000").await;
    assert!(
        matches!(again, RegisterOutcome::Granted { .. }),
        "{again:?}"
    );

    // Not matching: another name, or another source. Both stay pending,
    // and an admin's grant names no rule.
    for (name, source) in [("plant5-1", "10.4.1.1:5000"), ("plant4-2", "10.5.0.1:5000")] {
        let outcome = poll_from(&service, name, source).await;
        assert!(
            matches!(outcome, RegisterOutcome::Pending { created: true, .. }),
            "{name}: {outcome:?}"
        );
    }
    let reply = post(
        &service,
        "/api/client-registry/requests/plant5-1/grant",
        &token,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.get("decidedBy").is_none(), "{}", reply.body);
    let reply = get(&service, &format!("{RULES}/plant4"), &token).await;
    assert_eq!(reply.body["uses"], 1);
}

#[tokio::test]
async fn deny_rules_max_uses_and_the_first_match_decide() {
    let service = service().await;
    let token = admin_token(&service).await;
    put_rule(
        &service,
        &token,
        "once",
        json!({"usernamePattern": "dev.*", "action": "grant", "maxUses": 1}),
    )
    .await;
    put_rule(
        &service,
        &token,
        "rest",
        json!({"usernamePattern": "dev.*", "action": "deny"}),
    )
    .await;
    service
        .registry()
        .unlock(None, UnixMillis::now())
        .await
        .unwrap();

    let first = poll_from(&service, "dev1", "127.0.0.1:1").await;
    assert!(
        matches!(first, RegisterOutcome::Granted { .. }),
        "{first:?}"
    );
    // `once` is spent, so the next rule decides.
    let second = poll_from(&service, "dev2", "127.0.0.1:1").await;
    assert_eq!(second, RegisterOutcome::Denied);
    let request = get(&service, "/api/client-registry/requests/dev2", &token).await;
    assert_eq!(request.body["state"], "denied");
    assert_eq!(request.body["decidedBy"], json!({"rule": "rest"}));
    let rules = get(&service, RULES, &token).await;
    assert_eq!(rules.body["items"][0]["uses"], 1);
    assert_eq!(rules.body["items"][1]["uses"], 1);
    // A re-poll is not evaluated again: still denied, no new use.
    assert_eq!(
        poll_from(&service, "dev2", "127.0.0.1:1").await,
        RegisterOutcome::Denied
    );
    assert_eq!(
        get(&service, RULES, &token).await.body["items"][1]["uses"],
        1
    );
}

#[tokio::test]
async fn while_locked_rules_preauthorize_and_others_wait_for_an_unlock() {
    let service = service().await;
    let token = admin_token(&service).await;
    put_rule(
        &service,
        &token,
        "unlocked-only",
        json!({"usernamePattern": "plain-.*", "action": "grant"}),
    )
    .await;
    put_rule(
        &service,
        &token,
        "preauth",
        json!({"usernamePattern": "pre-.*", "action": "grant", "whileLocked": true}),
    )
    .await;
    // The registry starts locked.
    let outcome = poll_from(&service, "pre-1", "127.0.0.1:1").await;
    assert!(
        matches!(outcome, RegisterOutcome::Granted { .. }),
        "{outcome:?}"
    );
    let outcome = poll_from(&service, "plain-1", "127.0.0.1:1").await;
    assert_eq!(outcome, RegisterOutcome::Locked { pairing_id: None });
    assert_eq!(
        get(&service, "/api/client-registry/requests/plain-1", &token)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "a locked registry stores nothing for an unmatched device"
    );
    assert_eq!(
        get(&service, &format!("{RULES}/unlocked-only"), &token)
            .await
            .body["uses"],
        0
    );
}
