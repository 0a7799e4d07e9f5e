//! The webhook deliverer: one task on the admin tokio runtime that reads
//! the store's durable outbox and the `request.pending` queue, and POSTs
//! each event, signed (`sign`), to every `--webhook-url`.
//!
//! # Delivery
//! - An attempt is one HTTP/1.1 POST with one deadline for connect, write
//!   and read (`attempt_timeout`); a 2xx delivers. A 410 Gone disables that
//!   endpoint for the life of the process (logged, counted). Anything else
//!   (another status, a timeout, a refused connection) is retried after the
//!   next step of `schedule` (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by
//!   default: about 28 hours in all), or after the endpoint's
//!   `Retry-After` when that is longer (capped at `retry_after_max`). When
//!   the schedule runs out, the event is given up for that endpoint
//!   (logged, counted).
//! - An event of the outbox is acknowledged to the store (`outbox_ack`,
//!   batched once per `poll_every`) when every endpoint has delivered, given
//!   up or been disabled. Until then it stays in the outbox, so a restart
//!   sends it again with the same `webhook-id`: at least once.
//! - Bounded: at most `max_held` events are being delivered at once (the
//!   rest wait in the outbox, or are dropped and counted if they are
//!   `request.pending` events), and at most `concurrency` attempts are in
//!   flight. Retries wait without holding an attempt slot, so one slow or
//!   dead endpoint delays nothing but its own events. Events to one
//!   endpoint are not ordered (docs/DECISIONS.md).
//!
//! Device-supplied strings travel only inside the JSON body; logs name an
//! endpoint by scheme and authority (never its path, query or userinfo,
//! which may hold a token) and an event by id and type.

pub mod sign;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fleetgate_registry::metrics as names;
use fleetgate_registry::store::Store;
use fleetgate_registry::webhook::WebhookEvent;
use fleetgate_registry::Registry;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

pub use sign::{SecretError, WebhookSecret};

/// The default retry schedule: the waits after the first, second, …
/// failed attempt.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The most of a response body read (and thrown away) per attempt.
const RESPONSE_BODY_MAX: usize = 64 * 1024;

/// How webhooks are delivered. `Default` holds every documented default
/// except the endpoints and the secret, which have none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `--webhook-url`, each `http://` or `https://`.
    pub endpoints: Vec<Uri>,
    /// `--webhook-ca-cert`'s PEM: the only CAs an `https://` endpoint is
    /// checked against. `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub secret: WebhookSecret,
    /// Waits between attempts (`--webhook-retry-schedule`).
    pub schedule: Vec<Duration>,
    /// One deadline per attempt: connect, write and read. Default 10 s.
    pub attempt_timeout: Duration,
    /// The longest `Retry-After` honoured. Default 6 h.
    pub retry_after_max: Duration,
    /// Attempts in flight at once. Default 16.
    pub concurrency: usize,
    /// Events being delivered at once. Default 1,000.
    pub max_held: usize,
    /// How often the outbox is read and deliveries acknowledged. Default 1 s.
    pub poll_every: Duration,
}

impl WebhookSettings {
    pub fn new(endpoints: Vec<Uri>, secret: WebhookSecret) -> Self {
        WebhookSettings {
            endpoints,
            ca_pem: None,
            secret,
            schedule: DEFAULT_SCHEDULE.to_vec(),
            attempt_timeout: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(6 * 3600),
            concurrency: 16,
            max_held: 1000,
            poll_every: Duration::from_secs(1),
        }
    }
}

/// An endpoint as logs may name it: scheme and host:port only.
pub fn endpoint_label(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{}://{host}:{port}", uri.scheme_str().unwrap_or("http")),
        None => format!("{}://{host}", uri.scheme_str().unwrap_or("http")),
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Gone,
    /// Retry; with the endpoint's `Retry-After`, if it sent one.
    Failed(Option<Duration>, String),
}

struct Deliverer {
    settings: WebhookSettings,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Per endpoint: answered 410, gets nothing more.
    disabled: Vec<AtomicBool>,
    attempts: Semaphore,
    /// Events being delivered now (outbox and pending).
    held: AtomicUsize,
}

/// Starts the deliverer on the current tokio runtime: it reads `registry`'s
/// outbox and the `request.pending` queue `pending` until the runtime
/// stops (undelivered outbox events are sent again after a restart).
pub fn spawn<S: Store>(
    registry: Arc<Registry<S>>,
    settings: WebhookSettings,
    pending: Receiver<WebhookEvent>,
) -> tokio::task::JoinHandle<()> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(settings.attempt_timeout));
    http.set_nodelay(true);
    // Checked at start (the binaries' flag validation); a bad CA file here
    // trusts nothing, so https deliveries fail and are retried, logged.
    let tls = tls::client_config(settings.ca_pem.as_deref()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "webhook TLS set-up failed; https endpoints will fail");
        tls::trusting_nothing()
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let deliverer = Arc::new(Deliverer {
        disabled: settings
            .endpoints
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect(),
        attempts: Semaphore::new(settings.concurrency.max(1)),
        held: AtomicUsize::new(0),
        settings,
        client,
    });
    for uri in &deliverer.settings.endpoints {
        tracing::info!(endpoint = %endpoint_label(uri), "webhook endpoint configured");
    }
    tokio::spawn(run(registry, deliverer, pending))
}

