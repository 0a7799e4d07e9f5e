//! Measures what the hot-path and grant-path primitives cost on this
//! machine: fingerprint, seal, and one argon2id verification per scheme.
//! The numbers in `docs/SECURITY.md` and `docs/BENCHMARKS.md` come from it:
//!
//! ```text
//! cargo run --release -p fleetgate-registry --example hash_cost
//! ```

use std::time::Instant;

use fleetgate_registry::fingerprint::{seal, CredentialKind, Fingerprint};
use fleetgate_registry::password::{PasswordHashing, Scheme};
use fleetgate_registry::secrets::Secrets;

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let secrets = Secrets::random();
    let fp = per_op(200_000, || {
        std::hint::black_box(Fingerprint::compute(
            &secrets,
            "sensor-000123",
            CredentialKind::Password,
            b"s3cret-pass",
            &[],
            &[],
        ));
    });
    let f = Fingerprint::compute(
        &secrets,
        "sensor-000123",
        CredentialKind::Password,
        b"s3cret-pass",
        &[],
        &[],
    );
    let sl = per_op(200_000, || {
        std::hint::black_box(seal(&secrets, &f, "sensor-000123", b"s3cret-pass"));
    });
    println!("fingerprint (HMAC-SHA256):      {:>10.2} µs", fp * 1e6);
    println!("seal (XChaCha20-Poly1305):      {:>10.2} µs", sl * 1e6);
    let h = PasswordHashing::new(secrets.password_pepper);
    for (name, scheme, n) in [
        ("device", Scheme::Device, 500),
        ("admin", Scheme::Admin, 20),
    ] {
        let phc = h.hash(b"s3cret-pass", scheme).unwrap();
        let v = per_op(n, || {
            assert!(h.verify(b"s3cret-pass", &phc).unwrap());
        });
        println!(
            "argon2id verify, {name:<6} {:?}: {:>10.3} ms  ({:.0} verifications/s on one core)",
            scheme.params(),
            v * 1e3,
            1.0 / v
        );
    }
}
