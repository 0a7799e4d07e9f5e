//! The request codec: one HTTP/1.1 request parsed from the front of a buffer.
//!
//! [`parse`] looks at the bytes received so far and answers
//! - [`Parsed::Complete`]: a whole request (head and body) is there; it
//!   borrows from the buffer, and `len` says how many bytes it used, so
//!   pipelined requests that follow are left untouched;
//! - [`Parsed::Incomplete`]: more bytes are needed (a normal state);
//! - [`Parsed::Invalid`]: the bytes can never become an acceptable request;
//!   the error says which status to answer before closing.
//!
//! Limits are enforced before buffering: a head that has not ended within
//! [`Limits::max_head`] bytes is refused, and a `Content-Length` above
//! [`Limits::max_body`] is refused as soon as the head is complete, before a
//! single body byte is read. The head is parsed with `httparse` (SIMD, and
//! the field standard); only the headers the proxy acts on are interpreted.

use std::str;

/// Caps on what one request may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request head (request line and headers), in bytes.
    pub max_head: usize,
    /// Largest body, in bytes.
    pub max_body: usize,
}

/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: fleetgate_registry::request::MAX_BODY_BYTES,
        }
    }
}

/// A request that can never be served; answer `status()` and close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head exceeds {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("body of {declared} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { declared: u64, limit: usize },
    #[error("chunked request bodies are not supported; send Content-Length")]
    LengthRequired,
    #[error("HTTP version not supported")]
    Version,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::LengthRequired => 411,
            HttpError::Version => 505,
        }
    }
}

/// One parsed request, borrowing from the receive buffer.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: &'b str,
    /// The path without the query string.
    pub path: &'b str,
    pub query: Option<&'b str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every header, in order, for forwarding.
    pub headers: Vec<(&'b str, &'b [u8])>,
    pub body: &'b [u8],
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Bytes of the buffer this request used.
    pub len: usize,
}

/// The outcome of looking at the buffered bytes.
#[derive(Debug)]
pub enum Parsed<'b> {
    Complete(Request<'b>),
    Incomplete,
    Invalid(HttpError),
}

/// Parses one request from the front of `buf`.
pub fn parse<'b>(buf: &'b [u8], limits: &Limits) -> Parsed<'b> {
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_head {
                Parsed::Invalid(HttpError::HeadTooLarge(limits.max_head))
            } else {
                Parsed::Incomplete
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Parsed::Invalid(HttpError::Version),
        Err(_) => return Parsed::Invalid(HttpError::Malformed("unparsable request head")),
    };
    if head_len > limits.max_head {
        return Parsed::Invalid(HttpError::HeadTooLarge(limits.max_head));
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Parsed::Invalid(HttpError::Malformed("incomplete request line"));
    };
    let mut content_length: Option<u64> = None;
    let mut connection_close = minor_version == 0;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length_value(h.value) else {
                return Parsed::Invalid(HttpError::Malformed("invalid Content-Length"));
            };
            if content_length.is_some_and(|prev| prev != n) {
                return Parsed::Invalid(HttpError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid(HttpError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_close = false;
                }
            }
        }
        headers.push((name, h.value));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body as u64 {
        return Parsed::Invalid(HttpError::BodyTooLarge {
            declared: body_len,
            limit: limits.max_body,
        });
    }
    let total = head_len + body_len as usize;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Parsed::Complete(Request {
        method,
        path,
        query,
        minor_version,
        headers,
        body: &buf[head_len..total],
        keep_alive: !connection_close,
        len: total,
    })
}

