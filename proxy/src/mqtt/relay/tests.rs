use super::*;

use Level::{V31, V311, V5};

// ---- Client → broker packets --------------------------------------------

/// MQTT 3.1.1 PUBLISH, QoS 0.
const PUBLISH_V311_QOS0: &[u8] = &[
    0x30, 0x0A, //                     PUBLISH, QoS 0, remaining length 10
    0x00, 0x06, b'd', b'e', b'v', b'/', b't', b'1', // topic "dev/t1"
    b'o', b'n', //                     payload "on"
];

/// MQTT 3.1.1 PUBLISH, QoS 1, retained.
const PUBLISH_V311_QOS1: &[u8] = &[
    0x33, 0x0E, //                     PUBLISH, QoS 1, retain, remaining length 14
    0x00, 0x06, b'd', b'e', b'v', b'/', b't', b'1', // topic "dev/t1"
    0x00, 0x07, //                     packet id 7
    b'2', b'1', b'.', b'5', //         payload "21.5"
];

/// MQTT 3.1.1 PUBLISH, QoS 2, a redelivery (DUP).
const PUBLISH_V311_QOS2: &[u8] = &[
    0x3C, 0x08, //                     PUBLISH, DUP, QoS 2, remaining length 8
    0x00, 0x03, b'a', b'/', b'b', //   topic "a/b"
    0x12, 0x34, //                     packet id 0x1234
    b'x', //                           payload "x"
];

/// MQTT 5 PUBLISH, QoS 0, the topic given by an alias set earlier.
const PUBLISH_V5_QOS0: &[u8] = &[
    0x30, 0x09, //                     PUBLISH, QoS 0, remaining length 9
    0x00, 0x00, //                     topic "" (the alias stands for it)
    0x03, //                           properties length 3
    0x23, 0x00, 0x05, //               topic alias 5
    b'o', b'f', b'f', //               payload "off"
];

/// MQTT 5 PUBLISH, QoS 1, setting topic alias 5 for "dev/t1".
const PUBLISH_V5_QOS1: &[u8] = &[
    0x32, 0x10, //                     PUBLISH, QoS 1, remaining length 16
    0x00, 0x06, b'd', b'e', b'v', b'/', b't', b'1', // topic "dev/t1"
    0x00, 0x01, //                     packet id 1
    0x03, //                           properties length 3
    0x23, 0x00, 0x05, //               topic alias 5
    b'o', b'n', //                     payload "on"
];

/// MQTT 5 PUBLISH, QoS 2, with a payload format and a user property.
const PUBLISH_V5_QOS2: &[u8] = &[
    0x34, 0x13, //                     PUBLISH, QoS 2, remaining length 19
    0x00, 0x03, b'a', b'/', b'b', //   topic "a/b"
    0x00, 0x02, //                     packet id 2
    0x09, //                           properties length 9
    0x01, 0x01, //                     payload format indicator: UTF-8
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k = v
    b'{', b'}', //                     payload "{}"
];

/// MQTT 3.1.1 SUBSCRIBE with three filters.
const SUBSCRIBE_V311: &[u8] = &[
    0x82, 0x20, //                     SUBSCRIBE (flags 0010), remaining length 32
    0x00, 0x0A, //                     packet id 10
    0x00, 0x0A, b'd', b'e', b'v', b'/', b'+', b'/', b't', b'e', b'm', b'p', // "dev/+/temp"
    0x01, //                           QoS 1
    0x00, 0x08, b'a', b'l', b'e', b'r', b't', b's', b'/', b'#', // "alerts/#"
    0x00, //                           QoS 0
    0x00, 0x03, b'c', b'f', b'g', //   "cfg"
    0x02, //                           QoS 2
];

/// MQTT 5 SUBSCRIBE with a subscription identifier and a shared subscription.
const SUBSCRIBE_V5: &[u8] = &[
    0x82, 0x24, //                     SUBSCRIBE (flags 0010), remaining length 36
    0x00, 0x0B, //                     packet id 11
    0x02, //                           properties length 2
    0x0B, 0x07, //                     subscription identifier 7
    0x00, 0x0A, b'd', b'e', b'v', b'/', b'+', b'/', b't', b'e', b'm', b'p', // "dev/+/temp"
    0x05, //                           QoS 1, No Local
    0x00, 0x0F, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'j', b'o', b'b', b's', b'/',
    b'#', //                     "$share/g/jobs/#"
    0x22, //                           QoS 2, retain handling 2
];

/// MQTT 3.1.1 UNSUBSCRIBE with two filters.
const UNSUBSCRIBE_V311: &[u8] = &[
    0xA2, 0x13, //                     UNSUBSCRIBE (flags 0010), remaining length 19
    0x00, 0x0C, //                     packet id 12
    0x00, 0x0A, b'd', b'e', b'v', b'/', b'+', b'/', b't', b'e', b'm', b'p', // "dev/+/temp"
    0x00, 0x03, b'c', b'f', b'g', //   "cfg"
];

/// MQTT 5 UNSUBSCRIBE, no properties.
const UNSUBSCRIBE_V5: &[u8] = &[
    0xA2, 0x08, //                     UNSUBSCRIBE (flags 0010), remaining length 8
    0x00, 0x0D, //                     packet id 13
    0x00, //                           properties length 0
    0x00, 0x03, b'c', b'f', b'g', //   "cfg"
];

const PINGREQ: &[u8] = &[
    0xC0, 0x00, //                     PINGREQ, remaining length 0
];

const DISCONNECT_V311: &[u8] = &[
    0xE0, 0x00, //                     DISCONNECT, remaining length 0
];

/// MQTT 5 DISCONNECT with a reason code and a property.
const DISCONNECT_V5: &[u8] = &[
    0xE0, 0x07, //                     DISCONNECT, remaining length 7
    0x04, //                           reason: disconnect with will message
    0x05, //                           properties length 5
    0x11, 0x00, 0x00, 0x00, 0x00, //   session expiry interval 0
];

const PUBACK_V311: &[u8] = &[
    0x40, 0x02, //                     PUBACK, remaining length 2
    0x00, 0x07, //                     packet id 7
];

const PUBREL_V311: &[u8] = &[
    0x62, 0x02, //                     PUBREL (flags 0010), remaining length 2
    0x00, 0x07, //                     packet id 7
];

