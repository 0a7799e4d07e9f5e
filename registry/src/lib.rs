//! The domain core of fleetgate: everything about device registration that
//! does not touch a socket.
//!
//! A device asks to be registered by repeating one request until an
//! administrator decides it. This crate turns the bytes of that request into a
//! decision, and keeps the state the decision depends on. The proxy (HTTP, and
//! later MQTT) and the admin service are thin shells around it.
//!
//! # Layout
//! - [`audit`]: the audit log's records, ids, queries and caps, and the
//!   `--audit-log` JSON-lines writer.
//! - [`bounded`]: `GenerationalMap`, the size-capped map with generational
//!   eviction behind every map keyed by attacker-chosen input.
//! - [`ca`]: the client-certificate authority and CSR checks.
//! - [`durable`]: atomic, durable replacement of small files (temp, fsync,
//!   rename, directory fsync).
//! - [`clock`]: milliseconds since the Unix epoch, the one time type.
//! - [`metrics`]: the name of every exported metric, in one place.
//! - [`model`]: the records the registry keeps: requests, users, permissions.
//! - [`request`]: parsing and validating a register request body
//!   (400 `invalid` and 422 `policy` are decided here).
//! - [`rule`]: auto-approval rules: the model, validation (caps, anchored
//!   patterns, CIDRs), the compiled matcher and `DecidedBy`.
//! - [`secrets`]: the server secret and the keys derived from it.
//! - [`shard`]: the username → shard function the embedded store's shards
//!   and the Redis key schema's buckets share.
//! - [`source`]: what counts as one client source (IPv4 address, IPv6 /64).
//! - [`fingerprint`]: the keyed credential fingerprint, the pairing id and the
//!   sealing of a pending request's secret until it is granted.
//! - [`decision`]: the registration decision as a pure function of
//!   (request, known state, clock).
//! - [`password`]: PHC-string password hashing (argon2id) for admins and devices.
//! - [`token`]: JWT issuing and verification.
//! - [`topic`]: MQTT topic names and filters, matching, the subset test that
//!   decides a SUBSCRIBE, and the per-user `PermissionSet`.
//! - [`webhook`]: webhook events (types, `data` views, ids), the durable
//!   outbox's unit, and the bounded queue of best-effort `request.pending`
//!   events.
//! - [`store`]: the `Store` trait every backend implements, and its errors.
//! - [`embedded`]: the embedded store users run by default: sharded memory for
//!   pending state, a fsynced journal for users and grants.
//! - `conformance` (feature `conformance`): the suite every `Store` backend
//!   must pass.
//! - [`registry`]: `Registry`, which ties the above together into the
//!   operations the proxy and the admin service call.
#![forbid(unsafe_code)]

pub mod audit;
pub mod bounded;
pub mod ca;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod decision;
pub mod durable;
pub mod embedded;
pub mod fingerprint;
pub mod metrics;
pub mod model;
pub mod password;
pub mod registry;
pub mod request;
pub mod rule;
pub mod secrets;
pub mod shard;
pub mod source;
pub mod store;
pub mod token;
pub mod topic;
pub mod webhook;

pub use clock::UnixMillis;
pub use registry::{Registry, RegistryConfig};
