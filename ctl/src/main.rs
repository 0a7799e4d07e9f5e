//! `fleetgate-ctl`: parse the command line (clap exits 2 on a usage
//! mistake), run the command on a one-thread tokio runtime, and turn its
//! outcome into the exit code: 0 success, 1 failure, 2 usage.

use std::process::ExitCode;

use clap::Parser;

use fleetgate_ctl::cli::Cli;
use fleetgate_ctl::output::{escape, Ui};
use fleetgate_ctl::token::TokenEnv;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::from_process(cli.global.output);
    let env = TokenEnv::from_process();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(fleetgate_ctl::commands::run(cli, &ui, &env)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("error: {}", escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
