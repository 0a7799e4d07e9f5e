//! Every metric fleetgate exports, named in one place.
//!
//! Names start with `fleetgate_` and follow Prometheus conventions: counters
//! end in `_total`, durations are histograms in seconds, and gauges are
//! plain nouns. Label values are bounded: outcomes, transports, operations.
//! Usernames and addresses never appear in labels. The Grafana dashboard in
//! `grafana/` uses only these names; a test checks that it does.
//!
//! Hot-path callers resolve handles once per worker (see the proxy's
//! `WorkerMetrics`), so recording is an atomic add with no lookup.

use metrics_exporter_prometheus::{BuildError, PrometheusHandle};

/// Register polls and MQTT CONNECTs, by `transport` and `outcome`.
pub const REQUESTS_TOTAL: &str = "fleetgate_requests_total";
/// Time from a complete request to its answer, by `transport`.
pub const REQUEST_DURATION_SECONDS: &str = "fleetgate_request_duration_seconds";
/// Connections open now, by `listener` (`http`, `mqtt`).
pub const OPEN_CONNECTIONS: &str = "fleetgate_open_connections";
/// Connections refused at accept because a worker was at its cap, by `listener`.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "fleetgate_connections_refused_total";
/// Completed TLS handshakes on the HTTPS and MQTTS listeners, by `kind`
/// (`full`, `resumed`).
pub const TLS_HANDSHAKES_TOTAL: &str = "fleetgate_tls_handshakes_total";
/// TLS handshakes that failed or timed out (bad client certificate,
/// protocol error, a client that went away).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "fleetgate_tls_handshake_failures_total";
/// Time from accept to a completed TLS handshake.
pub const TLS_HANDSHAKE_DURATION_SECONDS: &str = "fleetgate_tls_handshake_duration_seconds";
/// Mutual-TLS authentications (HTTPS login, MQTTS CONNECT) by `result`
/// (`success`, `failure`).
pub const CERTIFICATE_LOGINS_TOTAL: &str = "fleetgate_certificate_logins_total";
/// Store operations by `op` and `result` (`ok`, `error`).
pub const STORE_OPERATIONS_TOTAL: &str = "fleetgate_store_operations_total";
/// Store operation latency by `op`.
pub const STORE_OPERATION_DURATION_SECONDS: &str = "fleetgate_store_operation_duration_seconds";
/// Cache lookups by `cache` and `result` (`hit`, `miss`).
pub const CACHE_LOOKUPS_TOTAL: &str = "fleetgate_cache_lookups_total";
/// Pending requests now.
pub const PENDING_REQUESTS: &str = "fleetgate_pending_requests";
/// 1 while the registry is unlocked, else 0.
pub const REGISTRY_UNLOCKED: &str = "fleetgate_registry_unlocked";
/// Seconds until the registry locks itself again (0 when locked).
pub const REGISTRY_UNLOCK_REMAINING_SECONDS: &str = "fleetgate_registry_unlock_remaining_seconds";
/// Requests granted.
pub const GRANTS_TOTAL: &str = "fleetgate_grants_total";
/// Requests denied.
pub const DENIALS_TOTAL: &str = "fleetgate_denials_total";
/// Client certificates issued (arrives with the certificate work).
pub const CERTIFICATES_ISSUED_TOTAL: &str = "fleetgate_certificates_issued_total";
/// Logins by `result` (`success`, `failure`).
pub const LOGINS_TOTAL: &str = "fleetgate_logins_total";
/// The `Retry-After` seconds most recently advised to a polling device.
pub const RETRY_AFTER_SECONDS: &str = "fleetgate_retry_after_seconds";

/// Label values of `outcome`.
pub mod outcome {
    pub const LOCKED: &str = "locked";
    pub const PENDING: &str = "pending";
    pub const GRANTED: &str = "granted";
    pub const CONFLICT: &str = "conflict";
    pub const DENIED: &str = "denied";
    pub const INVALID: &str = "invalid";
    pub const POLICY: &str = "policy";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const SHED: &str = "shed";
    pub const UNAVAILABLE: &str = "unavailable";
    /// MQTT only: a known user authenticated and was passed through.
    pub const AUTHENTICATED: &str = "authenticated";
    /// MQTT only: a known user presented a wrong password.
    pub const BAD_CREDENTIALS: &str = "bad_credentials";

    /// Every outcome, for pre-registering series.
    pub const ALL: [&str; 12] = [
        LOCKED,
        PENDING,
        GRANTED,
        CONFLICT,
        DENIED,
        INVALID,
        POLICY,
        RATE_LIMITED,
        SHED,
        UNAVAILABLE,
        AUTHENTICATED,
        BAD_CREDENTIALS,
    ];
}

/// MQTT packets the relay refused, by `kind` (`publish`: a PUBLISH to a
/// topic the user may not write; `subscribe`: one refused SUBSCRIBE filter).
pub const MQTT_DENIED_TOTAL: &str = "fleetgate_mqtt_denied_total";

