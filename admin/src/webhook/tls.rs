//! TLS for `https://` webhook endpoints: the rustls client configuration
//! the deliverer's connector uses, trusting the system's roots or only the
//! CA certificates of `--webhook-ca-cert`.
//!
//! The provider is named (ring), as everywhere in this workspace: the
//! workspace build also enables rustls's aws-lc-rs, so there is no
//! process-wide default to rely on.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The client configuration: the CA certificates of `ca_pem` if given
/// (then nothing else is trusted), else the system's roots. A PEM with no
/// usable certificate is an error, said in words.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("no certificate in the file".into());
            }
        }
        None => {
            // Unreadable system certificates are skipped.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A configuration that trusts no server: every https attempt fails.
pub fn trusting_nothing() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_a_certificate() {
        assert!(client_config(None).is_ok(), "system roots");
        let e = client_config(Some(b"")).unwrap_err();
        assert_eq!(e, "no certificate in the file");
        let e = client_config(Some(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert!(e.starts_with("not a PEM certificate"), "{e}");
    }
}
