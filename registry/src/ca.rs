//! The gateway's certificate authority for client certificates, and the
//! checks on a device's certificate signing request (CSR).
//!
//! A device that cannot keep a password sends a PEM PKCS#10 CSR instead.
//! [`parse_csr`] runs when the request arrives: a CSR that does not parse,
//! or whose signature does not verify, is `invalid` (400); a subject CN
//! that is empty or not the username is `policy` (422, the one rule in
//! [`crate::request::check_csr_common_name`]). On grant,
//! [`CertificateAuthority::issue`] signs the CSR's public key into a client
//! certificate: CN = username, key usage digitalSignature, extended key
//! usage clientAuth, valid for `validity_days`.
//!
//! The CA comes from `--ca-cert`/`--ca-key`, or is generated (ECDSA P-256)
//! on first start and kept in the data dir. Deployments with several
//! instances (Redis) must give every instance the same CA files.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;

/// The subject CN of a CSR, after its signature has been verified.
fn common_name(params: &CertificateSigningRequestParams) -> Option<String> {
    match params.params.distinguished_name.get(&DnType::CommonName)? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Parses a CSR and verifies its signature (step 1: a failure is 400);
/// returns its subject CN, if any.
pub fn parse_csr(pem: &str) -> Result<Option<String>, CsrError> {
    let params =
        CertificateSigningRequestParams::from_pem(pem).map_err(|e| CsrError(e.to_string()))?;
    Ok(common_name(&params))
}

/// A CSR that is not a PEM PKCS#10 request with a verifying signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("csr is not a valid PEM PKCS#10 request with a verifying signature ({0})")]
pub struct CsrError(String);

/// A certificate issued at grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub pem: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    pub not_after: UnixMillis,
}

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The CA that signs client certificates.
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as given or generated (what clients verify with).
    cert_pem: String,
    cert_der: Vec<u8>,
    validity: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &fingerprint_der(&self.cert_der))
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl CertificateAuthority {
    /// A new self-signed ECDSA P-256 CA, valid for 10 years.
    pub fn generate(validity_days: u32) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "fleetgate client CA");
        dn.push(DnType::OrganizationName, "fleetgate");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().to_vec();
        Ok(CertificateAuthority {
            cert,
            key,
            cert_pem,
            cert_der,
            validity: Duration::from_secs(u64::from(validity_days) * 86_400),
        })
    }

    /// A CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str, validity_days: u32) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Rebuilt with the same subject and key, so what it signs verifies
        // against the original certificate.
        let cert = params.self_signed(&key)?;
        let der = rustls_pki_der(cert_pem).ok_or_else(|| CaError::File {
            path: "--ca-cert".into(),
            reason: "no CERTIFICATE block".into(),
        })?;
        Ok(CertificateAuthority {
            cert,
            key,
            cert_pem: cert_pem.to_owned(),
            cert_der: der,
            validity: Duration::from_secs(u64::from(validity_days) * 86_400),
        })
    }

    /// Loads `cert`/`key`, or, when neither exists, generates a CA and
    /// writes both atomically (temporary file, fsync, rename, directory
    /// fsync; the key with mode 0600), key first: a crash leaves no file,
    /// the key alone (refused at the next start with a clear error), or
    /// both whole.
    pub fn load_or_generate(cert: &Path, key: &Path, validity_days: u32) -> Result<Self, CaError> {
        if cert.exists() || key.exists() {
            return Self::from_pem(&read(cert)?, &read(key)?, validity_days);
        }
        let ca = Self::generate(validity_days)?;
        let write = |path: &Path, text: &str, mode| {
            crate::durable::write_atomically(path, text.as_bytes(), mode).map_err(|e| {
                CaError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            })
        };
        write(key, &ca.key.serialize_pem(), 0o600)?;
        write(cert, &ca.cert_pem, 0o644)?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key as PEM (for sharing it through the store).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CA from one text holding both the certificate and the key.
    pub fn from_combined_pem(text: &str, validity_days: u32) -> Result<Self, CaError> {
        let blocks = pem::parse_many(text).map_err(|e| CaError::File {
            path: "shared CA".into(),
            reason: e.to_string(),
        })?;
        let find = |tag: &str| {
            blocks
                .iter()
                .find(|b| b.tag() == tag)
                .map(pem::encode)
                .ok_or_else(|| CaError::File {
                    path: "shared CA".into(),
                    reason: format!("no {tag} block"),
                })
        };
        Self::from_pem(&find("CERTIFICATE")?, &find("PRIVATE KEY")?, validity_days)
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs `csr_pem` into a client certificate for `username`, valid from
    /// five minutes before `now` (clock skew) for `--cert-validity-days`.
    pub fn issue(
        &self,
        csr_pem: &str,
        username: &str,
        now: UnixMillis,
    ) -> Result<IssuedCertificate, CaError> {
        let not_before = UnixMillis(now.0.saturating_sub(5 * 60 * 1000));
        self.issue_between(csr_pem, username, not_before, now.plus(self.validity))
    }

    /// Signs `csr_pem` into a client certificate for `username` valid from
    /// `not_before` to `not_after` (what [`issue`](Self::issue) uses; tests
    /// use it to make certificates that have already expired).
    pub fn issue_between(
        &self,
        csr_pem: &str,
        username: &str,
        not_before: UnixMillis,
        not_after: UnixMillis,
    ) -> Result<IssuedCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, username);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let at = |t: UnixMillis| {
            time::OffsetDateTime::from_unix_timestamp((t.0 / 1000) as i64)
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        };
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&csr.public_key, &self.cert, &self.key)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            fingerprint: fingerprint_der(cert.der()),
            // Whole seconds, as in the certificate.
            not_after: UnixMillis(not_after.0 / 1000 * 1000),
        })
    }
}

