//! CSR registration with real OpenSSL: the device makes its key and CSR
//! with `openssl req`, the gateway's CA signs it at grant, and the 201
//! carries a certificate that `openssl verify` accepts, with the right CN,
//! extended key usage and validity.

use fleetgate_tests::*;
use serde_json::json;

fn csr_request(username: &str, csr: &str) -> serde_json::Value {
    json!({"username": username, "csr": csr})
}

#[test]
fn a_csr_is_signed_at_grant_and_collected_with_the_ca() {
    let g = Gateway::start(&["--cert-validity-days", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let token = g.admin_token();
    let r = authed(g.admin, &token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 200);

    let csr = make_csr(dir.path(), "dev", "/CN=cert-dev-01/O=plant");
    let r = register(g.http, &csr_request("cert-dev-01", &csr));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        register(g.http, &csr_request("cert-dev-01", &csr)).status,
        202
    );
    // Another CSR for the same name is another request: 409.
    let other = make_csr(dir.path(), "other", "/CN=cert-dev-01");
    assert_eq!(
        register(g.http, &csr_request("cert-dev-01", &other)).status,
        409
    );

    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/cert-dev-01/grant",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = register(g.http, &csr_request("cert-dev-01", &csr));
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    let cert = body["certificate"]
        .as_str()
        .expect("certificate in the 201")
        .to_owned();
    let ca = body["caCertificate"]
        .as_str()
        .expect("caCertificate in the 201")
        .to_owned();
    // Collecting again returns the same certificate (stored with the grant).
    let again = register(g.http, &csr_request("cert-dev-01", &csr)).json();
    assert_eq!(again["certificate"], cert.as_str());

    let cert_path = dir.path().join("dev.crt");
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&ca_path, &ca).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca_path.to_str().unwrap(),
        cert_path.to_str().unwrap(),
    ]);
    assert!(ok, "openssl verify: {text}");
    let (_, text) = openssl(&[
        "x509",
        "-in",
        cert_path.to_str().unwrap(),
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage,keyUsage",
        "-dates",
    ]);
    assert!(
        text.contains("CN = cert-dev-01") || text.contains("CN=cert-dev-01"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    // Signed for the CSR's own key.
    let (_, cert_key) = openssl(&[
        "x509",
        "-in",
        cert_path.to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    let (_, csr_key) = openssl(&[
        "req",
        "-in",
        dir.path().join("dev.csr").to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    assert_eq!(cert_key, csr_key);
    // 30 days of validity.
    let (ok, _) = openssl(&[
        "x509",
        "-in",
        cert_path.to_str().unwrap(),
        "-noout",
        "-checkend",
        &(29 * 86_400).to_string(),
    ]);
    assert!(ok, "valid for at least 29 more days");
    let (ok, _) = openssl(&[
        "x509",
        "-in",
        cert_path.to_str().unwrap(),
        "-noout",
        "-checkend",
        &(31 * 86_400).to_string(),
    ]);
    assert!(!ok, "expires within 31 days");

    // The CA is published, and the user has a certificate and no password.
    let r = request(g.http, "GET", "/api/certificates/ca", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), ca);
    let user = authed(g.admin, &token, "GET", "/api/users/cert-dev-01", b"").json();
    assert_eq!(user["hasPassword"], false);
    assert_eq!(user["certificateFingerprint"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_csrs_are_refused_at_arrival() {
    let g = Gateway::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Refused even while locked: validation comes first.
    let mismatch = make_csr(dir.path(), "m", "/CN=someone-else");
    let r = register(g.http, &csr_request("cert-dev-02", &mismatch));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["rule"], "csr_common_name");

    let no_cn = make_csr(dir.path(), "e", "/O=plant");
    let r = register(g.http, &csr_request("cert-dev-02", &no_cn));
    assert_eq!(r.status, 422, "{}", r.text());

    let r = register(
        g.http,
        &csr_request(
            "cert-dev-02",
            "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n",
        ),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // A good CSR with one bit of its signature flipped.
    let good = make_csr(dir.path(), "g", "/CN=cert-dev-02");
    let der_path = dir.path().join("g.der");
    let (ok, text) = openssl(&[
        "req",
        "-in",
        dir.path().join("g.csr").to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der_path.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let mut der = std::fs::read(&der_path).unwrap();
    let n = der.len();
    der[n - 5] ^= 0x01;
    std::fs::write(&der_path, &der).unwrap();
    let bad_path = dir.path().join("bad.csr");
    let (ok, text) = openssl(&[
        "req",
        "-inform",
        "DER",
        "-in",
        der_path.to_str().unwrap(),
        "-out",
        bad_path.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let bad = std::fs::read_to_string(&bad_path).unwrap();
    assert_ne!(bad, good);
    let r = register(g.http, &csr_request("cert-dev-02", &bad));
    assert_eq!(r.status, 400, "{}", r.text());
    // The good one is fine (423: locked).
    assert_eq!(
        register(g.http, &csr_request("cert-dev-02", &good)).status,
        423
    );
}
