//! The sans-IO codec for the MQTT packets relayed after CONNECT, in both
//! directions, for MQTT 3.1 and 3.1.1 (handled alike) and MQTT 5.
//!
//! Once a CONNECT is accepted ([`super::codec`]), a session that enforces a
//! user's topic permissions ([`fleetgate_registry::topic::PermissionSet`])
//! must see the topic of every PUBLISH and the filters of every SUBSCRIBE
//! the client sends, and must answer for the filters it refuses. This module
//! frames and parses those packets; it does no I/O and keeps no state (a v5
//! topic alias is reported, not resolved: the session owns the alias map).
//!
//! [`check_client`] and [`check_server`] look at the bytes received so far
//! and answer [`Frame::Complete`] (with the packet's length: bytes after it
//! belong to the next packet), [`Frame::Incomplete`] (a normal state: read
//! more), or [`Frame::Invalid`] (close the connection; a v5 client can first
//! be sent a DISCONNECT with [`RelayError::reason_code`]). The declared
//! remaining length is checked against the cap as soon as its
//! variable-length encoding is complete, so an oversized packet is refused
//! before a single payload byte is buffered.
//!
//! The two directions are checked differently. The client is untrusted, so
//! [`check_client`] is strict: reserved flag bits, QoS, packet identifiers,
//! topic and filter syntax, the v5 property grammar (known identifiers, the
//! ones allowed in that packet, no repeats), and which packet types a client
//! may send at all. The broker is trusted, so [`check_server`] only frames
//! (still with the cap) and parses SUBACK, the one packet the gateway may
//! have to rewrite.
//!
//! Refusing: the encoders build the packets the gateway sends itself. A
//! SUBSCRIBE with some filters refused is forwarded with only the allowed
//! ones ([`encode_subscribe`]), and the broker's SUBACK gets the gateway's
//! codes put back at the refused filters' positions ([`merge_suback`],
//! [`encode_suback`]); if every filter is refused, the gateway answers the
//! SUBACK itself. A refused QoS 1 or 2 PUBLISH is acknowledged with
//! [`NOT_AUTHORIZED_V5`] in v5 ([`encode_puback`], [`encode_pubrec`]); MQTT
//! 3.1.1 has no way to refuse a PUBLISH, so the session either acknowledges
//! and drops it or closes the connection. MQTT 3.1 predates the SUBACK
//! failure code 0x80; [`suback_refusal`] gives it to 3.1 clients too, there
//! being no better answer in that version.

use std::str;

use fleetgate_registry::topic::{valid_filter, valid_topic_name};

use super::codec::{remaining_length, Level, NOT_MINIMAL};

/// The largest remaining length (the packet after its fixed header)
/// accepted by default in either direction: 256 KiB, far beyond a device's
/// telemetry message, and a bound on what one connection makes the worker
/// buffer.
pub const DEFAULT_MAX_PACKET: usize = 256 * 1024;

/// The SUBACK return code for a refused filter in MQTT 3.1.1.
pub const SUBACK_FAILURE_V311: u8 = 0x80;

/// The MQTT 5 reason code "Not authorized", for SUBACK, PUBACK and PUBREC.
pub const NOT_AUTHORIZED_V5: u8 = 0x87;

/// The SUBACK code for a filter the gateway refuses, at `level`.
pub fn suback_refusal(level: Level) -> u8 {
    match level {
        Level::V5 => NOT_AUTHORIZED_V5,
        Level::V31 | Level::V311 => SUBACK_FAILURE_V311,
    }
}

/// The largest remaining length the variable-length encoding can express.
const MAX_ENCODABLE_REMAINING: usize = 268_435_455;

/// Control packet types (the fixed header's high nibble).
mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}
use packet_type::*;

/// Why a relayed packet was refused. The variant decides the MQTT 5
/// DISCONNECT reason code ([`reason_code`](Self::reason_code)); the
/// direction (client or broker) is the caller's, who knows which side it
/// was reading.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The declared remaining length is over the cap (v5: 0x95 Packet too
    /// large). Detected from the fixed header alone.
    #[error("declared remaining length {declared} is over the limit of {limit}")]
    TooLarge { declared: usize, limit: usize },
    /// The bytes break the packet grammar (v5: 0x81 Malformed Packet).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that is not allowed here: a second CONNECT, a
    /// server-only packet from the client, a property the packet may not
    /// carry (v5: 0x82 Protocol Error).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl RelayError {
    /// The MQTT 5 DISCONNECT reason code for this error. MQTT 3.1.1 has no
    /// such packet from the server: the connection is just closed.
    pub fn reason_code(&self) -> u8 {
        match self {
            RelayError::TooLarge { .. } => 0x95,
            RelayError::Malformed(_) => 0x81,
            RelayError::Protocol(_) => 0x82,
        }
    }
}

