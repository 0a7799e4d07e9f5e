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
//! evicted.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `capacity` entries with generational eviction (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct GenerationalMap<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    /// The cap of each generation: half the capacity, at least 1.
    generation: usize,
}

impl<K: Hash + Eq, V> GenerationalMap<K, V> {
    /// A map that never holds more than `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        GenerationalMap {
            current: HashMap::new(),
            previous: HashMap::new(),
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
            self.previous = std::mem::take(&mut self.current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
