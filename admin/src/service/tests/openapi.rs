//! The OpenAPI document against the router: every route of [`Route`] is in
//! the document with each of its methods, every documented path and method
//! reaches a route that answers it, and `GET /api/openapi.json` serves the
//! document without a token. A route added to one side only fails here.

use std::collections::BTreeSet;

use super::*;
use crate::service::routes::OPENAPI_DOCUMENT;

/// Documented operations the admin service does not serve: the proxy
/// answers them itself (`proxy/src/router.rs`).
const PROXY_ONLY: [(&str, &str); 1] = [("POST", "/api/client-registry/register")];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is JSON")
}

/// Every `(METHOD, path template)` the document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// A concrete path for a template: each `{param}` becomes `x1`.
fn instantiate(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed parameter") + open;
        path.push_str("x1");
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

#[test]
fn every_route_and_method_is_documented() {
    let ops = documented(&document());
    for route in Route::every() {
        for method in route.allow().split(", ") {
            assert!(
                ops.contains(&(method.to_owned(), route.template().to_owned())),
                "{method} {} is routed but not in openapi.json",
                route.template()
            );
        }
    }
}

#[test]
fn every_documented_operation_is_routed() {
    let doc = document();
    for (method, template) in documented(&doc) {
        let path = instantiate(&template);
        if PROXY_ONLY.contains(&(method.as_str(), template.as_str())) {
            assert_eq!(
                Route::parse(&path).unwrap(),
                None,
                "{template} is listed as proxy-only but the admin routes it"
            );
            continue;
        }
        let route = Route::parse(&path)
            .unwrap()
            .unwrap_or_else(|| panic!("{method} {template} is documented but not routed"));
        assert_eq!(route.template(), template, "{path} routes elsewhere");
        assert!(
            route.allow().split(", ").any(|m| m == method),
            "{method} {template} is documented but the route allows only {}",
            route.allow()
        );
    }
}

/// The two checks above catch the drift they should: a document missing a
/// route, and a document with a route nobody serves.
#[test]
fn the_contract_checks_can_fail() {
    let mut doc = document();
    let paths = doc["paths"].as_object_mut().unwrap();
    paths.remove("/api/roles/{name}");
    let ops = documented(&doc);
    let missing: Vec<_> = Route::every()
        .into_iter()
        .filter(|r| !ops.contains(&("GET".to_owned(), r.template().to_owned())))
        .filter(|r| r.allow().contains("GET"))
        .map(|r| r.template())
        .collect();
    assert_eq!(missing, ["/api/roles/{name}"]);
    assert_eq!(
        Route::parse(&instantiate("/api/roles/{name}/members")).unwrap(),
        None
    );
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("local reference");
                    assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
}

#[test]
fn the_document_names_the_security_schemes_and_register_answers() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["apiToken"]["in"], "query");
    assert_eq!(schemes["apiToken"]["name"], "apiToken");
    let register = &doc["paths"]["/api/client-registry/register"]["post"]["responses"];
    for status in ["201", "202", "400", "409", "422", "423", "429", "503"] {
        assert!(register.get(status).is_some(), "register lacks {status}");
    }
    for status in ["202", "423", "429", "503"] {
        assert!(
            register[status]["headers"].get("Retry-After").is_some(),
            "register {status} lacks Retry-After"
        );
    }
    // Every route that needs a token says so; the public ones say not.
    for route in Route::every() {
        for method in route.allow().split(", ") {
            let op = &doc["paths"][route.template()][method.to_lowercase()];
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(
                secured,
                route.needs_admin(),
                "{method} {}",
                route.template()
            );
        }
    }
}

#[tokio::test]
async fn openapi_json_is_served_without_a_token() {
    let service = service().await;
    let reply = send(&service, Method::GET, "/api/openapi.json", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, document());
    let reply = send(&service, Method::POST, "/api/openapi.json", None, "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Regression (schemathesis, ST201): serde reads a struct from an array of
/// its fields' values, so `[null, null]` granted a request and
/// `["admin", "<password>"]` was a login. Every body must be an object.
#[tokio::test]
async fn bodies_that_are_not_objects_are_refused() {
    let service = service().await;
    let token = admin_token(&service).await;
    let login = format!(r#"["admin", "{ADMIN_PASSWORD}"]"#);
    let reply = send(&service, Method::POST, "/api/login", None, login).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    for (method, uri) in [
        (Method::POST, "/api/client-registry/unlock"),
        (Method::POST, "/api/client-registry/requests/dev01/grant"),
        (Method::POST, "/api/client-registry/requests/dev01/deny"),
        (Method::POST, "/api/client-registry/requests/grant"),
        (Method::POST, "/api/client-registry/requests/deny"),
        (Method::PATCH, "/api/users/admin"),
        (Method::PUT, "/api/roles/r1"),
    ] {
        for body in ["[null, null]", "[]", "null", "1", "\"x\""] {
            let reply = send(&service, method.clone(), uri, Some(&token), body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{method} {uri} {body}"
            );
        }
    }
}