/// MQTT 5 PUBREC with a reason code and no property length (allowed when
/// the remaining length is 3).
const PUBREC_V5: &[u8] = &[
    0x50, 0x03, //                     PUBREC, remaining length 3
    0x00, 0x07, //                     packet id 7
    0x10, //                           reason: no matching subscribers
];

const PUBCOMP_V5: &[u8] = &[
    0x70, 0x04, //                     PUBCOMP, remaining length 4
    0x00, 0x07, //                     packet id 7
    0x00, //                           reason: success
    0x00, //                           properties length 0
];

const AUTH_V5: &[u8] = &[
    0xF0, 0x09, //                     AUTH, remaining length 9
    0x18, //                           reason: continue authentication
    0x07, //                           properties length 7
    0x15, 0x00, 0x04, b'S', b'C', b'R', b'M', // authentication method "SCRM"
];

// ---- Broker → client packets --------------------------------------------

const SUBACK_V311: &[u8] = &[
    0x90, 0x05, //                     SUBACK, remaining length 5
    0x00, 0x0A, //                     packet id 10
    0x01, 0x80, 0x02, //               granted QoS 1, failure, granted QoS 2
];

const SUBACK_V5: &[u8] = &[
    0x90, 0x0A, //                     SUBACK, remaining length 10
    0x00, 0x0B, //                     packet id 11
    0x05, //                           properties length 5
    0x1F, 0x00, 0x02, b'o', b'k', //   reason string "ok"
    0x01, 0x87, //                     granted QoS 1, not authorized
];

/// A broker's v5 PUBLISH carries a subscription identifier, which a client
/// may not send: the server direction does not care.
const PUBLISH_FROM_BROKER_V5: &[u8] = &[
    0x30, 0x07, //                     PUBLISH, QoS 0, remaining length 7
    0x00, 0x01, b't', //               topic "t"
    0x02, //                           properties length 2
    0x0B, 0x07, //                     subscription identifier 7
    b'!', //                           payload "!"
];

const CONNACK_V311: &[u8] = &[
    0x20, 0x02, //                     CONNACK, remaining length 2
    0x00, 0x00, //                     no session present, accepted
];

/// Bytes after each packet: a PINGREQ and the start of another packet.
const TRAILER: &[u8] = &[0xC0, 0x00, 0x30];

const CLIENT_PACKETS: &[(&str, Level, &[u8])] = &[
    ("PUBLISH 3.1.1 QoS 0", V311, PUBLISH_V311_QOS0),
    ("PUBLISH 3.1.1 QoS 1", V311, PUBLISH_V311_QOS1),
    ("PUBLISH 3.1.1 QoS 2", V311, PUBLISH_V311_QOS2),
    ("PUBLISH 5 QoS 0", V5, PUBLISH_V5_QOS0),
    ("PUBLISH 5 QoS 1", V5, PUBLISH_V5_QOS1),
    ("PUBLISH 5 QoS 2", V5, PUBLISH_V5_QOS2),
    ("SUBSCRIBE 3.1.1", V311, SUBSCRIBE_V311),
    ("SUBSCRIBE 5", V5, SUBSCRIBE_V5),
    ("UNSUBSCRIBE 3.1.1", V311, UNSUBSCRIBE_V311),
    ("UNSUBSCRIBE 5", V5, UNSUBSCRIBE_V5),
    ("PINGREQ 3.1.1", V311, PINGREQ),
    ("PINGREQ 5", V5, PINGREQ),
    ("DISCONNECT 3.1.1", V311, DISCONNECT_V311),
    ("DISCONNECT 5", V5, DISCONNECT_V5),
    ("PUBACK 3.1.1", V311, PUBACK_V311),
    ("PUBACK 5 (short form)", V5, PUBACK_V311),
    ("PUBREL 3.1.1", V311, PUBREL_V311),
    ("PUBREC 5", V5, PUBREC_V5),
    ("PUBCOMP 5", V5, PUBCOMP_V5),
    ("AUTH 5", V5, AUTH_V5),
];

const SERVER_PACKETS: &[(&str, Level, &[u8])] = &[
    ("SUBACK 3.1.1", V311, SUBACK_V311),
    ("SUBACK 5", V5, SUBACK_V5),
    ("PUBLISH 5 from the broker", V5, PUBLISH_FROM_BROKER_V5),
    ("CONNACK 3.1.1", V311, CONNACK_V311),
    ("PINGRESP", V311, &[0xD0, 0x00]),
];

fn client(buf: &[u8], level: Level) -> Packet<'_> {
    match check_client(buf, level, DEFAULT_MAX_PACKET) {
        Frame::Complete(p) => p,
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn client_kind(buf: &[u8], level: Level) -> ClientPacket<'_> {
    let p = client(buf, level);
    assert_eq!(p.len, buf.len(), "the whole buffer is one packet");
    p.kind
}