/// Decisions made by auto-approval rules, by `rule` (its name: the label
/// set is bounded by the number of rules, at most `rule::RULES_MAX`) and
/// `action` (`grant`, `deny`).
pub const RULE_DECISIONS_TOTAL: &str = "fleetgate_rule_decisions_total";

/// Webhook delivery attempts, by `result` (`delivered`: a 2xx; `failed`:
/// another status, a timeout or a refused connection, to be retried;
/// `gone`: a 410, which disables the endpoint).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "fleetgate_webhook_deliveries_total";
/// `request.pending` events dropped because their bounded queue was full.
pub const WEBHOOK_PENDING_DROPPED_TOTAL: &str = "fleetgate_webhook_pending_dropped_total";
/// Events in the durable outbox not yet delivered to every endpoint.
pub const WEBHOOK_OUTBOX_DEPTH: &str = "fleetgate_webhook_outbox_depth";
/// Undelivered events dropped from a full outbox (`--webhook-outbox-max`),
/// oldest first.
pub const WEBHOOK_OUTBOX_DROPPED_TOTAL: &str = "fleetgate_webhook_outbox_dropped_total";
/// Events given up on for one endpoint after the retry schedule ran out.
pub const WEBHOOK_GAVE_UP_TOTAL: &str = "fleetgate_webhook_gave_up_total";
/// Endpoints that answered 410 Gone and get nothing more from this process.
pub const WEBHOOK_ENDPOINTS_DISABLED_TOTAL: &str = "fleetgate_webhook_endpoints_disabled_total";

/// Audit records written, by `result` (`stored`; `failed`: the store did
/// not keep it, see the error log line).
pub const AUDIT_RECORDS_TOTAL: &str = "fleetgate_audit_records_total";
/// `--audit-log` lines dropped because the writer's queue was full (the
/// disk stalled).
pub const AUDIT_LOG_DROPPED_TOTAL: &str = "fleetgate_audit_log_dropped_total";

/// Every metric name, for tests that check dashboards against exports.
pub const ALL: [&str; 29] = [
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    OPEN_CONNECTIONS,
    CONNECTIONS_REFUSED_TOTAL,
    TLS_HANDSHAKES_TOTAL,
    TLS_HANDSHAKE_FAILURES_TOTAL,
    TLS_HANDSHAKE_DURATION_SECONDS,
    CERTIFICATE_LOGINS_TOTAL,
    STORE_OPERATIONS_TOTAL,
    STORE_OPERATION_DURATION_SECONDS,
    CACHE_LOOKUPS_TOTAL,
    PENDING_REQUESTS,
    REGISTRY_UNLOCKED,
    REGISTRY_UNLOCK_REMAINING_SECONDS,
    GRANTS_TOTAL,
    DENIALS_TOTAL,
    CERTIFICATES_ISSUED_TOTAL,
    LOGINS_TOTAL,
    RETRY_AFTER_SECONDS,
    MQTT_DENIED_TOTAL,
    RULE_DECISIONS_TOTAL,
    WEBHOOK_DELIVERIES_TOTAL,
    WEBHOOK_PENDING_DROPPED_TOTAL,
    WEBHOOK_OUTBOX_DEPTH,
    WEBHOOK_OUTBOX_DROPPED_TOTAL,
    WEBHOOK_GAVE_UP_TOTAL,
    WEBHOOK_ENDPOINTS_DISABLED_TOTAL,
    AUDIT_RECORDS_TOTAL,
    AUDIT_LOG_DROPPED_TOTAL,
];

/// Histogram buckets for request and store latencies, in seconds (25 µs to 5 s).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 5.0,
];

