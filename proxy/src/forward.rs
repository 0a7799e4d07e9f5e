//! Forwarding `/api/*` requests the proxy does not serve itself to the admin
//! service, so devices and admins can use one address.
//!
//! With `--admin-upstream http://host:port` the request goes over HTTP to
//! that admin instance instead, through a pooled hyper client on the tokio
//! runtime (keep-alive connections are reused), with `X-Forwarded-For`.
//!
//! In the all-in-one process the admin service lives on the tokio runtime in
//! the same process, so a forwarded request is handed over in-process: the
//! worker spawns the [`AdminHandler`] (which the composing crate implements
//! for the admin service; this crate does not know it) onto tokio through
//! its `Handle` and awaits
//! a `tokio::sync::oneshot` (both are runtime-neutral, so a monoio task can
//! await it). This avoids a loopback connection, a second HTTP parse, and any
//! dependence on whether `--admin-listen` is on. The admin service sees the
//! device's real peer address.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// How long a forwarded request may take before the device gets 504.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest admin response relayed (a page of 1,000 users is far less).
pub const MAX_FORWARDED_RESPONSE: usize = 16 * 1024 * 1024;

type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// The admin service as the proxy sees it: a function from a request and
/// the device's address to a response, run on the tokio runtime. The
/// response future must be `Send`: it is spawned onto tokio.
pub trait AdminHandler: Send + Sync + 'static {
    fn handle(
        &self,
        req: http::Request<Bytes>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send + '_>>;
}

/// Hands requests to the admin service: in-process, or over HTTP.
pub enum Forwarder {
    InProcess {
        runtime: tokio::runtime::Handle,
        service: Arc<dyn AdminHandler>,
    },
    Upstream {
        runtime: tokio::runtime::Handle,
        client: UpstreamClient,
        base: http::Uri,
    },
}

impl Forwarder {
    pub fn in_process(runtime: tokio::runtime::Handle, service: Arc<dyn AdminHandler>) -> Self {
        Forwarder::InProcess { runtime, service }
    }

    /// Forwards to the admin service at `base` (`http://host:port`).
    pub fn upstream(runtime: tokio::runtime::Handle, base: http::Uri) -> Self {
        let client = {
            let _enter = runtime.enter();
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http()
        };
        Forwarder::Upstream {
            runtime,
            client,
            base,
        }
    }

    /// Forwards one request and returns the admin service's response, or a
    /// 502/504 JSON response if it could not be had.
    pub async fn forward(
        &self,
        req: http::Request<Bytes>,
        peer: SocketAddr,
    ) -> http::Response<Bytes> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self {
            Forwarder::InProcess { runtime, service } => {
                let service = service.clone();
                runtime.spawn(async move {
                    // When the device side gives up (timeout, or the
                    // connection is gone), `rx` is dropped and the work is
                    // cancelled: a login still queued for a hashing slot
                    // leaves the queue instead of hashing for nobody.
                    let mut tx = tx;
                    tokio::select! {
                        response = service.handle(req, peer) => {
                            let _ = tx.send(response);
                        }
                        _ = tx.closed() => {}
                    }
                });
            }
            Forwarder::Upstream {
                runtime,
                client,
                base,
            } => {
                let (client, base) = (client.clone(), base.clone());
                runtime.spawn(async move {
                    let mut tx = tx;
                    tokio::select! {
                        response = over_http(&client, &base, req, peer) => {
                            let _ = tx.send(response);
                        }
                        _ = tx.closed() => {}
                    }
                });
            }
        }
        match monoio::time::timeout(FORWARD_TIMEOUT, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => error(502, "the admin service dropped the request"),
            Err(_) => error(504, "the admin service did not answer in time"),
        }
    }
}

/// Sends `req` to the admin at `base` and reads the whole response.
async fn over_http(
    client: &UpstreamClient,
    base: &http::Uri,
    req: http::Request<Bytes>,
    peer: SocketAddr,
) -> http::Response<Bytes> {
    use http_body_util::BodyExt;
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = match http::Uri::builder()
        .scheme("http")
        .authority(base.authority().map_or("", |a| a.as_str()))
        .path_and_query(path)
        .build()
    {
        Ok(u) => u,
        Err(_) => return error(400, "the request path cannot be forwarded"),
    };
    parts.uri = uri;
    parts.headers.remove(http::header::HOST);
    parts.headers.remove(http::header::CONNECTION);
    if let Ok(v) = http::HeaderValue::from_str(&peer.ip().to_string()) {
        parts.headers.insert("x-forwarded-for", v);
    }
    let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "admin upstream unreachable");
            return error(502, "the admin service cannot be reached");
        }
    };
    let (parts, body) = resp.into_parts();
    match http_body_util::Limited::new(body, MAX_FORWARDED_RESPONSE)
        .collect()
        .await
    {
        Ok(b) => http::Response::from_parts(parts, b.to_bytes()),
        Err(_) => error(502, "the admin service's answer was cut or too large"),
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
