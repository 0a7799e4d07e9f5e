//! Fuzz target: the relay's packet codec, both directions
//! (`fleetgate_proxy::mqtt::relay::check_client` and `check_server`).
//!
//! The first input byte picks the protocol level, the direction and the
//! remaining-length cap; the rest is what the socket delivered. Beyond "no
//! panic" it asserts:
//! - caps: a complete packet's remaining length is within the cap, `len`
//!   within the buffer, and `bytes` is exactly the first `len` bytes;
//! - the packet stops at its boundary (trailing bytes change nothing) and
//!   every prefix of it is `Incomplete` (two reads parse as one);
//! - round trip: a parsed SUBSCRIBE re-encoded with `encode_subscribe`,
//!   and a SUBACK with `encode_suback`, are the bytes that came in;
//! - what the session relies on: a PUBLISH topic is a valid topic name
//!   (or empty with a v5 alias), a packet id is present exactly for QoS 1
//!   and 2 and never 0, every SUBSCRIBE/UNSUBSCRIBE filter is valid, and
//!   `merge_suback` never drops or invents a code.
#![no_main]

use fleetgate_proxy::mqtt::codec::Level;
use fleetgate_proxy::mqtt::relay::{
    check_client, check_server, encode_suback, encode_subscribe, merge_suback, ClientPacket, Frame,
    ServerPacket, DEFAULT_MAX_PACKET,
};
use fleetgate_registry::topic::{valid_filter, valid_topic_name};
use libfuzzer_sys::fuzz_target;

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
    unreachable!("a complete packet has a valid remaining length")
}

fn check_frame(buf: &[u8], len: usize, bytes: &[u8], cap: usize) {
    assert!(len <= buf.len(), "len past the buffer");
    assert_eq!(bytes, &buf[..len], "bytes are not the packet's");
    let (remaining, header_len) = header(bytes);
    assert!(remaining <= cap, "remaining length over the cap");
    assert_eq!(header_len + remaining, len);
}

fn client(buf: &[u8], level: Level, cap: usize) {
    let Frame::Complete(p) = check_client(buf, level, cap) else {
        return;
    };
    check_frame(buf, p.len, p.bytes, cap);
    let mut longer = p.bytes.to_vec();
    longer.extend_from_slice(&[0xC0, 0x00]);
    assert_eq!(
        check_client(&longer, level, cap),
        Frame::Complete(p.clone())
    );
    for cut in 0..p.len {
        assert_eq!(
            check_client(&p.bytes[..cut], level, cap),
            Frame::Incomplete,
            "cut {cut}"
        );
    }
    match &p.kind {
        ClientPacket::Publish(publish) => {
            assert!(publish.qos < 3);
            assert_eq!(publish.packet_id.is_some(), publish.qos > 0);
            assert_ne!(publish.packet_id, Some(0));
            if publish.topic.is_empty() {
                assert_eq!(level, Level::V5, "an empty topic before v5");
                assert!(publish.topic_alias.is_some_and(|a| a != 0));
            } else {
                assert!(valid_topic_name(publish.topic));
            }
            assert!(p.bytes.ends_with(publish.payload));
        }
        ClientPacket::Subscribe(s) => {
            assert_ne!(s.packet_id, 0);
            assert!(!s.filters.is_empty());
            assert!(s.filters.iter().all(|(f, _)| valid_filter(f)));
            let again = encode_subscribe(level, s.packet_id, s.properties, &s.filters);
            assert_eq!(again, p.bytes, "SUBSCRIBE does not round-trip");
            // The session forwards a subset of the filters: that parses too.
            let some = &s.filters[..s.filters.len().div_ceil(2)];
            let part = encode_subscribe(level, s.packet_id, s.properties, some);
            match check_client(&part, level, usize::MAX) {
                Frame::Complete(q) => match q.kind {
                    ClientPacket::Subscribe(t) => assert_eq!(t.filters, some),
                    other => panic!("a forwarded SUBSCRIBE is {other:?}"),
                },
                other => panic!("a forwarded SUBSCRIBE does not parse: {other:?}"),
            }
        }
        ClientPacket::Unsubscribe { packet_id, filters } => {
            assert_ne!(*packet_id, 0);
            assert!(!filters.is_empty());
            assert!(filters.iter().all(|f| valid_filter(f)));
        }
        ClientPacket::Disconnect | ClientPacket::Other => {}
    }
}

fn server(buf: &[u8], level: Level, cap: usize) {
    let Frame::Complete(p) = check_server(buf, level, cap) else {
        return;
    };
    check_frame(buf, p.len, p.bytes, cap);
    let mut longer = p.bytes.to_vec();
    longer.extend_from_slice(&[0xD0, 0x00]);
    assert_eq!(
        check_server(&longer, level, cap),
        Frame::Complete(p.clone())
    );
    for cut in 0..p.len {
        assert_eq!(
            check_server(&p.bytes[..cut], level, cap),
            Frame::Incomplete,
            "cut {cut}"
        );
    }
    if let ServerPacket::Suback {
        packet_id,
        properties,
        codes,
    } = p.kind
    {
        if p.bytes[0] == 0x90 {
            let again = encode_suback(level, packet_id, properties, codes);
            assert_eq!(again, p.bytes, "SUBACK does not round-trip");
        }
        // Refused filters at every other position, and one past the end.
        let denied: Vec<(usize, u8)> = (0..codes.len() + 1).step_by(2).map(|i| (i, 0x80)).collect();
        let merged = merge_suback(codes, &denied);
        assert_eq!(merged.len(), codes.len() + denied.len());
        assert_eq!(merge_suback(codes, &[]), codes);
        let from_broker: Vec<u8> = merged
            .iter()
            .enumerate()
            .filter(|(i, _)| !denied.iter().any(|(d, _)| d == i))
            .map(|(_, c)| *c)
            .collect();
        // Every denied index is inside the merged list, so each refused
        // code sits at its filter's position and the broker's keep order.
        assert!(denied.iter().all(|&(i, code)| merged[i] == code));
        assert_eq!(from_broker, codes, "broker codes reordered or lost");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let level = match selector % 3 {
        0 => Level::V311,
        1 => Level::V5,
        _ => Level::V31,
    };
    let cap = match (selector / 3) % 3 {
        0 => DEFAULT_MAX_PACKET,
        1 => 64,
        _ => usize::from(selector),
    };
    if selector & 0x80 == 0 {
        client(buf, level, cap);
    } else {
        server(buf, level, cap);
    }
});
