//! fleetgate's data plane: the device-facing listeners, served by
//! thread-per-core monoio workers that parse requests straight from the
//! socket buffer and answer from the registry core.
//!
//! # Layout
//! - [`listener`]: one `SO_REUSEPORT` listening socket per worker.
//! - [`worker`]: the worker threads, each with its own monoio runtime
//!   (io_uring, or epoll where io_uring is unavailable).
//! - [`conn`]: one connection's read–parse–serve–write loop, with keep-alive,
//!   pipelining and time limits.
//! - [`io`]: the byte stream a connection is served over (TCP or TLS), so
//!   the HTTP loop and the MQTT session are written once.
//! - [`tls`]: the HTTPS and MQTTS listeners' rustls configuration, the
//!   server certificate, and the rustls-over-monoio adapter.
//! - [`http`]: the sans-IO HTTP/1.1 request codec and response writer.
//! - [`app`]: `App`, the state every worker shares (registry, forwarding,
//!   limits, configuration), and `Worker`, one worker thread's own.
//! - [`router`]: what each request gets: the register poll, certificate
//!   login, health checks, or forwarding to the admin service.
//! - [`register`]: the register poll, the hot path, and its HTTP answers.
//! - [`login`]: mutual-TLS certificate login, answered by the proxy.
//! - [`limiter`]: per-device and per-source rate limits (GCRA), no store
//!   access, on fixed-size keyed-hash keys.
//! - [`sources`]: the per-source cap on open connections.
//! - [`pacing`]: the `Retry-After` advice, growing with load, jittered.
//! - [`telemetry`]: per-worker metric handles.
//! - [`forward`]: the hand-over of `/api/*` requests to the admin service.
//! - [`mqtt`]: the MQTT listener: CONNECT parsing, implicit registration,
//!   the credential caches, and the splice to the upstream broker.
#![forbid(unsafe_code)]

pub mod app;
pub mod conn;
pub mod forward;
pub mod http;
pub mod io;
pub mod limiter;
pub mod listener;
pub mod login;
pub mod mqtt;
pub mod pacing;
pub mod register;
pub mod router;
pub mod sources;
pub mod telemetry;
pub mod tls;
pub mod worker;