fn client_error(buf: &[u8], level: Level) -> RelayError {
    match check_client(buf, level, DEFAULT_MAX_PACKET) {
        Frame::Invalid(e) => e,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn server(buf: &[u8], level: Level) -> Packet<'_, ServerPacket<'_>> {
    match check_server(buf, level, DEFAULT_MAX_PACKET) {
        Frame::Complete(p) => p,
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn with_trailer(packet: &[u8]) -> Vec<u8> {
    [packet, TRAILER].concat()
}

#[test]
fn relay_client_packets_stop_at_the_boundary() {
    for (name, level, packet) in CLIENT_PACKETS {
        let buf = with_trailer(packet);
        let p = client(&buf, *level);
        assert_eq!(p.len, packet.len(), "{name}");
        assert_eq!(p.bytes, *packet, "{name}");
        assert_eq!(&buf[p.len..], TRAILER, "{name}");
        assert_eq!(p.kind, client_kind(packet, *level), "{name}");
    }
}

#[test]
fn relay_server_packets_stop_at_the_boundary() {
    for (name, level, packet) in SERVER_PACKETS {
        let buf = with_trailer(packet);
        let p = server(&buf, *level);
        assert_eq!(p.len, packet.len(), "{name}");
        assert_eq!(p.bytes, *packet, "{name}");
    }
}

#[test]
fn relay_every_prefix_is_incomplete() {
    for (name, level, packet) in CLIENT_PACKETS {
        for cut in 0..packet.len() {
            assert_eq!(
                check_client(&packet[..cut], *level, DEFAULT_MAX_PACKET),
                Frame::Incomplete,
                "{name}: prefix of {cut} bytes"
            );
        }
    }
    for (name, level, packet) in SERVER_PACKETS {
        for cut in 0..packet.len() {
            assert_eq!(
                check_server(&packet[..cut], *level, DEFAULT_MAX_PACKET),
                Frame::Incomplete,
                "{name}: prefix of {cut} bytes"
            );
        }
    }
}

/// A receive loop: bytes arrive in two reads split at every position, and
/// the packet parses once both are in, the same as in one read.
#[test]
fn relay_packet_split_across_two_reads() {
    for (name, level, packet) in CLIENT_PACKETS {
        let whole = with_trailer(packet);
        let expected = check_client(&whole, *level, DEFAULT_MAX_PACKET);
        for cut in 1..packet.len() {
            let mut received = whole[..cut].to_vec();
            assert_eq!(
                check_client(&received, *level, DEFAULT_MAX_PACKET),
                Frame::Incomplete,
                "{name}: first read of {cut} bytes"
            );
            received.extend_from_slice(&whole[cut..]);
            assert_eq!(
                check_client(&received, *level, DEFAULT_MAX_PACKET),
                expected,
                "{name}: split at {cut}"
            );
        }
    }
    for (name, level, packet) in SERVER_PACKETS {
        for cut in 1..packet.len() {
            let mut received = packet[..cut].to_vec();
            assert_eq!(
                check_server(&received, *level, DEFAULT_MAX_PACKET),
                Frame::Incomplete
            );
            received.extend_from_slice(&packet[cut..]);
            assert_eq!(server(&received, *level).len, packet.len(), "{name}");
        }
    }
}

#[test]
fn relay_pipelined_packets_parse_one_after_the_other() {
    let stream_v311 = [
        PUBLISH_V311_QOS1,
        SUBSCRIBE_V311,
        PUBLISH_V311_QOS0,
        PINGREQ,
        PUBREL_V311,
        UNSUBSCRIBE_V311,
        DISCONNECT_V311,
    ];
    let stream_v5 = [
        PUBLISH_V5_QOS1,
        PUBLISH_V5_QOS0,
        SUBSCRIBE_V5,
        AUTH_V5,
        PUBLISH_V5_QOS2,
        DISCONNECT_V5,
    ];
    for (level, packets) in [(V311, &stream_v311[..]), (V5, &stream_v5[..])] {
        let buf = packets.concat();
        let mut at = 0;
        for packet in packets {
            let p = client(&buf[at..], level);
            assert_eq!(p.bytes, *packet);
            assert_eq!(p.kind, client_kind(packet, level));
            at += p.len;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            check_client(&buf[at..], level, DEFAULT_MAX_PACKET),
            Frame::Incomplete
        );
    }
    let buf = [SUBACK_V5, PUBLISH_FROM_BROKER_V5, SUBACK_V5].concat();
    let first = server(&buf, V5);
    let second = server(&buf[first.len..], V5);
    let third = server(&buf[first.len + second.len..], V5);
    assert_eq!(first.kind, third.kind);
    assert_eq!(second.kind, ServerPacket::Other);
    assert_eq!(first.len + second.len + third.len, buf.len());
}

#[test]
fn relay_publish_fields() {
    let cases = [
        (
            V311,
            PUBLISH_V311_QOS0,
            "dev/t1",
            0,
            false,
            false,
            None,
            None,
            &b"on"[..],
        ),
        (
            V311,
            PUBLISH_V311_QOS1,
            "dev/t1",
            1,
            true,
            false,
            Some(7),
            None,
            b"21.5",
        ),
        (
            V311,
            PUBLISH_V311_QOS2,
            "a/b",
            2,
            false,
            true,
            Some(0x1234),
            None,
            b"x",
        ),
        (
            V5,
            PUBLISH_V5_QOS0,
            "",
            0,
            false,
            false,
            None,
            Some(5),
            b"off",
        ),
        (
            V5,
            PUBLISH_V5_QOS1,
            "dev/t1",
            1,
            false,
            false,
            Some(1),
            Some(5),
            b"on",
        ),
        (
            V5,
            PUBLISH_V5_QOS2,
            "a/b",
            2,
            false,
            false,
            Some(2),
            None,
            b"{}",
        ),
    ];
    for (level, packet, topic, qos, retain, dup, packet_id, topic_alias, payload) in cases {
        assert_eq!(
            client_kind(packet, level),
            ClientPacket::Publish(Publish {
                topic,
                qos,
                retain,
                dup,
                packet_id,
                topic_alias,
                payload,
            })
        );
    }
}

#[test]
fn relay_subscribe_and_unsubscribe_fields() {
    assert_eq!(
        client_kind(SUBSCRIBE_V311, V311),
        ClientPacket::Subscribe(Subscribe {
            packet_id: 10,
            properties: &[],
            filters: vec![("dev/+/temp", 1), ("alerts/#", 0), ("cfg", 2)],
        })
    );
    assert_eq!(
        client_kind(SUBSCRIBE_V5, V5),
        ClientPacket::Subscribe(Subscribe {
            packet_id: 11,
            properties: &[0x0B, 0x07],
            filters: vec![("dev/+/temp", 0x05), ("$share/g/jobs/#", 0x22)],
        })
    );
    assert_eq!(
        client_kind(UNSUBSCRIBE_V311, V311),
        ClientPacket::Unsubscribe {
            packet_id: 12,
            filters: vec!["dev/+/temp", "cfg"],
        }
    );
    assert_eq!(
        client_kind(UNSUBSCRIBE_V5, V5),
        ClientPacket::Unsubscribe {
            packet_id: 13,
            filters: vec!["cfg"],
        }
    );
}

#[test]
fn relay_control_packets() {
    assert_eq!(client_kind(PINGREQ, V311), ClientPacket::Other);
    assert_eq!(client_kind(DISCONNECT_V311, V311), ClientPacket::Disconnect);
    assert_eq!(client_kind(DISCONNECT_V5, V5), ClientPacket::Disconnect);
    assert_eq!(client_kind(DISCONNECT_V311, V5), ClientPacket::Disconnect);
    assert_eq!(
        client_kind(&[0xE0, 0x01, 0x00], V5),
        ClientPacket::Disconnect
    );
    for packet in [PUBACK_V311, PUBREL_V311] {
        assert_eq!(client_kind(packet, V311), ClientPacket::Other);
        assert_eq!(client_kind(packet, V5), ClientPacket::Other);
    }
    assert_eq!(client_kind(PUBREC_V5, V5), ClientPacket::Other);
    assert_eq!(client_kind(PUBCOMP_V5, V5), ClientPacket::Other);
    assert_eq!(client_kind(AUTH_V5, V5), ClientPacket::Other);
    assert_eq!(client_kind(&[0xF0, 0x00], V5), ClientPacket::Other);
}

/// MQTT 3.1 is relayed exactly like 3.1.1.
#[test]
fn relay_v31_is_parsed_as_v311() {
    for (name, level, packet) in CLIENT_PACKETS.iter().filter(|(_, l, _)| *l == V311) {
        assert_eq!(
            check_client(packet, V31, DEFAULT_MAX_PACKET),
            check_client(packet, *level, DEFAULT_MAX_PACKET),
            "{name}"
        );
    }
    assert_eq!(
        server(SUBACK_V311, V31).kind,
        server(SUBACK_V311, V311).kind
    );
}

#[test]
fn relay_suback_fields() {
    assert_eq!(
        server(SUBACK_V311, V311).kind,
        ServerPacket::Suback {
            packet_id: 10,
            properties: &[],
            codes: &[0x01, 0x80, 0x02],
        }
    );
    assert_eq!(
        server(SUBACK_V5, V5).kind,
        ServerPacket::Suback {
            packet_id: 11,
            properties: &[0x1F, 0x00, 0x02, b'o', b'k'],
            codes: &[0x01, 0x87],
        }
    );
    assert_eq!(server(CONNACK_V311, V311).kind, ServerPacket::Other);
    assert_eq!(server(PUBLISH_FROM_BROKER_V5, V5).kind, ServerPacket::Other);
}

/// A QoS 0 PUBLISH whose remaining length is exactly `remaining`.
fn publish_with_remaining(remaining: usize) -> Vec<u8> {
    let mut out = with_header(0x30, remaining);
    out.extend_from_slice(&[0x00, 0x01, b't']); // topic "t"
    out.resize(out.len() + remaining - 3, b'.'); // payload
    out
}

#[test]
fn relay_remaining_length_cap() {
    for max in [16, 127, 128, DEFAULT_MAX_PACKET] {
        // At the cap: incomplete until the last byte, then complete.
        let at = publish_with_remaining(max);
        let header = at.len() - max;
        for cut in [header, header + 1, at.len() - 1] {
            assert_eq!(
                check_client(&at[..cut], V311, max),
                Frame::Incomplete,
                "{max}"
            );
            assert_eq!(
                check_server(&at[..cut], V311, max),
                Frame::Incomplete,
                "{max}"
            );
        }
        match check_client(&at, V311, max) {
            Frame::Complete(p) => assert_eq!(p.len, at.len()),
            other => panic!("{max}: {other:?}"),
        }
        assert_eq!(server(&at, V311).len, at.len());

        // One byte over: refused from the fixed header alone.
        let over = publish_with_remaining(max + 1);
        let header = over.len() - (max + 1);
        let refused = RelayError::TooLarge {
            declared: max + 1,
            limit: max,
        };
        assert_eq!(
            check_client(&over[..header], V311, max),
            Frame::Invalid(refused.clone())
        );
        assert_eq!(
            check_server(&over[..header], V311, max),
            Frame::Invalid(refused.clone())
        );
        assert_eq!(refused.reason_code(), 0x95);
    }
    // The default, spelled out: 262 144 = 0x80 0x80 0x10.
    assert_eq!(
        check_client(&[0x30, 0x80, 0x80, 0x10], V5, DEFAULT_MAX_PACKET),
        Frame::Incomplete
    );
    assert!(matches!(
        check_client(&[0x30, 0x81, 0x80, 0x10], V5, DEFAULT_MAX_PACKET),
        Frame::Invalid(RelayError::TooLarge {
            declared: 262_145,
            ..
        })
    ));
}

#[test]
fn relay_malformed_client_packets() {
    use RelayError::{Malformed, Protocol};
    const FLAGS_0010: RelayError =
        Malformed("PUBREL, SUBSCRIBE and UNSUBSCRIBE flags must be 0010");
    const RESERVED_FLAGS: RelayError = Malformed("reserved fixed-header flags are set");
    const PAST_END: RelayError = Malformed("field runs past the packet");
    const LEFT_OVER: RelayError = Malformed("bytes left over after the packet");
    let cases: &[(&str, Level, &[u8], RelayError)] = &[
        // Reserved flag bits, refused from the first byte alone.
        ("SUBSCRIBE flags 0000", V311, &[0x80], FLAGS_0010),
        (
            "SUBSCRIBE flags 0011",
            V5,
            &[0x83, 0x06, 0, 1, 0, 1, b'a', 0],
            FLAGS_0010,
        ),
        (
            "UNSUBSCRIBE flags 0000",
            V311,
            &[0xA0, 0x05, 0, 1, 0, 1, b'a'],
            FLAGS_0010,
        ),
        (
            "PUBREL flags 0000",
            V311,
            &[0x60, 0x02, 0x00, 0x01],
            FLAGS_0010,
        ),
        (
            "PUBACK flags 0001",
            V311,
            &[0x41, 0x02, 0x00, 0x01],
            RESERVED_FLAGS,
        ),
        ("PINGREQ flags 0001", V311, &[0xC1, 0x00], RESERVED_FLAGS),
        ("DISCONNECT flags 0010", V5, &[0xE2, 0x00], RESERVED_FLAGS),
        ("AUTH flags 0001", V5, &[0xF1, 0x00], RESERVED_FLAGS),
        ("PUBLISH QoS 3", V311, &[0x36], Malformed("PUBLISH QoS 3")),
        (
            "PUBLISH QoS 0 DUP",
            V5,
            &[0x38],
            Malformed("PUBLISH QoS 0 with DUP set"),
        ),
        // Packet identifier 0.
        (
            "PUBLISH QoS 1 id 0",
            V311,
            &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
            Malformed("packet identifier 0"),
        ),
        (
            "SUBSCRIBE id 0",
            V311,
            &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
            Malformed("packet identifier 0"),
        ),
        (
            "UNSUBSCRIBE id 0",
            V5,
            &[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, b'a'],
            Malformed("packet identifier 0"),
        ),
        (
            "PUBACK id 0",
            V311,
            &[0x40, 0x02, 0x00, 0x00],
            Malformed("packet identifier 0"),
        ),
        // Topic names.
        (
            "PUBLISH topic a/+",
            V311,
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
            Malformed("wildcard in a PUBLISH topic name"),
        ),
        (
            "PUBLISH topic a/#",
            V5,
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00],
            Malformed("wildcard in a PUBLISH topic name"),
        ),
        (
            "PUBLISH topic not UTF-8",
            V311,
            &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            Malformed("string is not valid UTF-8"),
        ),
        (
            "PUBLISH topic with NUL",
            V311,
            &[0x30, 0x03, 0x00, 0x01, 0x00],
            Malformed("string is not valid UTF-8"),
        ),
        (
            "PUBLISH empty topic, 3.1.1",
            V311,
            &[0x30, 0x02, 0x00, 0x00],
            Protocol("empty topic name without a topic alias"),
        ),
        (
            "PUBLISH empty topic, no alias",
            V5,
            &[0x30, 0x03, 0x00, 0x00, 0x00],
            Protocol("empty topic name without a topic alias"),
        ),
        // Truncated lengths.
        (
            "topic length past the packet",
            V311,
            &[0x30, 0x04, 0x00, 0x09, b'a', b'b'],
            PAST_END,
        ),
        (
            "QoS 1 without a packet id",
            V311,
            &[0x32, 0x03, 0x00, 0x01, b'a'],
            PAST_END,
        ),
        (
            "remaining length of 5 bytes",
            V311,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Malformed("remaining length longer than 4 bytes"),
        ),
        (
            "property length past the packet",
            V5,
            &[0x30, 0x05, 0x00, 0x01, b'a', 0x05, 0x23],
            Malformed("property length runs past the packet"),
        ),
        (
            "property value past the property block",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x23, 0x00],
            PAST_END,
        ),
        (
            "property length of 5 bytes",
            V5,
            &[0x30, 0x08, 0x00, 0x01, b'a', 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Malformed("variable byte integer longer than 4 bytes"),
        ),
        (
            "SUBSCRIBE without options",
            V311,
            &[0x82, 0x05, 0, 1, 0, 1, b'a'],
            PAST_END,
        ),
        // v5 properties.
        (
            "unknown property",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00],
            Malformed("unknown property"),
        ),
        (
            "property id 0",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x00, 0x00],
            Malformed("unknown property"),
        ),
        (
            "topic alias 0",
            V5,
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00],
            Protocol("topic alias 0"),
        ),
        (
            "topic alias twice",
            V5,
            &[0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x23, 0, 1, 0x23, 0, 2],
            Protocol("property repeated"),
        ),
        (
            "subscription identifier in a client PUBLISH",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0B, 0x01],
            Protocol("property not allowed in this packet"),
        ),
        (
            "payload format 2",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02],
            Protocol("payload format indicator above 1"),
        ),
        (
            "subscription identifier 0",
            V5,
            &[0x82, 0x09, 0, 1, 0x02, 0x0B, 0x00, 0, 1, b'a', 0x00],
            Protocol("subscription identifier 0"),
        ),
        (
            "topic alias in a SUBSCRIBE",
            V5,
            &[0x82, 0x0A, 0, 1, 0x03, 0x23, 0, 1, 0, 1, b'a', 0x00],
            Protocol("property not allowed in this packet"),
        ),
        (
            "server reference in a client DISCONNECT",
            V5,
            &[0xE0, 0x06, 0x00, 0x04, 0x1C, 0x00, 0x01, b'h'],
            Protocol("property not allowed in this packet"),
        ),
        (
            "topic alias in a PUBACK",
            V5,
            &[0x40, 0x07, 0, 1, 0x10, 0x03, 0x23, 0, 1],
            Protocol("property not allowed in this packet"),
        ),
        (
            "user property value not UTF-8",
            V5,
            &[0x30, 0x0B, 0, 1, b'a', 0x07, 0x26, 0, 1, b'k', 0, 1, 0xFF],
            Malformed("string is not valid UTF-8"),
        ),
        // SUBSCRIBE and UNSUBSCRIBE payloads.
        (
            "SUBSCRIBE without filters",
            V311,
            &[0x82, 0x02, 0x00, 0x01],
            Protocol("SUBSCRIBE without a topic filter"),
        ),
        (
            "SUBSCRIBE 5 without filters",
            V5,
            &[0x82, 0x03, 0x00, 0x01, 0x00],
            Protocol("SUBSCRIBE without a topic filter"),
        ),
        (
            "SUBSCRIBE reserved option bit, 3.1.1",
            V311,
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04],
            Malformed("reserved subscription option bits"),
        ),
        (
            "SUBSCRIBE reserved option bit, 5",
            V5,
            &[0x82, 0x07, 0, 1, 0x00, 0, 1, b'a', 0x40],
            Malformed("reserved subscription option bits"),
        ),
        (
            "SUBSCRIBE QoS 3",
            V311,
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x03],
            Malformed("subscription QoS 3"),
        ),
        (
            "SUBSCRIBE retain handling 3",
            V5,
            &[0x82, 0x07, 0, 1, 0x00, 0, 1, b'a', 0x30],
            Protocol("retain handling 3"),
        ),
        (
            "SUBSCRIBE filter a/b#",
            V311,
            &[0x82, 0x09, 0, 1, 0, 4, b'a', b'/', b'b', b'#', 0x00],
            Malformed("invalid topic filter"),
        ),
        (
            "SUBSCRIBE empty filter",
            V311,
            &[0x82, 0x05, 0, 1, 0, 0, 0x00],
            Malformed("invalid topic filter"),
        ),
        (
            "SUBSCRIBE filter not UTF-8",
            V311,
            &[0x82, 0x06, 0, 1, 0, 1, 0xFF, 0x00],
            Malformed("string is not valid UTF-8"),
        ),
        (
            "UNSUBSCRIBE without filters",
            V311,
            &[0xA2, 0x02, 0x00, 0x01],
            Protocol("UNSUBSCRIBE without a topic filter"),
        ),
        (
            "UNSUBSCRIBE filter a#",
            V311,
            &[0xA2, 0x06, 0, 1, 0, 2, b'a', b'#'],
            Malformed("invalid topic filter"),
        ),
        // Bodies longer than the packet type allows.
        ("PINGREQ with a body", V311, &[0xC0, 0x01, 0x00], LEFT_OVER),
        (
            "DISCONNECT 3.1.1 with a body",
            V311,
            &[0xE0, 0x01, 0x00],
            LEFT_OVER,
        ),
        (
            "PUBACK 3.1.1 with a reason code",
            V311,
            &[0x40, 0x03, 0, 1, 0x00],
            LEFT_OVER,
        ),
        ("PUBACK 3.1.1 without an id", V311, &[0x40, 0x00], PAST_END),
        (
            "PUBACK 5 with bytes after its properties",
            V5,
            &[0x40, 0x05, 0, 1, 0x00, 0x00, 0x00],
            LEFT_OVER,
        ),
        // Packet types a client may not send here.
        (
            "a second CONNECT",
            V311,
            &[0x10],
            Protocol("a second CONNECT"),
        ),
        (
            "CONNACK",
            V311,
            &[0x20, 0x02, 0, 0],
            Protocol("a server-only packet from the client"),
        ),
        (
            "SUBACK",
            V5,
            &[0x90],
            Protocol("a server-only packet from the client"),
        ),
        (
            "UNSUBACK",
            V311,
            &[0xB0],
            Protocol("a server-only packet from the client"),
        ),
        (
            "PINGRESP",
            V311,
            &[0xD0, 0x00],
            Protocol("a server-only packet from the client"),
        ),
        (
            "reserved type 0",
            V5,
            &[0x00, 0x00],
            Malformed("reserved packet type"),
        ),
        (
            "AUTH before MQTT 5",
            V311,
            &[0xF0, 0x00],
            Malformed("reserved packet type"),
        ),
    ];
    for (name, level, bytes, expected) in cases {
        assert_eq!(&client_error(bytes, *level), expected, "{name}");
        // Trailing bytes do not rescue a bad packet.
        assert_eq!(
            &client_error(&with_trailer(bytes), *level),
            expected,
            "{name}"
        );
    }
}

