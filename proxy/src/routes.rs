//! What the proxy does with one parsed request: serve the register poll and
//! the health checks itself, forward every other `/api/*` path to the admin
//! service, and answer 404 to the rest.
//!
//! The register poll is the hot path: body → [`Registry::register`] → one
//! store transition → a small JSON body, with no allocation beyond the
//! response bytes and the store's own.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetgate_registry::model::Transport;
use fleetgate_registry::registry::{CertificateLoginError, PollContext, RegisterOutcome};
use fleetgate_registry::request::{Credential, RegisterRequest, RequestError};
use fleetgate_registry::store::Store;
use fleetgate_registry::{Registry, UnixMillis};

use crate::forward::Forwarder;
use crate::http::codec::Request;
use crate::http::response::{write_forwarded, write_json};
use crate::limiter::{device_key, source_key, Limiter, Verdict};
use crate::pacing::Pacer;
use crate::telemetry::{Outcome, Transport as TelemetryTransport};
use crate::worker::Worker;

/// The device registration route.
pub const REGISTER_PATH: &str = "/api/client-registry/register";

/// The login route. With a client certificate and no password it is
/// answered here (mutual-TLS login); otherwise the admin service answers.
pub const LOGIN_PATH: &str = "/api/login";

/// The `/api/*` paths a device port forwards to the admin service by
/// default: logging in (devices get their JWT here) and the client CA
/// certificate. The register route and the health checks are answered by
/// the proxy itself. Every other `/api/*` path is 404 on a device port
/// unless `--admin-on-device-port on`.
pub const DEVICE_API_PATHS: [&str; 2] = [LOGIN_PATH, "/api/certificates/ca"];

/// Settings the connection loop and routes share.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub limits: crate::http::codec::Limits,
    /// Time allowed from the first byte of a request to its last.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Longest any one socket write may take (`--write-timeout`); a client
    /// that does not read its responses is closed after it.
    pub write_timeout: Duration,
    /// Time a TLS client has from accept to a finished handshake.
    pub tls_handshake_timeout: Duration,
    /// The I/O driver of the worker runtimes.
    pub io_driver: IoDriver,
    /// Whether the device ports forward the whole admin API
    /// (`--admin-on-device-port on`, for single-port deployments on a
    /// trusted network). Off: only [`DEVICE_API_PATHS`].
    pub admin_on_device_port: bool,
}

/// Which monoio driver the workers run on (`--io-driver`). epoll is the
/// default: on the measured machine it served keep-alive polls 1.15 to 1.24
/// times as fast as io_uring, and CONNECT storms faster too
/// (docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    #[default]
    Epoll,
    /// io_uring or fail at start.
    IoUring,
}

impl IoDriver {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoDriver::Auto),
            "epoll" => Ok(IoDriver::Epoll),
            "io-uring" => Ok(IoDriver::IoUring),
            _ => Err("expected auto, epoll or io-uring".into()),
        }
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: Default::default(),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            io_driver: IoDriver::Epoll,
            admin_on_device_port: false,
        }
    }
}

/// Per-worker load bounds.
#[derive(Clone, Copy, Debug)]
pub struct ShedConfig {
    /// Requests waiting on the store or the admin service, per worker.
    pub max_inflight: usize,
    /// Open connections, per worker.
    pub max_connections: usize,
}

impl Default for ShedConfig {
    fn default() -> Self {
        ShedConfig {
            max_inflight: 1024,
            max_connections: 10_000,
        }
    }
}

/// The two rate limiters; `None` when a limit is `off`.
pub struct RateLimits {
    /// Keyed by (username, credential): [`crate::limiter::device_key`].
    pub per_user: Option<Limiter>,
    /// Keyed by IPv4 address or IPv6 /64: [`crate::limiter::source_key`].
    pub per_ip: Option<Limiter>,
}

impl RateLimits {
    /// Checks the per-source limit (before anything is parsed).
    pub fn check_ip(&self, ip: IpAddr, now: Instant) -> Verdict {
        self.per_ip
            .as_ref()
            .map_or(Verdict::Allow, |l| l.check(&source_key(ip), now))
    }

    /// Checks the per-device limit of `username` presenting `credential`
    /// (a password, or a CSR): only the same credentials share a budget.
    pub fn check_user(&self, username: &str, credential: &[u8], now: Instant) -> Verdict {
        self.per_user.as_ref().map_or(Verdict::Allow, |l| {
            l.check(&device_key(username, credential), now)
        })
    }
}

/// Everything a worker needs, shared by all workers.
pub struct App<S> {
    pub registry: Arc<Registry<S>>,
    pub forwarder: Forwarder<S>,
    pub config: ConnConfig,
    pub mqtt: crate::mqtt::session::MqttConfig,
    pub rate_limits: RateLimits,
    pub pacer: Pacer,
    pub shed: ShedConfig,
    /// Open connections per source, over every worker and listener.
    pub sources: Arc<crate::sources::SourceConnections>,
}

