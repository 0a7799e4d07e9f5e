//! The Redis backend of fleetgate's [`Store`](fleetgate_registry::store::Store)
//! trait, for one Redis server (`redis://host:port`) or a Redis Cluster
//! (`redis+cluster://host:port,host:port`).
//!
//! Several proxies and admin instances share one Redis as their single source
//! of truth: lock state, pending requests, grants and users. Every state
//! transition is one Lua script that touches the keys of one **bucket** only,
//! all under one hash tag, so it is atomic and valid on a cluster. The key
//! schema is in `docs/ARCHITECTURE.md (section "State: the Redis store")`; what is not inside one script (the
//! `--max-pending` counter, the lock state's bucket copies, listings), and
//! the accuracy that follows, is described in the [`store`] module.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetgate_registry::decision::Windows;
//! use fleetgate_registry::store::Store;
//! use fleetgate_store_redis::RedisStore;
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379", Windows::default(), 1_000_000, "fleetgate").await?;
//! let secret = store.load_or_create_secret().await?; // the same on every instance
//! println!("locked: {:?}, secret {} bytes", store.lock_state().await?, secret.len());
//! # Ok(()) }
//! ```
//!
//! Every method must run inside a tokio runtime (with the time driver). It
//! answers `StoreError::Unavailable` within `op_timeout` (1 s by default) when
//! Redis is down or slow, and recovers by itself when Redis is back. What
//! Redis holds or answers that this version cannot read (a foreign writer, a
//! version mismatch, a bug) is `StoreError::Corrupt` instead, with an error
//! log line: see the `# Failures` section of [`store`].
//!
//! # Layout
//! - [`bridge`]: `TokioBridge`, which lets monoio workers call a
//!   tokio-bound store.
//! - [`cache`]: `CachedStore`, the proxies' event-invalidated cache of
//!   poll state and lock state.
//! - [`config`]: `RedisConfig` (URL, prefix, windows, cap, timeouts, `WAIT`),
//!   URL parsing into a [`config::Topology`], validation.
//! - [`keys`]: the key schema: buckets, hash tags, key names, the
//!   `ZRANGEBYLEX` range of a keyset page.
//! - `scripts`: the Lua scripts (sources in `src/lua/`) and their `EVALSHA`
//!   commands.
//! - `conn`: one connection handle over `ConnectionManager` (single) or the
//!   async cluster connection, with `NOSCRIPT` reload and `WAIT`.
//! - [`page`]: merging one keyset page from the 64 buckets' sorted indexes,
//!   asking each bucket for little more than its share.
//! - `record`: how a request is laid out in a Redis hash, and decoding of
//!   script replies.
//! - [`events`]: the pub/sub events the transitions publish, and a
//!   reconnecting subscriber for the proxies' caches.
//! - [`store`]: `RedisStore` and its `Store` implementation, one file per
//!   part: connection and config, error classification (outage or corrupt
//!   reply), shared blobs and secret, lock state and its bucket copies, the
//!   register protocol, events and epochs, the sweep, and the trait impl.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod cache;
pub mod config;
mod conn;
pub mod events;
pub mod keys;
pub mod page;
mod record;
mod scripts;
pub mod store;

pub use bridge::TokioBridge;
pub use cache::{CachedStore, PollCache};
pub use config::{ConfigError, RedisConfig, Topology, WaitReplicas};
pub use events::StoreEvent;
pub use store::{ConnectError, RedisStore};
