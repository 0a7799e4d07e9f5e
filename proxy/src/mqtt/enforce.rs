//! The permission-enforcing relay's decisions, sans-IO: what happens to the
//! bytes of each direction once a CONNECT is let through.
//!
//! [`Enforcer::from_client`] takes the bytes a client sent, frames them
//! packet by packet with [`super::relay::check_client`] (a partial packet is
//! kept until the rest arrives), and leaves in its buffer only what the
//! broker may see:
//! - a PUBLISH to a topic the user may not write is dropped. MQTT 5 QoS 1
//!   gets `PUBACK` and QoS 2 `PUBREC`, reason 0x87, from the gateway; MQTT
//!   3.1.1 QoS 1/2 is acknowledged the same way without a reason (or the
//!   connection is closed, with `--mqtt-deny-publish disconnect`);
//! - a SUBSCRIBE keeps only the filters the user may read in full
//!   ([`fleetgate_registry::topic::PermissionSet::can_subscribe`]); the
//!   denied ones are remembered by packet id, and
//!   [`Enforcer::from_broker`] merges their refusal codes into the broker's
//!   `SUBACK` at their original positions. A SUBSCRIBE with nothing allowed
//!   is answered by the gateway alone;
//! - everything else passes unchanged.
//!
//! The broker → client direction is framed only to find those `SUBACK`s;
//! every other packet is copied as it came. Nothing here does I/O, so the
//! TCP and the TLS relays share it, and the tests drive it with bytes.

use std::collections::HashMap;
use std::sync::Arc;

use fleetgate_registry::topic::PermissionSet;

use super::codec::Level;
use super::relay::{
    check_client, check_server, encode_puback, encode_pubrec, encode_suback, encode_subscribe,
    merge_suback, ClientPacket, Frame, RelayError, ServerPacket, NOT_AUTHORIZED_V5,
    SUBACK_FAILURE_V311,
};

/// What MQTT 3.1.1 does with a denied PUBLISH (`--mqtt-deny-publish`).
/// MQTT 5 always acknowledges with reason 0x87.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenyPublish {
    /// Acknowledge (QoS 1/2) and discard, as Mosquitto does
    /// ([MQTT-3.3.5-2] allows either).
    #[default]
    Ack,
    /// Close the connection.
    Disconnect,
}

/// Why the relay ends a session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    #[error("from the client: {0}")]
    Client(RelayError),
    #[error("from the broker: {0}")]
    Broker(RelayError),
    #[error("publish denied and --mqtt-deny-publish disconnect")]
    DeniedPublish,
    #[error("more than {MAX_OPEN_SUBSCRIBES} SUBSCRIBEs await their SUBACK")]
    TooManySubscribes,
}

/// Denials of one session, for the metrics (the caller adds them to its
/// counters after each call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denials {
    pub publishes: u64,
    pub filters: u64,
}

/// Partially refused SUBSCRIBEs awaiting the broker's SUBACK, per session.
/// A client could send SUBSCRIBEs without ever reading; this bounds what is
/// remembered for it.
pub const MAX_OPEN_SUBSCRIBES: usize = 1024;

/// One relayed session's enforcement state.
pub struct Enforcer {
    level: Level,
    max_remaining: usize,
    deny_publish: DenyPublish,
    /// What the user may do now; replaced when it changes.
    permissions: Arc<PermissionSet>,
    /// Bytes of a client packet not yet complete.
    client_carry: Vec<u8>,
    /// Bytes of a broker packet header (or of a SUBACK to merge) not yet
    /// complete.
    broker_carry: Vec<u8>,
    /// Bytes of the current broker packet still to pass through.
    broker_skip: usize,
    /// MQTT 5 topic aliases the client set (alias → topic).
    aliases: HashMap<u16, String>,
    /// Packet id → (original position, code) of each refused filter.
    open_subscribes: HashMap<u16, Vec<(usize, u8)>>,
    /// Gateway answers held until the broker's first packet (its CONNACK)
    /// has gone to the client.
    after_connack: Vec<u8>,
    /// Whether a whole broker packet (the CONNACK) has passed.
    connack_passed: bool,
    /// Denials since the caller last took them.
    pub denials: Denials,
}

