//! The HTTP scenarios, and the goose transactions their devices run.
//!
//! Every scenario has one goose scenario, `devices`, whose users are the
//! simulated devices. A device starts (`start`: takes its username from its
//! goose user number and the shared client), then loops over one
//! transaction: `poll` (register, then wait out `Retry-After`) or `login`.
//! Each answer is counted in [`Devices::statuses`] and marked in goose's
//! metrics as a success when it is in the scenario's expected set, so a
//! 423 during a locked storm is a success in goose's report too, and a 409
//! is a failure with its status in goose's error table.
//!
//! # Layout
//!
//! - [`polling_storm`]: devices poll while an admin unlocks and grants.
//! - [`locked_storm`]: devices poll a locked registry.
//! - [`login_storm`]: granted devices log in.
//! - [`tls_reconnect`]: a new connection (and TLS handshake) per poll.

pub mod locked_storm;
pub mod login_storm;
pub mod polling_storm;
pub mod tls_reconnect;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goose::goose::GooseResponse;
use goose::prelude::*;
use reqwest::header::{CONNECTION, CONTENT_TYPE};

use crate::attack::Devices;
use crate::device::{self, LOGIN_PATH, REGISTER_PATH};
use crate::outcome;

/// A device's own state, kept in its goose user's session data.
#[derive(Debug, Clone)]
struct DeviceSession {
    /// `{"username","password"}`, built once.
    body: String,
    /// When the next request is due (`None`: at once).
    next_at: Option<Instant>,
    /// When the first poll was sent.
    first_poll: Option<Instant>,
    /// The device has collected its 201 and stops polling.
    done: bool,
}

/// What a device does after each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// `POST /api/client-registry/register` at the `Retry-After` pace,
    /// until a 201.
    Poll,
    /// `POST /api/login`, then wait `interval`.
    Login { interval: Duration },
}

/// The `devices` goose scenario.
pub fn devices_scenario(devices: &Arc<Devices>, what: Loop) -> Scenario {
    let d = devices.clone();
    let start: TransactionFunction = Arc::new(move |user| {
        let d = d.clone();
        Box::pin(async move {
            start_device(user, &d);
            Ok(())
        })
    });
    let d = devices.clone();
    let step: TransactionFunction = match what {
        Loop::Poll => Arc::new(move |user| {
            let d = d.clone();
            Box::pin(async move { poll(user, &d).await })
        }),
        Loop::Login { interval } => Arc::new(move |user| {
            let d = d.clone();
            Box::pin(async move { login(user, &d, interval).await })
        }),
    };
    let name = match what {
        Loop::Poll => "poll",
        Loop::Login { .. } => "login",
    };
    Scenario::new("devices")
        .register_transaction(Transaction::new(start).set_name("start").set_on_start())
        .register_transaction(Transaction::new(step).set_name(name))
}

/// Gives the user its device identity and the shared client.
fn start_device(user: &mut GooseUser, d: &Devices) {
    user.client = d.client.clone();
    let name = device::username(&d.run_id, user.weighted_users_index);
    user.set_session_data(DeviceSession {
        body: device::credentials_body(&name, &d.password),
        next_at: None,
        first_poll: None,
        done: false,
    });
    d.started.fetch_add(1, Ordering::Relaxed);
}

/// One register poll, after waiting for its turn.
async fn poll(user: &mut GooseUser, d: &Devices) -> TransactionResult {
    let session = user.get_session_data_unchecked::<DeviceSession>();
    let (body, next_at, done) = (session.body.clone(), session.next_at, session.done);
    if done || d.is_stopped() {
        d.idle().await;
        return Ok(());
    }
    if let Some(at) = next_at {
        if !d.pause(at.saturating_duration_since(Instant::now())).await {
            return Ok(());
        }
    }
    let sent = Instant::now();
    let (status, advised) = send(user, d, REGISTER_PATH, "register", body).await?;
    let session = user.get_session_data_unchecked_mut::<DeviceSession>();
    let first = *session.first_poll.get_or_insert(sent);
    if status == Some(201) {
        session.done = true;
        d.record_collected(first.elapsed());
    }
    session.next_at = Some(Instant::now() + device::next_wait(advised, d.pace_scale));
    Ok(())
}

/// One login, then the pause before the next.
async fn login(user: &mut GooseUser, d: &Devices, interval: Duration) -> TransactionResult {
    let session = user.get_session_data_unchecked::<DeviceSession>();
    let (body, next_at) = (session.body.clone(), session.next_at);
    if d.is_stopped() {
        d.idle().await;
        return Ok(());
    }
    if let Some(at) = next_at {
        if !d.pause(at.saturating_duration_since(Instant::now())).await {
            return Ok(());
        }
    }
    send(user, d, LOGIN_PATH, "login", body).await?;
    let session = user.get_session_data_unchecked_mut::<DeviceSession>();
    session.next_at = Some(Instant::now() + interval);
    Ok(())
}

/// POSTs `body` to `path`, reads the whole answer, counts its status, and
/// tells goose whether it was expected. Returns the status (`None`: no HTTP
/// answer) and the advised `Retry-After`.
async fn send(
    user: &mut GooseUser,
    d: &Devices,
    path: &str,
    name: &str,
    body: String,
) -> Result<(Option<u16>, Option<Duration>), Box<TransactionError>> {
    // One of the shared connections, held until the whole answer is read.
    // A device still waiting for one when the run ends sends nothing.
    let mut stop = d.stop_signal();
    let _connection = tokio::select! {
        permit = d.connections.acquire() => permit.expect("the semaphore is never closed"),
        _ = stop.wait_for(|s| *s) => return Ok((None, None)),
    };
    let sent = Instant::now();
    let mut builder = user
        .get_request_builder(&GooseMethod::Post, path)?
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if d.connection_close {
        builder = builder.header(CONNECTION, "close");
    }
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let GooseResponse {
        mut request,
        response,
    } = user.request(request).await?;
    let (status, advised) = match response {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let advised = device::retry_after(resp.headers());
            // Read the body, so a keep-alive connection goes back to the pool.
            match resp.bytes().await {
                Ok(_) => (Some(status), advised),
                Err(e) => {
                    d.statuses
                        .record_transport_error("body", || outcome::error_chain(&e));
                    (None, None)
                }
            }
        }
        Err(e) => {
            d.statuses
                .record_transport_error(outcome::error_kind(&e), || outcome::error_chain(&e));
            (None, None)
        }
    };
    d.record_latency(sent.elapsed());
    match status {
        Some(s) => {
            d.statuses.record(s);
            if d.expected.contains(&s) {
                if !request.success {
                    user.set_success(&mut request)?;
                }
            } else if request.success {
                user.set_failure(&format!("unexpected {s}"), &mut request, None, None)?;
            }
        }
        None => {
            if request.success {
                user.set_failure("no answer", &mut request, None, None)?;
            }
        }
    }
    Ok((status, advised))
}
