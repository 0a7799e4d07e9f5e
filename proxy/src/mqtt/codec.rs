//! The MQTT CONNECT codec, sans-IO, for protocol levels 3 (MQTT 3.1),
//! 4 (3.1.1) and 5.
//!
//! [`parse_connect`] looks at the bytes received so far and answers
//! [`Parsed::Complete`] (with the packet's length, so bytes after it are
//! left for the upstream broker), [`Parsed::Incomplete`], or
//! [`Parsed::Invalid`]. The remaining length is checked against the limit as
//! soon as its variable-length encoding is complete: an oversized CONNECT is
//! refused before a single payload byte is buffered.
//!
//! Why not the `mqttbytes` crate: its last release (0.6.0) dates from 2021,
//! and its development moved into `rumqttc`, which does not export a
//! standalone codec. It also parses into owned `String`s. CONNECT is one
//! packet type, small enough to parse here without copying, and
//! `docs/BENCHMARKS.md` records what that buys.

use std::str;

/// The largest CONNECT remaining length accepted by default (64 KiB: room
/// for a will message, far beyond any username and password).
pub const DEFAULT_MAX_REMAINING: usize = 64 * 1024;

/// The MQTT protocol level of a CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5 (`MQTT`, level 5).
    V5,
}

/// Why a CONNECT was refused before a decision. `level` is set when the
/// protocol level was read, so a v5 client can be told 0x81 first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed CONNECT: {reason}")]
pub struct Malformed {
    pub reason: &'static str,
    pub level: Option<Level>,
}

/// A parsed CONNECT, borrowing from the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'b> {
    pub level: Level,
    pub client_id: &'b str,
    pub username: Option<&'b str>,
    pub password: Option<&'b [u8]>,
    pub keep_alive: u16,
    pub clean_start: bool,
    /// Whether a will message is present (it is parsed over, not kept).
    pub will: bool,
    /// Bytes of the buffer the packet used.
    pub len: usize,
}

/// The outcome of looking at the buffered bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    Complete(Connect<'b>),
    Incomplete,
    Invalid(Malformed),
}

/// A cursor over the variable header and payload.
struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
    level: Option<Level>,
}

impl<'b> Reader<'b> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, Malformed> {
        Err(Malformed {
            reason,
            level: self.level,
        })
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => self.fail("packet ends early"),
        }
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    fn bytes(&mut self, n: usize) -> Result<&'b [u8], Malformed> {
        match self.buf.get(self.pos..self.pos + n) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => self.fail("field runs past the packet"),
        }
    }

    /// Two-byte length then that many bytes.
    fn binary(&mut self) -> Result<&'b [u8], Malformed> {
        let n = usize::from(self.u16()?);
        self.bytes(n)
    }

    fn string(&mut self) -> Result<&'b str, Malformed> {
        let b = self.binary()?;
        match str::from_utf8(b) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => self.fail("string is not valid UTF-8"),
        }
    }

    fn varint(&mut self) -> Result<usize, Malformed> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return self.fail(NOT_MINIMAL);
                }
                return Ok(value);
            }
        }
        self.fail("variable byte integer longer than 4 bytes")
    }

    /// Skips a v5 property block.
    fn skip_properties(&mut self) -> Result<(), Malformed> {
        let n = self.varint()?;
        self.bytes(n).map(|_| ())
    }
}

/// Why a variable byte integer was refused although its value is in range.
/// The encoding "MUST use the minimum number of bytes" (MQTT-1.5.5-1): the
/// gateway forwards the client's bytes to the broker unchanged, and two
/// spellings of one length are what differential parsing feeds on. Found by
/// the fuzz targets' round trips (docs/FUZZING.md).
pub(super) const NOT_MINIMAL: &str = "variable byte integer not in its shortest form";

/// Decodes the fixed header's remaining length: `Ok(Some((value, header
/// bytes)))`, `Ok(None)` if more bytes are needed. Only the shortest
/// encoding is accepted ([`NOT_MINIMAL`]). Shared with the relay codec
/// ([`super::relay`]).
pub(super) fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(Malformed {
                    reason: NOT_MINIMAL,
                    level: None,
                });
            }
            return Ok(Some((value, 2 + i)));
        }
    }
    Err(Malformed {
        reason: "remaining length longer than 4 bytes",
        level: None,
    })
}

