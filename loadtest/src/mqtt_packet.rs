//! The two MQTT packets the CONNECT storm deals in, as pure functions over
//! bytes: building a CONNECT, and checking whether a buffer holds a whole
//! CONNACK yet. No I/O happens here; [`crate::mqtt_storm`] is the shell.

/// Builds a CONNECT with username, password and clean session, keep-alive
/// 30 s, for protocol `level` 3 (MQTT 3.1, `MQIsdp`), 4 (3.1.1) or 5 (with
/// an empty property block).
pub fn connect(level: u8, client_id: &str, username: &str, password: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut body = Vec::with_capacity(32 + client_id.len() + username.len() + password.len());
    field(&mut body, if level == 3 { b"MQIsdp" } else { b"MQTT" });
    body.push(level);
    body.push(0xC2); // username, password, clean session
    body.extend_from_slice(&30u16.to_be_bytes()); // keep-alive
    if level == 5 {
        body.push(0); // no properties
    }
    field(&mut body, client_id.as_bytes());
    field(&mut body, username.as_bytes());
    field(&mut body, password.as_bytes());
    let mut packet = Vec::with_capacity(body.len() + 5);
    packet.push(0x10);
    encode_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// MQTT's variable-length integer: 7 bits a byte, high bit = more follows.
fn encode_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

/// What a buffer holds so far, read from the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connack {
    /// A whole CONNACK with this return code (3.1/3.1.1) or reason code (5).
    Complete(u8),
    /// Not enough bytes yet: at least this many more are needed.
    Incomplete(usize),
    /// Not a CONNACK, or a malformed one.
    Invalid,
}

/// Checks whether `buf` starts with a whole CONNACK. Bytes after it are
/// ignored (a broker may send more once a session is spliced).
pub fn check_connack(buf: &[u8]) -> Connack {
    let Some(&first) = buf.first() else {
        return Connack::Incomplete(2);
    };
    if first != 0x20 {
        return Connack::Invalid;
    }
    // Remaining length: at most 4 bytes.
    let mut len = 0usize;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else {
            return Connack::Incomplete(1);
        };
        len |= usize::from(b & 0x7F) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Connack::Invalid;
        }
    }
    // Acknowledge flags and the code, at least.
    if len < 2 {
        return Connack::Invalid;
    }
    let total = header + len;
    if buf.len() < total {
        return Connack::Incomplete(total - buf.len());
    }
    Connack::Complete(buf[header + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_for_3_1_1_is_byte_exact() {
        let p = connect(4, "c1", "dev-1", "secret-1");
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x10, 31,                         // CONNECT, remaining length 31
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04,                             // level 4
            0xC2,                             // username, password, clean session
            0x00, 0x1E,                       // keep-alive 30
            0x00, 0x02, b'c', b'1',           // client id
            0x00, 0x05, b'd', b'e', b'v', b'-', b'1', // username
            0x00, 0x08, b's', b'e', b'c', b'r', b'e', b't', b'-', b'1', // password
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn connect_for_5_has_an_empty_property_block_and_3_1_says_mqisdp() {
        let p5 = connect(5, "c", "u", "p");
        // name (6) + level + flags + keep-alive (2) + properties (1), then fields.
        assert_eq!(
            &p5[2..13],
            &[0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 30, 0]
        );
        let p3 = connect(3, "c", "u", "p");
        assert_eq!(&p3[2..10], &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p']);
    }

    #[test]
    fn long_connects_use_a_multi_byte_remaining_length() {
        let password = "x".repeat(200);
        let p = connect(4, "c", "u", &password);
        // 10 (variable header) + 3 + 3 + 202 = 218 = 0xDA: 0xDA 0x01.
        assert_eq!(&p[..3], &[0x10, 0xDA, 0x01]);
        assert_eq!(p.len(), 3 + 218);
    }

    #[test]
    fn connack_3_1_1_with_trailing_bytes() {
        // CONNACK, length 2, no session present, return code 5; then junk.
        let buf = [0x20, 0x02, 0x00, 0x05, 0xFF, 0xFF];
        assert_eq!(check_connack(&buf), Connack::Complete(5));
    }

    #[test]
    fn connack_5_with_properties() {
        // CONNACK, length 5, flags, reason 0x87, 2 bytes of properties.
        let buf = [0x20, 0x05, 0x00, 0x87, 0x02, 0x1F, 0x00];
        assert_eq!(check_connack(&buf), Connack::Complete(0x87));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = [0x20, 0x03, 0x00, 0x87, 0x00];
        for n in 0..buf.len() {
            assert!(
                matches!(check_connack(&buf[..n]), Connack::Incomplete(_)),
                "prefix of {n} bytes"
            );
        }
        assert_eq!(check_connack(&buf), Connack::Complete(0x87));
    }

    #[test]
    fn not_a_connack_is_invalid() {
        assert_eq!(check_connack(&[0x30, 0x02, 0, 0]), Connack::Invalid);
        assert_eq!(check_connack(&[0x20, 0x01, 0]), Connack::Invalid);
        assert_eq!(
            check_connack(&[0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Connack::Invalid
        );
    }
}
