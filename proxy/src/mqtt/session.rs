//! One MQTT connection: read the CONNECT, decide, then either answer with a
//! refusing CONNACK and close, or splice the client through to the upstream
//! broker.
//!
//! The decision follows the registry's rules, so HTTP and MQTT agree:
//!
//! | situation | 3.1 / 3.1.1 | 5 |
//! |---|---|---|
//! | unknown user, unlocked, policy ok: the request becomes or stays pending | 5 | 0x87 |
//! | unknown user, locked / fails policy / other credentials pending | 5 | 0x87 |
//! | existing user, wrong password | 4 | 0x86 |
//! | store unavailable, or a granted user with no upstream configured | 3 | 0x88 |
//! | rate limited (per username or per source IP) | 3 | 0x9F |
//! | the worker is past its in-flight bound (shed) | 3 | 0x89 |
//! | malformed CONNECT | closed | 0x81, then closed |
//! | client id longer than 256 bytes | 2 | 0x85 |
//!
//! A granted user's CONNECT goes to `--mqtt-upstream` with its client id
//! namespaced by user (`--mqtt-client-ids`) and, for a certificate client,
//! the CN as its username. Then every packet the client sends is judged by
//! the user's permissions ([`super::enforce`]); the broker's side is copied
//! back, with `SUBACK`s merged. A user whose permission set is `#`
//! readWrite is spliced byte for byte instead. Every
//! [`crate::app::MqttConfig::revalidate_every`] the session re-reads its
//! user: a deleted (or re-created) user's session ends, and a permission
//! change applies to the next packet.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fleetgate_registry::model::Transport;
use fleetgate_registry::registry::{CertificateLoginError, PollContext, RegisterOutcome};
use fleetgate_registry::request::{check_username, Credential, RegisterRequest, PASSWORD_MAX};
use fleetgate_registry::store::Store;
use fleetgate_registry::{Registry, UnixMillis};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::access;
use super::codec::{
    connack, parse_connect, rewrite_connect, Connect, Level, Parsed, Refusal, MAX_CLIENT_ID,
};
use super::credentials::{Cached, CredentialCache};
use super::enforce::Enforcer;
use crate::app::{ClientIds, Worker};
use crate::io::{close_within, send_within, DeviceIo};
use crate::limiter::Verdict as LimitVerdict;
use crate::telemetry::{Outcome, Transport as TelemetryTransport};

/// What to do with a connection after its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated: splice to the upstream broker.
    Pass,
    Refuse(Refusal),
}

/// Serves one MQTT connection, over plain TCP or TLS. `client_cert` is the
/// verified client certificate of an MQTTS connection (DER), if any: it
/// then decides who the client is (see [`decide_certificate`]).
pub async fn serve<S: Store, C: DeviceIo>(
    mut stream: C,
    peer: SocketAddr,
    worker: &Worker<S>,
    client_cert: Option<Vec<u8>>,
) {
    let app = &worker.app;
    let config = &app.mqtt;
    let deadline = Instant::now() + config.connect_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    // Read until a whole CONNECT is buffered.
    let (verdict, level, started, admitted) = loop {
        match parse_connect(&buf, config.max_remaining) {
            Parsed::Complete(connect) => {
                let started = Instant::now();
                let decided =
                    decide_limited(worker, &connect, peer, client_cert.as_deref(), started).await;
                worker.metrics.request(
                    TelemetryTransport::Mqtt,
                    decided.outcome,
                    started.elapsed().as_secs_f64(),
                );
                match decided.cache_hit {
                    Some(true) => worker.metrics.credential_hit.increment(1),
                    Some(false) => worker.metrics.credential_miss.increment(1),
                    None => {}
                }
                // Password clients name themselves; a certificate client
                // is its CN (checked equal to any username it sent).
                let username = match client_cert.as_deref() {
                    Some(cert) => fleetgate_registry::ca::certificate_common_name(cert),
                    None => connect.username.map(str::to_owned),
                };
                let admitted = username.map(|username| Admitted {
                    username,
                    client_id: connect.client_id.to_owned(),
                    level: connect.level,
                    len: connect.len,
                    by_certificate: client_cert.is_some(),
                });
                break (decided.verdict, connect.level, started, admitted);
            }
            Parsed::Invalid(malformed) => {
                tracing::debug!(%peer, reason = malformed.reason, "malformed CONNECT");
                worker
                    .metrics
                    .request(TelemetryTransport::Mqtt, Outcome::Invalid, 0.0);
                let write_timeout = app.config.write_timeout;
                if malformed.level == Some(Level::V5) {
                    let packet = connack(Level::V5, Refusal::Malformed);
                    let _ = send_within(&mut stream, packet, write_timeout).await;
                }
                close_within(&mut stream, write_timeout).await;
                return;
            }
            Parsed::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.read_more(buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            // EOF, error, or no CONNECT in time: close without a word.
            _ => return,
        }
    };
    let _ = started;
    let write_timeout = app.config.write_timeout;
    match (verdict, config.upstream, admitted) {
        (Verdict::Pass, Some(upstream), Some(admitted)) => {
            // Boxed: the relay's future is most of this one's size, and a
            // refused CONNECT (the storm case) should not move it around.
            Box::pin(relay(stream, buf, upstream, admitted, worker)).await
        }
        (Verdict::Pass, Some(_), None) => {
            refuse(stream, level, Refusal::NotAuthorized, write_timeout).await
        }
        (Verdict::Pass, None, _) => {
            refuse(stream, level, Refusal::Unavailable, write_timeout).await
        }
        (Verdict::Refuse(r), _, _) => refuse(stream, level, r, write_timeout).await,
    }
}

/// A decision with what the metrics need to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decided {
    pub verdict: Verdict,
    pub outcome: Outcome,
    /// `Some(hit)` when the credential cache was consulted.
    pub cache_hit: Option<bool>,
}