/// Parses the CONNECT at the front of `buf`. `max_remaining` caps the
/// packet's remaining length.
pub fn parse_connect(buf: &[u8], max_remaining: usize) -> Parsed<'_> {
    let Some(first) = buf.first() else {
        return Parsed::Incomplete;
    };
    if *first != 0x10 {
        return Parsed::Invalid(Malformed {
            reason: if first >> 4 == 1 {
                "CONNECT fixed-header flags must be 0"
            } else {
                "the first packet must be CONNECT"
            },
            level: None,
        });
    }
    let (remaining, header) = match remaining_length(buf) {
        Ok(Some(v)) => v,
        Ok(None) => return Parsed::Incomplete,
        Err(e) => return Parsed::Invalid(e),
    };
    if remaining > max_remaining {
        return Parsed::Invalid(Malformed {
            reason: "CONNECT larger than the limit",
            level: None,
        });
    }
    let total = header + remaining;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    match parse_body(&buf[header..total]) {
        Ok(mut c) => {
            c.len = total;
            Parsed::Complete(c)
        }
        Err(e) => Parsed::Invalid(e),
    }
}

fn parse_body(body: &[u8]) -> Result<Connect<'_>, Malformed> {
    let mut r = Reader {
        buf: body,
        pos: 0,
        level: None,
    };
    let name = r.binary()?;
    let level_byte = r.u8()?;
    let level = match (name, level_byte) {
        (b"MQIsdp", 3) => Level::V31,
        (b"MQTT", 4) => Level::V311,
        (b"MQTT", 5) => Level::V5,
        (b"MQTT" | b"MQIsdp", _) => return r.fail("unsupported protocol level"),
        _ => return r.fail("unknown protocol name"),
    };
    r.level = Some(level);
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return r.fail("reserved connect flag is set");
    }
    let has_username = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    if will_qos == 3 {
        return r.fail("will QoS 3 is invalid");
    }
    if !will && (will_qos != 0 || flags & 0x20 != 0) {
        return r.fail("will QoS or retain set without a will");
    }
    if level != Level::V5 && has_password && !has_username {
        return r.fail("password without username");
    }
    let keep_alive = r.u16()?;
    if level == Level::V5 {
        r.skip_properties()?;
    }
    let client_id = r.string()?;
    if will {
        if level == Level::V5 {
            r.skip_properties()?;
        }
        r.string()?; // will topic
        r.binary()?; // will payload
    }
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    if r.pos != body.len() {
        return r.fail("bytes left over after the payload");
    }
    Ok(Connect {
        level,
        client_id,
        username,
        password,
        keep_alive,
        clean_start: flags & 0x02 != 0,
        will,
        len: 0,
    })
}

/// Re-encodes a complete, already valid CONNECT (`packet`, exactly
/// [`Connect::len`] bytes) with another client id and, when `username` is
/// set, another username (added if the client sent none). Everything else
/// (flags, keep-alive, properties, will, password) is kept byte for byte.
/// The relay uses it to namespace client ids by user and to give the
/// broker a certificate client's CN. `None` if `packet` is not a valid
/// CONNECT.
pub fn rewrite_connect(packet: &[u8], client_id: &str, username: Option<&str>) -> Option<Vec<u8>> {
    let (remaining, header) = remaining_length(packet).ok()??;
    let body = packet.get(header..header + remaining)?;
    let mut r = Reader {
        buf: body,
        pos: 0,
        level: None,
    };
    let name = r.binary().ok()?;
    let level = r.u8().ok()?;
    let v5 = name == b"MQTT" && level == 5;
    let flags_at = r.pos;
    let flags = r.u8().ok()?;
    r.u16().ok()?;
    if v5 {
        r.skip_properties().ok()?;
    }
    let id_at = r.pos;
    r.string().ok()?;
    let middle_at = r.pos;
    if flags & 0x04 != 0 {
        if v5 {
            r.skip_properties().ok()?;
        }
        r.string().ok()?;
        r.binary().ok()?;
    }
    let user_at = r.pos;
    if flags & 0x80 != 0 {
        r.string().ok()?;
    }
    let password_at = r.pos;
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    if client_id.len() > usize::from(u16::MAX)
        || username.is_some_and(|u| u.len() > usize::from(u16::MAX))
    {
        return None;
    }
    let mut out_body = Vec::with_capacity(body.len() + client_id.len() + 64);
    out_body.extend_from_slice(&body[..id_at]);
    if username.is_some() {
        out_body[flags_at] |= 0x80;
    }
    string(&mut out_body, client_id);
    out_body.extend_from_slice(&body[middle_at..user_at]);
    match username {
        Some(u) => string(&mut out_body, u),
        None => out_body.extend_from_slice(&body[user_at..password_at]),
    }
    out_body.extend_from_slice(&body[password_at..]);
    let mut out = Vec::with_capacity(out_body.len() + 5);
    out.push(0x10);
    let mut len = out_body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&out_body);
    Some(out)
}

