//! Test support for the Redis store's tests: the real servers
//! ([`servers`]) and stores on fresh key prefixes.

#![allow(dead_code)] // each test binary uses a different part of this module

mod servers;
pub use servers::*;

use fleetgate_registry::decision::Windows;
use fleetgate_store_redis::{RedisConfig, RedisStore};

/// Connects a store with a fresh prefix.
pub async fn store(url: &str, name: &str, windows: Windows, max_pending: usize) -> RedisStore {
    RedisStore::connect(url, windows, max_pending, &fresh_prefix(name))
        .await
        .expect("connect")
}

/// A conformance-suite store: a fresh prefix on the server at `url`.
pub async fn conformance_store(url: String, windows: Windows, max_pending: usize) -> RedisStore {
    store(&url, "conformance", windows, max_pending).await
}

/// A config with a fresh prefix, for tests that change other settings.
pub fn config(url: &str, name: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        prefix: fresh_prefix(name),
        ..RedisConfig::default()
    }
}