#[test]
fn relay_reason_codes() {
    assert_eq!(RelayError::Malformed("x").reason_code(), 0x81);
    assert_eq!(RelayError::Protocol("x").reason_code(), 0x82);
    assert_eq!(
        RelayError::TooLarge {
            declared: 2,
            limit: 1
        }
        .reason_code(),
        0x95
    );
}

#[test]
fn relay_server_direction_is_liberal_but_framed() {
    // Anything framed passes, even what a client may not send.
    for bytes in [
        &[0x00, 0x00][..],
        &[0x10, 0x00],
        &[0xF0, 0x00],
        &[0x3E, 0x00],
    ] {
        assert_eq!(server(bytes, V311).kind, ServerPacket::Other, "{bytes:?}");
    }
    // A SUBACK too short for its packet id, or with properties past the end.
    for (level, bytes) in [
        (V311, &[0x90, 0x01, 0x00][..]),
        (V5, &[0x90, 0x03, 0, 1, 0x05]),
    ] {
        assert_eq!(
            check_server(bytes, level, DEFAULT_MAX_PACKET),
            Frame::Invalid(RelayError::Malformed("field runs past the packet"))
        );
    }
    assert!(matches!(
        check_server(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], V5, usize::MAX),
        Frame::Invalid(RelayError::Malformed(_))
    ));
}

