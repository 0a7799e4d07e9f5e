//! Fuzz target: the register body (`RegisterRequest::parse`), the first
//! thing the gateway does with a device's JSON.
//!
//! Beyond "no panic" it asserts:
//! - caps: an accepted request is within every documented limit (username
//!   length, password length, role and permission counts and lengths,
//!   context length, body size) and passes `check_policy` again;
//! - round trip: the accepted request written back as JSON parses to an
//!   equal request;
//! - an accepted body is one JSON value (the parser never accepts bytes a
//!   plain JSON parser refuses);
//! - the password a device sent never appears in the error it gets back.
#![no_main]

use fleetgate_registry::request::{
    Credential, RegisterRequest, RequestError, CONTEXT_MAX, MAX_BODY_BYTES, PASSWORD_MAX,
    PERMISSIONS_MAX, RESOURCE_MAX, ROLES_MAX, ROLE_MAX, USERNAME_MAX, USERNAME_MIN,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn check_caps(req: &RegisterRequest<'_>) {
    assert!((USERNAME_MIN..=USERNAME_MAX).contains(&req.username.len()));
    if let Credential::Password(p) = &req.credential {
        assert!(p.len() <= PASSWORD_MAX);
    }
    assert!(req.roles.len() <= ROLES_MAX);
    assert!(req
        .roles
        .iter()
        .all(|r| !r.is_empty() && r.len() <= ROLE_MAX));
    assert!(req.permissions.len() <= PERMISSIONS_MAX);
    assert!(req
        .permissions
        .iter()
        .all(|p| !p.resource.is_empty() && p.resource.len() <= RESOURCE_MAX));
    assert!(req.context.as_ref().is_none_or(|c| c.len() <= CONTEXT_MAX));
    req.check_policy()
        .expect("an accepted request passes its policy again");
}

fn round_trip(req: &RegisterRequest<'_>) {
    let mut body = json!({
        "username": req.username,
        "roles": req.roles,
        "permissions": req.permissions,
    });
    match &req.credential {
        Credential::Password(p) => body["password"] = json!(p),
        Credential::Csr(c) => body["csr"] = json!(c),
    }
    if let Some(c) = &req.context {
        body["context"] = json!(c);
    }
    let bytes = serde_json::to_vec(&body).unwrap();
    let again = RegisterRequest::parse(&bytes).expect("a written-back request parses");
    assert_eq!(&again, req, "the request does not round-trip");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY_BYTES {
        // The HTTP codec refuses such a body (413) before it gets here.
        return;
    }
    match RegisterRequest::parse(data) {
        Ok(req) => {
            assert!(
                serde_json::from_slice::<Value>(data).is_ok(),
                "accepted bytes that are not JSON"
            );
            check_caps(&req);
            round_trip(&req);
        }
        Err(e) => {
            let message = match &e {
                RequestError::Invalid(m) => m.clone(),
                RequestError::Policy { message, .. } => message.clone(),
            };
            assert_eq!(message, e.to_string());
            // The password, when the body has one that occurs only once.
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            let Some(Value::String(password)) = map.get("password") else {
                return;
            };
            let occurrences = data
                .windows(password.len().max(1))
                .filter(|w| *w == password.as_bytes())
                .count();
            if password.len() >= 6 && occurrences == 1 && message.contains(password.as_str()) {
                // The password may be a word of the message itself
                // ("username"): the same body with another password of the
                // same length must then give a message that has it too.
                let mut other = map.clone();
                let stand_in = "\u{1}".repeat(password.chars().count());
                other.insert("password".into(), Value::String(stand_in));
                let body = serde_json::to_vec(&other).unwrap();
                let again = match RegisterRequest::parse(&body) {
                    Err(e) => e.to_string(),
                    Ok(_) => String::new(),
                };
                assert!(
                    again.contains(password.as_str()),
                    "the error {message:?} shows the password"
                );
            }
        }
    }
});
