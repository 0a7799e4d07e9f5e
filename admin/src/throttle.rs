//! Login throttling: failed logins cost the *failing* party, never the user
//! they guessed at.
//!
//! Two fixed-window failure counters, checked before any hashing and
//! charged only when a login fails:
//! - per (username, source): [`LoginLimits::per_user_source`] failures per
//!   window (5 per 5 minutes by default);
//! - per source alone: [`LoginLimits::per_source`] (20 per 5 minutes), so one
//!   host cannot try many usernames.
//!
//! A source is an IPv4 address or an IPv6 /64. A source past either budget
//! gets 429 with `Retry-After` until its window ends, without a password
//! check. Nothing is keyed by the username alone, so an attacker who fails
//! against `admin` from their own address never refuses the real admin's
//! login from another: a success is never refused for another source's
//! failures. A success clears its (username, source) counter.
//!
//! Keys are keyed 64-bit hashes in [`GenerationalMap`]s, so memory is
//! bounded whatever usernames are sent, and a flood of fresh sources
//! forgets the idle counters first.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetgate_registry::bounded::GenerationalMap;
use fleetgate_registry::source::network_of;

/// The failure budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures per (username, source) per window.
    pub per_user_source: u32,
    /// Failures per source per window.
    pub per_source: u32,
    pub window: Duration,
    /// Counters kept (each map).
    pub max_keys: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_user_source: 5,
            per_source: 20,
            window: Duration::from_secs(300),
            max_keys: 100_000,
        }
    }
}

/// One counter: failures since `since`.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The throttle, shared by every login of one admin service.
pub struct LoginThrottle {
    limits: LoginLimits,
    hasher: std::collections::hash_map::RandomState,
    pairs: Mutex<GenerationalMap<u64, Failures>>,
    sources: Mutex<GenerationalMap<u64, Failures>>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        LoginThrottle {
            limits,
            hasher: Default::default(),
            pairs: Mutex::new(GenerationalMap::new(limits.max_keys.max(2))),
            sources: Mutex::new(GenerationalMap::new(limits.max_keys.max(2))),
        }
    }

    fn keys(&self, username: &str, source: Option<IpAddr>) -> (u64, u64) {
        let source = source.map(network_of);
        (
            self.hasher.hash_one((username, source)),
            self.hasher.hash_one(source),
        )
    }

    /// `Some(wait)` when a login of `username` from `source` must be
    /// refused now (429), before any password is checked.
    pub fn check(&self, username: &str, source: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let (pair, src) = self.keys(username, source);
        let window = self.limits.window;
        let blocked = |map: &Mutex<GenerationalMap<u64, Failures>>, key: u64, limit: u32| {
            let map = map.lock().unwrap_or_else(|p| p.into_inner());
            map.peek(&key).and_then(|f| {
                let ends = f.since + window;
                (f.count >= limit && now < ends).then(|| ends - now)
            })
        };
        let a = blocked(&self.pairs, pair, self.limits.per_user_source);
        let b = blocked(&self.sources, src, self.limits.per_source);
        a.max(b)
    }

    /// Counts one failed login.
    pub fn failed(&self, username: &str, source: Option<IpAddr>, now: Instant) {
        let (pair, src) = self.keys(username, source);
        let window = self.limits.window;
        for (map, key) in [(&self.pairs, pair), (&self.sources, src)] {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get_mut(&key) {
                Some(f) if now < f.since + window => f.count += 1,
                _ => map.insert(
                    key,
                    Failures {
                        count: 1,
                        since: now,
                    },
                ),
            }
        }
    }

    /// A successful login clears its (username, source) failures.
    pub fn succeeded(&self, username: &str, source: Option<IpAddr>) {
        let (pair, _) = self.keys(username, source);
        self.pairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn five_failures_block_that_user_from_that_source_only() {
        let t = LoginThrottle::new(LoginLimits::default());
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.check("admin", ip("192.0.2.9"), now), None);
            t.failed("admin", ip("192.0.2.9"), now);
        }
        let wait = t.check("admin", ip("192.0.2.9"), now).expect("blocked");
        assert_eq!(wait, Duration::from_secs(300));
        // The real admin, elsewhere, is not refused.
        assert_eq!(t.check("admin", ip("198.51.100.1"), now), None);
        // The same attacker, another username: still under the source's 20.
        assert_eq!(t.check("operator", ip("192.0.2.9"), now), None);
        // After the window, the pair may try again.
        let later = now + Duration::from_secs(300);
        assert_eq!(t.check("admin", ip("192.0.2.9"), later), None);
    }

    #[test]
    fn a_source_spraying_usernames_is_blocked_at_its_own_budget() {
        let t = LoginThrottle::new(LoginLimits::default());
        let now = Instant::now();
        for i in 0..20 {
            t.failed(&format!("user{i}"), ip("2001:db8::1"), now);
        }
        // Any username, any address in the same /64.
        assert!(t.check("someone", ip("2001:db8::ffff"), now).is_some());
        assert!(t.check("someone", ip("2001:db8:0:1::1"), now).is_none());
    }

    #[test]
    fn success_clears_the_pair() {
        let t = LoginThrottle::new(LoginLimits::default());
        let now = Instant::now();
        for _ in 0..4 {
            t.failed("admin", ip("192.0.2.1"), now);
        }
        t.succeeded("admin", ip("192.0.2.1"));
        for _ in 0..4 {
            t.failed("admin", ip("192.0.2.1"), now);
        }
        assert_eq!(t.check("admin", ip("192.0.2.1"), now), None);
    }

    #[test]
    fn counters_are_bounded() {
        let t = LoginThrottle::new(LoginLimits {
            max_keys: 100,
            ..LoginLimits::default()
        });
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.failed(&format!("u{i}"), Some(IpAddr::from(i.to_be_bytes())), now);
        }
        assert!(t.pairs.lock().unwrap().len() <= 100);
        assert!(t.sources.lock().unwrap().len() <= 100);
    }
}
