//! Per-device rate limiting in the proxy: no store round trip.
//!
//! Two limiters run on every register poll and MQTT CONNECT: one keyed by
//! username, one by source IP. The per-IP budget is larger, because many
//! devices can sit behind one NAT. Each key has a GCRA bucket ("generic cell
//! rate algorithm"): a single theoretical-arrival time per key allows
//! `limit` requests per `window`, as a burst or spread out, and says exactly
//! how long a refused client should wait.
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
//! Each shard holds at most `max_keys / 64` keys. A full shard first drops
//! keys whose bucket has refilled (they carry no information). If it is
//! still full, it is cleared: the limiter fails open for those keys rather
//! than growing without bound or refusing unknown devices.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A sharded GCRA limiter over keys of type `K`.
pub struct Limiter<K> {
    rate: Rate,
    shards: Box<[Mutex<HashMap<K, Instant>>]>,
    max_per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    /// The reference instant; times are stored relative to it.
    _epoch: Instant,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Limiter {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_shard: (max_keys / SHARDS).max(1),
            hasher: Default::default(),
            _epoch: Instant::now(),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Checks one request for `key` at `now`, consuming budget if allowed.
    pub fn check<Q>(&self, key: &Q, now: Instant) -> Verdict
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let shard = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let interval = self.rate.interval();
        // How far ahead of `now` the theoretical arrival time may run.
        let tolerance = self.rate.window.saturating_sub(interval);
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Verdict::Deny {
                retry_after: ahead - tolerance,
            };
        }
        if !map.contains_key(key) && map.len() >= self.max_per_shard {
            map.retain(|_, t| *t > now);
            if map.len() >= self.max_per_shard {
                map.clear();
            }
        }
        map.insert(key.to_owned(), tat + interval);
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
        let l: Limiter<String> = Limiter::new(rate(5, 10), 1000);
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
        let l: Limiter<String> = Limiter::new(rate(1, 10), 1000);
        let t0 = Instant::now();
        assert_eq!(l.check("d", t0), Verdict::Allow);
        for _ in 0..100 {
            assert!(matches!(l.check("d", t0), Verdict::Deny { .. }));
        }
        assert_eq!(l.check("d", t0 + Duration::from_secs(10)), Verdict::Allow);
    }

    #[test]
    fn keys_are_bounded() {
        let l: Limiter<String> = Limiter::new(rate(1, 10), 64 * 4);
        let t0 = Instant::now();
        for i in 0..10_000 {
            l.check(&format!("dev{i}") as &str, t0);
        }
        assert!(l.len() <= 64 * 4, "{}", l.len());
    }

    #[test]
    fn shared_across_threads_counts_exactly() {
        // Two "workers" poll the same device: the process-wide total holds.
        let l = std::sync::Arc::new(Limiter::<String>::new(rate(100, 3600), 1000));
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
