//! Per-worker caches that keep argon2 off the reconnect path.
//!
//! Verifying a device password costs about 0.35 ms of CPU (see
//! `docs/SECURITY.md`). A fleet reconnecting after a broker restart presents
//! the same credentials again and again, so each worker remembers:
//! - **verified** credentials: digest of (username, password) → identity of
//!   the stored hash, for `ttl`;
//! - **refused** credentials: digest of (username, wrong password) →
//!   identity, for `negative_ttl`, so a storm of one wrong password reaches
//!   argon2 once.
//!
//! The digest is HMAC-SHA256 under a per-process random key, so no cache
//! holds a clear-text password or anything usable outside this process, and
//! every key is 32 bytes whatever the client sent.
//!
//! **Invalidation.** Every entry records the identity of the stored PHC
//! string it was checked against, and every CONNECT reads the current user
//! record from the store. A changed password has a new PHC string, and a
//! deleted user has no record, so a stale entry can never authenticate, on
//! any worker. Entries are bounded (`capacity` each) in
//! [`GenerationalMap`]s: a full map forgets the entries untouched for
//! longest, so a flood of fresh wrong passwords cannot push out the verified
//! credentials of devices that keep reconnecting.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use fleetgate_registry::bounded::GenerationalMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type Digest = [u8; 32];

/// What the caches know about a (username, password) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Verified against the current stored hash.
    Verified,
    /// Refused against the current stored hash.
    Refused,
    /// Not known: run the slow check.
    Unknown,
}

/// The per-worker credential caches.
pub struct CredentialCache {
    key: [u8; 32],
    /// (username, password) digest → (stored-hash identity, valid until).
    verified: GenerationalMap<Digest, (u64, Instant)>,
    refused: GenerationalMap<Digest, (u64, Instant)>,
    ttl: Duration,
    negative_ttl: Duration,
}

/// A fingerprint of a stored PHC string: changes when the password does.
pub fn hash_identity(phc: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    phc.hash(&mut h);
    h.finish()
}

impl CredentialCache {
    pub fn new(key: [u8; 32], ttl: Duration, negative_ttl: Duration, capacity: usize) -> Self {
        CredentialCache {
            key,
            verified: GenerationalMap::new(capacity.max(2)),
            refused: GenerationalMap::new(capacity.max(2)),
            ttl,
            negative_ttl,
        }
    }

    fn digest(&self, username: &str, password: &[u8]) -> Digest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("32-byte key");
        mac.update(&(username.len() as u32).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Looks a credential up against the user's current stored hash.
    /// A hit counts as a use, so a device that keeps reconnecting keeps
    /// its entry.
    pub fn lookup(&mut self, username: &str, password: &[u8], phc: &str, now: Instant) -> Cached {
        let digest = self.digest(username, password);
        let identity = hash_identity(phc);
        let current = |e: Option<&mut (u64, Instant)>| {
            e.is_some_and(|(id, until)| *id == identity && now < *until)
        };
        if current(self.verified.get_mut(&digest)) {
            return Cached::Verified;
        }
        if current(self.refused.get_mut(&digest)) {
            return Cached::Refused;
        }
        Cached::Unknown
    }

    /// Records the result of a slow check.
    pub fn record(&mut self, username: &str, password: &[u8], phc: &str, ok: bool, now: Instant) {
        let digest = self.digest(username, password);
        let identity = hash_identity(phc);
        if ok {
            self.verified.insert(digest, (identity, now + self.ttl));
            self.refused.remove(&digest);
        } else {
            self.refused
                .insert(digest, (identity, now + self.negative_ttl));
        }
    }

    /// Entries held (verified, refused).
    pub fn len(&self) -> (usize, usize) {
        (self.verified.len(), self.refused.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(cap: usize) -> CredentialCache {
        CredentialCache::new(
            [7; 32],
            Duration::from_secs(60),
            Duration::from_secs(10),
            cap,
        )
    }

    #[test]
    fn verified_and_refused_are_remembered_until_their_ttl() {
        let mut c = cache(10);
        let t = Instant::now();
        assert_eq!(c.lookup("dev1", b"good", "$phc1", t), Cached::Unknown);
        c.record("dev1", b"good", "$phc1", true, t);
        c.record("dev1", b"bad", "$phc1", false, t);
        assert_eq!(c.lookup("dev1", b"good", "$phc1", t), Cached::Verified);
        assert_eq!(c.lookup("dev1", b"bad", "$phc1", t), Cached::Refused);
        assert_eq!(c.lookup("dev1", b"other", "$phc1", t), Cached::Unknown);
        let later = t + Duration::from_secs(11);
        assert_eq!(c.lookup("dev1", b"bad", "$phc1", later), Cached::Unknown);
        assert_eq!(c.lookup("dev1", b"good", "$phc1", later), Cached::Verified);
        assert_eq!(
            c.lookup("dev1", b"good", "$phc1", t + Duration::from_secs(61)),
            Cached::Unknown
        );
    }

    #[test]
    fn a_changed_stored_hash_invalidates_both_caches() {
        let mut c = cache(10);
        let t = Instant::now();
        c.record("dev1", b"good", "$phc1", true, t);
        c.record("dev1", b"bad", "$phc1", false, t);
        // The password was changed (or the user deleted and re-created).
        assert_eq!(c.lookup("dev1", b"good", "$phc2", t), Cached::Unknown);
        assert_eq!(c.lookup("dev1", b"bad", "$phc2", t), Cached::Unknown);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut c = cache(3);
        let t = Instant::now();
        for i in 0..10 {
            c.record(&format!("dev{i}"), b"pw", "$phc", true, t);
            c.record(&format!("dev{i}"), b"no", "$phc", false, t);
            let (v, r) = c.len();
            assert!(v <= 3 && r <= 3, "{v} {r}");
        }
        assert_eq!(c.lookup("dev9", b"pw", "$phc", t), Cached::Verified);
    }
}