/// Serves one request, appending the response to `out`. `client_cert` is
/// the verified client certificate of an HTTPS connection (DER), if any.
pub async fn handle<S: Store>(
    worker: &Worker<S>,
    req: &Request<'_>,
    peer: SocketAddr,
    client_cert: Option<&[u8]>,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let app = &worker.app;
    match req.path {
        REGISTER_PATH => {
            if req.method == "POST" {
                register(worker, req.body, peer, keep_alive, out).await;
            } else {
                method_not_allowed(out, "POST", keep_alive);
            }
        }
        "/healthz" => write_json(out, 200, &[], br#"{"status":"ok"}"#, keep_alive),
        "/readyz" => match app.registry.store().ping().await {
            Ok(()) => write_json(out, 200, &[], br#"{"status":"ready"}"#, keep_alive),
            Err(e) => {
                // Devices learn only that the store is down; the detail
                // (addresses, server errors) goes to the log.
                tracing::debug!(error = %e, "readyz: store unavailable");
                write_json(
                    out,
                    503,
                    &[("Retry-After", "5")],
                    STORE_UNAVAILABLE_BODY,
                    keep_alive,
                );
            }
        },
        p if (p == "/api" || p.starts_with("/api/"))
            && !app.config.admin_on_device_port
            && !DEVICE_API_PATHS.contains(&p) =>
        {
            // The admin API is not served on device ports unless asked for
            // (`--admin-on-device-port on`): the same 404 as any unknown path,
            // so the port does not even tell it is there.
            write_not_found(out, keep_alive)
        }
        p if p == "/api" || p.starts_with("/api/") => {
            let Some(_slot) = worker.try_begin() else {
                write_shed(out, keep_alive);
                return;
            };
            if let (LOGIN_PATH, "POST", Some(cert)) = (p, req.method, client_cert) {
                if let Some(login) = CertificateLogin::parse(req.body) {
                    certificate_login(worker, login, cert, peer, keep_alive, out).await;
                    return;
                }
            }
            let resp = app.forwarder.forward(to_http_request(req), peer).await;
            write_forwarded(out, &resp, keep_alive);
        }
        _ => write_not_found(out, keep_alive),
    }
}

fn write_not_found(out: &mut Vec<u8>, keep_alive: bool) {
    write_json(
        out,
        404,
        &[],
        br#"{"status":"not_found","error":"no such route"}"#,
        keep_alive,
    );
}

fn method_not_allowed(out: &mut Vec<u8>, allow: &str, keep_alive: bool) {
    write_json(
        out,
        405,
        &[("Allow", allow)],
        br#"{"status":"invalid","error":"method not allowed"}"#,
        keep_alive,
    );
}

/// The body of every device-facing 503 caused by the store.
pub const STORE_UNAVAILABLE_BODY: &[u8] =
    br#"{"status":"unavailable","error":"store unavailable"}"#;

/// 503 for a worker past its in-flight bound.
fn write_shed(out: &mut Vec<u8>, keep_alive: bool) {
    write_json(
        out,
        503,
        &[("Retry-After", "1")],
        br#"{"status":"unavailable","error":"the gateway is busy; retry later"}"#,
        keep_alive,
    );
}

/// 429 with the limiter's wait, rounded up to whole seconds.
fn write_rate_limited(out: &mut Vec<u8>, wait: Duration, keep_alive: bool) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1).to_string();
    write_json(
        out,
        429,
        &[("Retry-After", secs.as_str())],
        br#"{"status":"rate_limited","error":"too many polls; wait for Retry-After"}"#,
        keep_alive,
    );
}

/// The body of a certificate login: no password, and optionally the
/// username (which must then be the certificate's CN) and the token
/// lifetime.
#[derive(Debug, PartialEq, Eq)]
struct CertificateLogin {
    username: Option<String>,
    /// The raw `expireTimeInHours`, range-checked when answering.
    hours: Option<i64>,
    /// Why the body is unusable (answered 400).
    invalid: Option<String>,
}

impl CertificateLogin {
    /// `None` when the body carries a password: that is a password login,
    /// for the admin service, certificate or not.
    fn parse(body: &[u8]) -> Option<Self> {
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
async fn certificate_login<S: Store>(
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

async fn register<S: Store>(
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
            telemetry_outcome(&outcome)
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

/// The metrics label of a register outcome.
pub fn telemetry_outcome(outcome: &RegisterOutcome) -> Outcome {
    match outcome {
        RegisterOutcome::Invalid(_) => Outcome::Invalid,
        RegisterOutcome::Policy { .. } => Outcome::Policy,
        RegisterOutcome::Conflict => Outcome::Conflict,
        RegisterOutcome::Denied => Outcome::Denied,
        RegisterOutcome::Locked { .. } => Outcome::Locked,
        RegisterOutcome::Pending { .. } => Outcome::Pending,
        RegisterOutcome::Granted { .. } => Outcome::Granted,
        RegisterOutcome::Unavailable(_) => Outcome::Unavailable,
    }
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

/// Rebuilds an owned `http::Request` for the admin service.
fn to_http_request(req: &Request<'_>) -> http::Request<Bytes> {
    let uri = match req.query {
        Some(q) => format!("{}?{}", req.path, q),
        None => req.path.to_owned(),
    };
    let mut builder = http::Request::builder().method(req.method).uri(uri);
    for (name, value) in &req.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Bytes::copy_from_slice(req.body))
        .unwrap_or_else(|_| {
            // httparse already validated method, target and header syntax;
            // anything `http` still rejects is answered as a bad request.
            let mut bad = http::Request::new(Bytes::new());
            *bad.uri_mut() = http::Uri::from_static("/api/_invalid");
            bad
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::fingerprint::Fingerprint;

    fn render(outcome: RegisterOutcome) -> String {
        let mut out = Vec::new();
        write_register_outcome(&mut out, &outcome, 5, None, true);
        String::from_utf8(out).unwrap()
    }

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
                RegisterOutcome::Unavailable("down".into()),
                503,
                "unavailable",
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
