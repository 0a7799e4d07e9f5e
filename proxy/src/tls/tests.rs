//! The server certificate's life cycle and the per-worker configurations.

use super::*;

fn options(dir: &Path) -> TlsOptions {
    TlsOptions {
        cert_and_key: None,
        data_dir: dir.to_path_buf(),
        names: vec!["localhost".into(), "127.0.0.1".into()],
        client_ca: None,
        session_cache: 16,
    }
}

#[test]
fn a_generated_certificate_is_kept_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = TlsSetup::new(&options(dir.path())).unwrap();
    let again = TlsSetup::new(&options(dir.path())).unwrap();
    assert_eq!(first.fingerprint, again.fingerprint);
    let key = std::fs::metadata(dir.path().join(GENERATED_KEY)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn processes_racing_to_generate_end_up_with_one_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprints: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| TlsSetup::new(&options(dir.path())).unwrap().fingerprint))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(fingerprints.iter().all(|f| *f == fingerprints[0]));
    let on_disk = read_certs(&dir.path().join(GENERATED_CERT)).unwrap();
    assert_eq!(
        fleetgate_registry::ca::fingerprint_der(on_disk[0].as_ref()),
        fingerprints[0]
    );
}

#[test]
fn half_a_pair_is_an_error_that_names_the_files() {
    let dir = tempfile::tempdir().unwrap();
    TlsSetup::new(&options(dir.path())).unwrap();
    std::fs::remove_file(dir.path().join(GENERATED_CERT)).unwrap();
    let err = TlsSetup::new(&options(dir.path())).unwrap_err().to_string();
    assert!(
        err.contains(GENERATED_CERT) && err.contains(GENERATED_KEY),
        "{err}"
    );
}

#[test]
fn given_files_that_are_not_pem_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let mut opts = options(dir.path());
    opts.cert_and_key = Some((cert, key));
    let err = TlsSetup::new(&opts).unwrap_err().to_string();
    assert!(err.contains("c.pem"), "{err}");
}

#[test]
fn each_worker_gets_its_own_session_cache_and_the_https_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let setup = TlsSetup::new(&options(dir.path())).unwrap();
    let (a, b) = (setup.for_worker(), setup.for_worker());
    assert_eq!(a.https.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(a.mqtts.alpn_protocols.is_empty());
    assert!(!Arc::ptr_eq(&a.https, &b.https));
    // One ticketer for all: a ticket from one worker opens on another.
    assert!(a.https.ticketer.enabled());
    let ticket = a.https.ticketer.encrypt(b"session state").unwrap();
    assert_eq!(
        b.mqtts.ticketer.decrypt(&ticket).as_deref(),
        Some(&b"session state"[..])
    );
}