type Result<T> = std::result::Result<T, RelayError>;

/// One framed packet. `K` is [`ClientPacket`] for [`check_client`] and
/// [`ServerPacket`] for [`check_server`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'b, K = ClientPacket<'b>> {
    /// Bytes of the buffer the packet uses, fixed header included; the
    /// next packet starts here.
    pub len: usize,
    /// The packet's bytes (`&buf[..len]`), for forwarding it unchanged.
    pub bytes: &'b [u8],
    /// What the packet is, as far as the gateway cares.
    pub kind: K,
}

/// The outcome of looking at the buffered bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'b, K = ClientPacket<'b>> {
    Complete(Packet<'b, K>),
    /// More bytes are needed; nothing is wrong yet.
    Incomplete,
    Invalid(RelayError),
}

/// A client's PUBLISH, borrowing from the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish<'b> {
    /// The topic name; empty only in v5 when `topic_alias` stands for it.
    pub topic: &'b str,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    /// Present exactly when `qos` is 1 or 2; never 0.
    pub packet_id: Option<u16>,
    /// The v5 Topic Alias property (0x23); never 0.
    pub topic_alias: Option<u16>,
    /// The application message.
    pub payload: &'b [u8],
}

/// A client's SUBSCRIBE, borrowing from the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe<'b> {
    pub packet_id: u16,
    /// v5: the property bytes without their length prefix, to forward them
    /// with [`encode_subscribe`]; empty for 3.1.1.
    pub properties: &'b [u8],
    /// Each topic filter with its subscription options byte (3.1.1: the
    /// requested QoS; v5: QoS, No Local, Retain As Published, Retain
    /// Handling). At least one; every filter is syntactically valid.
    pub filters: Vec<(&'b str, u8)>,
}

/// A client→broker packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPacket<'b> {
    Publish(Publish<'b>),
    Subscribe(Subscribe<'b>),
    Unsubscribe {
        packet_id: u16,
        filters: Vec<&'b str>,
    },
    Disconnect,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ or (v5) AUTH: checked, and
    /// forwarded unchanged.
    Other,
}

/// A broker→client packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPacket<'b> {
    Suback {
        packet_id: u16,
        /// v5 properties without their length prefix; empty for 3.1.1.
        properties: &'b [u8],
        /// One return or reason code per filter of the SUBSCRIBE.
        codes: &'b [u8],
    },
    /// Everything else, forwarded unchanged.
    Other,
}

/// A cursor over a packet's variable header and payload. Every read is
/// bounds-checked; running past the end is [`RelayError::Malformed`].
struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn new(buf: &'b [u8]) -> Reader<'b> {
        Reader { buf, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Result<&'b [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RelayError::Malformed("field runs past the packet"))?;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or(RelayError::Malformed("field runs past the packet"))?;
        self.pos = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A packet identifier, which is never 0 (MQTT-2.3.1-1).
    fn packet_id(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(RelayError::Malformed("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// Two-byte length, then that many bytes.
    fn binary(&mut self) -> Result<&'b [u8]> {
        let n = usize::from(self.u16()?);
        self.bytes(n)
    }

    /// An MQTT UTF-8 string: valid UTF-8 without U+0000 (MQTT-1.5.3-2).
    fn string(&mut self) -> Result<&'b str> {
        match str::from_utf8(self.binary()?) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => Err(RelayError::Malformed("string is not valid UTF-8")),
        }
    }

    /// A variable byte integer (at most 4 bytes).
    fn varint(&mut self) -> Result<usize> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(RelayError::Malformed(NOT_MINIMAL));
                }
                return Ok(value);
            }
        }
        Err(RelayError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    fn rest(&mut self) -> &'b [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    fn end(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(RelayError::Malformed("bytes left over after the packet"))
        }
    }
}

