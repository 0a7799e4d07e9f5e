//! The TLS client configuration of `tls-storm`: one rustls `ClientConfig`
//! that every connection of a storm shares, so its session cache is shared
//! too.
//!
//! - The ring provider, named explicitly: the workspace enables both
//!   `ring` and `aws-lc-rs`, so rustls has no process-wide default.
//! - Any certificate accepted (like `curl --insecure`), or checked against
//!   a `--cafile`. The server's handshake signature is verified, as curl
//!   does, unless `--skip-signature-check`: the server signs all the same,
//!   and the client saves the P-256 verify, about a fifth of its CPU per
//!   full handshake (client CPU per poll against nginx, full handshakes,
//!   on the shared 2-core machine: 276 and 283 µs with the check, 211 and
//!   231 µs without; a `perf` profile puts `ecp_nistz256` at about 20% of
//!   the client's samples). `bench/compare/tls-vs-nginx.sh` skips it.
//!   Even so, one client core costs about what one fleetgate worker does
//!   per full handshake (the rest is X25519, HKDF-SHA384 and the loopback
//!   TCP path), so against the gateway the client runs near 90% of its
//!   core; the script reports polls per server CPU-second for that reason.
//! - `--resume off`: no session kept, every handshake full.
//!   `--resume on`: a [`SessionPool`]. rustls's own
//!   `ClientSessionMemoryCache` keeps 8 TLS 1.3 tickets per server, too
//!   few for 32 connections in flight: in a `--resume on` run against
//!   nginx with it, 14% of the handshakes were still full (27% against
//!   fleetgate); with the pool, only the first `--concurrency` are.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

use crate::cli::Resume;
use crate::device;
use crate::Error;

/// How the client's TLS is set up.
#[derive(Debug, Clone, Copy)]
pub struct TlsOptions<'a> {
    pub resume: Resume,
    /// Check the certificate against these CAs (PEM); `None`: accept any.
    pub cafile: Option<&'a Path>,
    /// Verify the server's handshake signature.
    pub check_signatures: bool,
    /// Connections in flight at once, which sizes the session pool.
    pub concurrency: u64,
}

/// The rustls configuration every connection shares: the ring provider
/// (the workspace enables two, so none is the process default), the
/// certificate accepted as is or checked against `cafile`, and sessions
/// kept in a [`SessionPool`] or not at all.
pub fn config(options: TlsOptions<'_>) -> Result<rustls::ClientConfig, Error> {
    let TlsOptions {
        resume,
        cafile,
        check_signatures,
        concurrency,
    } = options;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("TLS versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match cafile {
        None => Arc::new(device::AcceptAnyCertificate::new(&provider)),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Setup(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?
        }
    };
    let verifier = if check_signatures {
        verifier
    } else {
        Arc::new(SkipSignatureCheck { inner: verifier })
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = match resume {
        Resume::Off => rustls::client::Resumption::disabled(),
        Resume::On => rustls::client::Resumption::store(Arc::new(SessionPool::new(
            SessionPool::tickets_for(concurrency),
        ))),
    };
    Ok(config)
}

/// The session cache of `--resume on`: what rustls's
/// `ClientSessionMemoryCache` keeps, with room for as many TLS 1.3 tickets
/// per server as the storm needs. Every connection in flight holds one
/// ticket it took, and each brings back the one or two the server sends,
/// so with fewer slots than connections the pool runs dry and connections
/// fall back to full handshakes.
///
/// Bounded: at most `tickets_per_server` tickets per server name, and a
/// storm uses one server name.
#[derive(Debug)]
pub struct SessionPool {
    tickets_per_server: usize,
    servers: Mutex<HashMap<ServerName<'static>, ServerSessions>>,
}

/// What the pool remembers of one server.
#[derive(Debug, Default)]
struct ServerSessions {
    /// The key exchange group the server chose last, offered first next
    /// time (no HelloRetryRequest).
    kx_hint: Option<NamedGroup>,
    /// The TLS 1.2 session (one at a time; it may be reused).
    tls12: Option<Tls12ClientSessionValue>,
    /// TLS 1.3 tickets, each used at most once; newest at the back.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl SessionPool {
    pub fn new(tickets_per_server: usize) -> SessionPool {
        SessionPool {
            tickets_per_server: tickets_per_server.max(1),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Room for the tickets of `concurrency` connections: servers send up
    /// to 2 per connection (rustls's and OpenSSL's default), so 4 per
    /// connection, within 8 and 16,384.
    pub fn tickets_for(concurrency: u64) -> usize {
        usize::try_from(concurrency.saturating_mul(4))
            .unwrap_or(usize::MAX)
            .clamp(8, 16_384)
    }

    /// TLS 1.3 tickets held for `server_name`.
    pub fn tickets(&self, server_name: &ServerName<'_>) -> usize {
        self.servers
            .lock()
            .unwrap()
            .get(server_name)
            .map_or(0, |s| s.tls13.len())
    }

    fn edit<T>(
        &self,
        server_name: ServerName<'static>,
        f: impl FnOnce(&mut ServerSessions) -> T,
    ) -> T {
        f(self.servers.lock().unwrap().entry(server_name).or_default())
    }
}

impl ClientSessionStore for SessionPool {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.edit(server_name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.servers.lock().unwrap().get(server_name)?.kx_hint
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.edit(server_name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.servers.lock().unwrap().get(server_name)?.tls12.clone()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(s) = self.servers.lock().unwrap().get_mut(server_name) {
            s.tls12 = None;
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let cap = self.tickets_per_server;
        self.edit(server_name, |s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // The newest, as rustls's own cache does: the least likely to have
        // expired or left the server's cache.
        self.servers
            .lock()
            .unwrap()
            .get_mut(server_name)?
            .tls13
            .pop_back()
    }
}

/// Checks the certificate as `inner` does, and takes every handshake
/// signature as valid (`--skip-signature-check`).
#[derive(Debug)]
struct SkipSignatureCheck {
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for SkipSignatureCheck {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(resume: Resume) -> TlsOptions<'static> {
        TlsOptions {
            resume,
            cafile: None,
            check_signatures: true,
            concurrency: 32,
        }
    }

    #[test]
    fn the_session_pool_has_room_for_every_connection_s_tickets() {
        assert_eq!(SessionPool::tickets_for(1), 8);
        assert_eq!(SessionPool::tickets_for(32), 128);
        assert_eq!(SessionPool::tickets_for(100_000), 16_384);
    }

    #[test]
    fn resumption_follows_the_flag() {
        // Debug is the only window rustls gives on the resumption settings.
        let off = format!("{:?}", config(options(Resume::Off)).unwrap().resumption);
        let on = format!("{:?}", config(options(Resume::On)).unwrap().resumption);
        assert!(off.contains("NoClientSessionStorage"), "{off}");
        assert!(
            on.contains("SessionPool") && on.contains("tickets_per_server: 128"),
            "{on}"
        );
    }

    #[test]
    fn the_session_pool_remembers_servers_apart() {
        let pool = SessionPool::new(8);
        let a = ServerName::try_from("a.example").unwrap();
        let b = ServerName::try_from("b.example").unwrap();
        pool.set_kx_hint(a.clone(), NamedGroup::X25519);
        assert_eq!(pool.kx_hint(&a), Some(NamedGroup::X25519));
        assert_eq!(pool.kx_hint(&b), None);
        assert_eq!(pool.tickets(&a), 0);
        assert!(pool.take_tls13_ticket(&a).is_none());
    }
}
