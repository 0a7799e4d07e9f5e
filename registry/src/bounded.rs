//! [`GenerationalMap`]: a map with a hard size cap that, when full, forgets
//! the entries that were not touched for longest, never the ones in use.
//!
//! Everything in fleetgate that is keyed by input an attacker chooses (the
//! proxy's rate limiters and credential caches, the Redis poll cache) must
//! be bounded, and must evict in a way a rotating attacker cannot turn
//! against legitimate keys. Clearing a full map (what these maps did before)
//! fails that test: an attacker who cycles through fresh keys resets every
//! legitimate device's bucket each time the map fills.
//!
//! The map keeps two generations, each of at most half the capacity. New
//! and touched entries go into the current one; a lookup that finds an entry
//! in the previous generation moves it to the current one. When the current
//! generation is full, it becomes the previous one and the old previous
//! generation is dropped whole. What is dropped is exactly the set of
//! entries nobody touched during one full generation: an approximate LRU
//! with O(1) work per operation and no per-entry bookkeeping. A key touched
//! at least once per `capacity / 2` insertions of other keys is never
//! evicted. The dropped generation's table is cleared and reused for the
//! new one, so a full map never grows (and rehashes) a table again.
//!
//! Maps whose keys are already keyed hashes (the rate limiters hold a
//! per-process SipHash of the client's input) use [`PrehashedU64`] instead
//! of hashing the hash again: on the fleet's poll path the limiter is one
//! of the two large maps every poll touches (docs/BENCHMARKS.md).

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// A map of at most `capacity` entries with generational eviction (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct GenerationalMap<K, V, S = RandomState> {
    current: HashMap<K, V, S>,
    previous: HashMap<K, V, S>,
    /// The cap of each generation: half the capacity, at least 1.
    generation: usize,
}

impl<K: Hash + Eq, V> GenerationalMap<K, V> {
    /// A map that never holds more than `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity)
    }
}

/// The hasher of `u64` keys that are already uniform keyed hashes (never
/// raw client input: a client cannot aim at buckets without the key). The
/// value is rotated by 32 bits, so that the low bits a caller may have used
/// to pick a shard are not the table's bucket bits too. Any other input is
/// folded in with FNV-1a, for completeness only.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedU64;

/// The [`Hasher`] of [`PrehashedU64`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0.rotate_right(32)
    }
}

impl BuildHasher for PrehashedU64 {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher::default()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> GenerationalMap<K, V, S> {
    /// A map that never holds more than `capacity` entries (at least 2),
    /// hashing with `S`.
    pub fn with_hasher(capacity: usize) -> Self {
        GenerationalMap {
            current: HashMap::default(),
            previous: HashMap::default(),
            generation: (capacity / 2).max(1),
        }
    }

    /// The entry for `key`, without counting as a touch.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// The entry for `key`, moved into the current generation.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.current.contains_key(key) {
            let (k, v) = self.previous.remove_entry(key)?;
            self.make_room();
            self.current.insert(k, v);
        }
        self.current.get_mut(key)
    }

    /// Inserts or replaces the entry for `key` in the current generation.
    pub fn insert(&mut self, key: K, value: V) {
        self.previous.remove(&key);
        if !self.current.contains_key(&key) {
            self.make_room();
        }
        self.current.insert(key, value);
    }

    /// Removes the entry for `key`, wherever it is.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.current
            .remove(key)
            .or_else(|| self.previous.remove(key))
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.current.retain(&mut keep);
        self.previous.retain(keep);
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    /// Entries held (never more than the capacity).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Before adding one entry to the current generation: if it is full,
    /// it becomes the previous one and the old previous one is dropped.
    fn make_room(&mut self) {
        if self.current.len() >= self.generation {
            std::mem::swap(&mut self.current, &mut self.previous);
            // The oldest generation goes; its table stays, for the new one.
            self.current.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prehashed_keys_of_one_shard_still_spread_over_the_table() {
        // A limiter shard's keys: keyed hashes that share their low 6 bits.
        let keyed = RandomState::new();
        let keys: Vec<u64> = (0..20_000u64)
            .map(|i| keyed.hash_one(i))
            .filter(|h| h % 64 == 5)
            .take(200)
            .collect();
        let buckets: std::collections::HashSet<u64> = keys
            .iter()
            .map(|&k| PrehashedU64.hash_one(k) & 63)
            .collect();
        assert!(buckets.len() > 48, "{} of 64 buckets", buckets.len());
        let mut m: GenerationalMap<u64, u64, PrehashedU64> = GenerationalMap::with_hasher(1000);
        for &k in &keys {
            m.insert(k, k);
        }
        for &k in &keys {
            assert_eq!(m.get_mut(&k).copied(), Some(k));
        }
        assert_eq!(m.len(), keys.len());
    }

    #[test]
    fn a_full_map_keeps_its_two_tables_instead_of_growing_new_ones() {
        let mut m = GenerationalMap::new(2000);
        let caps = |m: &GenerationalMap<i32, i32>| {
            let mut c = [m.current.capacity(), m.previous.capacity()];
            c.sort();
            c
        };
        // Two generation changes: both tables have reached their size.
        for i in 0..2001 {
            m.insert(i, i);
        }
        let warm = caps(&m);
        assert!(warm[0] >= 1000, "{warm:?}");
        for i in 2001..20_000 {
            m.insert(i, i);
            assert!(m.len() <= 2000);
        }
        assert_eq!(caps(&m), warm, "no table was regrown");
        assert_eq!(m.peek(&19_999), Some(&19_999));
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut m = GenerationalMap::new(10);
        for i in 0..1000 {
            m.insert(i, i);
            assert!(m.len() <= 10, "{} entries", m.len());
        }
        // The newest entries are the ones kept.
        assert_eq!(m.peek(&999), Some(&999));
        assert_eq!(m.peek(&0), None);
    }

    #[test]
    fn a_key_in_use_survives_a_rotating_flood() {
        // An attacker inserts 100,000 fresh keys; the legitimate key is
        // touched once every 4 of them (well within a generation of 50).
        let mut m = GenerationalMap::new(100);
        m.insert("legit".to_owned(), 0u32);
        for i in 0..100_000u32 {
            m.insert(format!("attacker-{i}"), i);
            if i % 4 == 0 {
                *m.get_mut("legit").expect("legit key evicted") += 1;
            }
        }
        assert_eq!(m.peek("legit"), Some(&25_000));
        assert!(m.len() <= 100);
    }

    #[test]
    fn an_untouched_key_is_evicted_after_two_generations() {
        let mut m = GenerationalMap::new(4); // generations of 2
        m.insert(0, ());
        m.insert(1, ());
        m.insert(2, ()); // 0 and 1 become the previous generation
        assert!(m.peek(&0).is_some());
        m.insert(3, ());
        m.insert(4, ()); // {2, 3} previous; {0, 1} dropped
        assert!(m.peek(&0).is_none() && m.peek(&1).is_none());
        assert!(m.peek(&2).is_some() && m.peek(&4).is_some());
    }

    #[test]
    fn remove_and_replace_find_either_generation() {
        let mut m = GenerationalMap::new(4);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("c", 3); // a, b previous
        m.insert("a", 10); // moves a back, replaced
        assert_eq!(m.peek("a"), Some(&10));
        assert_eq!(m.remove("b"), Some(2));
        assert_eq!(m.remove("b"), None);
        assert_eq!(m.len(), 2);
        m.retain(|_, v| *v > 5);
        assert_eq!(m.len(), 1);
        m.clear();
        assert!(m.is_empty());
    }
}
