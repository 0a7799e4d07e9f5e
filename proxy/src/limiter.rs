//! Per-device rate limiting in the proxy: no store round trip.
//!
//! Two limiters run on every register poll and MQTT CONNECT: one keyed by
//! the device's identity, one by its source network. The per-source budget
//! is larger, because many devices can sit behind one NAT. Each key has a
//! GCRA bucket ("generic cell rate algorithm"): a single theoretical-arrival
//! time per key allows `limit` requests per `window`, as a burst or spread
//! out, and says exactly how long a refused client should wait.
//!
//! # Keys
//! Keys are never the attacker's bytes themselves: every key is a 64-bit
//! SipHash under a per-process random key ([`Limiter::check`] takes anything
//! `Hash`), so an entry has a fixed size whatever a client sends, and nobody
//! outside the process can aim two keys at one bucket.
//! - The per-device key is (username, credential): see [`device_key`]. A
//!   poll or CONNECT with someone else's username but the wrong password or
//!   CSR is charged to its own bucket (and to its source's), never to the
//!   owner's, so knowing a device's name is not enough to starve it.
//! - The per-source key is the IPv4 address, or the IPv6 /64 ([`source_key`]):
//!   one IPv6 host usually holds a whole /64, so per-address limits would
//!   give it 2^64 budgets.
//!
//! # Accuracy
//! The buckets are shared by all workers of one process, in 64 shards each
//! behind its own mutex: a device whose polls land on different workers
//! (each new TCP connection may) is still counted exactly once per process.
//! Across *instances* each process counts on its own, so a device that
//! spreads its polls over K proxies gets up to K times the budget. The cost
//! of exactness across instances would be a store round trip per poll,
//! which is what the limiter exists to avoid.
//!
//! # Memory
//! Each shard holds at most `max_keys / 64` keys in a
//! [`GenerationalMap`]: when it is full, the keys untouched for longest are
//! forgotten (they have usually refilled and carry no information), while a
//! device that keeps polling keeps its bucket. A rotating attacker therefore
//! cannot reset legitimate buckets by flooding fresh keys; forgetting fails
//! open only for keys nobody used during a whole generation.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetgate_registry::bounded::{GenerationalMap, PrehashedU64};

const SHARDS: usize = 64;

/// `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub window: Duration,
}

impl Rate {
    /// Parses `N/DURATION` (e.g. `5/10s`), or `off` for no limit.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        if s == "off" {
            return Ok(None);
        }
        let (n, d) = s
            .split_once('/')
            .ok_or_else(|| "expected N/DURATION (e.g. 5/10s) or `off`".to_string())?;
        let limit: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a whole number of requests"))?;
        if limit == 0 {
            return Err("the limit must be at least 1 (or `off`)".into());
        }
        let window = humantime::parse_duration(d.trim()).map_err(|e| format!("`{d}`: {e}"))?;
        if window.is_zero() {
            return Err("the window must be longer than zero".into());
        }
        Ok(Some(Rate { limit, window }))
    }

    /// Time between requests at the sustained rate.
    fn interval(&self) -> Duration {
        self.window / self.limit
    }
}

/// A configured limit: a [`Rate`], or `off`. (A newtype, because a plain
/// `Option` means "flag may be absent" to clap.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

impl RateSetting {
    /// Parses `N/DURATION` or `off`, for clap.
    pub fn parse(s: &str) -> Result<RateSetting, String> {
        Rate::parse(s).map(RateSetting)
    }
}

/// The answer of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused; the client may try again after this long.
    Deny {
        retry_after: Duration,
    },
}

/// The per-device key: a device is its username *and* its credential (the
/// password, or the CSR), so that another client's wrong credentials never
/// spend the owner's budget.
pub fn device_key<'a>(username: &'a str, credential: &'a [u8]) -> impl Hash + 'a {
    (username, credential)
}

/// The per-source key: an IPv4 address, or an IPv6 /64
/// ([`fleetgate_registry::source::network_of`]).
pub fn source_key(ip: IpAddr) -> IpAddr {
    fleetgate_registry::source::network_of(ip)
}

/// A sharded GCRA limiter. Keys are held as keyed 64-bit hashes.
pub struct Limiter {
    rate: Rate,
    /// Per key, the theoretical arrival time in nanoseconds after `base`.
    /// A `u64` rather than an `Instant` (16 bytes): an entry is 16 bytes,
    /// not 24, and a per-device limiter holds one per device of the fleet
    /// (at 1,000,000 devices the process grew 18 B less per pending
    /// request; docs/BENCHMARKS.md, "Memory per pending request").
    shards: Box<[Mutex<GenerationalMap<u64, u64, PrehashedU64>>]>,
    base: Instant,
    /// Per-process random SipHash keys: the stored key of a client's input.
    hasher: std::collections::hash_map::RandomState,
}

