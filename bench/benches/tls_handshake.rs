//! The CPU cost of one TLS handshake with rustls 0.23, for choosing the key
//! exchange, the cipher suite and the resumption scheme of the device
//! listeners. Post-quantum hybrids cost more per handshake, and resumption
//! saves the certificate signature; this bench puts numbers on both.
//!
//! Every handshake runs in memory: a `ClientConnection` and a
//! `ServerConnection` pass their flights through a `Vec<u8>` with
//! `write_tls`, `read_tls` and `process_new_packets`, with no sockets. The
//! server holds an ECDSA P-256 certificate generated with `rcgen`, as the
//! gateway's does. The client accepts any certificate chain but still
//! verifies the server's handshake signature, so its side costs what a
//! device's does. Each case offers exactly one cipher suite and one key
//! exchange group on both sides, so there is never a HelloRetryRequest.
//! Each handshake asserts its kind (full or resumed), so a resumption case
//! that stopped resuming fails instead of timing full handshakes.
//!
//! Cases (TLS 1.3 cases use `TLS13_AES_128_GCM_SHA256`):
//! - `tls13_full_x25519_ring`: the baseline. A full handshake with X25519 on
//!   the ring provider.
//! - `tls13_full_secp256r1_ring`: the same, with ECDHE on P-256.
//! - `tls13_full_x25519_awslc`: the baseline on the aws-lc-rs provider (key
//!   exchange, signing, hashing and record protection all from aws-lc), so
//!   the next case can be compared on the same provider.
//! - `tls13_full_x25519mlkem768_awslc`: the X25519MLKEM768 post-quantum hybrid
//!   (aws-lc-rs only; ring has no ML-KEM).
//! - `tls12_full_x25519_ecdhe_ecdsa_aes128gcm_ring`: TLS 1.2 with
//!   `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` over X25519, for devices that
//!   cannot speak TLS 1.3.
//! - `tls13_resumed_ticket_x25519_ring`: a resumption with a stateless
//!   ticket (`ring::Ticketer`, the session sealed into the ticket with
//!   ChaCha20-Poly1305). The server keeps nothing.
//! - `tls13_resumed_stateful_x25519_ring`: a resumption from the server's
//!   `ServerSessionMemoryCache`. The ticket is only a key into that cache.
//!
//! A TLS 1.3 resumption still does an X25519 exchange (rustls offers only
//! `psk_dhe_ke`), but it skips the certificate, the server's ECDSA signature
//! and the client's verification of it. The rustls client spends each TLS
//! 1.3 ticket once. The resuming servers therefore send one new ticket per
//! handshake (`send_tls13_tickets = 1`, against rustls's default of 2), and
//! that ticket is part of what is timed: the client always holds a fresh
//! one, as a device that reconnects one connection at a time would. The full
//! cases issue no tickets and keep no sessions.
//!
//! Each case is timed twice:
//! - `<case>/total`: both sides, from creating the two connections to
//!   dropping them.
//! - `<case>/server`: only the server's calls. This is the number that
//!   limits how many handshakes a gateway worker can absorb. It covers
//!   `ServerConnection::new`, every `read_tls`, `process_new_packets` and
//!   `write_tls` on the server, and the drop. These are timed with
//!   `iter_custom`, and the client's work in between is not timed. Each
//!   handshake reads the clock about ten times, which adds roughly 0.2 µs.
//!
//! Both are wall-clock times of one thread doing CPU-bound work, so they are
//! CPU time only while nothing else wants the core. On a shared machine,
//! run the bench more than once before trusting a difference between cases.
//!
//! Before measuring, each case prints what it negotiated and how many bytes
//! each direction carried. The X25519MLKEM768 key shares add 1,184 bytes
//! to the ClientHello and 1,088 bytes to the ServerHello.
//!
//! ```text
//! cargo bench -p fleetgate-bench --bench tls_handshake
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{
    aws_lc_rs, ring, CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, DigitallySignedStruct, HandshakeKind,
    ServerConfig, ServerConnection, SideData, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};

/// The name the client connects to, and the certificate's only SAN. The
/// client's session cache is keyed by it.
const SERVER_NAME: &str = "gateway.fleetgate.test";
/// Sessions the stateful server cache holds. A resumption takes its session
/// out and the new ticket puts one back, so the bench keeps it nearly empty.
/// The size only has to be large enough not to evict.
const SERVER_SESSIONS: usize = 1024;
/// Servers (not tickets) the client's session cache remembers. Each server
/// keeps up to 8 TLS 1.3 tickets, and the bench has one server per case.
const CLIENT_SERVERS: usize = 16;

/// How a case's server issues and accepts resumption tickets.
#[derive(Clone, Copy, PartialEq)]
enum Resume {
    /// Full handshakes only: the server issues no tickets and stores no
    /// sessions, and the client offers none.
    Never,
    /// Stateless TLS 1.3 tickets from `ring::Ticketer`.
    StatelessTicket,
    /// Sessions kept in the server's `ServerSessionMemoryCache`.
    StatefulCache,
}

