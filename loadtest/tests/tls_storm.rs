//! `tls-storm` smoke runs: the real `fleetgate-loadtest` binary storms a
//! real TLS server on loopback for about a second. The server (rustls,
//! a thread per connection) answers every request with a fixed 202 as the
//! gateway answers a pending poll, and counts the handshakes it completed
//! by kind, so the client's counts are checked against the server's: with
//! `--resume off` every handshake is full, with `--resume on` most resume.
//! No gateway is needed, so these runs do not build one.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetgate_loadtest::tls_storm::{handshake_name, TlsSummary};

mod support;

/// The longest one run may take before the test kills it (by PID).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's answer to a poll of a pending request.
const PENDING: &[u8] = b"HTTP/1.1 202 Accepted\r\n\
    Content-Type: application/json\r\n\
    Retry-After: 5\r\n\
    Content-Length: 41\r\n\
    Connection: close\r\n\
    \r\n\
    {\"status\":\"pending\",\"pairingId\":\"000000\"}";

/// What the fixed-answer server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Completed handshakes by kind (`full`, `resumed`, ...).
    handshakes: BTreeMap<&'static str, u64>,
    /// Requests answered.
    answered: u64,
    /// The first request, to check what the tool sends.
    first_request: Option<Vec<u8>>,
}

/// A TLS server on loopback answering every request with [`PENDING`].
struct FixedAnswerServer {
    addr: SocketAddr,
    /// The certificate, PEM, for `--cafile`.
    cert_pem: String,
    seen: Arc<Mutex<Seen>>,
}

impl FixedAnswerServer {
    fn start() -> FixedAnswerServer {
        let (config, cert_pem) = support::self_signed_server(&["localhost", "127.0.0.1"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (config, seen) = (config.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = answer(conn, config, &seen);
                });
            }
        });
        FixedAnswerServer {
            addr,
            cert_pem,
            seen,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// One connection: handshake, one request, the fixed answer, close_notify,
/// close.
fn answer(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(
        rustls::ServerConnection::new(config).map_err(std::io::Error::other)?,
        conn,
    );
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let kind = handshake_name(tls.conn.handshake_kind());
    *seen.lock().unwrap().handshakes.entry(kind).or_default() += 1;
    let request = support::read_request(&mut tls)?;
    // Counted before the answer goes out: once the client has it, the
    // client may exit and the test read these counts.
    {
        let mut seen = seen.lock().unwrap();
        seen.answered += 1;
        seen.first_request.get_or_insert(request);
    }
    tls.write_all(PENDING)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    let _ = tls.sock.shutdown(Shutdown::Write);
    Ok(())
}

/// Runs `fleetgate-loadtest tls-storm` with `args` for about a second and
/// returns its exit code, its output and the summary it wrote.
fn tls_storm(args: &[&str]) -> (Option<i32>, String, TlsSummary) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let out_path = dir.path().join("output.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate-loadtest"))
        .args(["tls-storm", "--duration", "1s", "--concurrency", "4"])
        .args(["--json", json.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start fleetgate-loadtest");
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tls-storm {args:?} still running after {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let summary = read_summary(&json, &output);
    (status.code(), output, summary)
}

fn read_summary(path: &Path, output: &str) -> TlsSummary {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no summary at {} ({e}):\n{output}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every answer was the 202, and the server answered each one.
fn assert_all_202(s: &TlsSummary, server: &FixedAnswerServer, output: &str) {
    assert!(s.operations > 0, "{output}");
    assert_eq!(s.answered, s.operations, "{s:#?}");
    assert_eq!(
        s.statuses,
        BTreeMap::from([("202".to_owned(), s.operations)]),
        "{s:#?}"
    );
    assert!(s.errors.is_empty(), "{s:#?}");
    assert_eq!(s.unexpected, 0, "{s:#?}");
    assert_eq!(s.latency_us.count, s.operations, "{s:#?}");
    assert_eq!(s.closes_without_notify, 0, "{s:#?}");
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.answered, s.operations, "{seen:?}");
    // Every operation was its own TLS connection, and the client and the
    // server agree on how each handshake went.
    let client: u64 = s.handshakes.values().sum();
    assert_eq!(client, s.operations, "{s:#?}");
    for (kind, n) in &seen.handshakes {
        assert_eq!(
            s.handshakes.get(*kind),
            Some(n),
            "{kind}: {seen:?} vs {s:#?}"
        );
    }
}

#[test]
fn resume_off_makes_every_handshake_full() {
    let server = FixedAnswerServer::start();
    let (code, output, s) =
        tls_storm(&["--url", &server.url(), "--resume", "off", "--expect", "202"]);
    assert_eq!(code, Some(0), "{output}");
    assert_all_202(&s, &server, &output);
    assert_eq!(s.resume, "off");
    assert!(s.signatures_checked);
    assert_eq!(s.handshakes["full"], s.operations, "{s:#?}");
    assert_eq!(s.handshakes["resumed"], 0, "{s:#?}");
    assert!(output.contains("tls-storm: "), "{output}");

    // What went over the wire: one POST to the register route, closing.
    let request = server.seen.lock().unwrap().first_request.clone().unwrap();
    let request = String::from_utf8(request).unwrap();
    assert!(
        request.starts_with("POST /api/client-registry/register HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    assert!(
        request.ends_with(r#"{"password":"s3cret-pass","username":"bench-device-0"}"#),
        "{request}"
    );
}

#[test]
fn resume_on_resumes_from_the_shared_session_cache() {
    let server = FixedAnswerServer::start();
    let (code, output, s) = tls_storm(&[
        "--url",
        &server.url(),
        "--resume",
        "on",
        "--skip-signature-check",
    ]);
    assert_eq!(code, Some(0), "{output}");
    assert_all_202(&s, &server, &output);
    assert_eq!(s.resume, "on");
    assert!(!s.signatures_checked);
    assert!(s.handshakes["resumed"] > 0, "{s:#?}");
    // The first connection of each of the 4 tasks finds no ticket; every
    // later one finds the tickets an earlier connection brought back.
    assert_eq!(s.handshakes["full"], 4, "{s:#?}");
}

#[test]
fn cafile_checks_the_certificate() {
    let server = FixedAnswerServer::start();
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right.pem");
    std::fs::write(&right, &server.cert_pem).unwrap();
    let (code, output, s) =
        tls_storm(&["--url", &server.url(), "--cafile", right.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{output}");
    assert_all_202(&s, &server, &output);

    // Another certificate: every handshake is refused, and with --expect
    // the run fails.
    let (_, other_pem) = support::self_signed_server(&["127.0.0.1"]);
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other_pem).unwrap();
    let (code, output, s) = tls_storm(&[
        "--url",
        &server.url(),
        "--cafile",
        wrong.to_str().unwrap(),
        "--expect",
        "202",
    ]);
    assert_eq!(code, Some(1), "{output}");
    assert_eq!(s.answered, 0, "{s:#?}");
    assert!(s.operations > 0, "{s:#?}");
    assert_eq!(s.unexpected, s.operations, "{s:#?}");
    // Same issuer name (rcgen's default), another key: the chain's
    // signature does not verify.
    assert!(
        s.errors
            .keys()
            .all(|k| k.starts_with("error:handshake:tls:InvalidCertificate(")),
        "{s:#?}"
    );
}