/// Who a let-through CONNECT belongs to, and what the broker gets.
struct Admitted {
    username: String,
    client_id: String,
    level: Level,
    /// The CONNECT's length in the buffer (bytes after it are packets).
    len: usize,
    /// A certificate client: the broker gets the CN as its username.
    by_certificate: bool,
}

impl Decided {
    fn refuse(refusal: Refusal, outcome: Outcome) -> Self {
        Decided {
            verdict: Verdict::Refuse(refusal),
            outcome,
            cache_hit: None,
        }
    }
}

/// Storm control first (rate limits, in-flight bound), then [`decide`], or
/// [`decide_certificate`] when the client presented a certificate.
async fn decide_limited<S: Store>(
    worker: &Worker<S>,
    connect: &Connect<'_>,
    peer: SocketAddr,
    client_cert: Option<&[u8]>,
    now: Instant,
) -> Decided {
    let limits = &worker.app.rate_limits;
    if matches!(limits.check_ip(peer.ip(), now), LimitVerdict::Deny { .. }) {
        return Decided::refuse(Refusal::RateLimited, Outcome::RateLimited);
    }
    // Device-supplied fields are checked against their caps before anything
    // is keyed by them or stored.
    if connect.client_id.len() > MAX_CLIENT_ID {
        return Decided::refuse(Refusal::IdentifierRejected, Outcome::Policy);
    }
    if let Some(username) = connect.username {
        // The username rule of an HTTP register body, and the password's
        // length cap (a longer password can never be right). A certificate
        // client's password is not a credential (it is passed on as sent),
        // so only its username is checked. A refusal here is "fails policy":
        // 5 / 0x87, as in the table above.
        let password_ok =
            client_cert.is_some() || connect.password.is_none_or(|p| p.len() <= PASSWORD_MAX);
        if check_username(username).is_err() || !password_ok {
            return Decided::refuse(Refusal::NotAuthorized, Outcome::Policy);
        }
        let credential = connect.password.unwrap_or_default();
        if matches!(
            limits.check_user(username, credential, now),
            LimitVerdict::Deny { .. }
        ) {
            return Decided::refuse(Refusal::RateLimited, Outcome::RateLimited);
        }
    }
    let Some(_slot) = worker.try_begin() else {
        return Decided::refuse(Refusal::Busy, Outcome::Shed);
    };
    match client_cert {
        Some(cert) => {
            let decided = decide_certificate(&worker.app.registry, connect, cert, peer).await;
            match decided.verdict {
                Verdict::Pass => worker.metrics.cert_auth_ok.increment(1),
                Verdict::Refuse(_) => worker.metrics.cert_auth_refused.increment(1),
            }
            decided
        }
        None => decide(&worker.app.registry, connect, peer, &worker.credentials).await,
    }
}

/// Decides a CONNECT that came with a verified client certificate: the
/// certificate names the user (its CN), and it must be the one the user was
/// issued, unexpired, and the user must still exist. A username in the
/// CONNECT, if any, must be that CN; a password is not checked (the
/// certificate is the credential) and is passed on to the broker as sent.
/// Refusals are "not authorized" (5 / 0x87); there is no implicit
/// registration with a certificate.
pub async fn decide_certificate<S: Store>(
    registry: &Registry<S>,
    connect: &Connect<'_>,
    cert: &[u8],
    peer: SocketAddr,
) -> Decided {
    match registry
        .authenticate_certificate(cert, UnixMillis::now())
        .await
    {
        Err(CertificateLoginError::Store(_)) => {
            Decided::refuse(Refusal::Unavailable, Outcome::Unavailable)
        }
        Err(CertificateLoginError::Refused(rejection)) => {
            tracing::info!(%peer, reason = rejection.reason(), "MQTTS certificate refused");
            Decided::refuse(Refusal::NotAuthorized, Outcome::BadCredentials)
        }
        Ok(user) if connect.username.is_some_and(|u| u != user.username) => {
            tracing::info!(%peer, "MQTTS username is not the certificate's CN");
            Decided::refuse(Refusal::NotAuthorized, Outcome::BadCredentials)
        }
        Ok(_) => Decided {
            verdict: Verdict::Pass,
            outcome: Outcome::Authenticated,
            cache_hit: None,
        },
    }
}

