//! One client connection on a worker: read into a buffer, serve every
//! complete request in it (pipelining), write the responses with one write,
//! and repeat while the connection is kept alive.
//!
//! Time limits: a request must arrive whole within `request_timeout` of its
//! first byte (a slow sender gets 408 and is closed); an idle keep-alive
//! connection is closed after `idle_timeout`; every write must finish within
//! `write_timeout` (a client that sends but never reads is closed).

use std::net::SocketAddr;
use std::time::Instant;

use fleetgate_registry::store::Store;

use crate::app::Worker;
use crate::http::codec::{self, Parsed};
use crate::http::response::write_json;
use crate::io::{close_within, send_within, DeviceIo, READ_CHUNK};
use crate::router;

/// Serves one connection until it closes, errors or times out, over plain
/// TCP or TLS. `client_cert` is the verified client certificate of a TLS
/// connection (DER), if the client sent one.
pub async fn serve<S: Store, C: DeviceIo>(
    mut stream: C,
    peer: SocketAddr,
    worker: &Worker<S>,
    client_cert: Option<Vec<u8>>,
) {
    let config = &worker.app.config;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // When the request now in `buf` started arriving.
    let mut started: Option<Instant> = None;
    // Whether the request now in `buf` was answered `100 Continue`.
    let mut continued = false;
    loop {
        let mut consumed = 0;
        let mut close = false;
        loop {
            match codec::parse(&buf[consumed..], &config.limits) {
                Parsed::Complete(req) => {
                    let keep = req.keep_alive && !worker.draining();
                    router::handle(worker, &req, peer, client_cert.as_deref(), keep, &mut out)
                        .await;
                    consumed += req.len;
                    if !keep {
                        close = true;
                        break;
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Invalid(e) => {
                    let body = serde_json::json!({"status": "invalid", "error": e.to_string()});
                    write_json(
                        &mut out,
                        e.status(),
                        &[],
                        body.to_string().as_bytes(),
                        false,
                    );
                    close = true;
                    break;
                }
            }
        }
        if consumed > 0 {
            buf.drain(..consumed);
            started = None;
            continued = false;
        }
        if !close && !continued && codec::expects_continue(&buf) {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            continued = true;
        }
        if !out.is_empty() {
            let (res, o) = send_within(&mut stream, out, config.write_timeout).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
        if close {
            close_within(&mut stream, config.write_timeout).await;
            return;
        }
        // Wait for more bytes, under the right deadline.
        let limit = if buf.is_empty() {
            config.idle_timeout
        } else {
            let since = *started.get_or_insert_with(Instant::now);
            config.request_timeout.saturating_sub(since.elapsed())
        };
        let len = buf.len();
        let read = stream.read_more(buf);
        match monoio::time::timeout(limit, read).await {
            Ok((Ok(0), _)) => return,
            Ok((Ok(_), b)) => {
                buf = b;
                if started.is_none() {
                    started = Some(Instant::now());
                }
            }
            Ok((Err(_), _)) => return,
            Err(_elapsed) => {
                // The read future (and the buffer it owned) is gone; answer
                // a half-sent request with 408 and close either way.
                if len > 0 {
                    let mut out = Vec::new();
                    write_json(
                        &mut out,
                        408,
                        &[],
                        br#"{"status":"invalid","error":"request not received in time"}"#,
                        false,
                    );
                    let _ = send_within(&mut stream, out, config.write_timeout).await;
                }
                close_within(&mut stream, config.write_timeout).await;
                return;
            }
        }
    }
}