/// One handshake to measure.
struct Case {
    /// The bench id, as listed in the crate docs.
    name: &'static str,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// What every timed handshake must be. A resumption case primes the
    /// client with one full handshake first.
    expected: HandshakeKind,
}

/// The server's certificate and key, generated once per run.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A self-signed ECDSA P-256 certificate for [`SERVER_NAME`], generated
/// with `rcgen`.
fn server_identity() -> Identity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("rcgen generates a P-256 key");
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .expect("a valid DNS name")
        .self_signed(&key)
        .expect("rcgen self-signs");
    Identity {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// `base` cut down to one cipher suite and one key exchange group.
fn only(
    base: CryptoProvider,
    suite: SupportedCipherSuite,
    group: &'static dyn SupportedKxGroup,
) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: vec![group],
        ..base
    })
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    version: &'static SupportedProtocolVersion,
    identity: &Identity,
    resume: Resume,
) -> Arc<ServerConfig> {
    // `ServerConfig::builder()` would panic: the workspace enables both the
    // ring and the aws-lc-rs providers, so rustls has no process default.
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[version])
        .expect("the provider supports the version")
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .expect("the provider loads an ECDSA P-256 key");
    match resume {
        Resume::Never => {
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(NoServerSessionStorage {});
        }
        Resume::StatelessTicket => {
            config.ticketer = ring::Ticketer::new().expect("ring makes ticket keys");
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 1;
        }
        Resume::StatefulCache => {
            config.session_storage = ServerSessionMemoryCache::new(SERVER_SESSIONS);
            config.send_tls13_tickets = 1;
        }
    }
    Arc::new(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    version: &'static SupportedProtocolVersion,
    resume: Resume,
) -> Arc<ClientConfig> {
    let verifier = Arc::new(AcceptAnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[version])
        .expect("the provider supports the version")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = match resume {
        Resume::Never => Resumption::disabled(),
        Resume::StatelessTicket | Resume::StatefulCache => {
            Resumption::in_memory_sessions(CLIENT_SERVERS)
        }
    };
    Arc::new(config)
}

fn case(
    name: &'static str,
    provider: Arc<CryptoProvider>,
    version: &'static SupportedProtocolVersion,
    identity: &Identity,
    resume: Resume,
) -> Case {
    Case {
        name,
        client: client_config(&provider, version, resume),
        server: server_config(&provider, version, identity, resume),
        expected: if resume == Resume::Never {
            HandshakeKind::Full
        } else {
            HandshakeKind::Resumed
        },
    }
}

fn cases(identity: &Identity) -> Vec<Case> {
    let ring_tls13 = |group| {
        only(
            ring::default_provider(),
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            group,
        )
    };
    let aws_lc_tls13 = |group| {
        only(
            aws_lc_rs::default_provider(),
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            group,
        )
    };
    let ring_tls12 = only(
        ring::default_provider(),
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ring::kx_group::X25519,
    );
    vec![
        case(
            "tls13_full_x25519_ring",
            ring_tls13(ring::kx_group::X25519),
            &TLS13,
            identity,
            Resume::Never,
        ),
        case(
            "tls13_full_secp256r1_ring",
            ring_tls13(ring::kx_group::SECP256R1),
            &TLS13,
            identity,
            Resume::Never,
        ),
        case(
            "tls13_full_x25519_awslc",
            aws_lc_tls13(aws_lc_rs::kx_group::X25519),
            &TLS13,
            identity,
            Resume::Never,
        ),
        case(
            "tls13_full_x25519mlkem768_awslc",
            aws_lc_tls13(aws_lc_rs::kx_group::X25519MLKEM768),
            &TLS13,
            identity,
            Resume::Never,
        ),
        case(
            "tls12_full_x25519_ecdhe_ecdsa_aes128gcm_ring",
            ring_tls12,
            &TLS12,
            identity,
            Resume::Never,
        ),
        case(
            "tls13_resumed_ticket_x25519_ring",
            ring_tls13(ring::kx_group::X25519),
            &TLS13,
            identity,
            Resume::StatelessTicket,
        ),
        case(
            "tls13_resumed_stateful_x25519_ring",
            ring_tls13(ring::kx_group::X25519),
            &TLS13,
            identity,
            Resume::StatefulCache,
        ),
    ]
}

/// Where the server's share of a handshake is timed.
trait ServerClock {
    /// Runs one server-side step.
    fn server<R>(&mut self, step: impl FnOnce() -> R) -> R;
}

/// Times nothing: the total is timed around the whole handshake.
struct Untimed;

impl ServerClock for Untimed {
    #[inline(always)]
    fn server<R>(&mut self, step: impl FnOnce() -> R) -> R {
        step()
    }
}

/// Adds up the time spent in server-side steps.
struct ServerTime(Duration);

