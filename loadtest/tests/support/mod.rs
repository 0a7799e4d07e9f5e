//! What the integration tests share: a rustls server configuration with a
//! fresh self-signed certificate, and a reader for one HTTP/1.1 request.
//! The TLS servers built on them (a terminator in front of a real gateway
//! in `smoke.rs`, a fixed-answer server in `tls_storm.rs`) live with the
//! tests that need them.

use std::io::Read;
use std::sync::Arc;

/// A server configuration (ring provider, TLS 1.2 and 1.3, rustls's
/// default in-memory session cache, so clients can resume) with a new
/// self-signed ECDSA P-256 certificate for `names` (DNS names or IP
/// addresses). Returns the certificate's PEM too, for a client's CA file.
pub fn self_signed_server(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    (Arc::new(config), cert.cert.pem())
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body).
pub fn read_request(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
        let n = r.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("incomplete request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