/// The subject common name of a DER certificate (`None` if the bytes do
/// not parse or there is no CN). Mutual TLS uses it as the username.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The DER bytes of the first CERTIFICATE block of `pem`.
fn rustls_pki_der(pem: &str) -> Option<Vec<u8>> {
    let parsed = pem::parse_many(pem).ok()?;
    parsed
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestError;

    fn csr(cn: Option<&str>) -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        dn.push(DnType::OrganizationName, "plant");
        params.distinguished_name = dn;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    /// Parse, then the CN rule: what registration runs for every CSR.
    fn check_csr(pem: &str, username: &str) -> Result<(), RequestError> {
        let cn = parse_csr(pem).map_err(|e| RequestError::Invalid(e.to_string()))?;
        crate::request::check_csr_common_name(cn.as_deref(), username)
    }

    #[test]
    fn csr_checks() {
        check_csr(&csr(Some("dev-01")), "dev-01").unwrap();
        assert!(matches!(
            check_csr(&csr(Some("other")), "dev-01"),
            Err(RequestError::Policy {
                rule: "csr_common_name",
                ..
            })
        ));
        assert!(matches!(
            check_csr(&csr(None), "dev-01"),
            Err(RequestError::Policy { .. })
        ));
        assert!(matches!(
            check_csr(&csr(Some("")), "dev-01"),
            Err(RequestError::Policy { .. })
        ));
        assert!(matches!(
            check_csr("garbage", "dev-01"),
            Err(RequestError::Invalid(_))
        ));
        // A flipped byte in the signature: parses, but does not verify.
        let good = csr(Some("dev-01"));
        let der = pem::parse(&good).unwrap();
        let mut bytes = der.contents().to_vec();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
        assert!(matches!(
            check_csr(&bad, "dev-01"),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn issued_certificate_is_a_client_cert_for_the_username() {
        let ca = CertificateAuthority::generate(365).unwrap();
        let now = UnixMillis::now();
        let issued = ca.issue(&csr(Some("dev-01")), "dev-01", now).unwrap();
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(issued.fingerprint.len(), 64);
        let expected = now.plus(Duration::from_secs(365 * 86_400));
        assert_eq!(issued.not_after, UnixMillis(expected.0 / 1000 * 1000));
        let der = pem::parse(&issued.pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        // The recorded expiry is the certificate's own notAfter.
        assert_eq!(
            cert.validity().not_after.timestamp() * 1000,
            issued.not_after.0 as i64
        );
        assert_eq!(
            certificate_common_name(der.contents()).as_deref(),
            Some("dev-01")
        );
        assert_eq!(certificate_common_name(b"not a certificate"), None);
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "dev-01");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        // Signed by the CA.
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn a_ca_survives_a_reload_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let first = CertificateAuthority::load_or_generate(&c, &k, 30).unwrap();
        let again = CertificateAuthority::load_or_generate(&c, &k, 30).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        let issued = again
            .issue(&csr(Some("d")), "d", UnixMillis::now())
            .unwrap();
        let der = pem::parse(&issued.pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(first.cert_der()).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }
}