/// CONNACK return codes (3.1/3.1.1) and reason codes (5) fleetgate sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 3.x: 5 not authorized; 5: 0x87 Not authorized.
    NotAuthorized,
    /// 3.x: 4 bad username or password; 5: 0x86.
    BadCredentials,
    /// 3.x: 3 server unavailable; 5: 0x88 Server unavailable.
    Unavailable,
    /// 3.x: 3; 5: 0x89 Server busy (load shedding).
    Busy,
    /// 3.x: 3; 5: 0x9F Connection rate exceeded.
    RateLimited,
    /// 5 only: 0x81 Malformed packet.
    Malformed,
    /// 3.x: 2 identifier rejected; 5: 0x85 Client Identifier not valid
    /// (a client id longer than [`MAX_CLIENT_ID`]).
    IdentifierRejected,
}

/// Longest MQTT client id accepted, in bytes. The id is stored with a
/// pending request and shown to the admin, so it has a cap like every other
/// device-supplied field.
pub const MAX_CLIENT_ID: usize = 256;

impl Refusal {
    /// The return code for 3.1/3.1.1, or the reason code for 5.
    pub fn code(self, level: Level) -> u8 {
        match (self, level) {
            (Refusal::NotAuthorized, Level::V5) => 0x87,
            (Refusal::BadCredentials, Level::V5) => 0x86,
            (Refusal::Unavailable, Level::V5) => 0x88,
            (Refusal::Busy, Level::V5) => 0x89,
            (Refusal::RateLimited, Level::V5) => 0x9F,
            (Refusal::Malformed, Level::V5) => 0x81,
            (Refusal::IdentifierRejected, Level::V5) => 0x85,
            (Refusal::IdentifierRejected, _) => 2,
            (Refusal::NotAuthorized, _) => 5,
            (Refusal::BadCredentials, _) => 4,
            (Refusal::Unavailable | Refusal::Busy | Refusal::RateLimited, _) => 3,
            // 3.x has no "malformed" code; such clients are just closed.
            (Refusal::Malformed, _) => 2,
        }
    }
}

