//! TLS on the device listeners (`--https-listen`, `--mqtts-listen`): the
//! rustls server configuration, the server certificate, and the monoio
//! adapter in [`stream`].
//!
//! Choices (measured in docs/BENCHMARKS.md, argued in docs/SECURITY.md):
//! - Provider: `ring`. Key exchange X25519 first, then P-256 and P-384 for
//!   clients without X25519. No post-quantum hybrid: `ring` has none, and
//!   X25519MLKEM768 costs more per full handshake and adds about 2.3 KB to
//!   each one, which a reconnect storm pays in full; see SECURITY.md.
//! - TLS 1.3 and 1.2 (old device stacks), rustls's default AEAD suites
//!   (AES-GCM and ChaCha20-Poly1305; no CBC, no RSA key exchange).
//! - The server certificate is ECDSA P-256 (cheapest to sign with): from
//!   `--tls-cert`/`--tls-key`, or generated with rcgen on first start into
//!   the data dir and reused.
//! - Resumption: stateless TLS 1.3 tickets from one ticketer shared by all
//!   workers (so a client resumes on whichever worker `SO_REUSEPORT` picks),
//!   and a stateful session cache per worker (TLS 1.2 session IDs), sized by
//!   `--tls-session-cache`.
//! - Client certificates are requested but optional: a certificate issued
//!   by the client CA authenticates its CN (mutual-TLS login on HTTPS and
//!   MQTTS); rustls checks the chain, the validity period and clientAuth.
//!   Password clients send none.

pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

pub use stream::{Handshake, TlsStream};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error("generating the server certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where the server certificate comes from and what to trust for clients.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// `--tls-cert` and `--tls-key` (both or neither).
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Where a generated certificate is kept.
    pub data_dir: PathBuf,
    /// DNS names and IP addresses a generated certificate is valid for.
    pub names: Vec<String>,
    /// The client CA certificate (DER): clients with a certificate it
    /// issued authenticate as its CN.
    pub client_ca: Option<Vec<u8>>,
    /// Stateful session-cache entries per worker.
    pub session_cache: usize,
}

/// The TLS configurations a worker serves with.
#[derive(Clone, Debug)]
pub struct WorkerTls {
    pub https: Arc<ServerConfig>,
    pub mqtts: Arc<ServerConfig>,
}

/// The shared configuration, from which each worker takes its own (same
/// keys and ticketer, its own session cache).
#[derive(Clone, Debug)]
pub struct TlsSetup {
    base: ServerConfig,
    session_cache: usize,
    /// SHA-256 of the server certificate (logged at start).
    pub fingerprint: String,
}

/// The crypto provider: ring, with X25519 preferred.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{default_provider, kx_group};
    let mut p = default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

impl TlsSetup {
    /// Loads (or generates) the server certificate and builds the config.
    pub fn new(options: &TlsOptions) -> Result<Self, TlsError> {
        let (certs, key) = match &options.cert_and_key {
            Some((cert, key)) => (read_certs(cert)?, read_key(key)?),
            None => load_or_generate(&options.data_dir, &options.names)?,
        };
        let fingerprint = fleetgate_registry::ca::fingerprint_der(certs[0].as_ref());
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &options.client_ca {
            Some(der) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut base = builder.with_single_cert(certs, key)?;
        base.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(TlsSetup {
            base,
            session_cache: options.session_cache,
            fingerprint,
        })
    }

    /// One worker's configurations: HTTPS offers ALPN `http/1.1` (clients
    /// that offer only `h2` are refused in the handshake); MQTTS offers no
    /// ALPN, so any client's list is accepted.
    pub fn for_worker(&self) -> WorkerTls {
        let cache = ServerSessionMemoryCache::new(self.session_cache);
        let mut mqtts = self.base.clone();
        mqtts.session_storage = cache.clone();
        let mut https = self.base.clone();
        https.session_storage = cache;
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        WorkerTls {
            https: Arc::new(https),
            mqtts: Arc::new(mqtts),
        }
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// File names of a generated server certificate in the data dir.
pub const GENERATED_CERT: &str = "tls-cert.pem";
pub const GENERATED_KEY: &str = "tls-key.pem";

/// The generated certificate in `dir`, made on first use: self-signed
/// ECDSA P-256 for `names`, valid for ten years. Several processes may
/// share a data dir (proxies on one Redis): the key is published with a
/// hard link, which only one of them can win; the others read the winner's
/// pair once its certificate appears.
fn load_or_generate(
    dir: &Path,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, key_path) = (dir.join(GENERATED_CERT), dir.join(GENERATED_KEY));
    if !cert_path.exists() && !key_path.exists() {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        generate(dir, names, &cert_path, &key_path)?;
    }
    // Another process may be between publishing its key and its certificate.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(cert_path.exists() && key_path.exists()) {
        if std::time::Instant::now() > deadline {
            return Err(file_error(
                dir,
                format!("has only one of {GENERATED_CERT} and {GENERATED_KEY}; remove it or add the other"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok((read_certs(&cert_path)?, read_key(&key_path)?))
}

fn generate(
    dir: &Path,
    names: &[String],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "fleetgate device API");
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    let suffix = format!(".{}-{:016x}.tmp", std::process::id(), rand::random::<u64>());
    let key_tmp = dir.join(format!("{GENERATED_KEY}{suffix}"));
    let cert_tmp = dir.join(format!("{GENERATED_CERT}{suffix}"));
    write_file(&key_tmp, &key.serialize_pem(), 0o600)?;
    write_file(&cert_tmp, &cert.pem(), 0o644)?;
    let published = std::fs::hard_link(&key_tmp, key_path);
    let _ = std::fs::remove_file(&key_tmp);
    match published {
        Ok(()) => {
            std::fs::rename(&cert_tmp, cert_path).map_err(|e| file_error(cert_path, e))?;
            tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS server certificate");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process won; its pair is read by the caller.
            let _ = std::fs::remove_file(&cert_tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&cert_tmp);
            Err(file_error(key_path, e))
        }
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests;
