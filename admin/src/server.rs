//! Serving [`AdminService`] over HTTP/1.1 (keep-alive) with hyper, for the
//! standalone `fleetgate-admin` binary and for tests.
//!
//! This is only the shell: it accepts connections, reads each request body
//! up to [`MAX_BODY`], and hands the complete request to
//! [`AdminService::handle`]. The all-in-one process does not use it; its
//! proxy reads requests itself and calls `handle` directly.
//!
//! # Limits
//! - At most [`MAX_CONNECTIONS`] connections at once; past that, new
//!   connections wait in the kernel's accept backlog.
//! - A request's headers must arrive within [`HEADER_READ_TIMEOUT`] (this
//!   also closes keep-alive connections idle that long), at most
//!   [`MAX_HEADERS`] of them in at most [`MAX_HEADER_BYTES`].
//! - Its body must arrive within [`BODY_READ_TIMEOUT`] (else 408) and be
//!   at most [`MAX_BODY`] bytes (else 413; [`crate::service::MAX_BULK_BODY`]
//!   on the two bulk decision routes, see [`max_body`]). A declared `Content-Length`
//!   over the cap is refused before a single body byte is read.
//!
//! # Shutdown
//! When `shutdown` resolves the listener is closed, every connection is told
//! to finish its in-flight request and close, and connections still open
//! after the grace period are dropped.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate_registry::store::Store;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::service::{max_body, AdminService, ApiError};
#[cfg(any(doc, test))]
use crate::service::MAX_BODY;

/// Most connections served at once. The admin API has a handful of human
/// and script clients; this only stops a runaway client from exhausting
/// file descriptors.
pub const MAX_CONNECTIONS: usize = 256;
/// Time allowed to send a request's headers (and longest keep-alive idle).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to send a request's body once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most request headers accepted (hyper answers 431 above).
pub const MAX_HEADERS: usize = 64;
/// Largest request line plus headers, in bytes (hyper answers 431 above).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The caps [`serve`] applies; tests lower them to exercise them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
        }
    }
}

/// Serves HTTP/1.1 (keep-alive) on `listener` until `shutdown` resolves,
/// then stops accepting and lets in-flight connections finish for up to
/// `grace`.
pub async fn serve<S: Store>(
    listener: TcpListener,
    service: Arc<AdminService<S>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    serve_with(listener, service, shutdown, grace, Limits::default()).await
}

