//! The per-source connection cap (`--max-connections-per-ip`): how many
//! connections one IPv4 address or IPv6 /64 may hold open on this process,
//! over all workers and listeners.
//!
//! Without it, one host can take every connection slot of every worker
//! (`--max-connections` is per worker, not per client). A connection past the
//! cap is refused at accept: plain HTTP gets a 503 it can read, TLS and MQTT
//! clients are closed. The map only holds sources with open connections, so
//! it is bounded by the connections themselves.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::limiter::source_key;

const SHARDS: usize = 64;

/// Open connections per source, shared by every worker.
pub struct SourceConnections {
    max_per_source: u32,
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// One open connection's share of its source's count; dropping it closes
/// the share.
pub struct SourceSlot {
    sources: Arc<SourceConnections>,
    key: IpAddr,
}

impl SourceConnections {
    pub fn new(max_per_source: u32) -> Arc<Self> {
        Arc::new(SourceConnections {
            max_per_source: max_per_source.max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        })
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection from `ip`, or `None` when its
    /// source already holds `max_per_source`.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut shard = self.shard(&key);
        let open = shard.entry(key).or_insert(0);
        if *open >= self.max_per_source {
            return None;
        }
        *open += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }

    /// Connections `ip`'s source holds now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let key = source_key(ip);
        self.shard(&key).get(&key).copied().unwrap_or(0)
    }

    /// Sources with at least one open connection.
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut shard = self.sources.shard(&self.key);
        if let Some(open) = shard.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_per_source_and_slots_come_back() {
        let s = SourceConnections::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| s.try_open(a).unwrap()).collect();
        assert!(s.try_open(a).is_none(), "a fourth connection from a");
        assert!(s.try_open(b).is_some(), "another source is independent");
        drop(held);
        assert_eq!(s.open(a), 0);
        assert_eq!(s.sources(), 0, "closed sources leave the map");
        assert!(s.try_open(a).is_some());
    }

    #[test]
    fn one_ipv6_slash_64_is_one_source() {
        let s = SourceConnections::new(2);
        let _x = s.try_open("2001:db8::1".parse().unwrap()).unwrap();
        let _y = s.try_open("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert!(s.try_open("2001:db8::3".parse().unwrap()).is_none());
        assert!(s.try_open("2001:db8:0:1::3".parse().unwrap()).is_some());
    }
}
