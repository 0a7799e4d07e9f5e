//! `Retry-After` pacing: how long a polling device is told to wait.
//!
//! Every 202 and 423 carries `Retry-After`. At rest it is the configured
//! base (5 s). Under load it grows with the number of pending requests and
//! with the observed poll rate, and it is jittered so a fleet spreads out
//! instead of polling in lockstep:
//!
//! ```text
//! factor = 1 + pending / pending_scale + poll_rate / rate_scale
//! retry  = clamp(round(base × factor × U(0.8, 1.2)), 1 s, max)
//! ```
//!
//! `pending` and `poll_rate` (polls per second over the last tick) are
//! refreshed once a second by the process's ticker. Workers count polls in
//! their own cache-line-padded slot, so counting costs no shared write.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The pacing settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacingConfig {
    pub base: Duration,
    pub max: Duration,
    /// Pending requests that add one `base` to the advice.
    pub pending_scale: f64,
    /// Polls per second that add one `base` to the advice.
    pub rate_scale: f64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            base: Duration::from_secs(5),
            max: Duration::from_secs(120),
            pending_scale: 100_000.0,
            rate_scale: 10_000.0,
        }
    }
}

/// The unjittered advice, in seconds, for the given load.
pub fn base_advice(config: &PacingConfig, pending: u64, poll_rate: f64) -> f64 {
    let factor = 1.0 + pending as f64 / config.pending_scale + poll_rate / config.rate_scale;
    (config.base.as_secs_f64() * factor).min(config.max.as_secs_f64())
}

/// The advice with jitter `j` in [0, 1) mapped to ×0.8 … ×1.2, in whole
/// seconds, at least 1 and at most `max`.
pub fn jittered(config: &PacingConfig, base_secs: f64, j: f64) -> u32 {
    let secs = (base_secs * (0.8 + 0.4 * j)).round();
    secs.clamp(1.0, config.max.as_secs_f64().max(1.0)) as u32
}

#[repr(align(64))]
#[derive(Default)]
struct PaddedCounter(AtomicU64);

/// Shared pacing state: the load figures and the per-worker poll counters.
pub struct Pacer {
    config: PacingConfig,
    pending: AtomicU64,
    /// Polls per second × 1000, from the last tick.
    rate_milli: AtomicU64,
    polls: Box<[PaddedCounter]>,
    /// Sum of `polls` at the last tick (only the ticker touches it).
    last_total: AtomicU64,
}

impl Pacer {
    pub fn new(config: PacingConfig, workers: usize) -> Self {
        Pacer {
            config,
            pending: AtomicU64::new(0),
            rate_milli: AtomicU64::new(0),
            polls: (0..workers.max(1))
                .map(|_| PaddedCounter::default())
                .collect(),
            last_total: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &PacingConfig {
        &self.config
    }

    /// Counts one poll on `worker`'s own slot.
    pub fn record_poll(&self, worker: usize) {
        self.polls[worker % self.polls.len()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Called once per `elapsed` by the ticker with the current pending
    /// count; returns the new unjittered advice in seconds.
    pub fn tick(&self, pending: u64, elapsed: Duration) -> f64 {
        let total: u64 = self.polls.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let last = self.last_total.swap(total, Ordering::Relaxed);
        let rate = (total.saturating_sub(last)) as f64 / elapsed.as_secs_f64().max(1e-3);
        self.pending.store(pending, Ordering::Relaxed);
        self.rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
        self.current_base()
    }

    /// The unjittered advice for the current load, in seconds.
    pub fn current_base(&self) -> f64 {
        base_advice(
            &self.config,
            self.pending.load(Ordering::Relaxed),
            self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }

    /// The `Retry-After` seconds for one response.
    pub fn advise(&self) -> u32 {
        jittered(&self.config, self.current_base(), next_unit())
    }
}

thread_local! {
    /// A per-thread xorshift state for jitter (not for secrets).
    static JITTER: Cell<u64> = Cell::new({
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        let id = std::thread::current().id();
        let salt = format!("{id:?}").bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        (t ^ salt.rotate_left(17)) | 1
    });
}

/// A uniform number in [0, 1).
fn next_unit() -> f64 {
    JITTER.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_rest_the_advice_is_the_base_with_jitter() {
        let c = PacingConfig::default();
        assert_eq!(base_advice(&c, 0, 0.0), 5.0);
        assert_eq!(jittered(&c, 5.0, 0.0), 4);
        assert_eq!(jittered(&c, 5.0, 0.5), 5);
        assert_eq!(jittered(&c, 5.0, 0.999), 6);
    }

    #[test]
    fn the_advice_rises_with_pending_and_poll_rate_and_is_capped() {
        let c = PacingConfig::default();
        assert_eq!(base_advice(&c, 100_000, 0.0), 10.0);
        assert_eq!(base_advice(&c, 0, 20_000.0), 15.0);
        assert_eq!(base_advice(&c, 100_000, 10_000.0), 15.0);
        assert_eq!(base_advice(&c, 100_000_000, 0.0), 120.0);
        assert_eq!(jittered(&c, 120.0, 0.999), 120);
    }

    #[test]
    fn the_ticker_turns_counted_polls_into_a_rate() {
        let p = Pacer::new(
            PacingConfig {
                rate_scale: 100.0,
                ..PacingConfig::default()
            },
            2,
        );
        for _ in 0..150 {
            p.record_poll(0);
        }
        for _ in 0..50 {
            p.record_poll(1);
        }
        // 200 polls in 1 s at rate_scale 100: factor 1 + 2 = 3.
        assert_eq!(p.tick(0, Duration::from_secs(1)), 15.0);
        // No polls in the next second: back to the base.
        assert_eq!(p.tick(0, Duration::from_secs(1)), 5.0);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let p = Pacer::new(PacingConfig::default(), 1);
        let advice: std::collections::BTreeSet<u32> = (0..1000).map(|_| p.advise()).collect();
        assert_eq!(advice, [4, 5, 6].into_iter().collect());
    }
}
