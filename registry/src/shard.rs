//! The one function that maps a username to a shard.
//!
//! The embedded store splits its maps into shards by it, and the Redis key
//! schema puts every key of one username under the hash tag of the bucket it
//! names (`fleetgate_store_redis::keys`), so the proxies' poll cache can drop
//! exactly the shard whose bucket changed. It lives here, once, so that the
//! two can never drift apart: a bucket number is part of the stored key
//! names, and changing this function moves every key.

/// The shard of `username` among `shards` (a power of two): FNV-1a of the
/// username's bytes, masked. Cheap and stable; balance, not secrecy, is the
/// goal (the keys are attacker-chosen, but a skewed shard costs only lock
/// contention, and every map behind it is bounded).
pub fn shard_of(username: &str, shards: usize) -> usize {
    debug_assert!(shards.is_power_of_two());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in username.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h as usize) & (shards - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored Redis key names depend on these values: a change here is a
    /// change of the key schema and must come with a migration.
    #[test]
    fn known_values_are_stable() {
        // FNV-1a-64 test vectors: "" → cbf29ce484222325, "a" → af63dc4c8601ec8c.
        assert_eq!(shard_of("", 64), 0x25);
        assert_eq!(shard_of("a", 64), 0x8c & 63);
        assert_eq!(shard_of("a", 1 << 16), 0xec8c);
    }

    #[test]
    fn spreads_usernames() {
        let mut counts = [0usize; 64];
        for i in 0..64_000 {
            counts[shard_of(&format!("device-{i}"), 64)] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 700 && *max < 1300, "unbalanced shards: {min}..{max}");
    }
}
