//! fleetgate's admin service: the JSON API administrators use to unlock the
//! registry, grant or deny pending requests, manage users and log in.
//!
//! It depends on the registry core alone: the binaries that run it, on its
//! own (`fleetgate-admin`) or inside the all-in-one `fleetgate` process,
//! live in the `fleetgate` composition crate. It runs on tokio + hyper. In
//! the all-in-one process the proxy forwards the `/api/*` requests it does
//! not serve itself (by default only login and the CA
//! certificate; the whole API with `--admin-on-device-port on`) to
//! [`AdminService::handle`].
//!
//! # Layout
//! - [`service`]: [`AdminService`], the routes, as a function from a request
//!   to a response with no socket in sight (`mod.rs` the service and its
//!   entry point, `routes.rs` the route table and handlers, `views.rs` the
//!   JSON shapes, `error.rs` [`service::ApiError`]).
//! - [`server`]: serving [`AdminService`] over HTTP/1.1 with hyper.
//! - [`query`]: percent-decoding of query strings and path segments.
//! - [`throttle`]: the login failure budgets per (username, source) and
//!   per source.
//! - [`webhook`]: the webhook deliverer (signed Standard Webhooks POSTs of
//!   the store's outbox and the `request.pending` queue, retries, 410) and
//!   its signing (`webhook::sign`).
//! - [`ui`]: the Client Registry View, the web UI embedded from `admin/ui/`
//!   and served at `/ui/` (HTML, CSS and ES modules that call this API).
#![forbid(unsafe_code)]

pub mod query;
pub mod server;
pub mod service;
pub mod throttle;
pub mod ui;
pub mod webhook;

pub use service::AdminService;