/// How a v5 property's value is encoded (MQTT 5 §2.2.2.2).
enum Value {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    Utf8,
    Binary,
    Utf8Pair,
}

const PAYLOAD_FORMAT: u8 = 0x01;
const SUBSCRIPTION_ID: u8 = 0x0B;
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;

/// The encoding of every property MQTT 5 defines; `None` for unknown
/// identifiers (all defined ones are below 0x40, so they fit a `u64` mask).
fn value_of(id: u8) -> Option<Value> {
    Some(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Value::Byte,
        0x13 | 0x21 | 0x22 | 0x23 => Value::TwoByte,
        0x02 | 0x11 | 0x18 | 0x27 => Value::FourByte,
        0x0B => Value::VarInt,
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Value::Utf8,
        0x09 | 0x16 => Value::Binary,
        0x26 => Value::Utf8Pair,
        _ => return None,
    })
}

/// A set of property identifiers, one bit each.
const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

// The properties a client may send in each packet (MQTT 5 §3.x.2.2).
// Subscription Identifier in a PUBLISH is server→client only (MQTT-3.3.4-6);
// Server Reference in a DISCONNECT is server→client only.
const PUBLISH_PROPS: u64 = mask(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x23, 0x26]);
const SUBSCRIBE_PROPS: u64 = mask(&[0x0B, 0x26]);
const UNSUBSCRIBE_PROPS: u64 = mask(&[0x26]);
const ACK_PROPS: u64 = mask(&[0x1F, 0x26]);
const DISCONNECT_PROPS: u64 = mask(&[0x11, 0x1F, 0x26]);
const AUTH_PROPS: u64 = mask(&[0x15, 0x16, 0x1F, 0x26]);

/// A packet's v5 property block: the raw bytes and what the gateway reads
/// from them.
#[derive(Default)]
struct Properties<'b> {
    raw: &'b [u8],
    topic_alias: Option<u16>,
}

/// Reads a property length and walks the properties it covers: each must be
/// known, allowed in this packet, and (except User Property) not repeated
/// (MQTT 5 §2.2.2.2), and each value must fit inside the block.
fn properties<'b>(r: &mut Reader<'b>, allowed: u64) -> Result<Properties<'b>> {
    let n = r.varint()?;
    if n > r.remaining() {
        return Err(RelayError::Malformed(
            "property length runs past the packet",
        ));
    }
    let raw = r.bytes(n)?;
    let mut p = Reader::new(raw);
    let mut seen = 0u64;
    let mut topic_alias = None;
    while !p.is_empty() {
        let id = p.u8()?;
        let value = value_of(id).ok_or(RelayError::Malformed("unknown property"))?;
        let bit = 1u64 << id;
        if allowed & bit == 0 {
            return Err(RelayError::Protocol("property not allowed in this packet"));
        }
        if seen & bit != 0 && id != USER_PROPERTY {
            return Err(RelayError::Protocol("property repeated"));
        }
        seen |= bit;
        match value {
            Value::Byte => {
                let b = p.u8()?;
                if id == PAYLOAD_FORMAT && b > 1 {
                    return Err(RelayError::Protocol("payload format indicator above 1"));
                }
            }
            Value::TwoByte => {
                let v = p.u16()?;
                if id == TOPIC_ALIAS {
                    if v == 0 {
                        return Err(RelayError::Protocol("topic alias 0"));
                    }
                    topic_alias = Some(v);
                }
            }
            Value::FourByte => {
                p.bytes(4)?;
            }
            Value::VarInt => {
                if p.varint()? == 0 && id == SUBSCRIPTION_ID {
                    return Err(RelayError::Protocol("subscription identifier 0"));
                }
            }
            Value::Utf8 => {
                p.string()?;
            }
            Value::Binary => {
                p.binary()?;
            }
            Value::Utf8Pair => {
                p.string()?;
                p.string()?;
            }
        }
    }
    Ok(Properties { raw, topic_alias })
}

/// Frames the packet at the front of `buf`: `Ok(Some((header length, total
/// length)))` once it is all there, `Ok(None)` before. The cap is applied as
/// soon as the remaining length is known.
fn frame(buf: &[u8], max_remaining: usize) -> Result<Option<(usize, usize)>> {
    let (remaining, header) = match remaining_length(buf) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(e) => return Err(RelayError::Malformed(e.reason)),
    };
    if remaining > max_remaining {
        return Err(RelayError::TooLarge {
            declared: remaining,
            limit: max_remaining,
        });
    }
    let total = header + remaining;
    Ok((buf.len() >= total).then_some((header, total)))
}

