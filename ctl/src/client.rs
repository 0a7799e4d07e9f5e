//! The HTTP(S) client of the admin API.
//!
//! One hyper-util client (keep-alive, so a listing of many pages or a bulk
//! decision reuses its connection) over hyper-rustls. An `https://` server
//! is verified against the system's roots, or against `--cacert`'s PEM
//! file, or not at all with `--insecure`; TLS runs on the `ring` provider,
//! named explicitly because the workspace also builds `aws-lc-rs`.
//!
//! Every call has one deadline (`--timeout`) over connecting, sending and
//! reading the whole answer, and an answer is read up to
//! [`MAX_RESPONSE_BODY`]. Errors never contain the token: the
//! `Authorization` header is the only place it goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::output::escape;
use crate::CtlError;

/// The largest answer read. The largest the API sends is a bulk decision
/// of 10,000 items or a listing page of 1,000 requests, well under 4 MiB.
pub const MAX_RESPONSE_BODY: usize = 32 * 1024 * 1024;

/// How to verify an `https://` server.
#[derive(Clone, Debug)]
pub enum TlsTrust {
    /// The system's root certificates.
    System,
    /// The CA certificates of this PEM file.
    CaFile(std::path::PathBuf),
    /// Nothing: any certificate is accepted (`--insecure`).
    Insecure,
}

/// A client for one server.
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority` and any path prefix, without a trailing slash.
    base: String,
    token: Option<String>,
    deadline: Duration,
}

/// One answer: its status and whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, CtlError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CtlError::BadReply(format!(
                "the body is not JSON ({e}): {}",
                snippet(&self.body)
            ))
        })
    }

    /// An error for this (unsuccessful) answer: the API's `error` sentence
    /// when the body has one, else a piece of the body.
    pub fn into_error(self) -> CtlError {
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .map(|e| escape(&e).into_owned())
            .unwrap_or_else(|| {
                let reason = self.status.canonical_reason().unwrap_or("error");
                if self.body.is_empty() {
                    reason.to_owned()
                } else {
                    format!("{reason}: {}", snippet(&self.body))
                }
            });
        CtlError::Api {
            status: self.status,
            message,
        }
    }

    /// `Ok(self)` for a 2xx answer, the API error otherwise.
    pub fn success(self) -> Result<Reply, CtlError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}

/// At most 200 characters of a body, escaped, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut: String = text.chars().take(200).collect();
    escape(&cut).into_owned()
}

impl Client {
    /// A client for `server` (`http://` or `https://`, with an optional
    /// path prefix).
    pub fn new(
        server: &str,
        trust: TlsTrust,
        deadline: Duration,
        token: Option<String>,
    ) -> Result<Client, CtlError> {
        let uri: Uri = server
            .parse()
            .map_err(|e| CtlError::Usage(format!("--server `{}`: {e}", escape(server))))?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err(CtlError::Usage(format!(
                "--server `{}` must start with http:// or https://",
                escape(server)
            )));
        }
        if uri.authority().is_none() {
            return Err(CtlError::Usage(format!(
                "--server `{}` has no host",
                escape(server)
            )));
        }
        if scheme == "http" && matches!(trust, TlsTrust::CaFile(_)) {
            return Err(CtlError::Usage(
                "--cacert needs an https:// --server".into(),
            ));
        }
        let tls = tls_config(&trust)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(deadline));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            http: client,
            base: server.trim_end_matches('/').to_owned(),
            token,
            deadline,
        })
    }

    /// The server, as the user named it (for messages).
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Sends one request to `path` (which starts with `/`, and is already
    /// percent-encoded) with an optional JSON body, and reads the answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CtlError> {
        let uri = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&uri);
        let bytes = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).expect("a JSON value serialises"))
            }
            None => Bytes::new(),
        };
        let mut request = request
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("fleetgate-ctl/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(bytes))
            .map_err(|e| CtlError::Usage(format!("bad request URL {}: {e}", escape(&uri))))?;
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CtlError::Local("the token holds characters a header cannot carry".into())
            })?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CtlError::Unreachable {
                    server: self.base.clone(),
                    reason: error_chain(&e),
                })?;
            let status = response.status();
            let body = read_capped(response.into_body(), MAX_RESPONSE_BODY)
                .await
                .map_err(|e| match e {
                    CtlError::Unreachable { reason, .. } => CtlError::Unreachable {
                        server: self.base.clone(),
                        reason,
                    },
                    other => other,
                })?;
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(self.deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CtlError::Timeout {
                server: self.base.clone(),
                deadline: self.deadline,
            }),
        }
    }

    /// `GET path`, expecting 2xx.
    pub async fn get(&self, path: &str) -> Result<Reply, CtlError> {
        self.call(Method::GET, path, None).await?.success()
    }
}

/// An error and its sources, joined: hyper-util's own message is only
/// "client error (Connect)", the reason is in the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

/// Reads a whole body of at most `cap` bytes.
async fn read_capped<B>(body: B, cap: usize) -> Result<Bytes, CtlError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CtlError::BadReply(format!(
            "the answer is larger than the cap of {cap} bytes"
        ))),
        Err(e) => Err(CtlError::Unreachable {
            server: String::new(),
            reason: format!("the answer broke off: {e}"),
        }),
    }
}

fn tls_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, CtlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| CtlError::Local(format!("TLS set-up: {e}")))?;
    // hyper-rustls sets the ALPN protocols itself (`enable_http1`).
    let config = match trust {
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        TlsTrust::System => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            // Unreadable system certificates are skipped; only none at
            // all is an error, and only when an https server is used.
            roots.add_parsable_certificates(found.certs);
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::CaFile(path) => builder
            .with_root_certificates(roots_from_file(path)?)
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The CA certificates of a PEM file; a file with none is an error.
fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, CtlError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let fail = |why: String| CtlError::Local(format!("--cacert {}: {why}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(roots)
}

/// `--insecure`: any server certificate is accepted, but the handshake's
/// signatures are still checked, so the connection is at least to the
/// holder of the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Percent-encodes one path segment or query value: everything but the
/// unreserved characters of RFC 3986.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode("sensor-0001"), "sensor-0001");
        assert_eq!(encode("a/b c@d"), "a%2Fb%20c%40d");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[tokio::test]
    async fn an_answer_at_the_cap_is_read_and_one_byte_more_is_refused() {
        let read = |n: usize| read_capped(Full::new(Bytes::from(vec![b'x'; n])), MAX_RESPONSE_BODY);
        assert_eq!(
            read(MAX_RESPONSE_BODY).await.unwrap().len(),
            MAX_RESPONSE_BODY
        );
        let err = read(MAX_RESPONSE_BODY + 1).await.unwrap_err();
        assert!(matches!(err, CtlError::BadReply(_)), "{err}");
    }

    #[test]
    fn server_urls_are_checked() {
        let new = |s: &str, t| Client::new(s, t, Duration::from_secs(1), None).map(|_| ());
        assert!(new("ftp://h", TlsTrust::System).is_err());
        assert!(new("127.0.0.1:8081", TlsTrust::System).is_err());
        assert!(new("http://h/", TlsTrust::CaFile("ca.pem".into())).is_err());
        assert!(new("http://127.0.0.1:8081/", TlsTrust::System).is_ok());
    }
}
