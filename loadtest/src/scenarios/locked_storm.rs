//! `locked-storm`: every device polls a locked registry at its
//! `Retry-After` pace (or back to back with `--pace-scale 0`). The gateway
//! must answer 423 (or 429 past a rate limit) to every poll, cheaply:
//! nothing is stored for an unknown device while the registry is locked.
//!
//! A started gateway is locked from the start. Against a given URL with
//! `--admin-password`, the run refuses to start if the registry is
//! unlocked, rather than report a storm of 202s as failures.

use crate::admin::Admin;
use crate::attack::{Devices, Run};
use crate::cli::LockedStormArgs;
use crate::device::Connections;
use crate::scenarios::{devices_scenario, Loop};
use crate::{Error, Verdict};

/// locked, rate limited.
pub const EXPECTED: &[u16] = &[423, 429];

pub async fn run(args: &LockedStormArgs) -> Result<Verdict, Error> {
    let common = &args.common;
    let run = Run::prepare("locked-storm", common, false)?;
    if run.target.admin_password.is_some() {
        let admin = Admin::login(
            run.admin_client()?,
            &run.target.admin_url,
            run.target.admin_password.as_deref(),
        )
        .await?;
        if !admin.state().await?.locked {
            return Err(Error::Setup(
                "the registry is unlocked; lock it (POST /api/client-registry/lock) \
                 before a locked-storm"
                    .to_owned(),
            ));
        }
    }
    let (devices, stop_tx) = Devices::new(
        &run.run_id,
        common.devices,
        Connections::KeepAlive,
        common,
        EXPECTED,
    )?;
    let scenario = devices_scenario(&devices, Loop::Poll);
    let ended = run.attack(&devices, stop_tx, scenario, false).await?;
    let summary = run.summary(&devices, &ended);
    run.finish(summary)
}