/// Checks the client's fixed-header first byte, which is all it takes to
/// refuse a wrong packet type or reserved flags.
fn check_client_first_byte(first: u8, level: Level) -> Result<()> {
    let flags = first & 0x0f;
    match first >> 4 {
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(RelayError::Malformed("PUBLISH QoS 3"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(RelayError::Malformed("PUBLISH QoS 0 with DUP set"));
            }
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags == 0b0010 => Ok(()),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Err(RelayError::Malformed(
            "PUBREL, SUBSCRIBE and UNSUBSCRIBE flags must be 0010",
        )),
        PUBACK | PUBREC | PUBCOMP | PINGREQ | DISCONNECT if flags == 0 => Ok(()),
        AUTH if level == Level::V5 && flags == 0 => Ok(()),
        PUBACK | PUBREC | PUBCOMP | PINGREQ | DISCONNECT => {
            Err(RelayError::Malformed("reserved fixed-header flags are set"))
        }
        AUTH if level == Level::V5 => {
            Err(RelayError::Malformed("reserved fixed-header flags are set"))
        }
        CONNECT => Err(RelayError::Protocol("a second CONNECT")),
        CONNACK | SUBACK | UNSUBACK | PINGRESP => {
            Err(RelayError::Protocol("a server-only packet from the client"))
        }
        // Type 0, and 15 (AUTH) before MQTT 5.
        _ => Err(RelayError::Malformed("reserved packet type")),
    }
}

/// Looks at the client→broker bytes at the front of `buf` (after the
/// CONNECT). `level` is the CONNECT's protocol level; `max_remaining` caps
/// the remaining length ([`DEFAULT_MAX_PACKET`]).
pub fn check_client(buf: &[u8], level: Level, max_remaining: usize) -> Frame<'_> {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    if let Err(e) = check_client_first_byte(first, level) {
        return Frame::Invalid(e);
    }
    let (header, total) = match frame(buf, max_remaining) {
        Ok(Some(v)) => v,
        Ok(None) => return Frame::Incomplete,
        Err(e) => return Frame::Invalid(e),
    };
    match client_body(first, &buf[header..total], level == Level::V5) {
        Ok(kind) => Frame::Complete(Packet {
            len: total,
            bytes: &buf[..total],
            kind,
        }),
        Err(e) => Frame::Invalid(e),
    }
}

/// Parses a client packet's body; the first byte is already checked.
fn client_body(first: u8, body: &[u8], v5: bool) -> Result<ClientPacket<'_>> {
    let mut r = Reader::new(body);
    let packet = match first >> 4 {
        PUBLISH => ClientPacket::Publish(publish(first, &mut r, v5)?),
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            r.packet_id()?;
            // v5: an optional reason code, then optional properties
            // (MQTT 5 §3.4.2.1: absent when the remaining length is short).
            if v5 && !r.is_empty() {
                r.u8()?;
                if !r.is_empty() {
                    properties(&mut r, ACK_PROPS)?;
                }
            }
            ClientPacket::Other
        }
        SUBSCRIBE => ClientPacket::Subscribe(subscribe(&mut r, v5)?),
        UNSUBSCRIBE => unsubscribe(&mut r, v5)?,
        PINGREQ => ClientPacket::Other,
        DISCONNECT => {
            reason_and_properties(&mut r, v5, DISCONNECT_PROPS)?;
            ClientPacket::Disconnect
        }
        AUTH => {
            reason_and_properties(&mut r, v5, AUTH_PROPS)?;
            ClientPacket::Other
        }
        _ => return Err(RelayError::Malformed("reserved packet type")),
    };
    r.end()?;
    Ok(packet)
}

/// DISCONNECT and AUTH: nothing before v5; in v5 an optional reason code,
/// then optional properties.
fn reason_and_properties(r: &mut Reader<'_>, v5: bool, allowed: u64) -> Result<()> {
    if v5 && !r.is_empty() {
        r.u8()?;
        if !r.is_empty() {
            properties(r, allowed)?;
        }
    }
    Ok(())
}

