//! MQTT on the proxy workers: only the first packet, CONNECT, is read. It
//! is enough to register an unknown client (the implicit flow) or to
//! authenticate a known one and splice it through to the upstream broker.
//!
//! - [`codec`]: the sans-IO CONNECT parser and CONNACK encoder (MQTT 3.1,
//!   3.1.1 and 5).
//! - [`credentials`]: the per-worker caches of verified and refused
//!   credentials that keep argon2 off the reconnect-storm path.
//! - [`session`]: one MQTT connection: read CONNECT, decide, answer or splice.

pub mod codec;
pub mod credentials;
pub mod session;
