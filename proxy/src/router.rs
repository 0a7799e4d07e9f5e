//! What the proxy does with one parsed request: serve the register poll
//! ([`crate::register`]), certificate login ([`crate::login`]) and the
//! health checks itself, forward the device-facing `/api/*` paths (all of
//! them with `--admin-on-device-port on`) to the admin service
//! ([`crate::forward`]), and answer 404 to the rest.

use std::net::SocketAddr;

use bytes::Bytes;
use fleetgate_registry::store::Store;

use crate::app::Worker;
use crate::http::codec::Request;
use crate::http::response::{
    method_not_allowed, write_forwarded, write_json, write_not_found, write_shed,
    STORE_UNAVAILABLE_BODY,
};
use crate::login::{certificate_login, CertificateLogin};
use crate::register::register;

/// The device registration route.
pub const REGISTER_PATH: &str = "/api/client-registry/register";

/// The login route. With a client certificate and no password it is
/// answered here (mutual-TLS login); otherwise the admin service answers.
pub const LOGIN_PATH: &str = "/api/login";

/// The `/api/*` paths a device port forwards to the admin service by
/// default: logging in (devices get their JWT here), the client CA
/// certificate, and the API's OpenAPI document (it describes the device
/// API too, and is public). The register route and the health checks are answered by
/// the proxy itself. Every other `/api/*` path is 404 on a device port
/// unless `--admin-on-device-port on`.
pub const DEVICE_API_PATHS: [&str; 3] = [LOGIN_PATH, "/api/certificates/ca", "/api/openapi.json"];

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
        // The health checks answer GET only, as on the admin port (a
        // schemathesis run found `TRACE /healthz` answered 200).
        "/healthz" | "/readyz" if req.method != "GET" => method_not_allowed(out, "GET", keep_alive),
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