#[test]
fn relay_encoded_bytes() {
    assert_eq!(
        encode_puback(V311, 7, NOT_AUTHORIZED_V5),
        [0x40, 0x02, 0x00, 0x07]
    );
    assert_eq!(encode_puback(V31, 7, 0), [0x40, 0x02, 0x00, 0x07]);
    assert_eq!(
        encode_puback(V5, 0x0102, NOT_AUTHORIZED_V5),
        [0x40, 0x04, 0x01, 0x02, 0x87, 0x00]
    );
    assert_eq!(encode_pubrec(V311, 7, 0x87), [0x50, 0x02, 0x00, 0x07]);
    assert_eq!(
        encode_pubrec(V5, 7, 0x87),
        [0x50, 0x04, 0x00, 0x07, 0x87, 0x00]
    );
    // The client reads them as well-formed (a client sends PUBACK and PUBREC
    // too, with the same grammar).
    for level in [V311, V5] {
        for bytes in [encode_puback(level, 9, 0x87), encode_pubrec(level, 9, 0x87)] {
            assert_eq!(client_kind(&bytes, level), ClientPacket::Other);
        }
    }
    assert_eq!(
        encode_suback(V311, 10, &[], &[0x01, 0x80, 0x02]),
        SUBACK_V311
    );
    assert_eq!(
        encode_suback(V5, 11, &[0x1F, 0x00, 0x02, b'o', b'k'], &[0x01, 0x87]),
        SUBACK_V5
    );
    assert_eq!(
        encode_subscribe(
            V311,
            10,
            &[],
            &[("dev/+/temp", 1), ("alerts/#", 0), ("cfg", 2)]
        ),
        SUBSCRIBE_V311
    );
    assert_eq!(
        encode_subscribe(
            V5,
            11,
            &[0x0B, 0x07],
            &[("dev/+/temp", 0x05), ("$share/g/jobs/#", 0x22)]
        ),
        SUBSCRIBE_V5
    );
    // Properties are dropped before MQTT 5.
    assert_eq!(
        encode_suback(V311, 10, &[0x1F], &[0x01, 0x80, 0x02]),
        SUBACK_V311
    );
    assert_eq!(suback_refusal(V311), SUBACK_FAILURE_V311);
    assert_eq!(suback_refusal(V31), 0x80);
    assert_eq!(suback_refusal(V5), 0x87);
}