async fn refuse<C: DeviceIo>(
    mut stream: C,
    level: Level,
    refusal: Refusal,
    write_timeout: Duration,
) {
    let _ = send_within(&mut stream, connack(level, refusal), write_timeout).await;
    close_within(&mut stream, write_timeout).await;
}

/// Decides one CONNECT: authenticate a known user, or register an unknown one.
pub async fn decide<S: Store>(
    registry: &Registry<S>,
    connect: &Connect<'_>,
    peer: SocketAddr,
    cache: &RefCell<CredentialCache>,
) -> Decided {
    let Some(username) = connect.username else {
        // No username: nothing to authenticate or register.
        return Decided::refuse(Refusal::NotAuthorized, Outcome::Policy);
    };
    let password = connect.password.unwrap_or(b"");
    // Two rounds at most: a grant may land between the user lookup and the
    // registration, in which case the client is authenticated after all.
    for _ in 0..2 {
        match registry.user(username).await {
            Err(_) => return Decided::refuse(Refusal::Unavailable, Outcome::Unavailable),
            Ok(Some(user)) => {
                let Some(phc) = user.password_hash.as_deref() else {
                    // A certificate-only user cannot log in with a password.
                    return Decided::refuse(Refusal::BadCredentials, Outcome::BadCredentials);
                };
                return authenticate(registry, username, password, phc, cache);
            }
            Ok(None) => {}
        }
        match register(registry, connect, username, password, peer).await {
            Some(RegisterOutcome::Granted { .. }) => continue,
            Some(outcome) => {
                let refusal = match outcome {
                    RegisterOutcome::Unavailable(_) => Refusal::Unavailable,
                    _ => Refusal::NotAuthorized,
                };
                return Decided::refuse(refusal, Outcome::of(&outcome));
            }
            None => return Decided::refuse(Refusal::NotAuthorized, Outcome::Policy),
        }
    }
    Decided::refuse(Refusal::NotAuthorized, Outcome::Conflict)
}

fn authenticate<S: Store>(
    registry: &Registry<S>,
    username: &str,
    password: &[u8],
    phc: &str,
    cache: &RefCell<CredentialCache>,
) -> Decided {
    let now = Instant::now();
    let hit = |verdict, outcome| Decided {
        verdict,
        outcome,
        cache_hit: Some(true),
    };
    let cached = cache.borrow_mut().lookup(username, password, phc, now);
    match cached {
        Cached::Verified => return hit(Verdict::Pass, Outcome::Authenticated),
        Cached::Refused => {
            return hit(
                Verdict::Refuse(Refusal::BadCredentials),
                Outcome::BadCredentials,
            )
        }
        Cached::Unknown => {}
    }
    // The slow check, inline: about 0.35 ms for a device hash (measured in
    // docs/SECURITY.md), cheaper than a hand-off to another thread.
    let ok = registry.hashing().verify(password, phc).unwrap_or(false);
    cache.borrow_mut().record(username, password, phc, ok, now);
    let (verdict, outcome) = if ok {
        (Verdict::Pass, Outcome::Authenticated)
    } else {
        (
            Verdict::Refuse(Refusal::BadCredentials),
            Outcome::BadCredentials,
        )
    };
    Decided {
        verdict,
        outcome,
        cache_hit: Some(false),
    }
}

/// The implicit registration: the same rules as an HTTP poll with this
/// username and password. `None` when the request fails validation.
async fn register<S: Store>(
    registry: &Registry<S>,
    connect: &Connect<'_>,
    username: &str,
    password: &[u8],
    peer: SocketAddr,
) -> Option<RegisterOutcome> {
    let password = std::str::from_utf8(password).ok()?;
    let request = RegisterRequest {
        username: Cow::Borrowed(username),
        credential: Credential::Password(Cow::Borrowed(password)),
        csr_common_name: None,
        roles: Vec::new(),
        permissions: Vec::new(),
        context: None,
    };
    request.check_policy().ok()?;
    let ctx = PollContext {
        transport: Some(Transport::Mqtt),
        source_addr: Some(peer),
        client_id: Some(connect.client_id).filter(|c| !c.is_empty()),
    };
    Some(
        registry
            .register_parsed(&request, ctx, UnixMillis::now())
            .await,
    )
}

