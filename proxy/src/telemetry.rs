//! The proxy's metric handles, resolved once per worker.
//!
//! `metrics::counter!` looks a series up in the recorder's map on every
//! call. The hot path instead holds a handle per (transport, outcome), so
//! recording a request is one atomic add and one histogram insert, with no
//! lookup and no lock. The cost is measured in `docs/BENCHMARKS.md`.

use fleetgate_registry::metrics::{self as names, outcome};
use fleetgate_registry::registry::RegisterOutcome;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// The outcomes a request can have, as label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    Locked,
    Pending,
    Granted,
    Conflict,
    Denied,
    Invalid,
    Policy,
    RateLimited,
    Shed,
    Unavailable,
    Authenticated,
    BadCredentials,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        outcome::ALL[self as usize]
    }
}

/// Which transport a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Mqtt,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Mqtt => "mqtt",
        }
    }
}

/// The device listeners, as the `listener` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Listener {
    Http,
    Https,
    Mqtt,
    Mqtts,
}

impl Listener {
    pub const ALL: [Listener; 4] = [
        Listener::Http,
        Listener::Https,
        Listener::Mqtt,
        Listener::Mqtts,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Mqtt => "mqtt",
            Listener::Mqtts => "mqtts",
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Listener::Https | Listener::Mqtts)
    }
}

/// One worker's handles.
pub struct WorkerMetrics {
    requests: [[Counter; 12]; 2],
    latency: [Histogram; 2],
    /// Per [`Listener`].
    pub open: [Gauge; 4],
    /// Per [`Listener`].
    pub refused: [Counter; 4],
    pub credential_hit: Counter,
    pub credential_miss: Counter,
    pub tls_full: Counter,
    pub tls_resumed: Counter,
    pub tls_failed: Counter,
    pub tls_handshake_seconds: Histogram,
    /// Mutual-TLS authentications by result.
    pub cert_auth_ok: Counter,
    pub cert_auth_refused: Counter,
    /// PUBLISHes the relay refused.
    pub mqtt_denied_publish: Counter,
    /// SUBSCRIBE filters the relay refused.
    pub mqtt_denied_filter: Counter,
}

impl WorkerMetrics {
    /// Resolves every handle against the installed recorder (no-ops if none).
    pub fn new() -> Self {
        let per = |t: Transport| {
            outcome::ALL
                .map(|o| counter!(names::REQUESTS_TOTAL, "transport" => t.label(), "outcome" => o))
        };
        WorkerMetrics {
            requests: [per(Transport::Http), per(Transport::Mqtt)],
            latency: [Transport::Http, Transport::Mqtt]
                .map(|t| histogram!(names::REQUEST_DURATION_SECONDS, "transport" => t.label())),
            open: Listener::ALL.map(|l| gauge!(names::OPEN_CONNECTIONS, "listener" => l.label())),
            refused: Listener::ALL
                .map(|l| counter!(names::CONNECTIONS_REFUSED_TOTAL, "listener" => l.label())),
            credential_hit: counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "credentials", "result" => "hit"),
            credential_miss: counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "credentials", "result" => "miss"),
            tls_full: counter!(names::TLS_HANDSHAKES_TOTAL, "kind" => "full"),
            tls_resumed: counter!(names::TLS_HANDSHAKES_TOTAL, "kind" => "resumed"),
            tls_failed: counter!(names::TLS_HANDSHAKE_FAILURES_TOTAL),
            tls_handshake_seconds: histogram!(names::TLS_HANDSHAKE_DURATION_SECONDS),
            cert_auth_ok: counter!(names::CERTIFICATE_LOGINS_TOTAL, "result" => "success"),
            cert_auth_refused: counter!(names::CERTIFICATE_LOGINS_TOTAL, "result" => "failure"),
            mqtt_denied_publish: counter!(names::MQTT_DENIED_TOTAL, "kind" => "publish"),
            mqtt_denied_filter: counter!(names::MQTT_DENIED_TOTAL, "kind" => "subscribe"),
        }
    }

    /// Records one answered request and how long it took.
    pub fn request(&self, transport: Transport, outcome: Outcome, seconds: f64) {
        let t = transport as usize;
        self.requests[t][outcome as usize].increment(1);
        self.latency[t].record(seconds);
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Outcome {
    /// The metrics label of a register outcome.
    pub fn of(outcome: &RegisterOutcome) -> Outcome {
        match outcome {
            RegisterOutcome::Invalid(_) => Outcome::Invalid,
            RegisterOutcome::Policy { .. } => Outcome::Policy,
            RegisterOutcome::Conflict => Outcome::Conflict,
            RegisterOutcome::Denied => Outcome::Denied,
            RegisterOutcome::Locked { .. } => Outcome::Locked,
            RegisterOutcome::Pending { .. } => Outcome::Pending,
            RegisterOutcome::Granted { .. } => Outcome::Granted,
            RegisterOutcome::Unavailable(_) => Outcome::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_line_up_with_the_names_module() {
        assert_eq!(Outcome::Locked.label(), "locked");
        assert_eq!(Outcome::RateLimited.label(), "rate_limited");
        assert_eq!(Outcome::BadCredentials.label(), "bad_credentials");
        assert_eq!(Outcome::Unavailable.label(), "unavailable");
    }
}
