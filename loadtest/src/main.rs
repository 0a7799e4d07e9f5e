//! `fleetgate-loadtest`: parses the command line, builds the runtime, runs
//! one scenario, and turns its verdict into the exit status:
//!
//! - 0: every answer was in the scenario's expected set;
//! - 1: some answer was not (the summary says which);
//! - 2: bad command line (clap's own exit);
//! - 3: the run could not be carried out (no gateway, admin login refused,
//!   goose refused its configuration, ...).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use fleetgate_loadtest::cli::{Cli, Command};
use fleetgate_loadtest::{mqtt_storm, scenarios, tls_storm, Verdict};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        // One thread: the gateway under test keeps the other cores.
        Command::MqttStorm(args) => mqtt_storm::run(args),
        Command::TlsStorm(args) => tls_storm::run(args),
        command => multi_threaded().and_then(|rt| {
            rt.block_on(async {
                match command {
                    Command::PollingStorm(a) => scenarios::polling_storm::run(a).await,
                    Command::LockedStorm(a) => scenarios::locked_storm::run(a).await,
                    Command::LoginStorm(a) => scenarios::login_storm::run(a).await,
                    Command::TlsReconnect(a) => scenarios::tls_reconnect::run(a).await,
                    Command::MqttStorm(_) | Command::TlsStorm(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }),
    };
    match result {
        Ok(Verdict::Clean) => ExitCode::SUCCESS,
        Ok(Verdict::Unexpected) => {
            eprintln!("fleetgate-loadtest: answers outside the expected set (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("fleetgate-loadtest: {e}");
            ExitCode::from(3)
        }
    }
}

/// Goose spreads its users over every core.
fn multi_threaded() -> Result<tokio::runtime::Runtime, fleetgate_loadtest::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| fleetgate_loadtest::Error::Io {
            path: "tokio runtime".into(),
            source,
        })
}