#[test]
fn relay_encode_round_trips() {
    let long = "x/".repeat(100) + "y"; // a remaining length past 127: two length bytes
    let filters: &[(&str, u8)] = &[("a/+", 1), ("b/#", 0), (&long, 2), ("$SYS/x", 0)];
    for (level, properties) in [
        (V311, &[][..]),
        (V5, &[][..]),
        (V5, &[0x0B, 0x2A, 0x26, 0, 1, b'k', 0, 0][..]),
    ] {
        for n in 1..=filters.len() {
            let bytes = encode_subscribe(level, 77, properties, &filters[..n]);
            assert_eq!(
                client_kind(&bytes, level),
                ClientPacket::Subscribe(Subscribe {
                    packet_id: 77,
                    properties,
                    filters: filters[..n].to_vec(),
                })
            );
        }
    }
    let many: Vec<u8> = (0..200).map(|i| (i % 3) as u8).collect();
    for (level, properties) in [
        (V311, &[][..]),
        (V5, &[][..]),
        (V5, &[0x1F, 0, 1, b'r'][..]),
    ] {
        for codes in [&[0x00][..], &[0x01, 0x80], &many] {
            let bytes = encode_suback(level, 5, properties, codes);
            assert_eq!(
                server(&bytes, level).kind,
                ServerPacket::Suback {
                    packet_id: 5,
                    properties,
                    codes,
                }
            );
        }
    }
}

