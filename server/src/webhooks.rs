//! Webhooks in the binaries: the `--webhook-*` flags, their typed
//! [`WebhookConfig`] (part of `StoreConfig`, so both binaries take them)
//! with `validate()`, and the wiring at start: the store (embedded or
//! Redis) records events in its outbox, the registry offers `request.pending` events to a bounded
//! queue, and the deliverer (`fleetgate_admin::webhook`) runs on the admin
//! runtime.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fleetgate_admin::webhook::{WebhookSecret, WebhookSettings, DEFAULT_SCHEDULE};
use fleetgate_registry::embedded::outbox::OUTBOX_DEFAULT_MAX;
use fleetgate_registry::store::Store;
use fleetgate_registry::webhook::{PendingEvents, WebhookEvent, PENDING_QUEUE_DEFAULT};
use fleetgate_registry::Registry;

use crate::config::ConfigError;
use crate::flags::parse_duration;

/// The longest retry schedule accepted (`--webhook-retry-schedule`).
pub const SCHEDULE_STEPS_MAX: usize = 32;
/// The longest a schedule may run in all: three days.
pub const SCHEDULE_TOTAL_MAX: Duration = Duration::from_secs(3 * 24 * 3600);

/// The `--webhook-*` flags.
#[derive(Args, Clone, Debug)]
pub struct WebhookFlags {
    /// Send signed webhook events (Standard Webhooks) to this URL
    /// (`http://` or `https://host:port/path`); repeat for several
    /// endpoints. Needs --webhook-secret.
    #[arg(
        long = "webhook-url",
        env = "FLEETGATE_WEBHOOK_URL",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,

    /// The CA certificates (PEM) an `https://` webhook endpoint's
    /// certificate must chain to; then the system's roots are not trusted.
    #[arg(long, env = "FLEETGATE_WEBHOOK_CA_CERT")]
    pub webhook_ca_cert: Option<std::path::PathBuf>,

    /// The signing secret, `whsec_` and the base64 of 24 to 64 bytes.
    #[arg(long, env = "FLEETGATE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Deadline of one delivery attempt: connect, write and read.
    #[arg(long, env = "FLEETGATE_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Most undelivered events the durable outbox holds; past it the
    /// oldest is dropped (counted and logged). On Redis, split evenly over
    /// its 65 streams.
    #[arg(long, env = "FLEETGATE_WEBHOOK_OUTBOX_MAX", default_value_t = OUTBOX_DEFAULT_MAX as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub webhook_outbox_max: u64,

    /// Waits between delivery attempts, comma-separated (for tests).
    #[arg(long, env = "FLEETGATE_WEBHOOK_RETRY_SCHEDULE", hide = true, value_delimiter = ',', value_parser = parse_duration)]
    pub webhook_retry_schedule: Vec<Duration>,

    /// How often the outbox is read (for tests).
    #[arg(long, env = "FLEETGATE_WEBHOOK_POLL_INTERVAL", hide = true, value_parser = parse_duration)]
    pub webhook_poll_interval: Option<Duration>,

    /// On Redis: how long an event handed to an instance may go untouched
    /// before another instance takes it over (for tests; default 60 s).
    #[arg(long, env = "FLEETGATE_WEBHOOK_CLAIM_IDLE", hide = true, value_parser = parse_duration)]
    pub webhook_claim_idle: Option<Duration>,
}

/// How webhooks are configured; `Default` is "no webhooks".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    /// Never logged: `Debug` of the whole config redacts it.
    pub secret: Option<String>,
    /// `--webhook-ca-cert`.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Default 10 s.
    pub attempt_timeout: Duration,
    /// Default 100,000.
    pub outbox_max: usize,
    /// Default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub schedule: Vec<Duration>,
    /// Default 1 s.
    pub poll_every: Duration,
    /// The `request.pending` queue. Default 10,000.
    pub pending_queue: usize,
    /// On Redis, the take-over idle time. Default 60 s.
    pub claim_idle: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: None,
            ca_cert: None,
            attempt_timeout: Duration::from_secs(10),
            outbox_max: OUTBOX_DEFAULT_MAX,
            schedule: DEFAULT_SCHEDULE.to_vec(),
            poll_every: Duration::from_secs(1),
            pending_queue: PENDING_QUEUE_DEFAULT,
            claim_idle: fleetgate_store_redis::store::CLAIM_IDLE_DEFAULT,
        }
    }
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

impl WebhookFlags {
    pub fn into_config(self) -> WebhookConfig {
        let d = WebhookConfig::default();
        WebhookConfig {
            urls: self.urls,
            secret: self.webhook_secret,
            ca_cert: self.webhook_ca_cert,
            attempt_timeout: self.webhook_timeout,
            outbox_max: self.webhook_outbox_max as usize,
            schedule: if self.webhook_retry_schedule.is_empty() {
                d.schedule
            } else {
                self.webhook_retry_schedule
            },
            poll_every: self.webhook_poll_interval.unwrap_or(d.poll_every),
            pending_queue: d.pending_queue,
            claim_idle: self.webhook_claim_idle.unwrap_or(d.claim_idle),
        }
    }
}

