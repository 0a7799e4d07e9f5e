//! Fuzz target: CSR parsing (`fleetgate_registry::ca::parse_csr`), which
//! every register request with a `csr` runs before any state is read.
//!
//! An even first byte feeds the rest as PEM text; an odd one feeds it as
//! the DER inside a `CERTIFICATE REQUEST` PEM block, so mutations reach the
//! ASN.1 parser instead of dying in base64. Beyond "no panic" it asserts:
//! - the result does not depend on the PEM's line endings (LF or CRLF);
//! - differential against `x509-parser` used directly: an accepted CSR is
//!   a PKCS#10 request whose signature verifies, and when its subject has
//!   exactly one CN, that CN is the one `parse_csr` reports.
#![no_main]

use fleetgate_registry::ca::parse_csr;
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

fn oracle(der: &[u8], cn: Option<&str>) {
    let (_, csr) = X509CertificationRequest::from_der(der).expect("accepted, so it parses");
    csr.verify_signature()
        .expect("accepted, so its signature verifies");
    let subject = &csr.certification_request_info.subject;
    let cns: Vec<_> = subject.iter_common_name().collect();
    if let ([only], Some(ours)) = (&cns[..], cn) {
        if let Ok(theirs) = only.as_str() {
            assert_eq!(theirs, ours, "CN differs from x509-parser");
        }
    }
    if cns.is_empty() {
        assert_eq!(cn, None, "a CN where x509-parser finds none");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(cn) = parse_csr(text) {
            let der = pem::parse(text).expect("accepted, so it is PEM");
            oracle(der.contents(), cn.as_deref());
        }
        return;
    }
    let block = pem::Pem::new("CERTIFICATE REQUEST", rest.to_vec());
    let lf = pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let crlf = pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::CRLF),
    );
    let result = parse_csr(&lf);
    assert_eq!(result, parse_csr(&crlf), "line endings changed the result");
    if let Ok(cn) = result {
        oracle(rest, cn.as_deref());
    }
});
