//! Load tests for fleetgate: the storms the gateway exists to survive,
//! reproduced with one command and read back as numbers.
//!
//! The HTTP scenarios run on [goose](https://book.goose.rs): every goose
//! user is one device with a stable username (`lt-<run>-<index>`). Goose
//! writes its own HTML and JSON reports; on top of them each scenario counts
//! every status it saw, checks them against the set the contract allows
//! (docs/API.md), and writes `summary.json`. The MQTT storm is a plain tokio
//! program, because goose speaks only HTTP; so is the TLS storm, a lean
//! client that opens a TLS connection per poll.
//!
//! A scenario runs against a gateway it starts itself (the all-in-one
//! `fleetgate` from the same target directory, on free loopback ports, with
//! the embedded store in a temporary directory) or against a given URL.
//!
//! # Layout
//!
//! - [`cli`]: the subcommands and their flags (clap). Goose never reads the
//!   process command line: its options are built here, and anything after
//!   `--` is handed to goose's own parser.
//! - [`target`]: where the load goes: a given URL, or a [`target::Gateway`]
//!   this process starts and kills (by PID) when done.
//! - [`admin`]: a small client of the admin API (login, unlock, list, grant)
//!   and of the register route, for setting a scenario up and for the
//!   granting side of `polling-storm`.
//! - [`device`]: what every simulated device shares: its username and
//!   password, its request body, the `Retry-After` pacing, the shared HTTP
//!   clients (keep-alive, or a new connection per request with TLS that
//!   accepts self-signed certificates).
//! - [`outcome`]: lock-free status counters and the expected-set check.
//! - [`summary`]: latency distributions (HDR histograms) and the JSON summary
//!   every scenario writes.
//! - [`attack`]: the goose harness shared by the HTTP scenarios: goose's
//!   configuration, the stop signal, the progress line, the reports.
//! - [`scenarios`]: `polling-storm`, `locked-storm`, `login-storm` and
//!   `tls-reconnect`.
//! - [`mqtt_packet`]: the CONNECT packet the MQTT storm sends and the CONNACK
//!   it expects, as pure functions over bytes.
//! - [`mqtt_storm`]: the MQTT CONNECT storm (`mqtt-storm`).
//! - [`tls_client`]: the TLS client configuration of the TLS storm (any
//!   certificate or a CA file, resumption off or from a shared session
//!   pool).
//! - [`tls_storm`]: new-connection polls over TLS, full and resumed
//!   handshakes counted apart (`tls-storm`), the load of
//!   `bench/compare/tls-vs-nginx.sh`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod attack;
pub mod cli;
pub mod device;
pub mod mqtt_packet;
pub mod mqtt_storm;
pub mod outcome;
pub mod scenarios;
pub mod summary;
pub mod target;
pub mod tls_client;
pub mod tls_storm;

/// Why a run could not be carried out (as opposed to a run that found
/// unexpected answers, which is a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("admin API: {0}")]
    Admin(#[from] admin::AdminError),
    #[error("goose: {0}")]
    Goose(#[from] goose::GooseError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// How a finished run ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every answer was in the scenario's expected set.
    Clean,
    /// At least one answer (a status, a CONNACK code or a transport error)
    /// was outside the expected set. The process exits 1.
    Unexpected,
}