#[test]
fn relay_merge_suback() {
    // Filters 0..5; 1 and 3 refused, 0, 2 and 4 forwarded.
    assert_eq!(
        merge_suback(&[0x00, 0x01, 0x02], &[(1, 0x87), (3, 0x87)]),
        [0x00, 0x87, 0x01, 0x87, 0x02]
    );
    assert_eq!(merge_suback(&[0x01], &[(0, 0x80)]), [0x80, 0x01]);
    assert_eq!(merge_suback(&[0x01], &[(1, 0x80)]), [0x01, 0x80]);
    assert_eq!(merge_suback(&[0x00, 0x01], &[]), [0x00, 0x01]);
    assert_eq!(merge_suback(&[], &[(0, 0x87), (1, 0x87)]), [0x87, 0x87]);
    assert_eq!(
        merge_suback(&[0x02], &[(0, 0x80), (1, 0x80), (3, 0x80)]),
        [0x80, 0x80, 0x02, 0x80]
    );
    // A broker that answered fewer codes than it was sent: nothing lost.
    assert_eq!(merge_suback(&[0x01], &[(4, 0x87)]), [0x01, 0x87]);
    // Merged, re-encoded, and read back.
    let merged = merge_suback(&[0x01, 0x02], &[(1, NOT_AUTHORIZED_V5)]);
    assert_eq!(
        server(&encode_suback(V5, 11, &[], &merged), V5).kind,
        ServerPacket::Suback {
            packet_id: 11,
            properties: &[],
            codes: &[0x01, 0x87, 0x02],
        }
    );
}

/// Xorshift: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Facts that hold for any input: no panic; a complete packet fits the
/// buffer, parses the same on its own bytes, and every strict prefix of it
/// is incomplete.
fn check_invariants(buf: &[u8]) {
    for level in [V311, V5] {
        for max in [8, DEFAULT_MAX_PACKET] {
            if let Frame::Complete(p) = check_client(buf, level, max) {
                assert!(p.len <= buf.len());
                assert_eq!(p.bytes, &buf[..p.len]);
                assert_eq!(
                    check_client(p.bytes, level, max),
                    check_client(buf, level, max)
                );
                for cut in 0..p.len {
                    assert_eq!(check_client(&buf[..cut], level, max), Frame::Incomplete);
                }
            }
            if let Frame::Complete(p) = check_server(buf, level, max) {
                assert!(p.len <= buf.len());
                assert_eq!(
                    check_server(p.bytes, level, max),
                    check_server(buf, level, max)
                );
                for cut in 0..p.len {
                    assert_eq!(check_server(&buf[..cut], level, max), Frame::Incomplete);
                }
            }
        }
    }
}

