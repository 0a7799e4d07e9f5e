//! Fuzz target: the MQTT CONNECT codec
//! (`fleetgate_proxy::mqtt::codec::parse_connect` and `rewrite_connect`).
//!
//! The first input byte picks the remaining-length cap (the default, or a
//! small one so the fuzzer reaches the cap); the rest is what the socket
//! delivered. Beyond "no panic" it asserts:
//! - caps: a complete CONNECT's remaining length is within the cap and its
//!   `len` within the buffer; every field borrows from inside the packet;
//! - the packet stops at its boundary (trailing bytes change nothing) and
//!   every prefix of it is `Incomplete` (two reads parse as one);
//! - round trip: `rewrite_connect` with the packet's own client id and
//!   username gives back the same bytes, and with another client id and
//!   username gives a CONNECT that parses to those and keeps the rest;
//! - differential against `mqttbytes` (v4 reader for 3.1.1, v5 reader for
//!   5; it has no 3.1): where both accept, they agree on client id,
//!   username, password, keep-alive, clean start and the will's presence.
#![no_main]

use bytes::BytesMut;
use fleetgate_proxy::mqtt::codec::{
    parse_connect, rewrite_connect, Connect, Level, Parsed, DEFAULT_MAX_REMAINING,
};
use libfuzzer_sys::fuzz_target;

fn cap(selector: u8) -> usize {
    match selector % 3 {
        0 => DEFAULT_MAX_REMAINING,
        1 => 16 + usize::from(selector),
        _ => 200,
    }
}

/// Whether `inner` lies inside `outer` (a borrowed field of the packet).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// The remaining-length field of a complete packet: (value, header bytes).
fn header(packet: &[u8]) -> (usize, usize) {
    let mut value = 0;
    for i in 0..4 {
        let b = packet[1 + i];
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, 2 + i);
        }
    }
    unreachable!("a complete CONNECT has a valid remaining length")
}

fn same_except_ids(a: &Connect<'_>, b: &Connect<'_>) {
    assert_eq!(a.level, b.level);
    assert_eq!(a.password, b.password);
    assert_eq!(a.keep_alive, b.keep_alive);
    assert_eq!(a.clean_start, b.clean_start);
    assert_eq!(a.will, b.will);
}

fn differential(c: &Connect<'_>, packet: &[u8]) {
    let mut stream = BytesMut::from(packet);
    let (client_id, keep_alive, clean, will, login) = match c.level {
        Level::V311 => match mqttbytes::v4::read(&mut stream, usize::MAX) {
            Ok(mqttbytes::v4::Packet::Connect(t)) => (
                t.client_id,
                t.keep_alive,
                t.clean_session,
                t.last_will.is_some(),
                t.login.map(|l| (l.username, l.password)),
            ),
            _ => return,
        },
        Level::V5 => match mqttbytes::v5::read(&mut stream, usize::MAX) {
            Ok(mqttbytes::v5::Packet::Connect(t)) => (
                t.client_id,
                t.keep_alive,
                t.clean_session,
                t.last_will.is_some(),
                t.login.map(|l| (l.username, l.password)),
            ),
            _ => return,
        },
        Level::V31 => return,
    };
    assert_eq!(client_id, c.client_id, "client id differs from mqttbytes");
    assert_eq!(
        keep_alive, c.keep_alive,
        "keep-alive differs from mqttbytes"
    );
    assert_eq!(clean, c.clean_start, "clean start differs from mqttbytes");
    assert_eq!(will, c.will, "will differs from mqttbytes");
    // mqttbytes reads absent fields as "" and drops an all-empty login.
    let (user, pass) = login.unwrap_or_default();
    assert_eq!(user, c.username.unwrap_or(""), "username differs");
    assert_eq!(
        pass.as_bytes(),
        c.password.unwrap_or(b""),
        "password differs"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let cap = cap(selector);
    let Parsed::Complete(c) = parse_connect(buf, cap) else {
        return;
    };
    assert!(c.len <= buf.len(), "len past the buffer");
    let packet = &buf[..c.len];
    let (remaining, header_len) = header(packet);
    assert!(remaining <= cap, "remaining length over the cap");
    assert_eq!(header_len + remaining, c.len);
    assert!(within(packet, c.client_id.as_bytes()));
    assert!(within(packet, c.username.unwrap_or("").as_bytes()));
    assert!(within(packet, c.password.unwrap_or(b"")));

    // Boundary: the same CONNECT with a PINGREQ behind it.
    let mut longer = packet.to_vec();
    longer.extend_from_slice(&[0xC0, 0x00]);
    assert_eq!(parse_connect(&longer, cap), Parsed::Complete(c.clone()));
    // Split across two reads: every prefix waits for more.
    for cut in 0..c.len {
        assert_eq!(
            parse_connect(&packet[..cut], cap),
            Parsed::Incomplete,
            "cut {cut}"
        );
    }

    // Round trip: rewriting to the same ids is the identity.
    let same = rewrite_connect(packet, c.client_id, c.username).expect("a valid CONNECT rewrites");
    assert_eq!(same, packet, "an identity rewrite changed the bytes");
    // And to other ids keeps everything else.
    let id = format!("u:{}", c.client_id);
    if id.len() > usize::from(u16::MAX) {
        assert!(
            rewrite_connect(packet, &id, None).is_none(),
            "an id over 65535 bytes"
        );
        return differential(&c, packet);
    }
    let out = rewrite_connect(packet, &id, Some("fuzz-user")).expect("a valid CONNECT rewrites");
    match parse_connect(&out, usize::MAX) {
        Parsed::Complete(r) => {
            assert_eq!(r.client_id, id);
            assert_eq!(r.username, Some("fuzz-user"));
            assert_eq!(r.len, out.len());
            same_except_ids(&c, &r);
        }
        other => panic!("a rewritten CONNECT does not parse: {other:?}"),
    }

    differential(&c, packet);
});
