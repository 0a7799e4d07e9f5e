//! What both binaries do the same way at their edges: logging to stderr,
//! printing a usage error (one line, exit status 2), and waiting for
//! SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::ConfigError;

/// Logs go to stderr (stdout carries only a generated admin password), at
/// `info` unless `RUST_LOG` says otherwise. Colours only on a terminal, so
/// captured logs stay greppable (tests read the bound addresses there).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Parses the command line into `F`. `--help` and `--version` print and
/// exit 0; any other flag error is one line on stderr and exit status 2.
pub fn parse_flags<F: clap::Parser>(bin: &str) -> Result<F, ExitCode> {
    F::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            // Printing help can only fail if stdout is gone; nothing to add.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        let rendered = e.render().to_string();
        let first = rendered
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid arguments");
        let first = first.trim();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        usage_error(bin, first)
    })
}

/// A configuration that parsed but cannot work: one line, exit status 2.
pub fn config_error(bin: &str, e: &ConfigError) -> ExitCode {
    usage_error(bin, &e.to_string())
}

fn usage_error(bin: &str, message: &str) -> ExitCode {
    eprintln!("{bin}: error: {message}");
    ExitCode::from(2)
}

/// SIGINT and SIGTERM, either of which starts the drain. Registered before
/// the "listening" lines are logged, so a signal sent as soon as one
/// appears is never missed.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Must run inside a tokio runtime.
    pub fn register() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal and logs which one came.
    pub async fn recv(mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    }
}