impl Limiter {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        let per_shard = (max_keys / SHARDS).max(2);
        Limiter {
            rate,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(GenerationalMap::with_hasher(per_shard)))
                .collect(),
            base: Instant::now(),
            hasher: Default::default(),
        }
    }

    /// `t` in nanoseconds after `base` (an instant before it counts as
    /// `base`).
    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Checks one request for `key` at `now`, consuming budget if allowed.
    pub fn check<Q: Hash + ?Sized>(&self, key: &Q, now: Instant) -> Verdict {
        let hash = self.hasher.hash_one(key);
        let mut map = self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let interval = self.rate.interval().as_nanos() as u64;
        // How far ahead of `now` the theoretical arrival time may run.
        let tolerance = (self.rate.window.as_nanos() as u64).saturating_sub(interval);
        let now = self.nanos(now);
        // A refused request counts as a touch too: a device that keeps
        // trying keeps its (empty) bucket. One lookup for a known key (its
        // entry is updated in place), one insert for a new one.
        match map.get_mut(&hash) {
            Some(t) => {
                let tat = (*t).max(now);
                let ahead = tat - now;
                if ahead > tolerance {
                    return Verdict::Deny {
                        retry_after: Duration::from_nanos(ahead - tolerance),
                    };
                }
                *t = tat.saturating_add(interval);
            }
            // A new key's arrival time is `now`: never ahead, allowed.
            None => map.insert(hash, now.saturating_add(interval)),
        }
        Verdict::Allow
    }

    /// Keys held, over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u32, secs: u64) -> Rate {
        Rate {
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn parse_rates() {
        assert_eq!(Rate::parse("5/10s").unwrap(), Some(rate(5, 10)));
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert!(Rate::parse("0/10s").is_err());
        assert!(Rate::parse("5/0s").is_err());
        assert!(Rate::parse("five/10s").is_err());
        assert!(Rate::parse("5").is_err());
    }

    #[test]
    fn five_per_ten_seconds_exactly() {
        let l = Limiter::new(rate(5, 10), 1000);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(l.check("dev1", t0), Verdict::Allow, "request {i}");
        }
        // The sixth in the same instant waits for one interval (2 s).
        match l.check("dev1", t0) {
            Verdict::Deny { retry_after } => assert_eq!(retry_after, Duration::from_secs(2)),
            v => panic!("{v:?}"),
        }
        // Another key is independent.
        assert_eq!(l.check("dev2", t0), Verdict::Allow);
        // After 2 s, exactly one more.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(l.check("dev1", t2), Verdict::Allow);
        assert!(matches!(l.check("dev1", t2), Verdict::Deny { .. }));
        // A device polling at the sustained rate (every 2 s) is never refused.
        let mut t = t2;
        for _ in 0..20 {
            t += Duration::from_secs(2);
            assert_eq!(l.check("dev1", t), Verdict::Allow);
        }
    }

    #[test]
    fn a_refused_request_consumes_nothing() {
        let l = Limiter::new(rate(1, 10), 1000);
        let t0 = Instant::now();
        assert_eq!(l.check("d", t0), Verdict::Allow);
        for _ in 0..100 {
            assert!(matches!(l.check("d", t0), Verdict::Deny { .. }));
        }
        assert_eq!(l.check("d", t0 + Duration::from_secs(10)), Verdict::Allow);
    }

    #[test]
    fn keys_are_bounded() {
        let l = Limiter::new(rate(1, 10), 64 * 4);
        let t0 = Instant::now();
        for i in 0..10_000 {
            l.check(&format!("dev{i}") as &str, t0);
        }
        assert!(l.len() <= 64 * 4, "{}", l.len());
    }

    #[test]
    fn a_rotating_flood_does_not_reset_a_device_in_use() {
        // 64 * 16 keys in all: 16 per shard, generations of 8.
        let l = Limiter::new(rate(5, 10), 64 * 16);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check("owner", t0), Verdict::Allow);
        }
        // 100,000 fresh keys, with the owner polling (and being refused)
        // all along: it stays refused, its bucket is never forgotten.
        for i in 0..100_000 {
            l.check(&format!("attacker-{i}") as &str, t0);
            if i % 50 == 0 {
                assert!(
                    matches!(l.check("owner", t0), Verdict::Deny { .. }),
                    "owner's bucket was reset after {i} attacker keys"
                );
            }
        }
    }

    #[test]
    fn wrong_credentials_spend_their_own_budget() {
        let l = Limiter::new(rate(5, 10), 1000);
        let t0 = Instant::now();
        for _ in 0..50 {
            l.check(&device_key("dev1", b"guess"), t0);
        }
        assert!(matches!(
            l.check(&device_key("dev1", b"guess"), t0),
            Verdict::Deny { .. }
        ));
        assert_eq!(
            l.check(&device_key("dev1", b"owner-pass"), t0),
            Verdict::Allow
        );
        // The key is the pair, not a concatenation.
        assert_eq!(l.check(&device_key("dev1g", b"uess"), t0), Verdict::Allow);
    }

    #[test]
    fn shared_across_threads_counts_exactly() {
        // Two "workers" poll the same device: the process-wide total holds.
        let l = std::sync::Arc::new(Limiter::new(rate(100, 3600), 1000));
        let t0 = Instant::now();
        let allowed: usize = (0..2)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| l.check("dev", t0) == Verdict::Allow)
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 100);
    }
}