/// Topic aliases a session may define (the broker's Topic Alias Maximum is
/// smaller; a client past it is in breach anyway).
const MAX_ALIASES: usize = 1024;

impl Enforcer {
    pub fn new(
        level: Level,
        max_remaining: usize,
        deny_publish: DenyPublish,
        permissions: Arc<PermissionSet>,
    ) -> Self {
        Enforcer {
            level,
            max_remaining,
            deny_publish,
            permissions,
            client_carry: Vec::new(),
            broker_carry: Vec::new(),
            broker_skip: 0,
            aliases: HashMap::new(),
            open_subscribes: HashMap::new(),
            after_connack: Vec::new(),
            connack_passed: false,
            denials: Denials::default(),
        }
    }

    /// Holds `answers` (to packets that came behind the CONNECT) until the
    /// broker's first bytes have gone to the client: no packet may reach a
    /// client before its CONNACK.
    pub fn answer_after_connack(&mut self, answers: Vec<u8>) {
        self.after_connack = answers;
    }

    /// Replaces the permissions; the next packet is judged by them.
    pub fn set_permissions(&mut self, permissions: Arc<PermissionSet>) {
        self.permissions = permissions;
    }

    /// `data` holds bytes the client sent; on return it holds what to send
    /// to the broker, and `to_client` what the gateway answers itself.
    pub fn from_client(
        &mut self,
        data: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) -> Result<(), Close> {
        if !self.client_carry.is_empty() {
            self.client_carry.extend_from_slice(data);
            std::mem::swap(&mut self.client_carry, data);
            self.client_carry.clear();
        }
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < data.len() {
            let packet = match check_client(&data[at..], self.level, self.max_remaining) {
                Frame::Complete(p) => p,
                Frame::Incomplete => break,
                Frame::Invalid(e) => return Err(Close::Client(e)),
            };
            let len = packet.len;
            let verdict = self.judge(packet.kind, to_client)?;
            match verdict {
                Verdict::Forward => {
                    if let Some(out) = out.as_mut() {
                        out.extend_from_slice(&data[at..at + len]);
                    }
                }
                Verdict::Drop => {
                    out.get_or_insert_with(|| data[..at].to_vec());
                }
                Verdict::Replace(bytes) => {
                    out.get_or_insert_with(|| data[..at].to_vec())
                        .extend_from_slice(&bytes);
                }
            }
            at += len;
        }
        // A partial packet waits for the rest.
        self.client_carry.extend_from_slice(&data[at..]);
        match out {
            Some(out) => *data = out,
            None => data.truncate(at),
        }
        Ok(())
    }

