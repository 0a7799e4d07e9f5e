//! `RedisStore`: the `Store` trait on Redis or Redis Cluster.
//!
//! Each transition is one Lua script on one bucket (see `src/lua/`),
//! so it is atomic and cluster-valid. What is not inside one script, and why:
//!
//! - **The `--max-pending` counter** is one global key. On a single Redis
//!   the register script takes the slot itself, so every poll is one round
//!   trip; on a cluster a poll that would create a pending request takes
//!   three (once in a device's life). The protocol is described in
//!   `register` (`store/register.rs`).
//! - **The lock state** has a global key (what [`Store::lock_state`] reads)
//!   and a copy in every bucket, which the register script reads in its own
//!   slot. How the copies are written, converge and are repaired is
//!   described in `lock` (`store/lock.rs`).
//! - **Listings and `pending_count`** fan out to the 64 buckets as
//!   concurrent commands on the multiplexed connection(s): one round trip of
//!   latency, 64 commands (a listing sometimes needs a second, smaller
//!   round; see [`crate::page`]), then one read per record of the page.
//!
//! # Accuracy
//! - `--max-pending` is never exceeded: every pending request holds a slot
//!   taken atomically before it exists. Slots are given back by a separate
//!   call after the transition that frees them; if that call is lost (the
//!   caller dies or times out in between), the counter stays too high and
//!   the cap gets stricter by those slots, never looser.
//! - `pending_count` is the sum of the 64 buckets' pending indexes: pending
//!   requests including expired ones not yet swept, exact per bucket at the
//!   moment it is read, not one snapshot across buckets.
//!
//! # Failures
//! Every method is bounded by `op_timeout` and answers
//! `StoreError::Unavailable` past it (`RedisStore::bounded`). `Unavailable`
//! means the outcome is unknown: a command sent before the timeout may still
//! run. A connection error, a `WAIT` that fell short, and a Redis that
//! refuses for now (`OOM`, `READONLY`, `LOADING`, `CLUSTERDOWN`, …) are
//! `Unavailable` too (503: retrying later may work). A reply this version
//! cannot read (a record that does not decode, a script reply of the wrong
//! shape, a key of the wrong type, a script that failed on what it found) is
//! `StoreError::Corrupt` (500, and an error log line): a bug, a version
//! mismatch or a foreign writer in the namespace. The one place that
//! decides which is which is `failure` (`store/failure.rs`).
//!
//! # Layout
//! - `connection`: the [`RedisStore`] struct, [`ConnectError`], connecting,
//!   the `op_timeout` bound (and the longer bound of a group of grants),
//!   the connections (shared, grants, and `WAIT`) and the `WAIT` check.
//! - `failure`: how a Redis error or an unreadable reply becomes a
//!   `StoreError` that says who caused it.
//! - `shared`: the blobs every instance shares (the server secret, the
//!   client CA), created by the first instance.
//! - `lock`: the lock state's global key and bucket copies, their repair,
//!   and the `<version>:<ms>` encoding.
//! - `register`: the register protocol (script modes, the typed reply
//!   codes, the `need_slot` / reserve / create dance, giving slots back).
//! - `changes`: what other instances watch: the events channel and the
//!   buckets' change epochs.
//! - `grants`: the grant script's command and reply, and group commit
//!   (pipelines of at most `GROUP_MAX` grants on their own connection, one
//!   `WAIT` each, per bucket on a cluster).
//! - `outbox`: the webhook outbox streams and their consumer group.
//! - `sweep`: dropping expired requests, giving their slots back.
//! - `trait_impl`: the [`Store`] implementation, with the reads
//!   (requests, users) and the transitions that are one script call.

use std::time::Duration;

#[cfg(doc)]
use fleetgate_registry::store::Store;

mod audit;
mod changes;
mod connection;
mod failure;
mod grants;
mod lock;
mod outbox;
mod register;
mod shared;
mod sweep;
mod trait_impl;

pub use connection::{ConnectError, RedisStore};
pub use grants::{group_deadline, GROUP_MAX, PER_GRANT};
pub use outbox::{CLAIM_IDLE_DEFAULT, GROUP as OUTBOX_GROUP};

/// A duration in whole milliseconds, as every script wants it.
fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// JSON of a value the scripts store verbatim. The registry's records
/// serialise infallibly (plain structs, string-keyed maps only).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