/// Registers HELP text and units for every metric with the installed
/// recorder. Call once at start.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_TOTAL,
        "Register polls and MQTT CONNECTs by transport and outcome."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Webhook delivery attempts by result (delivered, failed, gone)."
    );
    describe_counter!(
        WEBHOOK_PENDING_DROPPED_TOTAL,
        "request.pending webhook events dropped because their queue was full."
    );
    describe_gauge!(
        WEBHOOK_OUTBOX_DEPTH,
        "Webhook events in the durable outbox, not yet delivered everywhere."
    );
    describe_counter!(
        WEBHOOK_OUTBOX_DROPPED_TOTAL,
        "Undelivered webhook events dropped from a full outbox, oldest first."
    );
    describe_counter!(
        WEBHOOK_GAVE_UP_TOTAL,
        "Webhook events given up on for one endpoint after the retry schedule."
    );
    describe_counter!(
        WEBHOOK_ENDPOINTS_DISABLED_TOTAL,
        "Webhook endpoints disabled for this process after a 410 Gone."
    );
    describe_counter!(
        RULE_DECISIONS_TOTAL,
        "Requests granted or denied by an auto-approval rule, by rule and action."
    );
    describe_counter!(
        AUDIT_RECORDS_TOTAL,
        "Audit records written, by result (stored, failed)."
    );
    describe_counter!(
        AUDIT_LOG_DROPPED_TOTAL,
        "--audit-log lines dropped because the writer's queue was full."
    );
    describe_counter!(
        MQTT_DENIED_TOTAL,
        "MQTT PUBLISHes and SUBSCRIBE filters the relay refused, by kind."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a complete request to its answer, by transport."
    );
    describe_gauge!(OPEN_CONNECTIONS, "Connections open now, by listener.");
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections refused at accept because a worker was at its connection cap."
    );
    describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "Completed TLS handshakes by kind (full, resumed)."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes that failed or timed out."
    );
    describe_histogram!(
        TLS_HANDSHAKE_DURATION_SECONDS,
        Unit::Seconds,
        "Time from accept to a completed TLS handshake."
    );
    describe_counter!(
        CERTIFICATE_LOGINS_TOTAL,
        "Mutual-TLS authentications (HTTPS login, MQTTS CONNECT) by result."
    );
    describe_counter!(STORE_OPERATIONS_TOTAL, "Store operations by op and result.");
    describe_histogram!(
        STORE_OPERATION_DURATION_SECONDS,
        Unit::Seconds,
        "Store operation latency by op."
    );
    describe_counter!(
        CACHE_LOOKUPS_TOTAL,
        "Cache lookups by cache and result (hit, miss)."
    );
    describe_gauge!(PENDING_REQUESTS, "Pending registration requests now.");
    describe_gauge!(
        REGISTRY_UNLOCKED,
        "1 while the registry is unlocked, else 0."
    );
    describe_gauge!(
        REGISTRY_UNLOCK_REMAINING_SECONDS,
        Unit::Seconds,
        "Seconds until the registry locks itself again."
    );
    describe_counter!(GRANTS_TOTAL, "Registration requests granted.");
    describe_counter!(DENIALS_TOTAL, "Registration requests denied.");
    describe_counter!(CERTIFICATES_ISSUED_TOTAL, "Client certificates issued.");
    describe_counter!(LOGINS_TOTAL, "Logins by result (success, failure).");
    describe_gauge!(
        RETRY_AFTER_SECONDS,
        Unit::Seconds,
        "The base Retry-After currently advised to polling devices, before jitter."
    );
}

/// Installs the process-wide Prometheus recorder. Call before building
/// anything that resolves metric handles (the registry, the workers).
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.into()),
            &LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(STORE_OPERATION_DURATION_SECONDS.into()),
            &LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(TLS_HANDSHAKE_DURATION_SECONDS.into()),
            &LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    // Series that exist before their first event, so dashboards and alerts
    // see a 0 rather than nothing.
    for kind in ["full", "resumed"] {
        metrics::counter!(TLS_HANDSHAKES_TOTAL, "kind" => kind).absolute(0);
    }
    metrics::counter!(TLS_HANDSHAKE_FAILURES_TOTAL).absolute(0);
    for result in ["success", "failure"] {
        metrics::counter!(CERTIFICATE_LOGINS_TOTAL, "result" => result).absolute(0);
    }
    metrics::counter!(CERTIFICATES_ISSUED_TOTAL).absolute(0);
    for kind in ["publish", "subscribe"] {
        metrics::counter!(MQTT_DENIED_TOTAL, "kind" => kind).absolute(0);
    }
    metrics::counter!(GRANTS_TOTAL).absolute(0);
    metrics::counter!(DENIALS_TOTAL).absolute(0);
    for result in ["success", "failure"] {
        metrics::counter!(LOGINS_TOTAL, "result" => result).absolute(0);
    }
    for result in ["delivered", "failed", "gone"] {
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "result" => result).absolute(0);
    }
    metrics::counter!(WEBHOOK_PENDING_DROPPED_TOTAL).absolute(0);
    metrics::counter!(WEBHOOK_OUTBOX_DROPPED_TOTAL).absolute(0);
    metrics::counter!(WEBHOOK_GAVE_UP_TOTAL).absolute(0);
    metrics::counter!(WEBHOOK_ENDPOINTS_DISABLED_TOTAL).absolute(0);
    metrics::gauge!(WEBHOOK_OUTBOX_DEPTH).set(0.0);
    for result in ["stored", "failed"] {
        metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => result).absolute(0);
    }
    metrics::counter!(AUDIT_LOG_DROPPED_TOTAL).absolute(0);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_style_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(name.starts_with("fleetgate_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(seen.insert(name), "{name} listed twice");
        }
        assert!(REQUESTS_TOTAL.ends_with("_total"));
        assert!(REQUEST_DURATION_SECONDS.ends_with("_seconds"));
    }
}
