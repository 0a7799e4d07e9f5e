//! The response writer: appends HTTP/1.1 responses to an output buffer.
//!
//! Responses to pipelined requests are appended to one buffer and written
//! with one syscall. Every response carries `Content-Length`, so keep-alive
//! works without chunking, and `Connection: close` when the connection ends
//! after it.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The reason phrase for the status codes the proxy sends.
pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

thread_local! {
    /// The `Date` header value, formatted at most once a second per worker.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs || cached.1.is_empty() {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(&cached.1)
    })
}

/// Appends a response with a JSON body.
pub fn write_json(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_head(out, status, keep_alive, body.len());
    out.extend_from_slice(b"Content-Type: application/json\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn write_head(out: &mut Vec<u8>, status: u16, keep_alive: bool, len: usize) {
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    with_date(|d| {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(d.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if status != 204 && !(100..200).contains(&status) {
        let _ = write!(out, "Content-Length: {len}\r\n");
    }
}

/// Appends a response produced by the admin service, replacing its framing
/// headers with the proxy's own.
pub fn write_forwarded(out: &mut Vec<u8>, resp: &http::Response<bytes::Bytes>, keep_alive: bool) {
    let body = resp.body();
    write_head(out, resp.status().as_u16(), keep_alive, body.len());
    for (name, value) in resp.headers() {
        if matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding" | "date" | "keep-alive"
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// 404 for a path no route serves.
pub fn write_not_found(out: &mut Vec<u8>, keep_alive: bool) {
    write_json(
        out,
        404,
        &[],
        br#"{"status":"not_found","error":"no such route"}"#,
        keep_alive,
    );
}

/// 405 with `Allow`.
pub fn method_not_allowed(out: &mut Vec<u8>, allow: &str, keep_alive: bool) {
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

/// The body of a device-facing 500: a bug or a corrupt store reply, whose
/// detail is logged, never sent.
pub const INTERNAL_ERROR_BODY: &[u8] = br#"{"status":"internal","error":"internal error"}"#;

/// 503 for a worker past its in-flight bound.
pub fn write_shed(out: &mut Vec<u8>, keep_alive: bool) {
    write_json(
        out,
        503,
        &[("Retry-After", "1")],
        br#"{"status":"unavailable","error":"the gateway is busy; retry later"}"#,
        keep_alive,
    );
}

/// 429 with the limiter's wait, rounded up to whole seconds.
pub fn write_rate_limited(out: &mut Vec<u8>, wait: Duration, keep_alive: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_response_bytes() {
        let mut out = Vec::new();
        write_json(&mut out, 202, &[("Retry-After", "5")], b"{}", true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 202 Accepted\r\nDate: "),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 2\r\n"));
        assert!(text.contains("\r\nRetry-After: 5\r\n"));
        assert!(!text.contains("Connection: close"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn closing_response_says_so() {
        let mut out = Vec::new();
        write_json(&mut out, 413, &[], b"{}", false);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn forwarded_response_gets_proxy_framing() {
        let resp = http::Response::builder()
            .status(204)
            .header("content-length", "0")
            .header("connection", "close")
            .header("x-kept", "yes")
            .body(bytes::Bytes::new())
            .unwrap();
        let mut out = Vec::new();
        write_forwarded(&mut out, &resp, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.to_ascii_lowercase().contains("content-length"));
        assert!(!text.to_ascii_lowercase().contains("connection"));
        assert!(text.contains("x-kept: yes\r\n"));
    }
}