#[test]
fn relay_never_panics_on_mutated_or_random_input() {
    let packets = CLIENT_PACKETS
        .iter()
        .chain(SERVER_PACKETS)
        .map(|(_, _, p)| *p);
    for packet in packets {
        let packet = with_trailer(packet);
        for i in 0..packet.len() {
            for value in [
                0x00,
                0x01,
                0x02,
                0x7F,
                0x80,
                0xFF,
                packet[i] ^ 0x01,
                packet[i] ^ 0x80,
            ] {
                let mut bad = packet.clone();
                bad[i] = value;
                check_invariants(&bad);
                check_invariants(&bad[..i]);
            }
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = (rng.next() % 24) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Small remaining lengths, so that random bytes complete packets.
        if buf.len() > 1 {
            buf[1] &= 0x1F;
        }
        check_invariants(&buf);
    }
}

/// Our 3.1.1 PUBLISH and SUBSCRIBE parsing against `mqttbytes` (rumqtt's
/// standalone codec): where both accept a packet they agree on every
/// field and on its length; every packet we accept, it accepts; and where
/// only it accepts, our refusal is one of the checks it does not make.
#[test]
fn relay_differential_against_mqttbytes() {
    use bytes::BytesMut;
    use mqttbytes::v4;
    use mqttbytes::QoS;

    // Checks mqttbytes 0.6 leaves out (it reads any SUBSCRIBE flags, packet
    // id 0 in a SUBSCRIBE, option bits above the QoS, any filter, an empty
    // filter list, wildcards, DUP at QoS 0 or NUL in a PUBLISH topic, and
    // lengths not in their shortest form).
    let stricter = [
        "PUBLISH QoS 0 with DUP set",
        "wildcard in a PUBLISH topic name",
        "empty topic name without a topic alias",
        "string is not valid UTF-8", // ours also refuses U+0000
        "PUBREL, SUBSCRIBE and UNSUBSCRIBE flags must be 0010",
        "packet identifier 0",
        "reserved subscription option bits",
        "invalid topic filter",
        "SUBSCRIBE without a topic filter",
        // mqttbytes reads a length in a longer form than needed.
        crate::mqtt::codec::NOT_MINIMAL,
    ];

    let mut inputs: Vec<Vec<u8>> = vec![
        PUBLISH_V311_QOS0.to_vec(),
        PUBLISH_V311_QOS1.to_vec(),
        PUBLISH_V311_QOS2.to_vec(),
        SUBSCRIBE_V311.to_vec(),
    ];
    let long_payload = vec![b'p'; 300];
    for topic in ["a", "a/b", "/", "a//b", "$SYS/x", "ü/ñ", "x/+", "#", ""] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for payload in [&b""[..], b"on", &long_payload] {
                for (retain, dup) in [(false, false), (true, false), (false, true)] {
                    let mut p = v4::Publish::new(topic, qos, payload);
                    p.pkid = if qos == QoS::AtMostOnce { 0 } else { 0x0102 };
                    p.retain = retain;
                    p.dup = dup;
                    let mut b = BytesMut::new();
                    p.write(&mut b).unwrap();
                    inputs.push(b.to_vec());
                }
            }
        }
    }
    for filters in [
        vec![("a/+", QoS::AtLeastOnce)],
        vec![("#", QoS::AtMostOnce), ("b/c", QoS::ExactlyOnce)],
        vec![("a/b#", QoS::AtMostOnce)],
        vec![(&*"z".repeat(200), QoS::AtLeastOnce), ("", QoS::AtMostOnce)],
    ] {
        let mut s = v4::Subscribe::new_many(
            filters
                .iter()
                .map(|(f, q)| v4::SubscribeFilter::new((*f).to_owned(), *q)),
        );
        s.pkid = 42;
        let mut b = BytesMut::new();
        s.write(&mut b).unwrap();
        // Our encoder writes the same bytes.
        let ours: Vec<(&str, u8)> = filters.iter().map(|(f, q)| (*f, *q as u8)).collect();
        assert_eq!(encode_subscribe(V311, 42, &[], &ours), b.to_vec());
        inputs.push(b.to_vec());
    }
    // Every single-byte mutation of each, too.
    let originals = inputs.clone();
    for packet in &originals {
        for i in 0..packet.len() {
            for value in [0x00, 0xFF, b'+', b'#', packet[i] ^ 0x01, packet[i] ^ 0x08] {
                let mut bad = packet.clone();
                bad[i] = value;
                inputs.push(bad);
            }
        }
    }

    let (mut both, mut only_theirs) = (0, 0);
    for input in &inputs {
        let mut stream = BytesMut::from(&input[..]);
        let theirs = v4::read(&mut stream, DEFAULT_MAX_PACKET);
        let consumed = input.len() - stream.len();
        match (check_client(input, V311, DEFAULT_MAX_PACKET), theirs) {
            (Frame::Complete(p), Ok(v4::Packet::Publish(t))) => {
                let ClientPacket::Publish(o) = p.kind else {
                    panic!("{input:?}: {:?}", p.kind);
                };
                assert_eq!(p.len, consumed, "{input:?}");
                assert_eq!(o.topic, t.topic, "{input:?}");
                assert_eq!(o.qos, t.qos as u8, "{input:?}");
                assert_eq!((o.retain, o.dup), (t.retain, t.dup), "{input:?}");
                assert_eq!(o.packet_id.unwrap_or(0), t.pkid, "{input:?}");
                assert_eq!(o.payload, &t.payload[..], "{input:?}");
                both += 1;
            }
            (Frame::Complete(p), Ok(v4::Packet::Subscribe(t))) => {
                let ClientPacket::Subscribe(o) = p.kind else {
                    panic!("{input:?}: {:?}", p.kind);
                };
                assert_eq!(p.len, consumed, "{input:?}");
                assert_eq!(o.packet_id, t.pkid, "{input:?}");
                let theirs: Vec<(&str, u8)> = t
                    .filters
                    .iter()
                    .map(|f| (f.path.as_str(), f.qos as u8))
                    .collect();
                assert_eq!(o.filters, theirs, "{input:?}");
                both += 1;
            }
            (Frame::Complete(p), theirs) => {
                // Other packet types: only that mqttbytes accepts them too.
                assert!(
                    theirs.is_ok(),
                    "{input:?}: we accept {:?}, mqttbytes {theirs:?}",
                    p.kind
                );
            }
            (Frame::Invalid(e), Ok(v4::Packet::Publish(_) | v4::Packet::Subscribe(_))) => {
                let reason = match e {
                    RelayError::Malformed(r) | RelayError::Protocol(r) => r,
                    RelayError::TooLarge { .. } => "too large",
                };
                assert!(stricter.contains(&reason), "{input:?}: only we refuse: {e}");
                only_theirs += 1;
            }
            (Frame::Incomplete, theirs) => {
                assert!(
                    matches!(theirs, Err(mqttbytes::Error::InsufficientBytes(_))),
                    "{input:?}: incomplete for us, {theirs:?} for mqttbytes"
                );
            }
            (Frame::Invalid(_), _) => {}
        }
    }
    // The comparison is not vacuous.
    assert!(both > 300, "{both}");
    assert!(only_theirs > 10, "{only_theirs}");
}

/// Regression (fuzzing, `relay_codec`: the SUBACK and SUBSCRIBE round
/// trips): lengths in a longer form than needed were read as the same
/// number, so the re-encoded SUBACK differed from the broker's bytes.
/// Every variable byte integer must now be in its shortest form
/// (MQTT-1.5.5-1), in both directions.
#[test]
fn relay_lengths_must_be_in_their_shortest_form() {
    let not_minimal = RelayError::Malformed(crate::mqtt::codec::NOT_MINIMAL);
    // The broker's SUBACK with remaining length 5 spelled 0x85 0x00.
    let mut suback = vec![0x90, 0x85, 0x00];
    suback.extend_from_slice(&SUBACK_V311[2..]);
    assert_eq!(
        check_server(&suback, V311, DEFAULT_MAX_PACKET),
        Frame::Invalid(not_minimal.clone())
    );
    // The client's v5 SUBSCRIBE with its property length 2 spelled 0x82 0x00.
    let mut subscribe = SUBSCRIBE_V5.to_vec();
    subscribe[1] += 1;
    subscribe.splice(4..5, [0x82, 0x00]);
    assert_eq!(client_error(&subscribe, V5), not_minimal);
    assert_eq!(client_error(&subscribe, V5).reason_code(), 0x81);
    // The shortest forms still parse, at each width.
    assert_eq!(server(SUBACK_V311, V311).len, SUBACK_V311.len());
    let mut big = vec![0x30, 0x80, 0x01]; // PUBLISH, remaining length 128
    big.extend_from_slice(&[0x00, 0x01, b't']);
    big.resize(3 + 128, b'x');
    assert_eq!(client(&big, V311).len, big.len());
}