/// Encodes a refusing CONNACK (session present = 0).
pub fn connack(level: Level, refusal: Refusal) -> Vec<u8> {
    let code = refusal.code(level);
    match level {
        // Fixed header, remaining length 3: flags, reason code, no properties.
        Level::V5 => vec![0x20, 0x03, 0x00, code, 0x00],
        // Fixed header, remaining length 2: flags, return code.
        Level::V31 | Level::V311 => vec![0x20, 0x02, 0x00, code],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT 3.1.1 CONNECT with username and password, as mosquitto_pub sends.
    const V311: &[u8] = &[
        0x10, 0x27, //                     CONNECT, remaining length 39
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04, //                           level 4 (3.1.1)
        0xC2, //                           flags: username, password, clean session
        0x00, 0x3C, //                     keep alive 60 s
        0x00, 0x05, b'p', b'u', b'b', b'-', b'1', // client id "pub-1"
        0x00, 0x07, b's', b'e', b'n', b's', b'o', b'r', b'1', // username "sensor1"
        0x00, 0x0b, b's', b'3', b'c', b'r', b'e', b't', b'-', b'p', b'a', b's',
        b's', // password "s3cret-pass"
    ];

    /// MQTT 3.1 CONNECT ("MQIsdp", level 3), username only.
    const V31: &[u8] = &[
        0x10, 0x17, //                     CONNECT, remaining length 23
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03, //                           level 3 (3.1)
        0x82, //                           flags: username, clean session
        0x00, 0x0A, //                     keep alive 10 s
        0x00, 0x03, b'c', b'-', b'1', //   client id "c-1"
        0x00, 0x04, b'd', b'e', b'v', b'1', // username "dev1"
    ];

    /// MQTT 5 CONNECT with properties, a will (with will properties), a
    /// username and no password.
    const V5: &[u8] = &[
        0x10, 0x2a, //                     CONNECT, remaining length 42
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05, //                           level 5
        0x8E, //                           flags: username, will QoS 1, will, clean start
        0x00, 0x1E, //                     keep alive 30 s
        0x05, //                           properties length 5
        0x11, 0x00, 0x00, 0x00, 0x78, //   session expiry interval 120
        0x00, 0x02, b'v', b'5', //         client id "v5"
        0x02, //                           will properties length 2
        0x01, 0x01, //                     payload format indicator 1
        0x00, 0x04, b'w', b'/', b't', b'1', // will topic "w/t1"
        0x00, 0x03, b'b', b'y', b'e', //   will payload "bye"
        0x00, 0x06, b'd', b'e', b'v', b'-', b'v', b'5', // username "dev-v5"
    ];

    fn complete(buf: &[u8]) -> Connect<'_> {
        match parse_connect(buf, DEFAULT_MAX_REMAINING) {
            Parsed::Complete(c) => c,
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    fn invalid(buf: &[u8]) -> Malformed {
        match parse_connect(buf, DEFAULT_MAX_REMAINING) {
            Parsed::Invalid(e) => e,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn v311_with_credentials() {
        let c = complete(V311);
        assert_eq!(c.level, Level::V311);
        assert_eq!(c.client_id, "pub-1");
        assert_eq!(c.username, Some("sensor1"));
        assert_eq!(c.password, Some(&b"s3cret-pass"[..]));
        assert_eq!(c.keep_alive, 60);
        assert!(c.clean_start && !c.will);
        assert_eq!(c.len, V311.len());
    }

    #[test]
    fn v31_username_only() {
        let c = complete(V31);
        assert_eq!(c.level, Level::V31);
        assert_eq!(
            (c.client_id, c.username, c.password),
            ("c-1", Some("dev1"), None)
        );
        assert_eq!(c.len, V31.len());
    }

    #[test]
    fn v5_with_properties_will_and_no_password() {
        let c = complete(V5);
        assert_eq!(c.level, Level::V5);
        assert_eq!(c.client_id, "v5");
        assert_eq!(c.username, Some("dev-v5"));
        assert_eq!(c.password, None);
        assert!(c.will);
        assert_eq!(c.keep_alive, 30);
        assert_eq!(c.len, V5.len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for packet in [V311, V31, V5] {
            for cut in 0..packet.len() {
                assert_eq!(
                    parse_connect(&packet[..cut], DEFAULT_MAX_REMAINING),
                    Parsed::Incomplete,
                    "prefix of {cut} bytes"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_left_for_the_broker() {
        let mut buf = V311.to_vec();
        // A PUBLISH right behind the CONNECT (clients may pipeline it).
        buf.extend_from_slice(&[0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']);
        let c = complete(&buf);
        assert_eq!(c.len, V311.len());
        assert_eq!(&buf[c.len..], &[0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']);
    }

    #[test]
    fn oversized_remaining_length_is_refused_before_the_payload() {
        // Remaining length 65537 (0x81 0x80 0x04), and nothing else yet.
        let head = [0x10, 0x81, 0x80, 0x04];
        assert_eq!(invalid(&head).reason, "CONNECT larger than the limit");
        // At the limit it is merely incomplete.
        let at = [0x10, 0x80, 0x80, 0x04];
        assert_eq!(parse_connect(&at, 65536), Parsed::Incomplete);
        // A fifth length byte is malformed.
        assert!(matches!(
            parse_connect(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Parsed::Invalid(_)
        ));
    }

    /// Regression (fuzzing, `mqtt_connect` and `relay_codec` round trips):
    /// a length in a longer form than needed (39 as `0xA7 0x00`, a v5
    /// property length 5 as `0x85 0x00`) was read as the same number.
    #[test]
    fn lengths_must_be_in_their_shortest_form() {
        let mut long = vec![0x10, 0x27 | 0x80, 0x00];
        long.extend_from_slice(&V311[2..]);
        assert_eq!(invalid(&long).reason, NOT_MINIMAL);
        // Zero in two bytes, with nothing after it yet: refused at once.
        assert_eq!(invalid(&[0x10, 0x80, 0x00]).reason, NOT_MINIMAL);
        // The v5 CONNECT with its property length 5 spelled in two bytes
        // (and the remaining length one more).
        let mut props = V5.to_vec();
        props[1] += 1;
        props.splice(12..13, [0x85, 0x00]);
        let e = invalid(&props);
        assert_eq!((e.reason, e.level), (NOT_MINIMAL, Some(Level::V5)));
    }

    #[test]
    fn malformed_packets() {
        assert_eq!(
            invalid(&[0x30, 0x00]).reason,
            "the first packet must be CONNECT"
        );
        assert_eq!(
            invalid(&[0x12, 0x00]).reason,
            "CONNECT fixed-header flags must be 0"
        );
        // Reserved flag set (v5, so the level is known for a 0x81 CONNACK).
        let mut bad = V5.to_vec();
        bad[9] |= 0x01;
        let e = invalid(&bad);
        assert_eq!(e.level, Some(Level::V5));
        assert_eq!(e.reason, "reserved connect flag is set");
        // Unknown protocol level.
        let mut bad = V311.to_vec();
        bad[8] = 6;
        assert_eq!(invalid(&bad).reason, "unsupported protocol level");
        // A remaining length shorter than the fields claim.
        let mut bad = V311.to_vec();
        bad[1] -= 1;
        bad.pop();
        assert_eq!(invalid(&bad).reason, "field runs past the packet");
        // Username not UTF-8.
        let mut bad = V311.to_vec();
        bad[21] = 0xff;
        assert_eq!(invalid(&bad).reason, "string is not valid UTF-8");
        // Extra bytes inside the declared packet.
        let mut bad = V31.to_vec();
        bad[1] += 1;
        bad.push(0);
        assert_eq!(invalid(&bad).reason, "bytes left over after the payload");
    }

    #[test]
    fn connack_bytes() {
        assert_eq!(
            connack(Level::V311, Refusal::NotAuthorized),
            [0x20, 0x02, 0x00, 0x05]
        );
        assert_eq!(
            connack(Level::V31, Refusal::BadCredentials),
            [0x20, 0x02, 0x00, 0x04]
        );
        assert_eq!(
            connack(Level::V311, Refusal::RateLimited),
            [0x20, 0x02, 0x00, 0x03]
        );
        assert_eq!(
            connack(Level::V5, Refusal::NotAuthorized),
            [0x20, 0x03, 0x00, 0x87, 0x00]
        );
        assert_eq!(
            connack(Level::V5, Refusal::Malformed),
            [0x20, 0x03, 0x00, 0x81, 0x00]
        );
        assert_eq!(
            connack(Level::V5, Refusal::RateLimited),
            [0x20, 0x03, 0x00, 0x9F, 0x00]
        );
        assert_eq!(
            connack(Level::V5, Refusal::Unavailable),
            [0x20, 0x03, 0x00, 0x88, 0x00]
        );
        assert_eq!(
            connack(Level::V5, Refusal::Busy),
            [0x20, 0x03, 0x00, 0x89, 0x00]
        );
        assert_eq!(
            connack(Level::V311, Refusal::IdentifierRejected),
            [0x20, 0x02, 0x00, 0x02]
        );
        assert_eq!(
            connack(Level::V5, Refusal::IdentifierRejected),
            [0x20, 0x03, 0x00, 0x85, 0x00]
        );
    }

    /// A 3.1.1 CONNECT with client id "c1", username "u", password "pw",
    /// rewritten to client id "alice:c1" and username "alice": the result
    /// parses, with the new fields and the same password and keep-alive.
    #[test]
    fn rewrite_connect_replaces_client_id_and_username() {
        let packet: &[u8] = &[
            0x10, 21, // CONNECT, remaining length 21
            0, 4, b'M', b'Q', b'T', b'T', // protocol name
            4,    // level 3.1.1
            0xC2, // flags: username, password, clean session
            0, 60, // keep-alive 60 s
            0, 2, b'c', b'1', // client id "c1"
            0, 1, b'u', // username "u"
            0, 2, b'p', b'w', // password "pw"
        ];
        let Parsed::Complete(_) = parse_connect(packet, DEFAULT_MAX_REMAINING) else {
            panic!("the fixture is a valid CONNECT");
        };
        let out = rewrite_connect(packet, "alice:c1", Some("alice")).unwrap();
        let Parsed::Complete(c) = parse_connect(&out, DEFAULT_MAX_REMAINING) else {
            panic!("the rewritten CONNECT parses");
        };
        assert_eq!(c.client_id, "alice:c1");
        assert_eq!(c.username, Some("alice"));
        assert_eq!(c.password, Some(&b"pw"[..]));
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.len, out.len());
        // No username in the original: the flag is added with the field.
        let bare: &[u8] = &[
            0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 0, // empty client id
        ];
        let out = rewrite_connect(bare, "cn:x", Some("cn")).unwrap();
        let Parsed::Complete(c) = parse_connect(&out, DEFAULT_MAX_REMAINING) else {
            panic!("the rewritten CONNECT parses");
        };
        assert_eq!(
            (c.client_id, c.username, c.password),
            ("cn:x", Some("cn"), None)
        );
        assert!(rewrite_connect(b"\x20\x02\x00\x00", "x", None).is_none());
    }
}
