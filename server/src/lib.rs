//! The composition crate: the one place that knows every other crate, and
//! builds the two binaries from them.
//!
//! `fleetgate-registry` is the core. The data plane (`fleetgate-proxy`),
//! the admin service (`fleetgate-admin`) and the Redis backend
//! (`fleetgate-store-redis`) each depend on the core alone, never on each
//! other. This crate owns what only a process needs: the flags and the
//! typed configuration, opening the store, the telemetry wiring, and the
//! adapter that lets the proxy forward to an in-process admin service.
//!
//! # Layout
//! - [`flags`]: the command lines (clap), turned into [`config`] values.
//! - [`config`]: `GatewayConfig` (`fleetgate`) and `AdminConfig`
//!   (`fleetgate-admin`), with documented defaults and `validate()`.
//! - [`bootstrap`]: the secret, the store `--store` names (embedded or
//!   Redis, with the poll cache and its refresher), the client CA, the
//!   built-in admin, and the sweeper with a clean stop.
//! - [`telemetry`]: the recorder switch, `/metrics`, the gauge ticker.
//! - [`gateway`]: the all-in-one process's listeners and the proxy's `App`.
//! - [`admin_handler`]: the admin service behind the proxy's forwarding.
//! - [`webhooks`]: the `--webhook-*` flags, their config and the wiring of
//!   the outbox, the `request.pending` queue and the deliverer.
//! - [`cli`]: tracing, usage errors (exit 2) and signals, shared by both
//!   binaries (`src/bin/`).
#![forbid(unsafe_code)]

pub mod admin_handler;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod flags;
pub mod gateway;
pub mod telemetry;
pub mod webhooks;
