//! MQTT on the proxy workers. The first packet, CONNECT, registers an
//! unknown client (the implicit flow) or authenticates a known one; a known
//! client is then relayed to the upstream broker with its permissions
//! enforced packet by packet.
//!
//! - [`codec`]: the sans-IO CONNECT parser and CONNACK encoder (MQTT 3.1,
//!   3.1.1 and 5).
//! - [`credentials`]: the per-worker caches of verified and refused
//!   credentials that keep argon2 off the reconnect-storm path.
//! - [`session`]: one MQTT connection: read CONNECT, decide, answer or relay.
//! - [`relay`]: the sans-IO codec for the packets after CONNECT (PUBLISH,
//!   SUBSCRIBE, SUBACK, …) and the encoders for refusing them.
//! - [`enforce`]: the relay's decisions on each packet, sans-IO.
//! - [`access`]: the per-worker cache of each relayed user's compiled
//!   permissions, re-read only when the store's access generation moves.

pub mod access;
pub mod codec;
pub mod credentials;
pub mod enforce;
pub mod relay;
pub mod session;
