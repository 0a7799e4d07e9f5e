//! Mutual-TLS identity checks: `Registry::authenticate_certificate` accepts
//! exactly the certificate a CSR grant issued, and refuses it once the user
//! is deleted, once it has expired, or when another certificate carries the
//! same CN.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fleetgate_registry::ca::CertificateAuthority;
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::model::UserRecord;
use fleetgate_registry::registry::{
    CertificateLoginError, CertificateRejection, GrantOverrides, PollContext, RegisterOutcome,
    RegistryConfig,
};
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::Store;
use fleetgate_registry::{Registry, UnixMillis};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// The embedded store completes every operation without waiting, so a
/// no-op waker is enough to drive it.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn csr(cn: &str) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().contents().to_vec()
}

fn registry() -> Registry<EmbeddedStore> {
    let config = RegistryConfig::default();
    let store = EmbeddedStore::in_memory(config.windows, config.max_pending);
    let ca = CertificateAuthority::generate(30).unwrap();
    Registry::new(store, Secrets::random(), config).with_ca(Arc::new(ca))
}

/// Registers `cn` with a CSR, grants it, and returns the issued PEM.
fn granted(registry: &Registry<EmbeddedStore>, cn: &str, now: UnixMillis) -> String {
    let body = serde_json::json!({"username": cn, "csr": csr(cn)}).to_string();
    block_on(registry.unlock(Some(Duration::from_secs(60)), now)).unwrap();
    let first = block_on(registry.register(body.as_bytes(), PollContext::default(), now));
    assert!(
        matches!(first, RegisterOutcome::Pending { .. }),
        "{first:?}"
    );
    block_on(registry.grant(cn, GrantOverrides::default(), now)).unwrap();
    match block_on(registry.register(body.as_bytes(), PollContext::default(), now)) {
        RegisterOutcome::Granted {
            certificate: Some(pem),
            ..
        } => pem,
        other => panic!("expected a granted certificate, got {other:?}"),
    }
}

#[test]
fn the_issued_certificate_authenticates_its_user() {
    let registry = registry();
    let now = UnixMillis::now();
    let pem = granted(&registry, "dev-7", now);
    let user = block_on(registry.authenticate_certificate(&der(&pem), now)).unwrap();
    assert_eq!(user.username, "dev-7");
    assert!(user.password_hash.is_none());
}

#[test]
fn another_certificate_with_the_same_cn_is_refused() {
    let registry = registry();
    let now = UnixMillis::now();
    granted(&registry, "dev-8", now);
    // Signed by the same CA, same CN, but not the one the grant issued.
    let ca = registry.ca().unwrap();
    let other = ca.issue(&csr("dev-8"), "dev-8", now).unwrap();
    let verdict = refusal(block_on(
        registry.authenticate_certificate(&der(&other.pem), now),
    ));
    assert_eq!(verdict, CertificateRejection::NotTheUsersCertificate);
}

#[test]
fn a_deleted_users_certificate_is_refused() {
    let registry = registry();
    let now = UnixMillis::now();
    let pem = granted(&registry, "dev-9", now);
    assert!(block_on(registry.store().delete_user("dev-9")).unwrap());
    let verdict = refusal(block_on(registry.authenticate_certificate(&der(&pem), now)));
    assert_eq!(verdict, CertificateRejection::UnknownUser);
}

#[test]
fn an_expired_certificate_is_refused() {
    let registry = registry();
    let now = UnixMillis::now();
    let pem = granted(&registry, "dev-10", now);
    // The CA issues for 30 days; 31 days on, the stored expiry has passed.
    let later = now.plus(Duration::from_secs(31 * 86_400));
    let verdict = refusal(block_on(
        registry.authenticate_certificate(&der(&pem), later),
    ));
    assert_eq!(verdict, CertificateRejection::Expired);
    // A day before expiry it is still fine.
    let before = now.plus(Duration::from_secs(29 * 86_400));
    assert!(block_on(registry.authenticate_certificate(&der(&pem), before)).is_ok());
}

#[test]
fn bytes_that_are_not_a_certificate_name_nobody() {
    let registry = registry();
    let verdict = refusal(block_on(
        registry.authenticate_certificate(b"garbage", UnixMillis::now()),
    ));
    assert_eq!(verdict, CertificateRejection::NoCommonName);
}

/// The rejection of a certificate login that must have been refused (not
/// accepted, and not a store failure).
fn refusal(verdict: Result<UserRecord, CertificateLoginError>) -> CertificateRejection {
    match verdict {
        Err(CertificateLoginError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}
