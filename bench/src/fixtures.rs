//! The bytes the benches parse: what real clients send.
//!
//! Each wire fixture is annotated field by field, like the codec tests in
//! `proxy/`. `tests/fixtures.rs` checks that every fixture parses to what
//! the annotations say, with our codecs and, for MQTT, with `mqttbytes`, so
//! a comparison never times an error path by accident.

/// A register poll as curl 8 sends it: `curl -d @body.json -H
/// 'Content-Type: application/json' http://gateway.example:8080/…`, with
/// the 40-byte JSON body of `proxy`'s codec tests.
pub const HTTP_POLL: &[u8] = b"POST /api/client-registry/register HTTP/1.1\r\n\
    Host: gateway.example:8080\r\n\
    User-Agent: curl/8.5.0\r\n\
    Accept: */*\r\n\
    Content-Type: application/json\r\n\
    Content-Length: 40\r\n\
    \r\n\
    {\"username\":\"dev01\",\"password\":\"secret\"}";

/// The body of [`HTTP_POLL`].
pub const HTTP_POLL_BODY: &[u8] = br#"{"username":"dev01","password":"secret"}"#;

/// Headers in [`HTTP_POLL`].
pub const HTTP_POLL_HEADERS: usize = 5;

/// Two polls back to back in one buffer, as a keep-alive client that
/// pipelines sends them (the worker parses both from one read).
pub fn http_pipelined_pair() -> Vec<u8> {
    [HTTP_POLL, HTTP_POLL].concat()
}

/// An MQTT 3.1.1 CONNECT with username and password, as `mosquitto_pub`
/// sends it (the same bytes as `proxy`'s CONNECT codec tests).
pub const MQTT_V311_CONNECT: &[u8] = &[
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

/// An MQTT 5 CONNECT with connect properties, a will with will properties,
/// a username and no password (the same bytes as `proxy`'s codec tests).
pub const MQTT_V5_CONNECT: &[u8] = &[
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

/// A register body as most devices send it: a username and a password.
pub const REGISTER_BODY_MINIMAL: &[u8] =
    br#"{"username":"device-000123","password":"s3cret-pass1"}"#;

/// A register body that asks for roles, permissions and a context: the
/// largest shape a device commonly sends.
pub const REGISTER_BODY_FULL: &[u8] = br#"{"username":"device-000123","password":"s3cret-pass1","roles":["sensor","edge"],"permissions":[{"resource":"telemetry/device-000123/#","operation":"write","context":"mqtt"},{"resource":"config/device-000123","operation":"read","context":"mqtt"}],"context":"building 7, floor 2"}"#;