/// A `Content-Length` value: 1*DIGIT (RFC 9110 8.6), with optional
/// surrounding whitespace. Rust's `u64::from_str` would also take `+5`,
/// which a proxy in front of us might read differently: a request
/// smuggling risk, so only digits are accepted.
fn content_length_value(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether the request at the front of `buf` has a complete head that asks
/// for `100 Continue` (`Expect: 100-continue` with a body still to come).
/// The connection loop answers it once, so clients such as curl send their
/// body at once instead of waiting a second for a `100` that never comes.
pub fn expects_continue(buf: &[u8]) -> bool {
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) else {
        return false;
    };
    let mut expect = false;
    let mut length = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("expect") {
            expect = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = content_length_value(h.value).unwrap_or(0);
        }
    }
    expect && req.version == Some(1) && buf.len() < head_len + length as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register poll as curl sends it.
    const POLL: &[u8] = b"POST /api/client-registry/register HTTP/1.1\r\n\
        Host: gw\r\n\
        Content-Type: application/json\r\n\
        Content-Length: 40\r\n\
        \r\n\
        {\"username\":\"dev01\",\"password\":\"secret\"}";

    #[test]
    fn content_length_is_digits_only() {
        for bad in ["+5", "-1", "5 5", "0x10", "", " ", "5,5", "١"] {
            let req = format!("POST /x HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nhello");
            assert_eq!(
                invalid(req.as_bytes(), &Limits::default()),
                HttpError::Malformed("invalid Content-Length"),
                "{bad:?}"
            );
        }
        let ok = complete(b"POST /x HTTP/1.1\r\nContent-Length:  5 \r\n\r\nhello");
        assert_eq!(ok.body, b"hello");
    }

    #[test]
    fn expect_continue_is_seen_only_while_the_body_is_awaited() {
        let head = b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert!(expects_continue(head));
        // Part of the head only, or the whole body already there: no.
        assert!(!expects_continue(&head[..20]));
        assert!(!expects_continue(&[&head[..], b"hello"].concat()));
        // Without Expect, or with HTTP/1.0 (which has no 100): no.
        assert!(!expects_continue(
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(!expects_continue(
            b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        ));
    }

    fn complete(buf: &[u8]) -> Request<'_> {
        match parse(buf, &Limits::default()) {
            Parsed::Complete(r) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn invalid(buf: &[u8], limits: &Limits) -> HttpError {
        match parse(buf, limits) {
            Parsed::Invalid(e) => e,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_full_poll_parses() {
        let r = complete(POLL);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/client-registry/register");
        assert_eq!(r.query, None);
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.body, br#"{"username":"dev01","password":"secret"}"#);
        assert!(r.keep_alive);
        assert_eq!(r.len, POLL.len());
        assert_eq!(r.headers.len(), 3);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for cut in 0..POLL.len() {
            match parse(&POLL[..cut], &Limits::default()) {
                Parsed::Incomplete => {}
                other => panic!("prefix of {cut} bytes: expected Incomplete, got {other:?}"),
            }
        }
    }

    #[test]
    fn pipelined_requests_split_at_the_boundary() {
        let second: &[u8] =
            b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
        let mut buf = POLL.to_vec();
        buf.extend_from_slice(second);
        buf.extend_from_slice(b"GET /par"); // the start of a third
        let first = complete(&buf);
        assert_eq!(first.len, POLL.len());
        let rest = &buf[first.len..];
        let r2 = complete(rest);
        assert_eq!(
            (r2.method, r2.path, r2.query),
            ("GET", "/healthz", Some("verbose=1"))
        );
        assert!(!r2.keep_alive);
        assert!(r2.body.is_empty());
        assert!(matches!(
            parse(&rest[r2.len..], &Limits::default()),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let r = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let r = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let r = complete(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn oversized_body_is_refused_from_the_head_alone() {
        // Only the head has arrived: the 64 KiB + 1 body is refused before
        // any of it is buffered.
        let head = b"POST /api/client-registry/register HTTP/1.1\r\n\
            Content-Length: 65537\r\n\r\n";
        assert_eq!(
            invalid(head, &Limits::default()),
            HttpError::BodyTooLarge {
                declared: 65537,
                limit: 65536
            }
        );
        assert_eq!(invalid(head, &Limits::default()).status(), 413);
        // Exactly at the cap is fine (and incomplete until the body arrives).
        let at_cap = b"POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n";
        assert!(matches!(
            parse(at_cap, &Limits::default()),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn oversized_head_is_refused_before_it_ends() {
        let limits = Limits {
            max_head: 64,
            max_body: 10,
        };
        // 64 bytes without the blank line that ends a head.
        let mut buf = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        buf.resize(64, b'a');
        assert_eq!(invalid(&buf, &limits), HttpError::HeadTooLarge(64));
        assert_eq!(invalid(&buf, &limits).status(), 431);
        // One byte under the cap is still incomplete.
        assert!(matches!(parse(&buf[..63], &limits), Parsed::Incomplete));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(invalid(&buf, &Limits::default()), HttpError::TooManyHeaders);
        // Exactly MAX_HEADERS is accepted.
        let mut ok = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            ok.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        ok.extend_from_slice(b"\r\n");
        assert_eq!(complete(&ok).headers.len(), MAX_HEADERS);
    }

    #[test]
    fn bad_framing_is_refused() {
        let l = Limits::default();
        assert_eq!(
            invalid(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &l),
            HttpError::LengthRequired
        );
        assert_eq!(
            invalid(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &l
            )
            .status(),
            400
        );
        assert_eq!(
            invalid(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &l).status(),
            400
        );
        assert_eq!(
            invalid(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &l).status(),
            400
        );
        assert_eq!(
            invalid(b"\x16\x03\x01\x00\xa5\x01\x00\x00", &l).status(),
            400
        );
        assert_eq!(invalid(b"GET / HTTP/2.0\r\n\r\n", &l).status(), 505);
        // Identical duplicates are tolerated (RFC 9110 §8.6).
        let r = complete(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(r.body, b"ok");
    }
}