impl WebhookConfig {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Checks every value (the same on both stores).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(|_| ())?;
        if self.claim_idle < Duration::from_millis(100) {
            return Err(invalid("--webhook-claim-idle", "must be at least 100ms"));
        }
        Ok(())
    }

    /// The deliverer's settings (`None` without webhooks).
    pub fn settings(&self) -> Result<Option<WebhookSettings>, ConfigError> {
        let secret = match &self.secret {
            Some(s) => Some(
                WebhookSecret::parse(s).map_err(|e| invalid("--webhook-secret", e.to_string()))?,
            ),
            None => None,
        };
        if self.urls.is_empty() {
            if secret.is_some() {
                return Err(invalid(
                    "--webhook-secret",
                    "given without --webhook-url; nothing would be sent",
                ));
            }
            return Ok(None);
        }
        let Some(secret) = secret else {
            return Err(invalid(
                "--webhook-url",
                "needs --webhook-secret (whsec_...) to sign the events",
            ));
        };
        let mut endpoints = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| invalid("--webhook-url", format!("not a URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(invalid(
                    "--webhook-url",
                    "must be http:// or https://host[:port]/path",
                ));
            }
            endpoints.push(uri);
        }
        if endpoints.len() > 16 {
            return Err(invalid("--webhook-url", "at most 16 endpoints"));
        }
        if self.schedule.is_empty() || self.schedule.len() > SCHEDULE_STEPS_MAX {
            return Err(invalid(
                "--webhook-retry-schedule",
                format!("1 to {SCHEDULE_STEPS_MAX} steps"),
            ));
        }
        if self.schedule.iter().sum::<Duration>() > SCHEDULE_TOTAL_MAX {
            return Err(invalid(
                "--webhook-retry-schedule",
                "may run at most 3 days in all",
            ));
        }
        if self.attempt_timeout.is_zero() {
            return Err(invalid("--webhook-timeout", "must be greater than zero"));
        }
        let ca_pem = match &self.ca_cert {
            Some(path) => {
                let why =
                    |m: String| invalid("--webhook-ca-cert", format!("{}: {m}", path.display()));
                let pem = std::fs::read(path).map_err(|e| why(e.to_string()))?;
                fleetgate_admin::webhook::tls::client_config(Some(&pem)).map_err(why)?;
                Some(pem)
            }
            None => None,
        };
        let mut settings = WebhookSettings::new(endpoints, secret);
        settings.ca_pem = ca_pem;
        settings.schedule = self.schedule.clone();
        settings.attempt_timeout = self.attempt_timeout;
        settings.poll_every = self.poll_every;
        Ok(Some(settings))
    }
}

/// What start-up needs to turn webhooks on: made before the registry is
/// built, started once it is shared.
pub struct Wiring {
    settings: WebhookSettings,
    queue: PendingEvents,
    pending: std::sync::mpsc::Receiver<WebhookEvent>,
    pub outbox_max: usize,
    pub claim_idle: Duration,
}

impl Wiring {
    /// `None` without webhooks. The config was validated at start.
    pub fn new(config: &WebhookConfig) -> Option<Wiring> {
        let settings = config.settings().ok().flatten()?;
        let (queue, pending) = PendingEvents::bounded(config.pending_queue);
        Some(Wiring {
            settings,
            queue,
            pending,
            outbox_max: config.outbox_max,
            claim_idle: config.claim_idle,
        })
    }

    /// The registry, offering `request.pending` events to the queue.
    pub fn attach<S: Store>(&self, registry: Registry<S>) -> Registry<S> {
        registry.with_pending_events(self.queue.clone())
    }

    /// Starts the deliverer on the current tokio runtime.
    pub fn start<S: Store>(self, registry: Arc<Registry<S>>) {
        fleetgate_admin::webhook::spawn(registry, self.settings, self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn with(urls: &[&str], secret: Option<&str>) -> WebhookConfig {
        WebhookConfig {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            secret: secret.map(str::to_owned),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn a_url_needs_a_valid_secret_and_http() {
        assert!(WebhookConfig::default().validate().is_ok());
        let e = with(&["http://127.0.0.1:9/in"], None)
            .validate()
            .unwrap_err();
        assert_eq!(e.flag, "--webhook-url");
        let e = with(&["http://127.0.0.1:9/in"], Some("whsec_x!"))
            .validate()
            .unwrap_err();
        assert_eq!(e.flag, "--webhook-secret");
        assert!(!e.to_string().contains("x!"), "the secret is not echoed");
        let e = with(&[], Some(SECRET)).validate().unwrap_err();
        assert_eq!(e.flag, "--webhook-secret");
        let e = with(&["ftp://h/in"], Some(SECRET)).validate().unwrap_err();
        assert_eq!(e.flag, "--webhook-url");
        assert!(with(&["http://127.0.0.1:9/in"], Some(SECRET))
            .validate()
            .is_ok());
    }

    #[test]
    fn the_schedule_is_capped_in_steps_and_total() {
        let mut c = with(&["http://127.0.0.1:9/in"], Some(SECRET));
        c.schedule = vec![Duration::from_secs(1); SCHEDULE_STEPS_MAX];
        assert!(c.validate().is_ok(), "at the cap of steps");
        c.schedule.push(Duration::from_secs(1));
        assert!(c.validate().is_err());
        c.schedule = vec![SCHEDULE_TOTAL_MAX];
        assert!(c.validate().is_ok(), "at the cap of total time");
        c.schedule = vec![SCHEDULE_TOTAL_MAX, Duration::from_secs(1)];
        assert!(c.validate().is_err());
    }
}