fn publish<'b>(first: u8, r: &mut Reader<'b>, v5: bool) -> Result<Publish<'b>> {
    let qos = (first >> 1) & 0x03;
    let topic = r.string()?;
    let packet_id = if qos > 0 { Some(r.packet_id()?) } else { None };
    let props = if v5 {
        properties(r, PUBLISH_PROPS)?
    } else {
        Properties::default()
    };
    if topic.is_empty() {
        if props.topic_alias.is_none() {
            return Err(RelayError::Protocol(
                "empty topic name without a topic alias",
            ));
        }
    } else if !valid_topic_name(topic) {
        return Err(RelayError::Malformed("wildcard in a PUBLISH topic name"));
    }
    Ok(Publish {
        topic,
        qos,
        retain: first & 0x01 != 0,
        dup: first & 0x08 != 0,
        packet_id,
        topic_alias: props.topic_alias,
        payload: r.rest(),
    })
}

/// Checks a subscription options byte (3.1.1 §3.8.3.1, 5 §3.8.3.1).
fn check_options(options: u8, v5: bool) -> Result<()> {
    if options & 0x03 == 3 {
        return Err(RelayError::Malformed("subscription QoS 3"));
    }
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if options & reserved != 0 {
        return Err(RelayError::Malformed("reserved subscription option bits"));
    }
    if v5 && (options >> 4) & 0x03 == 3 {
        return Err(RelayError::Protocol("retain handling 3"));
    }
    Ok(())
}

fn topic_filter<'b>(r: &mut Reader<'b>) -> Result<&'b str> {
    let filter = r.string()?;
    if valid_filter(filter) {
        Ok(filter)
    } else {
        Err(RelayError::Malformed("invalid topic filter"))
    }
}

