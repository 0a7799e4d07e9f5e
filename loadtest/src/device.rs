//! What every simulated device shares: its identity, its request body, how
//! it paces its polls, and the HTTP clients the devices send through.
//!
//! A device is one goose user. Its username is `lt-<run>-<index>`, where the
//! index is goose's user number, so the same `--run-id` and `--devices`
//! describe the same fleet on every run, and the admin can list exactly this
//! run's devices by the `lt-<run>-` prefix.
//!
//! Devices share one HTTP client, so 100,000 devices do not build 100,000
//! connection pools and TLS configurations. With keep-alive, the number of
//! open connections is the number of requests in flight, not the number of
//! devices, and the requests in flight are bounded by `--connections`
//! (`Devices::connections`), so a fleet of any size polls over a bounded
//! pool of keep-alive connections. `tls-reconnect` uses a client that keeps no idle connection and
//! sends `Connection: close`, so every request opens (and the gateway
//! closes) a new connection, with a full TLS handshake on `https://`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The register route every device polls.
pub const REGISTER_PATH: &str = "/api/client-registry/register";
/// The login route.
pub const LOGIN_PATH: &str = "/api/login";

/// When an answer carries no usable `Retry-After`, a device waits this long
/// (times `--pace-scale`), the gateway's default base.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// `lt-<run>-<index>`.
pub fn username(run_id: &str, index: usize) -> String {
    format!("lt-{run_id}-{index}")
}

/// The prefix every username of a run starts with, for the admin's listing.
pub fn username_prefix(run_id: &str) -> String {
    format!("lt-{run_id}-")
}

/// The password every device of a run registers with. Passwords are not
/// what a load test measures; one per run keeps the bodies cheap to build.
pub fn password(run_id: &str) -> String {
    format!("lt-secret-{run_id}")
}

/// The JSON body of a register poll or a login: `{"username","password"}`.
pub fn credentials_body(username: &str, password: &str) -> String {
    serde_json::json!({ "username": username, "password": password }).to_string()
}

/// `Retry-After` in whole seconds (the only form the gateway sends), or
/// `None` when it is missing or not a number.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// How long a device waits before its next poll: the advised `Retry-After`
/// (or [`DEFAULT_RETRY_AFTER`]) times `scale`.
pub fn next_wait(advised: Option<Duration>, scale: f64) -> Duration {
    advised.unwrap_or(DEFAULT_RETRY_AFTER).mul_f64(scale)
}

/// How devices reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// One keep-alive pool shared by every device.
    KeepAlive,
    /// A new connection for every request. `resumption` lets TLS resume a
    /// session instead of a full handshake.
    NewPerRequest { resumption: bool },
}

/// Builds the client every device shares. Certificates are not checked
/// (`https://` targets in load tests are self-signed), proxies from the
/// environment are ignored (the load must go where `--url` says), and
/// pooled connections are dropped after 30 s idle, before the gateway's
/// 60 s idle timeout closes them under a request. At most `pool` idle
/// connections are kept (`usize::MAX`: no cap); the devices' in-flight
/// bound (`--connections`) keeps the open ones at about that.
pub fn device_client(
    connections: Connections,
    pool: usize,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("fleetgate-loadtest/", env!("CARGO_PKG_VERSION")));
    let builder = match connections {
        Connections::KeepAlive => builder
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(pool)
            .tls_backend_preconfigured(tls_config(true)),
        Connections::NewPerRequest { resumption } => builder
            .pool_max_idle_per_host(0)
            .tls_backend_preconfigured(tls_config(resumption)),
    };
    builder.build()
}

/// A rustls client configuration that accepts any server certificate (the
/// signatures of the handshake are still verified, so the handshake costs
/// what a real one costs) and resumes sessions only when asked.
pub fn tls_config(resumption: bool) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate::new(&provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = if resumption {
        rustls::client::Resumption::default()
    } else {
        rustls::client::Resumption::disabled()
    };
    config
}

/// Trusts every certificate chain: a load test's gateway uses a self-signed
/// one. Handshake signatures are checked as usual.
#[derive(Debug)]
pub struct AcceptAnyCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> AcceptAnyCertificate {
        AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn usernames_are_stable_and_valid_for_the_gateway() {
        assert_eq!(username("k3f9", 41), "lt-k3f9-41");
        assert!(username("k3f9", 41).starts_with(&username_prefix("k3f9")));
        // The gateway's rules: 3 to 128 of [A-Za-z0-9._@-]; passwords >= 5.
        let u = username("ABCDEFGHIJKLMNOP", 9_999_999);
        assert!(u.len() <= 128 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(password("a").len() >= 5);
        assert_eq!(
            credentials_body("lt-a-1", "pw-123"),
            r#"{"password":"pw-123","username":"lt-a-1"}"#
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_scaled() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        assert_eq!(next_wait(retry_after(&h), 0.1), Duration::from_millis(700));
        assert_eq!(next_wait(None, 1.0), DEFAULT_RETRY_AFTER);
        assert_eq!(next_wait(Some(Duration::from_secs(9)), 0.0), Duration::ZERO);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    /// A loopback HTTP server that counts the connections it accepts and
    /// answers every request 202 (closing when asked to), and how many
    /// connections three requests through `connections` took.
    fn connections_for_three_requests(connections: Connections) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicU64::new(0));
            let counter = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else { return };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            // One request per read is enough for these tiny bodies.
                            let n = s.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let close = String::from_utf8_lossy(&buf[..n])
                                .to_ascii_lowercase()
                                .contains("connection: close");
                            let answer = "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nRetry-After: 5\r\n\r\n{}";
                            if s.write_all(answer.as_bytes()).await.is_err() || close {
                                return;
                            }
                        }
                    });
                }
            });
            let client = device_client(connections, 4, Duration::from_secs(5)).unwrap();
            for _ in 0..3 {
                let mut req = client
                    .post(format!("http://{addr}{REGISTER_PATH}"))
                    .body(credentials_body("lt-t-1", "secret-1"));
                if connections != Connections::KeepAlive {
                    req = req.header(reqwest::header::CONNECTION, "close");
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 202);
                assert_eq!(retry_after(resp.headers()), Some(Duration::from_secs(5)));
                resp.bytes().await.unwrap();
            }
            accepted.load(Ordering::Relaxed)
        })
    }

    #[test]
    fn keep_alive_reuses_one_connection_and_reconnect_opens_one_per_request() {
        assert_eq!(connections_for_three_requests(Connections::KeepAlive), 1);
        assert_eq!(
            connections_for_three_requests(Connections::NewPerRequest { resumption: false }),
            3
        );
    }
}
