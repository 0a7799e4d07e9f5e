//! `login-storm`: granted devices log in (`POST /api/login`) over and over,
//! each pausing `--interval` between logins. Every login verifies an
//! argon2id hash on the gateway, so this is the CPU-bound storm a fleet
//! makes after an outage.
//!
//! Setup, before goose starts: the admin registers every device of the run
//! (`lt-<run>-0` … `lt-<run>-<N-1>`) and grants it, `--setup-concurrency` at
//! a time, then locks the registry again if it was locked. Expected: 200
//! only; a 401 means a device that should exist cannot log in.

use crate::admin::Admin;
use crate::attack::{Devices, Run};
use crate::cli::LoginStormArgs;
use crate::device::{self, Connections};
use crate::scenarios::{devices_scenario, Loop};
use crate::{Error, Verdict};

/// Logged in.
pub const EXPECTED: &[u16] = &[200];

pub async fn run(args: &LoginStormArgs) -> Result<Verdict, Error> {
    let common = &args.common;
    let run = Run::prepare("login-storm", common, false)?;
    let admin = Admin::login(
        run.admin_client()?,
        &run.target.admin_url,
        run.target.admin_password.as_deref(),
    )
    .await?;
    let usernames: Vec<String> = (0..common.devices as usize)
        .map(|i| device::username(&run.run_id, i))
        .collect();
    eprintln!(
        "login-storm: registering and granting {} devices",
        usernames.len()
    );
    let usable = admin
        .provision(
            &run.target.url,
            &usernames,
            &device::password(&run.run_id),
            args.setup_concurrency as usize,
        )
        .await?;
    if usable < common.devices {
        return Err(Error::Setup(format!(
            "only {usable} of {} devices could be registered and granted; admin answers: {}",
            common.devices,
            crate::admin::format_statuses(&admin.report().statuses)
        )));
    }

    let (devices, stop_tx) = Devices::new(
        &run.run_id,
        common.devices,
        Connections::KeepAlive,
        common,
        EXPECTED,
    )?;
    let scenario = devices_scenario(
        &devices,
        Loop::Login {
            interval: args.interval,
        },
    );
    let ended = run.attack(&devices, stop_tx, scenario, false).await?;
    let mut summary = run.summary(&devices, &ended);
    summary.admin = Some(admin.report());
    run.finish(summary)
}
