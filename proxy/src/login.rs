//! Certificate login: `POST /api/login` over HTTPS with a verified client
//! certificate and no password is answered by the proxy itself (the TLS
//! layer holds the certificate; the admin service never sees it). The
//! certificate's user gets a JWT, as after a password login. A body with a
//! password is a password login and goes to the admin service.

use std::net::SocketAddr;

use fleetgate_registry::registry::CertificateLoginError;
use fleetgate_registry::store::Store;
use fleetgate_registry::UnixMillis;

use crate::app::Worker;
use crate::http::response::write_json;

/// The body of a certificate login: no password, and optionally the
/// username (which must then be the certificate's CN) and the token
/// lifetime.
#[derive(Debug, PartialEq, Eq)]
pub struct CertificateLogin {
    username: Option<String>,
    /// The raw `expireTimeInHours`, range-checked when answering.
    hours: Option<i64>,
    /// Why the body is unusable (answered 400).
    invalid: Option<String>,
}

impl CertificateLogin {
    /// `None` when the body carries a password: that is a password login,
    /// for the admin service, certificate or not.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let invalid = |m: &str| {
            Some(CertificateLogin {
                username: None,
                hours: None,
                invalid: Some(m.to_owned()),
            })
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return invalid("the body must be empty or a JSON object");
        };
        if text.trim().is_empty() {
            return Some(CertificateLogin {
                username: None,
                hours: None,
                invalid: None,
            });
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) else {
            return invalid("the body must be empty or a JSON object");
        };
        if map.contains_key("password") {
            return None;
        }
        let username = match map.get("username") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(u)) => Some(u.clone()),
            Some(_) => return invalid("username must be a string"),
        };
        let hours = match map.get("expireTimeInHours") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(h) => Some(h),
                None => return invalid("expireTimeInHours must be an integer"),
            },
        };
        Some(CertificateLogin {
            username,
            hours,
            invalid: None,
        })
    }
}

/// `POST /api/login` over HTTPS with a client certificate and no password:
/// the certificate's user gets a JWT, as after a password login.
pub async fn certificate_login<S: Store>(
    worker: &Worker<S>,
    login: CertificateLogin,
    cert: &[u8],
    peer: SocketAddr,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let error = |out: &mut Vec<u8>, status: u16, kind: &str, message: &str| {
        let body = serde_json::json!({"status": kind, "error": message});
        write_json(out, status, &[], body.to_string().as_bytes(), keep_alive);
    };
    if let Some(m) = &login.invalid {
        return error(out, 400, "invalid", m);
    }
    let hours = match fleetgate_registry::token::lifetime_hours(login.hours) {
        Ok(hours) => hours,
        Err(e) => return error(out, 400, "invalid", &e.to_string()),
    };
    let registry = &worker.app.registry;
    let now = UnixMillis::now();
    let metrics = &worker.metrics;
    match registry.authenticate_certificate(cert, now).await {
        Err(CertificateLoginError::Store(e)) if e.is_internal() => {
            tracing::error!(error = %e, "certificate login: corrupt store reply");
            error(out, 500, "internal", "internal error")
        }
        Err(CertificateLoginError::Store(e)) => {
            tracing::debug!(error = %e, "certificate login: store unavailable");
            error(out, 503, "unavailable", "store unavailable")
        }
        Err(e @ CertificateLoginError::Refused(rejection)) => {
            metrics.cert_auth_refused.increment(1);
            tracing::info!(%peer, reason = rejection.reason(), "certificate login refused");
            error(out, 401, "unauthorized", &e.to_string());
        }
        Ok(user) if login.username.as_ref().is_some_and(|u| *u != user.username) => {
            metrics.cert_auth_refused.increment(1);
            error(
                out,
                401,
                "unauthorized",
                "the username is not the client certificate's",
            );
        }
        Ok(user) => {
            metrics.cert_auth_ok.increment(1);
            let token = registry.tokens().issue_for(&user, now, hours);
            tracing::info!(username = %user.username, %peer, hours, "certificate login");
            let body = serde_json::json!({ "token": token });
            write_json(
                out,
                200,
                &[("Cache-Control", "no-store")],
                body.to_string().as_bytes(),
                keep_alive,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_login_body_has_no_password() {
        let plain = |username: Option<&str>, hours| {
            Some(CertificateLogin {
                username: username.map(str::to_owned),
                hours,
                invalid: None,
            })
        };
        assert_eq!(CertificateLogin::parse(b""), plain(None, None));
        assert_eq!(CertificateLogin::parse(b" \r\n"), plain(None, None));
        assert_eq!(CertificateLogin::parse(b"{}"), plain(None, None));
        assert_eq!(
            CertificateLogin::parse(br#"{"username":"d","expireTimeInHours":5}"#),
            plain(Some("d"), Some(5))
        );
        // A password makes it a password login, for the admin service.
        assert_eq!(
            CertificateLogin::parse(br#"{"username":"d","password":"p"}"#),
            None
        );
        for bad in [
            &b"[1]"[..],
            b"{",
            br#"{"username":7}"#,
            br#"{"expireTimeInHours":"5"}"#,
            b"\xff\xfe",
        ] {
            let parsed = CertificateLogin::parse(bad).unwrap();
            assert!(parsed.invalid.is_some(), "{bad:?}");
        }
    }
}