impl ServerClock for ServerTime {
    #[inline(always)]
    fn server<R>(&mut self, step: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let out = step();
        self.0 += started.elapsed();
        out
    }
}

/// What one handshake negotiated and sent, for the set-up printout.
struct Handshake {
    kind: Option<HandshakeKind>,
    suite: Option<SupportedCipherSuite>,
    group: Option<&'static dyn SupportedKxGroup>,
    client_to_server: usize,
    server_to_client: usize,
    flights: usize,
}

/// Feeds `tls` to `conn` and processes it. `read_tls` takes at most one
/// buffer's worth per call, so a large flight needs several reads.
fn deliver<Data: SideData>(mut tls: &[u8], conn: &mut ConnectionCommon<Data>) {
    while !tls.is_empty() {
        conn.read_tls(&mut tls)
            .expect("reading from a slice cannot fail");
        conn.process_new_packets()
            .expect("the peer's flight is valid");
    }
}

/// Moves `conn`'s pending output into `wire`.
fn collect<Data>(conn: &mut ConnectionCommon<Data>, wire: &mut Vec<u8>) {
    while conn.wants_write() {
        conn.write_tls(wire).expect("writing to a Vec cannot fail");
    }
}

/// One complete handshake, flights passed through `wire` until neither side
/// has anything left to send (for a resumption case, that includes the
/// server's new ticket). Panics unless it is the kind `case` expects.
fn handshake(case: &Case, clock: &mut impl ServerClock, wire: &mut Vec<u8>) -> Handshake {
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    let mut client =
        ClientConnection::new(Arc::clone(&case.client), name).expect("the client starts");
    let mut server = clock
        .server(|| ServerConnection::new(Arc::clone(&case.server)))
        .expect("the server starts");
    let (mut client_to_server, mut server_to_client, mut flights) = (0, 0, 0);
    loop {
        wire.clear();
        collect(&mut client, wire);
        let sent_by_client = wire.len();
        if sent_by_client > 0 {
            clock.server(|| deliver(wire, &mut server));
        }

        wire.clear();
        clock.server(|| collect(&mut server, wire));
        let sent_by_server = wire.len();
        if sent_by_server > 0 {
            deliver(wire, &mut client);
        }

        if sent_by_client == 0 && sent_by_server == 0 {
            break;
        }
        client_to_server += sent_by_client;
        server_to_client += sent_by_server;
        flights += usize::from(sent_by_client > 0) + usize::from(sent_by_server > 0);
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(
        client.handshake_kind(),
        Some(case.expected),
        "{}",
        case.name
    );
    let done = Handshake {
        kind: server.handshake_kind(),
        suite: server.negotiated_cipher_suite(),
        group: server.negotiated_key_exchange_group(),
        client_to_server,
        server_to_client,
        flights,
    };
    clock.server(move || drop(server));
    done
}

/// Primes a resumption case with one full handshake (which leaves a ticket
/// in the client's cache), checks that the next one resumes, and prints
/// what a timed handshake negotiates.
fn prepare(case: &Case, wire: &mut Vec<u8>) {
    if case.expected == HandshakeKind::Resumed {
        let priming = Case {
            name: case.name,
            client: Arc::clone(&case.client),
            server: Arc::clone(&case.server),
            expected: HandshakeKind::Full,
        };
        handshake(&priming, &mut Untimed, wire);
    }
    let done = handshake(case, &mut Untimed, wire);
    assert_eq!(done.kind, Some(case.expected), "{}: server side", case.name);
    println!(
        "{}: {:?}, {:?}, {:?}; {} flights, {} bytes client to server, {} bytes server to client",
        case.name,
        done.kind.expect("the handshake finished"),
        done.suite.expect("a suite was negotiated").suite(),
        done.group.expect("a group was negotiated").name(),
        done.flights,
        done.client_to_server,
        done.server_to_client,
    );
}

fn tls_handshake(c: &mut Criterion) {
    let identity = server_identity();
    let cases = cases(&identity);
    let mut wire = Vec::with_capacity(16 * 1024);

    let mut group = c.benchmark_group("tls_handshake");
    group.throughput(Throughput::Elements(1));
    for case in &cases {
        prepare(case, &mut wire);
        group.bench_function(BenchmarkId::new(case.name, "total"), |b| {
            b.iter(|| handshake(case, &mut Untimed, &mut wire))
        });
        group.bench_function(BenchmarkId::new(case.name, "server"), |b| {
            b.iter_custom(|iters| {
                let mut clock = ServerTime(Duration::ZERO);
                for _ in 0..iters {
                    handshake(case, &mut clock, &mut wire);
                }
                clock.0
            })
        });
    }
    group.finish();
}

/// Trusts every certificate chain, since the server's is self-signed. The
/// handshake signatures are still verified with the provider's algorithms,
/// as a device verifies them. `loadtest/src/device.rs` does the same.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

criterion_group! {
    name = benches;
    config = fleetgate_bench::criterion_config();
    targets = tls_handshake
}
criterion_main!(benches);