    fn judge(
        &mut self,
        packet: ClientPacket<'_>,
        to_client: &mut Vec<u8>,
    ) -> Result<Verdict, Close> {
        match packet {
            ClientPacket::Publish(p) => {
                let topic = if p.topic.is_empty() {
                    // MQTT 5: the topic is the alias's.
                    match p.topic_alias.and_then(|a| self.aliases.get(&a)) {
                        Some(t) => t.as_str(),
                        None => {
                            return Err(Close::Client(RelayError::Protocol("unknown topic alias")))
                        }
                    }
                } else {
                    if let Some(alias) = p.topic_alias {
                        if self.aliases.len() >= MAX_ALIASES && !self.aliases.contains_key(&alias) {
                            return Err(Close::Client(RelayError::Protocol(
                                "too many topic aliases",
                            )));
                        }
                        self.aliases.insert(alias, p.topic.to_owned());
                    }
                    p.topic
                };
                if self.permissions.can_publish(topic) {
                    return Ok(Verdict::Forward);
                }
                self.denials.publishes += 1;
                if self.level != Level::V5 && self.deny_publish == DenyPublish::Disconnect {
                    return Err(Close::DeniedPublish);
                }
                let reason = NOT_AUTHORIZED_V5;
                match (p.qos, p.packet_id) {
                    (1, Some(id)) => {
                        to_client.extend_from_slice(&encode_puback(self.level, id, reason))
                    }
                    (2, Some(id)) => {
                        to_client.extend_from_slice(&encode_pubrec(self.level, id, reason))
                    }
                    _ => {}
                }
                Ok(Verdict::Drop)
            }
            ClientPacket::Subscribe(s) => {
                let refusal = if self.level == Level::V5 {
                    NOT_AUTHORIZED_V5
                } else {
                    SUBACK_FAILURE_V311
                };
                let mut allowed = Vec::with_capacity(s.filters.len());
                let mut denied = Vec::new();
                for (i, (filter, options)) in s.filters.iter().enumerate() {
                    if self.permissions.can_subscribe(filter) {
                        allowed.push((*filter, *options));
                    } else {
                        denied.push((i, refusal));
                    }
                }
                self.denials.filters += denied.len() as u64;
                if denied.is_empty() {
                    return Ok(Verdict::Forward);
                }
                if allowed.is_empty() {
                    let codes: Vec<u8> = denied.iter().map(|(_, c)| *c).collect();
                    to_client.extend_from_slice(&encode_suback(
                        self.level,
                        s.packet_id,
                        &[],
                        &codes,
                    ));
                    return Ok(Verdict::Drop);
                }
                if self.open_subscribes.len() >= MAX_OPEN_SUBSCRIBES
                    && !self.open_subscribes.contains_key(&s.packet_id)
                {
                    return Err(Close::TooManySubscribes);
                }
                self.open_subscribes.insert(s.packet_id, denied);
                Ok(Verdict::Replace(encode_subscribe(
                    self.level,
                    s.packet_id,
                    s.properties,
                    &allowed,
                )))
            }
            _ => Ok(Verdict::Forward),
        }
    }

    /// `data` holds bytes the broker sent; on return it holds what to send
    /// to the client: the broker's packets as they came, except a `SUBACK`
    /// whose SUBSCRIBE was cut, which gets the refused codes merged in.
    ///
    /// Every packet boundary is tracked (a fixed header is read, then the
    /// packet's bytes pass without being buffered), so that a `SUBACK` is
    /// found wherever it starts; only a `SUBACK` that needs merging is
    /// buffered whole.
    pub fn from_broker(&mut self, data: &mut Vec<u8>) -> Result<(), Close> {
        if !self.broker_carry.is_empty() {
            self.broker_carry.extend_from_slice(data);
            std::mem::swap(&mut self.broker_carry, data);
            self.broker_carry.clear();
        }
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < data.len() {
            if self.broker_skip > 0 {
                let take = self.broker_skip.min(data.len() - at);
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&data[at..at + take]);
                }
                at += take;
                self.broker_skip -= take;
                continue;
            }
            let Some((first, total)) = fixed_header(&data[at..])? else {
                break;
            };
            if first >> 4 != SUBACK || self.open_subscribes.is_empty() {
                self.broker_skip = total;
                continue;
            }
            if total > self.max_remaining {
                return Err(Close::Broker(RelayError::Malformed(
                    "SUBACK over the packet cap",
                )));
            }
            if data.len() - at < total {
                break;
            }
            let packet = match check_server(&data[at..at + total], self.level, self.max_remaining) {
                Frame::Complete(p) => p,
                Frame::Incomplete => {
                    return Err(Close::Broker(RelayError::Malformed(
                        "SUBACK shorter than its length",
                    )))
                }
                Frame::Invalid(e) => return Err(Close::Broker(e)),
            };
            match packet.kind {
                ServerPacket::Suback {
                    packet_id,
                    properties,
                    codes,
                } if self.open_subscribes.contains_key(&packet_id) => {
                    let denied = self.open_subscribes.remove(&packet_id).unwrap_or_default();
                    let merged = merge_suback(codes, &denied);
                    out.get_or_insert_with(|| data[..at].to_vec())
                        .extend_from_slice(&encode_suback(
                            self.level, packet_id, properties, &merged,
                        ));
                }
                _ => {
                    if let Some(out) = out.as_mut() {
                        out.extend_from_slice(&data[at..at + total]);
                    }
                }
            }
            at += total;
        }
        self.broker_carry.extend_from_slice(&data[at..]);
        match out {
            Some(out) => *data = out,
            None => data.truncate(at),
        }
        if at > 0 && self.broker_skip == 0 {
            // A packet ended here: the CONNACK (the broker's first) is out.
            self.connack_passed = true;
        }
        if !self.after_connack.is_empty()
            && self.connack_passed
            && self.broker_skip == 0
            && self.broker_carry.is_empty()
        {
            // At a packet boundary, after the CONNACK: safe to add packets.
            data.append(&mut self.after_connack);
        }
        Ok(())
    }
}

