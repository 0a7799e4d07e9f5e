//! Standard Webhooks signing: the secret (`whsec_` + base64), the body
//! (`{"type","timestamp","data"}`) and the three headers.
//!
//! `webhook-signature` is `v1,` and the base64 of HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the decoded
//! secret. Pure functions, no I/O: the deliverer (`super`) calls them per
//! attempt, and the tests check them against the specification's own
//! example.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetgate_registry::webhook::WebhookEvent;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The shortest and longest decoded secret the specification allows.
pub const SECRET_MIN: usize = 24;
pub const SECRET_MAX: usize = 64;

/// A `--webhook-secret` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with `whsec_`")]
    Prefix,
    #[error("the part after `whsec_` is not base64")]
    Base64,
    #[error("must decode to {SECRET_MIN} to {SECRET_MAX} bytes, not {0}")]
    Length(usize),
}

/// The signing key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        if !(SECRET_MIN..=SECRET_MAX).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: &'a serde_json::Value,
}

/// The request body of `event`: the same bytes on every attempt.
pub fn body(event: &WebhookEvent) -> Vec<u8> {
    serde_json::to_vec(&Body {
        kind: event.kind.as_str(),
        timestamp: event.at.to_rfc3339(),
        data: &event.data,
    })
    .expect("a webhook body always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification
        // (spec/standard-webhooks.md, "Signature scheme").
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_secrets_that_are_not_whsec_base64_of_a_usable_length() {
        assert_eq!(WebhookSecret::parse("MfKQ9r8G"), Err(SecretError::Prefix));
        assert_eq!(WebhookSecret::parse("whsec_!!!"), Err(SecretError::Base64));
        let short = format!("whsec_{}", STANDARD.encode([7u8; SECRET_MIN - 1]));
        assert_eq!(
            WebhookSecret::parse(&short),
            Err(SecretError::Length(SECRET_MIN - 1))
        );
        let at_cap = format!("whsec_{}", STANDARD.encode([7u8; SECRET_MAX]));
        assert!(WebhookSecret::parse(&at_cap).is_ok());
        let over = format!("whsec_{}", STANDARD.encode([7u8; SECRET_MAX + 1]));
        assert!(WebhookSecret::parse(&over).is_err());
        let ok = format!("whsec_{}", STANDARD.encode([7u8; SECRET_MIN]));
        assert!(!format!("{:?}", WebhookSecret::parse(&ok).unwrap()).contains("Bwc"));
    }
}
