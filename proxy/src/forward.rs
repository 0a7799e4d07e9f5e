//! Forwarding `/api/*` requests the proxy does not serve itself to the admin
//! service, so devices and admins can use one address.
//!
//! In the all-in-one process the admin service lives on the tokio runtime in
//! the same process, so a forwarded request is handed over in-process: the
//! worker spawns the admin handler onto tokio through its `Handle` and awaits
//! a `tokio::sync::oneshot` (both are runtime-neutral, so a monoio task can
//! await it). This avoids a loopback connection, a second HTTP parse, and any
//! dependence on whether `--admin-listen` is on. The admin service sees the
//! device's real peer address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate_admin::AdminService;
use fleetgate_registry::store::Store;

/// How long a forwarded request may take before the device gets 504.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands requests to the in-process admin service.
pub struct Forwarder<S> {
    runtime: tokio::runtime::Handle,
    service: Arc<AdminService<S>>,
}

impl<S: Store> Forwarder<S> {
    pub fn in_process(runtime: tokio::runtime::Handle, service: Arc<AdminService<S>>) -> Self {
        Forwarder { runtime, service }
    }

    /// Forwards one request and returns the admin service's response, or a
    /// 502/504 JSON response if it could not be had.
    pub async fn forward(
        &self,
        req: http::Request<Bytes>,
        peer: SocketAddr,
    ) -> http::Response<Bytes> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let service = self.service.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(service.handle(req, Some(peer)).await);
        });
        match monoio::time::timeout(FORWARD_TIMEOUT, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => error(502, "the admin service dropped the request"),
            Err(_) => error(504, "the admin service did not answer in time"),
        }
    }
}

fn error(status: u16, message: &str) -> http::Response<Bytes> {
    let body = serde_json::json!({"status": "unavailable", "error": message}).to_string();
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .expect("static response parts are valid")
}
