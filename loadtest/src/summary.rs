//! What a run reports: latency distributions kept in HDR histograms, and the
//! `summary.json` every scenario writes next to goose's own reports.
//!
//! The summary is the machine-readable verdict: the CI smoke tests parse it,
//! and it holds what goose's reports cannot, such as the time from a
//! device's first poll to its 201.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram: 1 unit to 1 hour of units, 3 significant digits
/// (0.1% error), whatever the unit (the callers say which).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Percentiles of one distribution, in the unit the field name gives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Samples recorded.
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Distribution {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Distribution {
        if h.is_empty() {
            return Distribution::default();
        }
        Distribution {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }

    /// `n=120 p50 830 p90 1520 p99 2210 max 2304 ms`.
    pub fn line(&self, unit: &str) -> String {
        format!(
            "n={} p50 {} p90 {} p99 {} p99.9 {} max {} {unit}",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// Records `d` in milliseconds (at least 1: HDR histograms start at 1).
pub fn record_ms(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_millis() as u64).max(1));
}

/// Records `d` in microseconds (at least 1).
pub fn record_us(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// `polling-storm`: how long devices waited for their grant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectReport {
    /// Devices that collected their 201.
    pub collected: u64,
    /// Devices still without a 201 when the run ended.
    pub not_collected: u64,
    /// From a device's first poll to the response that carried its 201.
    pub time_to_201_ms: Distribution,
    /// From the start of the load to the 201 of the last device of the
    /// fleet: how long admitting the whole fleet took. `None` when some
    /// device never collected.
    #[serde(default)]
    pub fleet_collected_secs: Option<f64>,
}

/// What the admin side of a scenario did (setup, or granting during the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminReport {
    /// The registry was locked before the run (and is locked again after it).
    pub was_locked: bool,
    /// Devices registered during setup (`login-storm`, `mqtt-storm --mode granted`).
    pub registered: u64,
    /// Grants the admin API acknowledged with 200.
    pub granted: u64,
    /// Every status the admin API answered, by route: `grant:200`, `list:200`.
    pub statuses: BTreeMap<String, u64>,
    /// Admin requests that got no HTTP answer.
    pub transport_errors: u64,
    /// Time the setup took before the load started.
    pub setup_secs: f64,
    /// `polling-storm --grant-mode bulk`: bulk grant calls made.
    #[serde(default)]
    pub bulk_calls: u64,
    /// The longest bulk grant call that granted something (s).
    #[serde(default)]
    pub slowest_bulk_secs: f64,
    /// From the start of the first bulk grant call that granted something
    /// to the end of the last one (s): how long granting the fleet took.
    #[serde(default)]
    pub granting_secs: f64,
    /// When the first bulk call that granted something started.
    #[serde(skip)]
    pub first_bulk_grant: Option<std::time::Instant>,
}

/// The verdict of one HTTP scenario, written to `<report-dir>/summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// `polling-storm`, `locked-storm`, `login-storm` or `tls-reconnect`.
    pub scenario: String,
    /// The run's id, part of every username (`lt-<run>-<index>`).
    pub run_id: String,
    /// The device API the load went to.
    pub target: String,
    /// Whether this process started the gateway itself.
    pub self_started: bool,
    /// Simulated devices (goose users).
    pub devices: u64,
    /// Wall time from the first user's start to the end of the run.
    pub elapsed_secs: f64,
    /// Why the run ended: `duration`, `all-collected`, `canceled`.
    pub ended_by: String,
    /// Requests the devices sent (answered or not).
    pub requests: u64,
    /// Answers by status code (JSON object keys are strings: `"202"`).
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    pub transport_errors: u64,
    /// The same by kind: `connect`, `timeout`, `body`, `request`, `other`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub transport_error_kinds: BTreeMap<String, u64>,
    /// The first transport error's message, with its causes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_transport_error: Option<String>,
    /// The statuses this scenario allows.
    pub expected: Vec<u16>,
    /// Answers outside `expected`, plus transport errors. Must be 0.
    pub unexpected: u64,
    /// Per-request latency as the devices saw it (send to whole body read),
    /// in microseconds.
    pub latency_us: Distribution,
    /// `polling-storm` only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub collect: Option<CollectReport>,
    /// The admin side, when the scenario has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub admin: Option<AdminReport>,
    /// Goose's own reports, and the gateway's log when it was started here.
    pub files: Vec<String>,
}

impl RunSummary {
    /// The counts keyed by number again.
    pub fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.statuses
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
            .collect()
    }
}

/// Statuses keyed by their string form, for JSON.
pub fn string_keys<K: ToString>(counts: &BTreeMap<K, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// Prints `[  3.0s] N <what>, R/s` to stderr once a second, from the
/// counter `done`, until the returned task is aborted (the progress line of
/// the tokio storm tools, `mqtt-storm` and `tls-storm`).
pub fn spawn_progress(
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    start: std::time::Instant,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let n = done.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "[{:>5.1}s] {n} {what}, {}/s",
                start.elapsed().as_secs_f64(),
                n - last
            );
            last = n;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_reads_percentiles_from_the_histogram() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            record_ms(&mut h, Duration::from_millis(ms));
        }
        let d = Distribution::of(&h);
        assert_eq!(d.count, 1000);
        assert_eq!(d.min, 1);
        // Three significant digits: within 0.1% of the exact value.
        assert!((499..=501).contains(&d.p50), "{d:?}");
        assert!((989..=991).contains(&d.p99), "{d:?}");
        assert!((999..=1001).contains(&d.max), "{d:?}");
        assert_eq!(Distribution::of(&new_histogram()), Distribution::default());
    }

    #[test]
    fn zero_durations_are_recorded_as_one_unit() {
        let mut h = new_histogram();
        record_us(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 1);
        assert_eq!(h.max(), 1);
    }

    #[test]
    fn summary_round_trips_with_string_status_keys() {
        let s = RunSummary {
            scenario: "locked-storm".into(),
            statuses: string_keys(&BTreeMap::from([(423u16, 7u64), (429, 1)])),
            expected: vec![423, 429],
            ..RunSummary::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""statuses":{"423":7,"429":1}"#), "{json}");
        assert!(
            !json.contains("collect"),
            "absent sections are left out: {json}"
        );
        let back: RunSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status_counts(), BTreeMap::from([(423, 7), (429, 1)]));
    }
}
