//! Fuzz target: the proxy's HTTP/1.1 request codec
//! (`fleetgate_proxy::http::codec::parse`).
//!
//! The first input byte picks the limits (the defaults, or small caps so
//! the fuzzer reaches `HeadTooLarge` and `BodyTooLarge`); the rest is what
//! the socket delivered. Beyond "no panic" it asserts:
//! - caps: a complete request's head is within `max_head`, its body within
//!   `max_body`, at most `MAX_HEADERS` headers, and `len` within the buffer;
//! - the body is exactly the bytes `len` ends with, and the request stops
//!   at its boundary (extra bytes after it change nothing);
//! - splitting: every prefix of a complete request (all of them for short
//!   inputs, a spread of split points for long ones) is `Incomplete`, so a
//!   request delivered in two reads is parsed the same as in one;
//! - differential against `httparse` on the head: where httparse finds a
//!   complete head, the codec's method, target, version and headers are
//!   httparse's; where httparse fails, the codec refuses; where httparse
//!   wants more, the codec waits or refuses an oversized head.
#![no_main]

use fleetgate_proxy::http::codec::{parse, HttpError, Limits, Parsed, MAX_HEADERS};
use libfuzzer_sys::fuzz_target;

fn limits(selector: u8) -> Limits {
    match selector % 4 {
        0 => Limits::default(),
        1 => Limits {
            max_head: 64,
            max_body: 16,
        },
        2 => Limits {
            max_head: 256,
            max_body: 0,
        },
        _ => Limits {
            max_head: 1 + usize::from(selector),
            max_body: usize::from(selector / 4),
        },
    }
}

/// Split points to try: all of them for short inputs, else a spread.
fn split_points(len: usize) -> Vec<usize> {
    if len <= 128 {
        (0..len).collect()
    } else {
        let mut v: Vec<usize> = (0..16).map(|i| i * len / 16).collect();
        v.extend([len - 1, len - 2, len / 2 + 1]);
        v
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let limits = limits(selector);
    let parsed = parse(buf, &limits);

    // The oracle: httparse on the same bytes, with the same header cap.
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut oracle = httparse::Request::new(&mut raw);
    let oracle_status = oracle.parse(buf);

    match &parsed {
        Parsed::Complete(req) => {
            assert!(req.len <= buf.len(), "len past the buffer");
            assert!(req.body.len() <= limits.max_body, "body over the cap");
            assert!(req.headers.len() <= MAX_HEADERS, "too many headers");
            let head_len = req.len - req.body.len();
            assert!(head_len <= limits.max_head, "head over the cap");
            assert_eq!(req.body, &buf[head_len..req.len], "body is not the tail");
            assert!(req.minor_version <= 1);

            let Ok(httparse::Status::Complete(oracle_head)) = oracle_status else {
                panic!("codec accepted a head httparse does not: {oracle_status:?}");
            };
            assert_eq!(oracle_head, head_len, "head length differs from httparse");
            assert_eq!(Some(req.method), oracle.method);
            let target = match req.query {
                Some(q) => format!("{}?{}", req.path, q),
                None => req.path.to_owned(),
            };
            assert_eq!(Some(target.as_str()), oracle.path);
            assert_eq!(Some(req.minor_version), oracle.version);
            assert_eq!(req.headers.len(), oracle.headers.len());
            for ((name, value), h) in req.headers.iter().zip(oracle.headers.iter()) {
                assert_eq!(*name, h.name);
                assert_eq!(*value, h.value);
            }

            // Same request when more bytes follow (pipelining).
            let mut longer = buf[..req.len].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            match parse(&longer, &limits) {
                Parsed::Complete(again) => {
                    assert_eq!(again.len, req.len);
                    assert_eq!(again.body, req.body);
                    assert_eq!(again.headers, req.headers);
                    assert_eq!(again.keep_alive, req.keep_alive);
                }
                other => panic!("trailing bytes changed the result: {other:?}"),
            }

            // Split across two reads: the first read is always incomplete.
            for cut in split_points(req.len) {
                match parse(&buf[..cut], &limits) {
                    Parsed::Incomplete => {}
                    other => panic!("prefix of {cut}/{} bytes: {other:?}", req.len),
                }
            }
        }
        Parsed::Incomplete => {
            assert!(
                buf.len() < limits.max_head
                    || matches!(oracle_status, Ok(httparse::Status::Complete(_))),
                "waiting for more with a head already over the cap"
            );
            match oracle_status {
                Ok(_) => {}
                Err(e) => panic!("codec waits for bytes httparse refuses: {e:?}"),
            }
        }
        Parsed::Invalid(e) => {
            assert!(matches!(e.status(), 400 | 411 | 413 | 431 | 505));
            match (&oracle_status, e) {
                (Err(_), _) => {}
                (Ok(httparse::Status::Partial), HttpError::HeadTooLarge(_)) => {
                    assert!(buf.len() >= limits.max_head);
                }
                (Ok(httparse::Status::Partial), other) => {
                    panic!("refused a partial head httparse accepts so far: {other:?}")
                }
                // A complete head refused for what the codec interprets
                // (framing, caps), never as unparsable.
                (Ok(httparse::Status::Complete(_)), HttpError::Malformed(why)) => {
                    assert_ne!(*why, "unparsable request head");
                }
                (Ok(httparse::Status::Complete(_)), _) => {}
            }
        }
    }
});
