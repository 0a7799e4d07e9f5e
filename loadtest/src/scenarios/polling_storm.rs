//! `polling-storm`: N devices register and keep polling at their
//! `Retry-After` pace while an admin unlocks the registry and grants the
//! pending requests in batches.
//!
//! The admin is a tokio task beside goose (see [`crate::admin`]): it logs
//! in, unlocks for the whole run, then grants this run's pending requests
//! (by the `lt-<run>-` prefix) in batches of `--grant-batch`. With
//! `--grant-mode bulk` (the default) a batch is one
//! `POST /api/client-registry/requests/grant` with a prefix selector; a
//! full batch is followed at once by the next, otherwise the admin waits
//! `--grant-interval`. With `--grant-mode single` it lists up to 1000
//! pending requests and grants each, `--grant-concurrency` at a time, every
//! `--grant-interval` (the way it worked before bulk grants). Each device
//! stops polling once it has its 201; the run ends when every device has
//! one, or at the deadline.
//!
//! Reported: the time from each device's first poll to the answer that
//! carried its 201 (p50/p90/p99/max), the time until the whole fleet had
//! its 201, the status counts, and the answers outside {201, 202, 423,
//! 429}, which must be none.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::Admin;
use crate::attack::{Devices, Run};
use crate::cli::{GrantMode, PollingStormArgs};
use crate::device::{self, Connections};
use crate::scenarios::{devices_scenario, Loop};
use crate::summary::{CollectReport, Distribution};
use crate::{Error, Verdict};

/// granted (collected), pending, locked (before the unlock, or after it
/// expires), rate limited.
pub const EXPECTED: &[u16] = &[201, 202, 423, 429];

pub async fn run(args: &PollingStormArgs) -> Result<Verdict, Error> {
    let common = &args.common;
    let run = Run::prepare("polling-storm", common, false)?;
    let admin = Arc::new(
        Admin::login(
            run.admin_client()?,
            &run.target.admin_url,
            run.target.admin_password.as_deref(),
        )
        .await?,
    );
    let before = admin.state().await?;
    // Unlocked for the whole run, with a margin for goose's start and stop.
    admin
        .unlock(common.ramp_up + common.duration + Duration::from_secs(60))
        .await?;

    let (devices, stop_tx) = Devices::new(
        &run.run_id,
        common.devices,
        Connections::KeepAlive,
        common,
        EXPECTED,
    )?;
    let granter = tokio::spawn(grant_loop(
        admin.clone(),
        device::username_prefix(&run.run_id),
        args.grant_mode,
        args.grant_batch,
        args.grant_interval,
        args.grant_concurrency as usize,
        devices.stop_signal(),
    ));
    let scenario = devices_scenario(&devices, Loop::Poll);
    let ended = run
        .attack(&devices, stop_tx, scenario, !args.keep_running)
        .await;
    // The stop signal has flipped (or its sender is gone): the granter ends.
    let _ = granter.await;
    let ended = ended?;
    if before.locked {
        // Leave the registry as we found it.
        let _ = admin.lock().await;
    }

    let mut summary = run.summary(&devices, &ended);
    let collected = devices.collected.load(Ordering::Relaxed);
    let time_to_201 = {
        let h = devices
            .time_to_201
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Distribution::of(&h)
    };
    let fleet_collected = *devices
        .fleet_collected
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    summary.collect = Some(CollectReport {
        collected,
        not_collected: devices.count.saturating_sub(collected),
        time_to_201_ms: time_to_201,
        fleet_collected_secs: fleet_collected.map(|d| d.as_secs_f64()),
    });
    let mut report = admin.report();
    report.was_locked = before.locked;
    summary.admin = Some(report);
    run.finish(summary)
}

/// Lists and grants this run's pending requests in batches until the run
/// stops.
async fn grant_loop(
    admin: Arc<Admin>,
    prefix: String,
    mode: GrantMode,
    batch: u64,
    interval: Duration,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match mode {
            GrantMode::Bulk => {
                // A refused call is counted in the report; the loop goes on.
                if let Ok((_, true)) = admin.bulk_grant(&prefix, batch).await {
                    continue;
                }
            }
            GrantMode::Single => {
                admin.grant_batch(&prefix, batch, concurrency).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
