//! Status counters that every simulated device bumps, and the check of what
//! was seen against what the contract allows.
//!
//! Goose's own metrics also count status codes, but only after its metrics
//! channel has aggregated them, and only per request name. The scenarios
//! need a total the progress line can read every second and a verdict at the
//! end, so they keep their own: one atomic counter per status code, indexed
//! directly, so recording is a single `fetch_add` with no lock and no map.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Status codes are three digits; anything else is counted as `other`.
const STATUS_SLOTS: usize = 600;

/// Counts of HTTP statuses and transport errors, shared by every device.
#[derive(Debug)]
pub struct StatusCounts {
    /// `by_status[s]` counts answers with status `s` (100..=599).
    by_status: Box<[AtomicU64]>,
    /// Requests that got no HTTP answer at all: refused or reset
    /// connections, TLS failures, timeouts.
    transport_errors: AtomicU64,
    /// The same, by kind, with the first one's full message. A lock is
    /// fine here: a healthy run has none, and a sick one needs the why.
    error_detail: Mutex<ErrorDetail>,
}

/// Transport errors by kind (`connect`, `timeout`, `body`, ...), and the
/// first one's message with its causes.
#[derive(Debug, Clone, Default)]
pub struct ErrorDetail {
    pub kinds: BTreeMap<String, u64>,
    pub first: Option<String>,
}

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts {
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            transport_errors: AtomicU64::new(0),
            error_detail: Mutex::new(ErrorDetail::default()),
        }
    }
}

impl StatusCounts {
    /// Counts one answer with `status`.
    pub fn record(&self, status: u16) {
        let slot = usize::from(status).min(STATUS_SLOTS - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request that got no HTTP answer, of `kind`; `message`
    /// is kept if it is the first.
    pub fn record_transport_error(&self, kind: &str, message: impl FnOnce() -> String) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
        let mut d = self.error_detail.lock().unwrap_or_else(|p| p.into_inner());
        *d.kinds.entry(kind.to_owned()).or_default() += 1;
        if d.first.is_none() {
            d.first = Some(message());
        }
    }

    /// Transport errors by kind, and the first one's message.
    pub fn error_detail(&self) -> ErrorDetail {
        self.error_detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The statuses seen so far, with their counts (zero counts left out).
    pub fn snapshot(&self) -> BTreeMap<u16, u64> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((status as u16, n))
            })
            .collect()
    }

    /// Requests that got no HTTP answer so far.
    pub fn transport_errors(&self) -> u64 {
        self.transport_errors.load(Ordering::Relaxed)
    }

    /// Every request so far, answered or not.
    pub fn total(&self) -> u64 {
        self.by_status
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.transport_errors()
    }
}

/// A short name for what went wrong with a request that got no answer.
pub fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

/// `e` and each of its causes, `: `-separated (reqwest's own message names
/// only the outermost layer, e.g. "client error (Connect)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// How many of `counts` fall outside `expected`. Transport errors are
/// always unexpected: a gateway that survives a storm answers every request.
pub fn unexpected(counts: &BTreeMap<u16, u64>, transport_errors: u64, expected: &[u16]) -> u64 {
    counts
        .iter()
        .filter(|(status, _)| !expected.contains(status))
        .map(|(_, n)| n)
        .sum::<u64>()
        + transport_errors
}

/// `202:1200 423:40` — the compact form the progress line and the final
/// report print.
pub fn format_counts(counts: &BTreeMap<u16, u64>, transport_errors: u64) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    if transport_errors > 0 {
        parts.push(format!("errors:{transport_errors}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_status_and_checks_the_expected_set() {
        let counts = StatusCounts::default();
        for s in [202, 202, 423, 429, 409] {
            counts.record(s);
        }
        counts.record_transport_error("connect", || "refused".to_owned());
        let snap = counts.snapshot();
        assert_eq!(
            snap,
            BTreeMap::from([(202, 2), (409, 1), (423, 1), (429, 1)])
        );
        assert_eq!(counts.total(), 6);
        // 409 and the transport error are outside {201, 202, 423, 429}.
        assert_eq!(unexpected(&snap, 1, &[201, 202, 423, 429]), 2);
        assert_eq!(unexpected(&snap, 0, &[202, 409, 423, 429]), 0);
        assert_eq!(format_counts(&snap, 1), "202:2 409:1 423:1 429:1 errors:1");
        let detail = counts.error_detail();
        assert_eq!(detail.kinds, BTreeMap::from([("connect".to_owned(), 1)]));
        assert_eq!(detail.first.as_deref(), Some("refused"));
    }

    #[test]
    fn out_of_range_statuses_are_counted_not_lost() {
        let counts = StatusCounts::default();
        counts.record(999);
        assert_eq!(counts.snapshot(), BTreeMap::from([(599, 1)]));
        assert_eq!(unexpected(&counts.snapshot(), 0, &[200]), 1);
    }
}