/// The SUBACK packet type.
const SUBACK: u8 = 9;

/// The first byte and the whole length (fixed header included) of the
/// packet `buf` starts with, or `None` while its fixed header is incomplete.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize)>, Close> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, 2 + i + remaining)));
        }
    }
    Err(Close::Broker(RelayError::Malformed(
        "remaining length longer than 4 bytes",
    )))
}

enum Verdict {
    Forward,
    Drop,
    Replace(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use fleetgate_registry::model::{Operation, Permission, PermissionContext};

    use super::*;

    fn set(rules: &[(&str, Operation)]) -> Arc<PermissionSet> {
        let perms: Vec<Permission> = rules
            .iter()
            .map(|(r, op)| Permission {
                resource: (*r).into(),
                operation: *op,
                context: PermissionContext::Mqtt,
            })
            .collect();
        Arc::new(PermissionSet::compile("dev1", &perms))
    }

    fn enforcer(level: Level, rules: &[(&str, Operation)]) -> Enforcer {
        Enforcer::new(level, 1024, DenyPublish::Ack, set(rules))
    }

    /// A 3.1.1 PUBLISH: topic, then (QoS > 0) the packet id, then payload.
    fn publish(topic: &str, qos: u8, id: u16, payload: &[u8], v5: bool) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        if v5 {
            body.push(0); // no properties
        }
        body.extend_from_slice(payload);
        let mut p = vec![0x30 | (qos << 1), body.len() as u8];
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn allowed_packets_pass_unchanged_even_split_across_reads() {
        let mut e = enforcer(Level::V311, &[("devices/{username}/#", Operation::Write)]);
        let mut wire = publish("devices/dev1/t", 0, 0, b"21.5", false);
        wire.extend_from_slice(&publish("devices/dev1/u", 1, 4, b"x", false));
        wire.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
        for cut in 0..=wire.len() {
            let mut e2 = enforcer(Level::V311, &[("devices/{username}/#", Operation::Write)]);
            let (mut a, mut b) = (wire[..cut].to_vec(), wire[cut..].to_vec());
            let mut answers = Vec::new();
            e2.from_client(&mut a, &mut answers).unwrap();
            e2.from_client(&mut b, &mut answers).unwrap();
            a.extend_from_slice(&b);
            assert_eq!(a, wire, "cut at {cut}");
            assert!(answers.is_empty());
        }
        let mut whole = wire.clone();
        let mut answers = Vec::new();
        e.from_client(&mut whole, &mut answers).unwrap();
        assert_eq!(whole, wire);
    }

    #[test]
    fn a_denied_publish_is_dropped_and_acknowledged_by_the_gateway() {
        for (level, v5) in [(Level::V311, false), (Level::V5, true)] {
            let mut e = enforcer(level, &[("devices/{username}/#", Operation::Write)]);
            let allowed = publish("devices/dev1/t", 0, 0, b"ok", v5);
            let mut wire = publish("devices/dev2/t", 1, 9, b"spoof", v5);
            wire.extend_from_slice(&allowed);
            wire.extend_from_slice(&publish("other", 2, 10, b"spoof", v5));
            wire.extend_from_slice(&publish("other", 0, 0, b"spoof", v5));
            let mut answers = Vec::new();
            e.from_client(&mut wire, &mut answers).unwrap();
            assert_eq!(wire, allowed, "{level:?}: only the allowed PUBLISH goes on");
            let expected: Vec<u8> = if v5 {
                // reason 0x87, then an empty property list
                [[0x40, 4, 0, 9, 0x87, 0], [0x50, 4, 0, 10, 0x87, 0]].concat()
            } else {
                [[0x40, 2, 0, 9], [0x50, 2, 0, 10]].concat()
            };
            assert_eq!(answers, expected, "{level:?}");
            assert_eq!(e.denials.publishes, 3);
        }
        let mut e = Enforcer::new(Level::V311, 1024, DenyPublish::Disconnect, set(&[]));
        let mut wire = publish("x", 0, 0, b"", false);
        assert_eq!(
            e.from_client(&mut wire, &mut Vec::new()),
            Err(Close::DeniedPublish)
        );
    }

    #[test]
    fn a_mixed_subscribe_is_cut_and_its_suback_merged() {
        for level in [Level::V311, Level::V5] {
            let refused = if level == Level::V5 { 0x87 } else { 0x80 };
            let mut e = enforcer(level, &[("devices/{username}/#", Operation::Read)]);
            let props: &[u8] = &[];
            let filters = [("#", 0u8), ("devices/dev1/+", 1), ("devices/dev2/x", 0)];
            let mut wire = encode_subscribe(level, 5, props, &filters);
            let mut answers = Vec::new();
            e.from_client(&mut wire, &mut answers).unwrap();
            assert!(answers.is_empty());
            assert_eq!(
                wire,
                encode_subscribe(level, 5, props, &[("devices/dev1/+", 1)])
            );
            // The broker answers a PUBLISH and the SUBACK, split mid-SUBACK.
            let mut from_broker = publish("devices/dev1/a", 0, 0, b"hi", level == Level::V5);
            let before = from_broker.clone();
            from_broker.extend_from_slice(&encode_suback(level, 5, &[], &[1]));
            let cut = from_broker.len() - 2;
            let mut a = from_broker[..cut].to_vec();
            let mut b = from_broker[cut..].to_vec();
            e.from_broker(&mut a).unwrap();
            e.from_broker(&mut b).unwrap();
            assert_eq!(a, before, "the PUBLISH passes; the partial SUBACK waits");
            assert_eq!(b, encode_suback(level, 5, &[], &[refused, 1, refused]));
            assert_eq!(e.denials.filters, 2);
        }
    }

    #[test]
    fn a_subscribe_with_nothing_allowed_is_answered_by_the_gateway_alone() {
        let mut e = enforcer(Level::V5, &[]);
        let mut wire = encode_subscribe(Level::V5, 7, &[], &[("a/#", 0), ("b", 0)]);
        let mut answers = Vec::new();
        e.from_client(&mut wire, &mut answers).unwrap();
        assert!(wire.is_empty(), "nothing reaches the broker");
        assert_eq!(answers, encode_suback(Level::V5, 7, &[], &[0x87, 0x87]));
    }

    #[test]
    fn a_permission_change_applies_to_the_next_packet() {
        let mut e = enforcer(Level::V311, &[("t/#", Operation::Write)]);
        let mut wire = publish("t/1", 0, 0, b"a", false);
        e.from_client(&mut wire, &mut Vec::new()).unwrap();
        assert!(!wire.is_empty());
        e.set_permissions(set(&[]));
        let mut wire = publish("t/1", 0, 0, b"a", false);
        e.from_client(&mut wire, &mut Vec::new()).unwrap();
        assert!(wire.is_empty());
    }

    #[test]
    fn answers_to_packets_behind_the_connect_wait_for_the_connack() {
        let mut e = enforcer(Level::V311, &[]);
        let mut behind = publish("x", 1, 3, b"", false);
        let mut answers = Vec::new();
        e.from_client(&mut behind, &mut answers).unwrap();
        e.answer_after_connack(answers);
        // The CONNACK arrives in two pieces: nothing is added mid-packet.
        let mut first = vec![0x20, 0x02];
        e.from_broker(&mut first).unwrap();
        assert_eq!(first, [0x20, 0x02]);
        let mut rest = vec![0x00, 0x00];
        e.from_broker(&mut rest).unwrap();
        assert_eq!(rest, [0x00, 0x00, 0x40, 0x02, 0x00, 0x03]);
    }
}