pub(crate) async fn serve_with<S: Store>(
    listener: TcpListener,
    service: Arc<AdminService<S>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    // A permit per open connection; it is dropped when the connection ends.
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    // Flipped to `true` once, to ask every connection to drain.
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut accept_backoff = Duration::ZERO;
    tokio::pin!(shutdown);

    loop {
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}

        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&connection_slots).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: back off instead of
                    // spinning, and keep serving the open connections.
                    accept_backoff = (accept_backoff * 2).clamp(
                        Duration::from_millis(10),
                        Duration::from_secs(1),
                    );
                    tracing::error!(error = %e, backoff = ?accept_backoff, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    continue;
                }
            }
        };
        let handler = {
            let service = Arc::clone(&service);
            service_fn(move |req| {
                let service = Arc::clone(&service);
                async move {
                    let response = respond(&service, req, peer, limits.body_read_timeout).await;
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = builder.serve_connection(TokioIo::new(stream), handler);
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                // The guard `wait_for` returns is dropped at once: it must
                // not be held across the await below.
                () = async { drop(drain.wait_for(|draining| *draining).await) } => {
                    // Finish the request in flight, if any, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }

    drop(listener);
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    tracing::info!(addr = %local_addr, open, grace = ?grace, "admin API draining");
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            dropped = connections.len(),
            "grace period over; closing the remaining admin connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one incoming connection (it died before we accepted it), as
/// opposed to errors of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Reads the body within the limits and calls the service.
async fn respond<S: Store>(
    service: &AdminService<S>,
    req: Request<Incoming>,
    peer: SocketAddr,
    body_read_timeout: Duration,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let cap = max_body(parts.uri.path());
    let response = match read_body(body, body_read_timeout, cap).await {
        Ok(body) => {
            service
                .handle(Request::from_parts(parts, body), Some(peer))
                .await
        }
        Err(e) => {
            let mut response = e.into_response();
            // The rest of the body is unread; the connection cannot be
            // reused for another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    };
    response.map(Full::new)
}

async fn read_body(body: Incoming, timeout: Duration, cap: usize) -> Result<Bytes, ApiError> {
    // For a body with a Content-Length, the lower bound is that length:
    // refuse it before buffering anything.
    if body.size_hint().lower() > cap as u64 {
        return Err(ApiError::TooLarge(cap));
    }
    match tokio::time::timeout(timeout, Limited::new(body, cap).collect()).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ApiError::TooLarge(cap)),
        Ok(Err(e)) => Err(ApiError::Invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::decision::Windows;
    use fleetgate_registry::embedded::EmbeddedStore;
    use fleetgate_registry::secrets::Secrets;
    use fleetgate_registry::{Registry, RegistryConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn service() -> Arc<AdminService<EmbeddedStore>> {
        let store = EmbeddedStore::in_memory(Windows::default(), 1000);
        let registry = Registry::new(store, Secrets::random(), RegistryConfig::default());
        Arc::new(AdminService::new(Arc::new(registry)))
    }

    /// Reads one response whose body has a Content-Length; returns the
    /// head and the body.
    async fn read_response(stream: &mut TcpStream) -> (String, String) {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return (head, text[end + 4..end + 4 + len].to_string());
                }
            }
        }
    }

    async fn start(
        limits: Limits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            service(),
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(2),
            limits,
        ));
        (addr, stop_tx, server)
    }

    #[tokio::test]
    async fn declared_length_over_the_cap_is_413_before_the_body_is_sent() {
        let (addr, stop, server) = start(Limits::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Only the head is sent: the 413 must not wait for the body.
        let head = format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], "too_large");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn chunked_body_over_the_cap_is_413() {
        let (addr, stop, server) = start(Limits::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let chunk = vec![b' '; 16 * 1024];
        stream
            .write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        // Five 16 KiB chunks: 80 KiB, over the 64 KiB cap. The server may
        // answer and close before all are written, so write errors are fine.
        for _ in 0..5 {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            if stream.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
        assert!(body.contains("too_large"), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_body_is_408() {
        let limits = Limits {
            body_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, stop, server) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\"")
            .await
            .unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        assert!(body.contains("\"invalid\""), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_headers_close_the_connection() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, stop, server) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        // hyper may answer 408 before closing; either way the connection ends.
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut seen))
            .await
            .expect("the connection was closed after the header timeout")
            .ok();
        let seen = String::from_utf8_lossy(&seen);
        assert!(
            seen.is_empty() || seen.starts_with("HTTP/1.1 408 "),
            "{seen}"
        );
        // The server itself is fine.
        let mut other = TcpStream::connect(addr).await.unwrap();
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut other).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (addr, stop, server) = start(limits).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(request).await.unwrap();
        let (head, _) = read_response(&mut first).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

        // The kernel completes the handshake, but the server does not serve
        // the second connection while the first holds the only slot.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(request).await.unwrap();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), read_response(&mut second)).await;
        assert!(
            waited.is_err(),
            "the second connection was served past the cap"
        );

        drop(first);
        let (head, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut second))
            .await
            .expect("served once the first connection closed");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    /// Starts `serve` with `grace`, opens a connection and sends the head
    /// and the first byte of a 10-byte login body, so a request is in flight.
    async fn start_with_request_in_flight(
        grace: Duration,
    ) -> (
        TcpStream,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            service(),
            async {
                let _ = stop_rx.await;
            },
            grace,
        ));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (stream, stop_tx, server)
    }

    #[tokio::test]
    async fn in_flight_request_finishes_during_grace() {
        let (mut stream, stop, server) = start_with_request_in_flight(Duration::from_secs(5)).await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The rest of the body, after shutdown began: still answered.
        stream.write_all(b"\"x\":1}   ").await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(body.contains("missing field"), "{body}");
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns once the connection is done")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn in_flight_request_past_grace_is_dropped() {
        let (mut stream, stop, server) =
            start_with_request_in_flight(Duration::from_millis(200)).await;
        stop.send(()).unwrap();
        // Well before the 10 s body timeout: the grace period ends it.
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns once the grace period is over")
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
}
