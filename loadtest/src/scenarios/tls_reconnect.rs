//! `tls-reconnect`: devices poll with a new connection for every request:
//! the client keeps no idle connection and sends `Connection: close`. On an
//! `https://` URL every poll is a new TLS handshake (a full one, unless
//! `--tls-resumption`), with any certificate accepted, as a load test's
//! gateway has a self-signed one. A gateway the tool starts itself is
//! polled on its HTTPS listener (with the certificate it generates). On an
//! `http://` URL it is a new TCP connection per poll.
//!
//! When the admin password is known (always, for a started gateway), the
//! registry is unlocked for the run, so polls are of a pending request
//! (202), the case the nginx comparison measures; the lock is restored
//! afterwards. Expected: 202, 423, 429.

use std::time::Duration;

use crate::admin::Admin;
use crate::attack::{Devices, Run};
use crate::cli::TlsReconnectArgs;
use crate::device::Connections;
use crate::scenarios::{devices_scenario, Loop};
use crate::{Error, Verdict};

/// pending, locked, rate limited.
pub const EXPECTED: &[u16] = &[202, 423, 429];

pub async fn run(args: &TlsReconnectArgs) -> Result<Verdict, Error> {
    let common = &args.common;
    // TLS handshakes are what this scenario measures: a started gateway is
    // polled on its HTTPS listener.
    let run = Run::prepare("tls-reconnect", common, true)?;
    let admin = match run.target.admin_password.as_deref() {
        Some(pw) => Some(Admin::login(run.admin_client()?, &run.target.admin_url, Some(pw)).await?),
        None => None,
    };
    let mut was_locked = false;
    if let Some(admin) = &admin {
        was_locked = admin.state().await?.locked;
        admin
            .unlock(common.ramp_up + common.duration + Duration::from_secs(60))
            .await?;
    }
    let (devices, stop_tx) = Devices::new(
        &run.run_id,
        common.devices,
        Connections::NewPerRequest {
            resumption: args.tls_resumption,
        },
        common,
        EXPECTED,
    )?;
    let scenario = devices_scenario(&devices, Loop::Poll);
    let ended = run.attack(&devices, stop_tx, scenario, false).await?;
    let mut summary = run.summary(&devices, &ended);
    if let Some(admin) = &admin {
        if was_locked {
            let _ = admin.lock().await;
        }
        let mut report = admin.report();
        report.was_locked = was_locked;
        summary.admin = Some(report);
    }
    run.finish(summary)
}
