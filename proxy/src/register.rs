//! The register poll, the hot path: rate limits (per source, then per
//! device) → body → [`Registry::register_parsed`] → one store transition →
//! a small JSON body, with no allocation beyond the response bytes and the
//! store's own. [`write_register_outcome`] turns an outcome into the HTTP
//! answer (status, `Retry-After`, body); the MQTT shell maps the same
//! outcomes to CONNACK codes instead.
//!
//! [`Registry::register_parsed`]: fleetgate_registry::Registry::register_parsed

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetgate_registry::model::Transport;
use fleetgate_registry::registry::{PollContext, RegisterOutcome};
use fleetgate_registry::request::{Credential, RegisterRequest, RequestError};
use fleetgate_registry::store::Store;
use fleetgate_registry::UnixMillis;

use crate::app::Worker;
use crate::http::response::{
    write_json, write_rate_limited, write_shed, INTERNAL_ERROR_BODY, STORE_UNAVAILABLE_BODY,
};
use crate::limiter::Verdict;
use crate::telemetry::{Outcome, Transport as TelemetryTransport};

/// Answers one register poll, appending the response to `out`.
pub async fn register<S: Store>(
    worker: &Worker<S>,
    body: &[u8],
    peer: SocketAddr,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let started = Instant::now();
    let app = &worker.app;
    app.pacer.record_poll(worker.id);
    let outcome = match register_outcome(worker, body, peer, started).await {
        Answer::Outcome(outcome) => {
            let ca = app.registry.ca().map(|ca| ca.cert_pem());
            write_register_outcome(out, &outcome, app.pacer.advise(), ca, keep_alive);
            Outcome::of(&outcome)
        }
        Answer::RateLimited(wait) => {
            write_rate_limited(out, wait, keep_alive);
            Outcome::RateLimited
        }
        Answer::Shed => {
            write_shed(out, keep_alive);
            Outcome::Shed
        }
    };
    worker.metrics.request(
        TelemetryTransport::Http,
        outcome,
        started.elapsed().as_secs_f64(),
    );
}

enum Answer {
    Outcome(RegisterOutcome),
    RateLimited(Duration),
    Shed,
}

async fn register_outcome<S: Store>(
    worker: &Worker<S>,
    body: &[u8],
    peer: SocketAddr,
    now: Instant,
) -> Answer {
    let app = &worker.app;
    if let Verdict::Deny { retry_after } = app.rate_limits.check_ip(peer.ip(), now) {
        return Answer::RateLimited(retry_after);
    }
    let request = match RegisterRequest::parse(body) {
        Ok(r) => r,
        Err(RequestError::Invalid(m)) => return Answer::Outcome(RegisterOutcome::Invalid(m)),
        Err(RequestError::Policy { rule, message }) => {
            return Answer::Outcome(RegisterOutcome::Policy { rule, message })
        }
    };
    let credential = match &request.credential {
        Credential::Password(p) => p.as_bytes(),
        Credential::Csr(c) => c.as_bytes(),
    };
    if let Verdict::Deny { retry_after } =
        app.rate_limits
            .check_user(&request.username, credential, now)
    {
        return Answer::RateLimited(retry_after);
    }
    let Some(_slot) = worker.try_begin() else {
        return Answer::Shed;
    };
    let ctx = PollContext {
        transport: Some(Transport::Http),
        source_addr: Some(peer),
        client_id: None,
    };
    Answer::Outcome(
        app.registry
            .register_parsed(&request, ctx, UnixMillis::now())
            .await,
    )
}

/// The HTTP status of a register outcome.
pub fn status_of(outcome: &RegisterOutcome) -> u16 {
    match outcome {
        RegisterOutcome::Invalid(_) => 400,
        RegisterOutcome::Policy { .. } => 422,
        RegisterOutcome::Conflict => 409,
        RegisterOutcome::Denied => 403,
        RegisterOutcome::Locked { .. } => 423,
        RegisterOutcome::Pending { .. } => 202,
        RegisterOutcome::Granted { .. } => 201,
        RegisterOutcome::Unavailable(e) if e.is_internal() => 500,
        RegisterOutcome::Unavailable(_) => 503,
    }
}