async fn run<S: Store>(
    registry: Arc<Registry<S>>,
    deliverer: Arc<Deliverer>,
    pending: Receiver<WebhookEvent>,
) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut to_ack: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(deliverer.settings.poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = registry.store();
    loop {
        tick.tick().await;
        while let Ok(id) = done_rx.try_recv() {
            to_ack.push(id);
        }
        if !to_ack.is_empty() {
            match store.outbox_ack(&to_ack).await {
                Ok(()) => to_ack.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook outbox: acknowledging failed; retrying")
                }
            }
        }
        let max_held = deliverer.settings.max_held;
        let room = max_held.saturating_sub(deliverer.held.load(Ordering::Acquire));
        if room > 0 {
            match store.outbox_take(room).await {
                Ok(events) => {
                    for event in events {
                        start(&deliverer, event, Some(done_tx.clone()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook outbox: reading failed"),
            }
        }
        // Best-effort events: whatever fits beside the durable ones.
        while let Ok(event) = pending.try_recv() {
            if deliverer.held.load(Ordering::Acquire) >= max_held {
                metrics::counter!(names::WEBHOOK_PENDING_DROPPED_TOTAL).increment(1);
                continue;
            }
            start(&deliverer, event, None);
        }
        if let Ok(depth) = store.outbox_depth().await {
            metrics::gauge!(names::WEBHOOK_OUTBOX_DEPTH).set(depth as f64);
        }
    }
}

/// Delivers `event` to every endpoint in its own task; `done` (outbox
/// events only) hears its id when every endpoint is finished with it.
fn start(
    deliverer: &Arc<Deliverer>,
    event: WebhookEvent,
    done: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) {
    deliverer.held.fetch_add(1, Ordering::AcqRel);
    let deliverer = Arc::clone(deliverer);
    tokio::spawn(async move {
        let body = Bytes::from(sign::body(&event));
        let sends = (0..deliverer.settings.endpoints.len())
            .map(|i| deliver_to(&deliverer, i, &event, body.clone()));
        // Concurrently: a retrying endpoint does not hold back the others.
        futures_util::future::join_all(sends).await;
        deliverer.held.fetch_sub(1, Ordering::AcqRel);
        if let Some(done) = done {
            let _ = done.send(event.id);
        }
    });
}

/// Sends one event to endpoint `i`, retrying on the schedule.
async fn deliver_to(deliverer: &Deliverer, i: usize, event: &WebhookEvent, body: Bytes) {
    let settings = &deliverer.settings;
    let uri = &settings.endpoints[i];
    for attempt in 0..=settings.schedule.len() {
        if deliverer.disabled[i].load(Ordering::Acquire) {
            return;
        }
        let outcome = {
            let _slot = deliverer.attempts.acquire().await;
            match tokio::time::timeout(
                settings.attempt_timeout,
                post(deliverer, uri, event, body.clone()),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Failed(None, "timed out".into()),
            }
        };
        match outcome {
            Attempt::Delivered => {
                metrics::counter!(names::WEBHOOK_DELIVERIES_TOTAL, "result" => "delivered")
                    .increment(1);
                return;
            }
            Attempt::Gone => {
                metrics::counter!(names::WEBHOOK_DELIVERIES_TOTAL, "result" => "gone").increment(1);
                if !deliverer.disabled[i].swap(true, Ordering::AcqRel) {
                    metrics::counter!(names::WEBHOOK_ENDPOINTS_DISABLED_TOTAL).increment(1);
                    tracing::warn!(
                        endpoint = %endpoint_label(uri),
                        "webhook endpoint answered 410 Gone; sending it nothing more until restart"
                    );
                }
                return;
            }
            Attempt::Failed(retry_after, why) => {
                metrics::counter!(names::WEBHOOK_DELIVERIES_TOTAL, "result" => "failed")
                    .increment(1);
                let Some(&step) = settings.schedule.get(attempt) else {
                    break;
                };
                let wait = retry_after.map_or(step, |r| r.min(settings.retry_after_max).max(step));
                tracing::debug!(
                    endpoint = %endpoint_label(uri),
                    id = %event.id,
                    attempt = attempt + 1,
                    why = %why,
                    wait_ms = wait.as_millis() as u64,
                    "webhook attempt failed; will retry"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
    metrics::counter!(names::WEBHOOK_GAVE_UP_TOTAL).increment(1);
    tracing::warn!(
        endpoint = %endpoint_label(uri),
        id = %event.id,
        event = event.kind.as_str(),
        attempts = settings.schedule.len() + 1,
        "webhook delivery given up after the retry schedule ran out"
    );
}

/// One attempt: sign now, POST, read the status (and drain a bounded body).
async fn post(deliverer: &Deliverer, uri: &Uri, event: &WebhookEvent, body: Bytes) -> Attempt {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = deliverer
        .settings
        .secret
        .signature(&event.id, timestamp, &body);
    let request = match Request::post(uri.clone())
        .header("content-type", "application/json")
        .header("user-agent", "fleetgate-webhooks")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(body))
    {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(None, format!("bad request: {e}")),
    };
    let response = match deliverer.client.request(request).await {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(None, format!("{e}")),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    // Read what little the endpoint says so the connection can be reused;
    // a large body is cut off (the connection is then dropped).
    let _ = Limited::new(response.into_body(), RESPONSE_BODY_MAX)
        .collect()
        .await;
    if status.is_success() {
        Attempt::Delivered
    } else if status == StatusCode::GONE {
        Attempt::Gone
    } else {
        Attempt::Failed(retry_after, format!("status {}", status.as_u16()))
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn endpoint_labels_never_show_path_query_or_userinfo() {
        let uri: Uri = "http://user:pw@hooks.example:8080/in?token=abc"
            .parse()
            .unwrap();
        assert_eq!(endpoint_label(&uri), "http://hooks.example:8080");
    }
}