/// Connects to the broker, sends it the (rewritten) CONNECT and the packets
/// that came behind it (judged first), then relays until either side
/// closes, the user is deleted, or a write passes its deadline.
async fn relay<S: Store, C: DeviceIo>(
    client: C,
    buffered: Vec<u8>,
    upstream: SocketAddr,
    admitted: Admitted,
    worker: &Worker<S>,
) {
    let app = &worker.app;
    let config = &app.mqtt;
    let write_timeout = app.config.write_timeout;
    let level = admitted.level;
    let username = admitted.username.as_str();
    let (access, mut known) = match access::load(&app.registry, &worker.access, username).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return refuse(client, level, Refusal::NotAuthorized, write_timeout).await,
        Err(_) => return refuse(client, level, Refusal::Unavailable, write_timeout).await,
    };
    let created_at = access.created_at;
    let permissions = access.permissions;
    let client_id = match config.client_ids {
        ClientIds::Namespaced if !admitted.client_id.is_empty() => {
            format!("{username}:{}", admitted.client_id)
        }
        _ => admitted.client_id.clone(),
    };
    let broker_name = admitted.by_certificate.then_some(username);
    let Some(mut first) = rewrite_connect(&buffered[..admitted.len], &client_id, broker_name)
    else {
        return refuse(client, level, Refusal::Malformed, write_timeout).await;
    };
    let splice_plainly = permissions.is_everything();
    let enforcer = Rc::new(RefCell::new(Enforcer::new(
        level,
        config.max_packet,
        config.deny_publish,
        permissions,
    )));
    let mut rest = buffered[admitted.len..].to_vec();
    if !splice_plainly {
        let mut answers = Vec::new();
        if enforcer
            .borrow_mut()
            .from_client(&mut rest, &mut answers)
            .is_err()
        {
            return close_within(&mut { client }, write_timeout).await;
        }
        // Answers to packets that came behind the CONNECT wait for the
        // broker's CONNACK: nothing may reach the client before it.
        enforcer.borrow_mut().answer_after_connack(answers);
    }
    first.extend_from_slice(&rest);
    let Some(broker) = connect_upstream(upstream, config.upstream_timeout).await else {
        return refuse(client, level, Refusal::Unavailable, write_timeout).await;
    };
    let mut broker = broker;
    let written = monoio::time::timeout(write_timeout, broker.write_all(first)).await;
    if !matches!(written, Ok((Ok(_), _))) {
        return refuse(client, level, Refusal::Unavailable, write_timeout).await;
    }
    let session = async {
        if splice_plainly {
            client.splice(broker, write_timeout).await
        } else {
            client.relay(broker, enforcer.clone(), write_timeout).await
        }
    };
    let watch = async {
        // Ends when the user is gone or re-created (then the session ends
        // with it); otherwise applies permission changes as they come.
        // The store's access generation is a local read; the user and its
        // roles are read again only when it moved ([`access`]).
        loop {
            monoio::time::sleep(config.revalidate_every).await;
            if access::changed_since(&app.registry, username, known) {
                match access::load(&app.registry, &worker.access, username).await {
                    Ok(Some((now, _))) if now.created_at != created_at => return,
                    Ok(Some((now, _))) if splice_plainly && !now.permissions.is_everything() => {
                        return
                    }
                    Ok(Some((now, generation))) => {
                        known = generation;
                        enforcer.borrow_mut().set_permissions(now.permissions);
                    }
                    Ok(None) => return,
                    // The store is briefly unreachable: keep what was known,
                    // and read again at the next check.
                    Err(_) => {}
                }
            }
            let denials = std::mem::take(&mut enforcer.borrow_mut().denials);
            worker
                .metrics
                .mqtt_denied_publish
                .increment(denials.publishes);
            worker.metrics.mqtt_denied_filter.increment(denials.filters);
        }
    };
    monoio::select! {
        _ = session => {},
        _ = watch => tracing::info!(username, "relayed MQTT session ended: the user was deleted or its access changed"),
    }
    let denials = std::mem::take(&mut enforcer.borrow_mut().denials);
    worker
        .metrics
        .mqtt_denied_publish
        .increment(denials.publishes);
    worker.metrics.mqtt_denied_filter.increment(denials.filters);
}

/// A connection to the broker, or `None` (logged) when it cannot be had in
/// time.
async fn connect_upstream(upstream: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    match monoio::time::timeout(timeout, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::warn!(%upstream, error = %e, "cannot reach the MQTT upstream");
            None
        }
        Err(_) => {
            tracing::warn!(%upstream, "MQTT upstream connect timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests;
