//! The register request before any state is read: parsing and validating
//! the JSON body (`RegisterRequest::parse`), the credential fingerprint
//! computed on every poll (`Fingerprint::compute`), and the seal done only
//! when a pending request is created (`fingerprint::seal`).
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench register_request
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate_bench::fixtures::{REGISTER_BODY_FULL, REGISTER_BODY_MINIMAL};
use fleetgate_registry::fingerprint::{seal, CredentialKind, Fingerprint};
use fleetgate_registry::request::{Credential, RegisterRequest};
use fleetgate_registry::secrets::Secrets;

fn password<'r>(req: &'r RegisterRequest<'_>) -> &'r [u8] {
    match &req.credential {
        Credential::Password(p) => p.as_bytes(),
        Credential::Csr(_) => unreachable!("the fixtures carry passwords"),
    }
}

fn fingerprint(secrets: &Secrets, req: &RegisterRequest<'_>) -> Fingerprint {
    Fingerprint::compute(
        secrets,
        &req.username,
        CredentialKind::Password,
        password(req),
        &req.roles,
        &req.permissions,
    )
}

fn register_request(c: &mut Criterion) {
    let bodies = [
        ("minimal", REGISTER_BODY_MINIMAL),
        ("roles_permissions_context", REGISTER_BODY_FULL),
    ];

    let mut group = c.benchmark_group("register_request_parse");
    for (name, body) in bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| RegisterRequest::parse(black_box(body)).expect("a valid body"))
        });
    }
    group.finish();

    let secrets = Secrets::derive(&[42; 32]);
    let mut group = c.benchmark_group("fingerprint");
    for (name, body) in bodies {
        let req = RegisterRequest::parse(body).expect("a valid body");
        group.bench_function(name, |b| b.iter(|| fingerprint(&secrets, black_box(&req))));
    }
    group.finish();

    let req = RegisterRequest::parse(REGISTER_BODY_MINIMAL).expect("a valid body");
    let fp = fingerprint(&secrets, &req);
    c.bench_function("seal/minimal", |b| {
        b.iter(|| {
            seal(
                &secrets,
                black_box(&fp),
                black_box(&req.username),
                black_box(password(&req)),
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = register_request
}
criterion_main!(benches);