/// Appends the HTTP response for a register outcome.
pub fn write_register_outcome(
    out: &mut Vec<u8>,
    outcome: &RegisterOutcome,
    retry_after_secs: u32,
    ca_certificate: Option<&str>,
    keep_alive: bool,
) {
    let status = status_of(outcome);
    let mut body = Vec::with_capacity(96);
    match outcome {
        RegisterOutcome::Pending { pairing_id, .. } => {
            let _ = write!(body, r#"{{"status":"pending","pairingId":"{pairing_id}"}}"#);
        }
        RegisterOutcome::Granted {
            pairing_id,
            certificate: None,
        } => {
            let _ = write!(body, r#"{{"status":"granted","pairingId":"{pairing_id}"}}"#);
        }
        RegisterOutcome::Granted {
            pairing_id,
            certificate: Some(pem),
        } => {
            let v = serde_json::json!({
                "status": "granted",
                "pairingId": pairing_id.to_string(),
                "certificate": pem,
                "caCertificate": ca_certificate,
            });
            body = v.to_string().into_bytes();
        }
        RegisterOutcome::Locked {
            pairing_id: Some(id),
        } => {
            let _ = write!(body, r#"{{"status":"locked","pairingId":"{id}"}}"#);
        }
        RegisterOutcome::Locked { pairing_id: None } => {
            body.extend_from_slice(br#"{"status":"locked"}"#);
        }
        RegisterOutcome::Denied => body.extend_from_slice(br#"{"status":"denied"}"#),
        RegisterOutcome::Conflict => body.extend_from_slice(
            br#"{"status":"conflict","error":"this username is taken by a user or by a different request"}"#,
        ),
        RegisterOutcome::Invalid(message) => {
            let v = serde_json::json!({"status": outcome.name(), "error": message});
            body = v.to_string().into_bytes();
        }
        // The store's error text (addresses, server messages) is for the
        // log, never for a device.
        RegisterOutcome::Unavailable(e) if e.is_internal() => {
            body.extend_from_slice(INTERNAL_ERROR_BODY)
        }
        RegisterOutcome::Unavailable(_) => body.extend_from_slice(STORE_UNAVAILABLE_BODY),
        RegisterOutcome::Policy { rule, message } => {
            let v = serde_json::json!({"status": "policy", "rule": rule, "error": message});
            body = v.to_string().into_bytes();
        }
    }
    let retry = retry_after_secs.to_string();
    let headers: &[(&str, &str)] = match status {
        202 | 423 | 503 => &[("Retry-After", retry.as_str())],
        _ => &[],
    };
    write_json(out, status, headers, &body, keep_alive);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::fingerprint::Fingerprint;
    use fleetgate_registry::store::StoreError;

    fn render(outcome: RegisterOutcome) -> String {
        let mut out = Vec::new();
        write_register_outcome(&mut out, &outcome, 5, None, true);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pending_carries_pairing_id_and_retry_after() {
        let id = Fingerprint([0xab; 32]).pairing_id();
        let text = render(RegisterOutcome::Pending {
            pairing_id: id,
            created: true,
        });
        assert!(text.starts_with("HTTP/1.1 202 Accepted\r\n"));
        assert!(text.contains("\r\nRetry-After: 5\r\n"));
        assert!(text.ends_with(r#"{"status":"pending","pairingId":"ababab"}"#));
    }

    #[test]
    fn every_outcome_has_its_status_and_a_json_status_field() {
        let id = Fingerprint([1; 32]).pairing_id();
        let cases = [
            (
                RegisterOutcome::Invalid("bad \"json\"".into()),
                400,
                "invalid",
            ),
            (
                RegisterOutcome::Policy {
                    rule: "password_length",
                    message: "too short".into(),
                },
                422,
                "policy",
            ),
            (RegisterOutcome::Conflict, 409, "conflict"),
            (RegisterOutcome::Denied, 403, "denied"),
            (RegisterOutcome::Locked { pairing_id: None }, 423, "locked"),
            (
                RegisterOutcome::Granted {
                    pairing_id: id,
                    certificate: None,
                },
                201,
                "granted",
            ),
            (
                RegisterOutcome::Unavailable(StoreError::Unavailable("down".into())),
                503,
                "unavailable",
            ),
            (
                RegisterOutcome::Unavailable(StoreError::Corrupt("bad reply".into())),
                500,
                "internal",
            ),
        ];
        for (outcome, status, name) in cases {
            let text = render(outcome);
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            let body = text.split("\r\n\r\n").nth(1).unwrap();
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["status"], name, "{text}");
            assert_eq!(text.contains("Retry-After"), matches!(status, 423 | 503));
        }
    }
}