fn subscribe<'b>(r: &mut Reader<'b>, v5: bool) -> Result<Subscribe<'b>> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        properties(r, SUBSCRIBE_PROPS)?.raw
    } else {
        &[]
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = topic_filter(r)?;
        let options = r.u8()?;
        check_options(options, v5)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        // MQTT-3.8.3-3.
        return Err(RelayError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsubscribe<'b>(r: &mut Reader<'b>, v5: bool) -> Result<ClientPacket<'b>> {
    let packet_id = r.packet_id()?;
    if v5 {
        properties(r, UNSUBSCRIBE_PROPS)?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(topic_filter(r)?);
    }
    if filters.is_empty() {
        // MQTT-3.10.3-2.
        return Err(RelayError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(ClientPacket::Unsubscribe { packet_id, filters })
}

/// Looks at the broker→client bytes at the front of `buf`. Only framing is
/// checked (with the cap), except for SUBACK, which is parsed.
pub fn check_server(buf: &[u8], level: Level, max_remaining: usize) -> Frame<'_, ServerPacket<'_>> {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    let (header, total) = match frame(buf, max_remaining) {
        Ok(Some(v)) => v,
        Ok(None) => return Frame::Incomplete,
        Err(e) => return Frame::Invalid(e),
    };
    let kind = if first >> 4 == SUBACK {
        match suback(&buf[header..total], level == Level::V5) {
            Ok(kind) => kind,
            Err(e) => return Frame::Invalid(e),
        }
    } else {
        ServerPacket::Other
    };
    Frame::Complete(Packet {
        len: total,
        bytes: &buf[..total],
        kind,
    })
}

fn suback(body: &[u8], v5: bool) -> Result<ServerPacket<'_>> {
    let mut r = Reader::new(body);
    let packet_id = r.u16()?;
    let properties = if v5 {
        // The broker is trusted: the block is framed, not walked.
        let n = r.varint()?;
        r.bytes(n)?
    } else {
        &[]
    };
    Ok(ServerPacket::Suback {
        packet_id,
        properties,
        codes: r.rest(),
    })
}

/// Bytes of the variable-length encoding of `n`.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A buffer holding a fixed header for `remaining` bytes to follow.
///
/// Panics if `remaining` exceeds what MQTT can encode; the encoders' inputs
/// come from parsed packets, which are far smaller.
fn with_header(first: u8, remaining: usize) -> Vec<u8> {
    assert!(
        remaining <= MAX_ENCODABLE_REMAINING,
        "MQTT packet too large to encode"
    );
    let mut out = Vec::with_capacity(1 + varint_len(remaining) + remaining);
    out.push(first);
    put_varint(&mut out, remaining);
    out
}

/// The length of a v5 property block with its length prefix (0 before v5).
fn properties_len(level: Level, properties: &[u8]) -> usize {
    match level {
        Level::V5 => varint_len(properties.len()) + properties.len(),
        Level::V31 | Level::V311 => 0,
    }
}

fn put_properties(out: &mut Vec<u8>, level: Level, properties: &[u8]) {
    if level == Level::V5 {
        put_varint(out, properties.len());
        out.extend_from_slice(properties);
    }
}

/// Encodes a SUBSCRIBE (to forward the allowed filters of a client's
/// SUBSCRIBE, with its packet id and v5 properties). `properties` is
/// ignored before v5; `filters` must not be empty for the packet to be
/// valid (when every filter is refused, nothing is forwarded).
///
/// # Panics
/// If a filter is longer than 65535 bytes, which no parsed filter is.
pub fn encode_subscribe(
    level: Level,
    packet_id: u16,
    properties: &[u8],
    filters: &[(&str, u8)],
) -> Vec<u8> {
    let remaining = 2
        + properties_len(level, properties)
        + filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>();
    let mut out = with_header((SUBSCRIBE << 4) | 0b0010, remaining);
    out.extend_from_slice(&packet_id.to_be_bytes());
    put_properties(&mut out, level, properties);
    for (filter, options) in filters {
        let len = u16::try_from(filter.len()).expect("a topic filter fits a two-byte length");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(filter.as_bytes());
        out.push(*options);
    }
    out
}

/// Encodes a SUBACK (the broker's with the gateway's codes merged in, or
/// the gateway's own when every filter was refused). `properties` is
/// ignored before v5.
pub fn encode_suback(level: Level, packet_id: u16, properties: &[u8], codes: &[u8]) -> Vec<u8> {
    let remaining = 2 + properties_len(level, properties) + codes.len();
    let mut out = with_header(SUBACK << 4, remaining);
    out.extend_from_slice(&packet_id.to_be_bytes());
    put_properties(&mut out, level, properties);
    out.extend_from_slice(codes);
    out
}

/// PUBACK and PUBREC share a layout: packet id, then in v5 the reason code
/// and an empty property block (always written, never the short forms, so
/// one layout serves every reason code).
fn encode_ack(first: u8, level: Level, packet_id: u16, reason: u8) -> Vec<u8> {
    let [hi, lo] = packet_id.to_be_bytes();
    match level {
        // Remaining length 4: packet id, reason code, property length 0.
        Level::V5 => vec![first, 0x04, hi, lo, reason, 0x00],
        // Remaining length 2: packet id; 3.1.1 has no reason code.
        Level::V31 | Level::V311 => vec![first, 0x02, hi, lo],
    }
}

/// Encodes a PUBACK (the answer to a QoS 1 PUBLISH). `reason` is sent in v5
/// only (e.g. [`NOT_AUTHORIZED_V5`]).
pub fn encode_puback(level: Level, packet_id: u16, reason: u8) -> Vec<u8> {
    encode_ack(PUBACK << 4, level, packet_id, reason)
}

/// Encodes a PUBREC (the first answer to a QoS 2 PUBLISH). `reason` is sent
/// in v5 only; a reason of 0x80 or above ends the QoS 2 flow there.
pub fn encode_pubrec(level: Level, packet_id: u16, reason: u8) -> Vec<u8> {
    encode_ack(PUBREC << 4, level, packet_id, reason)
}

/// The SUBACK codes for the client's whole SUBSCRIBE: `broker_codes`
/// answered the forwarded filters in order, and `denied` holds (index in
/// the client's SUBSCRIBE, code) for each refused filter, sorted by index.
/// An index past the end (a broker that answered fewer codes than it was
/// sent) puts its code at the end; nothing is dropped.
pub fn merge_suback(broker_codes: &[u8], denied: &[(usize, u8)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(broker_codes.len() + denied.len());
    let mut broker = broker_codes.iter();
    let mut denied = denied.iter().peekable();
    loop {
        if let Some(&(_, code)) = denied.next_if(|(index, _)| *index <= out.len()) {
            out.push(code);
        } else if let Some(&code) = broker.next() {
            out.push(code);
        } else {
            break;
        }
    }
    out.extend(denied.map(|&(_, code)| code));
    out
}

#[cfg(test)]
mod tests;
