//! `tls-storm`: new-connection polls over TLS, the way curl polls. Every
//! operation opens a fresh TCP connection, does a TLS handshake, sends one
//! `POST <path>` with `Connection: close` and a JSON credentials body, reads
//! the answer until the server closes, and records the status and the
//! latency. It reports the rate, the count per status, the handshakes by
//! kind as the client saw them (full, full with a HelloRetryRequest,
//! resumed), errors by kind, and an HDR histogram of the whole operation's
//! latency.
//!
//! ```text
//! fleetgate-loadtest tls-storm --url https://127.0.0.1:8443 --resume off --duration 10s
//! fleetgate-loadtest tls-storm --url https://127.0.0.1:8443 --resume on --json on.json
//! ```
//!
//! `bench/compare/tls-vs-nginx.sh` drives the gateway and an nginx baseline
//! with it, in one run, and reads `--json`.
//!
//! The client is lean on purpose, so that the server is what runs out of
//! CPU: one thread (on a 2-core machine the server under test keeps the
//! other core), no HTTP library, one rustls configuration shared by every
//! connection, the address resolved once. Goose's `tls-reconnect` scenario
//! answers a different question (devices at their `Retry-After` pace).
//!
//! - `--resume off`: the configuration keeps no session, so every
//!   handshake is full: key exchange plus the server's certificate
//!   signature.
//! - `--resume on`: one in-memory session cache
//!   ([`crate::tls_client::SessionPool`]), shared by every connection
//!   through the shared configuration. The first `--concurrency`
//!   connections are full; the TLS 1.3 tickets they receive let later ones
//!   resume (a ticket is used once, and servers send new ones on every
//!   connection). Connections that find no ticket are full, and are
//!   counted as such.
//!
//! The certificate is not checked (like `curl --insecure`), unless
//! `--cafile` names the CA to check it against; `--skip-signature-check`
//! lightens the client (see [`crate::tls_client`]).
//!
//! Latency runs from the start of the TCP connect to the server's close.
//! Only operations that got a whole HTTP answer are in the histogram; the
//! others are counted as `error:<why>`. An answer followed by a close
//! without TLS `close_notify` is still an answer (curl accepts it too); such
//! closes are counted apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::{Resume, TlsStormArgs};
use crate::device;
use crate::summary::{self, Distribution};
use crate::tls_client::{self, TlsOptions};
use crate::{Error, Verdict};

/// The largest answer read; a bigger one is an error. The gateway's answers
/// are a few hundred bytes.
pub const MAX_ANSWER: usize = 64 * 1024;

/// One storm's settings.
#[derive(Clone)]
pub struct Storm {
    /// Resolved once, before the storm.
    pub addr: SocketAddr,
    /// The name the handshake is for (SNI when it is a DNS name, and the
    /// name a `--cafile` check expects).
    pub server_name: ServerName<'static>,
    /// The `Host` header: the URL's authority.
    pub host: String,
    pub path: String,
    /// Usernames are `<prefix>-<n mod devices>`.
    pub prefix: String,
    pub devices: u64,
    pub password: String,
    /// Shared by every connection: with resumption on, so is its session
    /// cache.
    pub tls: Arc<rustls::ClientConfig>,
    /// Operations in flight at once.
    pub concurrency: u64,
    pub duration: Duration,
    /// Longest one operation may take.
    pub timeout: Duration,
    /// Print a line a second on stderr.
    pub progress: bool,
}

impl std::fmt::Debug for Storm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storm")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("concurrency", &self.concurrency)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl Storm {
    /// The whole request of operation `n`: head and body, one write.
    pub fn request(&self, n: u64) -> Vec<u8> {
        let username = format!("{}-{}", self.prefix, n % self.devices);
        let body = device::credentials_body(&username, &self.password);
        let mut r = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fleetgate-loadtest/{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            env!("CARGO_PKG_VERSION"),
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body.as_bytes());
        r
    }
}

/// What a storm saw.
#[derive(Debug)]
pub struct StormResult {
    /// Operations attempted (answered or not).
    pub operations: u64,
    pub elapsed: Duration,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Completed handshakes by kind: `full`, `full-hrr`, `resumed`.
    pub handshakes: BTreeMap<String, u64>,
    /// Operations without an answer, by `error:<why>`.
    pub errors: BTreeMap<String, u64>,
    /// Answers after which the server closed without `close_notify`.
    pub closes_without_notify: u64,
    /// Whole-operation latency of answered operations, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl StormResult {
    /// Operations that got an HTTP answer.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// The name a handshake kind is counted under.
pub fn handshake_name(kind: Option<HandshakeKind>) -> &'static str {
    match kind {
        Some(HandshakeKind::Full) => "full",
        Some(HandshakeKind::FullWithHelloRetryRequest) => "full-hrr",
        Some(HandshakeKind::Resumed) => "resumed",
        None => "unknown",
    }
}

/// Why an operation got no answer.
#[derive(Debug)]
enum OperationError {
    Connect(std::io::Error),
    Handshake(std::io::Error),
    Write(std::io::Error),
    Read(std::io::Error),
    /// The connection ended before the whole answer.
    Truncated,
    /// Not an HTTP/1.x answer.
    NotHttp,
    /// More than [`MAX_ANSWER`] bytes.
    TooLarge,
    Timeout,
}

impl OperationError {
    /// `error:<step>:<why>`, few distinct keys: I/O errors by kind, TLS
    /// errors by rustls's variant.
    fn key(&self) -> String {
        fn io(step: &str, e: &std::io::Error) -> String {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => format!("error:{step}:tls:{tls:?}"),
                None => format!("error:{step}:{:?}", e.kind()),
            }
        }
        match self {
            OperationError::Connect(e) => io("connect", e),
            OperationError::Handshake(e) => io("handshake", e),
            OperationError::Write(e) => io("write", e),
            OperationError::Read(e) => io("read", e),
            OperationError::Truncated => "error:truncated".to_owned(),
            OperationError::NotHttp => "error:not-http".to_owned(),
            OperationError::TooLarge => "error:too-large".to_owned(),
            OperationError::Timeout => "error:timeout".to_owned(),
        }
    }
}

/// How far an answer has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The head and, when it has a `Content-Length`, that many body bytes.
    Complete(u16),
    Incomplete,
    Invalid,
}

/// Checks the bytes of an answer read so far. Pure: no I/O.
pub fn check_answer(buf: &[u8]) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Answer::Incomplete,
        Err(_) => return Answer::Invalid,
    };
    let Some(status) = response.code else {
        return Answer::Invalid;
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    match length {
        Some(None) => Answer::Invalid,
        Some(Some(len)) if buf.len() < head_len + len => Answer::Incomplete,
        // Without a length the body runs to the close, which has come.
        _ => Answer::Complete(status),
    }
}

/// One operation on a fresh connection. Records the handshake kind as soon
/// as the handshake is done, so failures after it still count it. Returns
/// the status and whether the server closed with `close_notify`.
async fn operation(
    storm: &Storm,
    connector: &TlsConnector,
    request: &[u8],
    handshakes: &mut BTreeMap<String, u64>,
) -> Result<(u16, bool), OperationError> {
    let tcp = TcpStream::connect(storm.addr)
        .await
        .map_err(OperationError::Connect)?;
    tcp.set_nodelay(true).map_err(OperationError::Connect)?;
    let mut tls = connector
        .connect(storm.server_name.clone(), tcp)
        .await
        .map_err(OperationError::Handshake)?;
    let kind = handshake_name(tls.get_ref().1.handshake_kind());
    *handshakes.entry(kind.to_owned()).or_default() += 1;
    tls.write_all(request)
        .await
        .map_err(OperationError::Write)?;
    tls.flush().await.map_err(OperationError::Write)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let clean = loop {
        match tls.read(&mut chunk).await {
            Ok(0) => break true,
            Ok(n) if buf.len() + n > MAX_ANSWER => return Err(OperationError::TooLarge),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // rustls reports a TCP close without close_notify this way.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break false,
            Err(e) => return Err(OperationError::Read(e)),
        }
    };
    match check_answer(&buf) {
        Answer::Complete(status) => Ok((status, clean)),
        Answer::Incomplete => Err(OperationError::Truncated),
        Answer::Invalid => Err(OperationError::NotHttp),
    }
}

/// What one task counted.
struct Tally {
    statuses: BTreeMap<u16, u64>,
    handshakes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    closes_without_notify: u64,
    latency_us: Histogram<u64>,
}

/// Runs the storm on the current tokio runtime.
pub async fn storm(cfg: Storm) -> StormResult {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let cfg = Arc::new(cfg);
    let connector = TlsConnector::from(cfg.tls.clone());
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = cfg
        .progress
        .then(|| crate::summary::spawn_progress(done.clone(), start, "operations"));
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let (cfg, connector, next, done) =
            (cfg.clone(), connector.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally {
                statuses: BTreeMap::new(),
                handshakes: BTreeMap::new(),
                errors: BTreeMap::new(),
                closes_without_notify: 0,
                latency_us: summary::new_histogram(),
            };
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let request = cfg.request(n);
                let began = Instant::now();
                let outcome = tokio::time::timeout(
                    cfg.timeout,
                    operation(&cfg, &connector, &request, &mut t.handshakes),
                )
                .await
                .unwrap_or(Err(OperationError::Timeout));
                match outcome {
                    Ok((status, clean)) => {
                        summary::record_us(&mut t.latency_us, began.elapsed());
                        *t.statuses.entry(status).or_default() += 1;
                        t.closes_without_notify += u64::from(!clean);
                    }
                    Err(e) => *t.errors.entry(e.key()).or_default() += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        }));
    }
    let mut result = StormResult {
        operations: 0,
        elapsed: Duration::ZERO,
        statuses: BTreeMap::new(),
        handshakes: BTreeMap::new(),
        errors: BTreeMap::new(),
        closes_without_notify: 0,
        latency_us: summary::new_histogram(),
    };
    for task in tasks {
        let t = task.await.expect("a storm task panicked");
        for (k, v) in t.statuses {
            *result.statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.handshakes {
            *result.handshakes.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *result.errors.entry(k).or_default() += v;
        }
        result.closes_without_notify += t.closes_without_notify;
        result
            .latency_us
            .add(&t.latency_us)
            .expect("histograms share their bounds");
    }
    result.elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    result.operations = result.answered() + result.errors.values().sum::<u64>();
    result
}

/// The JSON form of a storm (`--json FILE`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsSummary {
    pub scenario: String,
    /// The URL the storm went to, and the address it resolved to.
    pub target: String,
    pub addr: String,
    pub path: String,
    pub concurrency: u64,
    pub devices: u64,
    /// `on` or `off`.
    pub resume: String,
    /// The server's handshake signatures were verified (no
    /// `--skip-signature-check`).
    pub signatures_checked: bool,
    /// Operations attempted.
    pub operations: u64,
    /// Operations that got an HTTP answer.
    pub answered: u64,
    pub elapsed_secs: f64,
    /// Answered operations per second.
    pub per_second: f64,
    /// `"202"` → n.
    pub statuses: BTreeMap<String, u64>,
    /// `"full"`, `"full-hrr"`, `"resumed"` → n (always all three keys).
    pub handshakes: BTreeMap<String, u64>,
    /// `"error:<step>:<why>"` → n.
    pub errors: BTreeMap<String, u64>,
    pub closes_without_notify: u64,
    /// Whole-operation latency of answered operations.
    pub latency_us: Distribution,
    /// CPU this process used during the run (Linux; user + system).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_cpu_secs: Option<f64>,
    /// The allowed statuses (`--expect`); empty: everything allowed.
    pub expected: Vec<u16>,
    /// Answers outside `expected`, plus errors, when it is set.
    pub unexpected: u64,
}

/// The handshake counts with every kind present, zeros included, so a
/// reader can tell "none resumed" from "not reported".
fn handshake_counts(r: &StormResult) -> BTreeMap<String, u64> {
    let mut h: BTreeMap<String, u64> = ["full", "full-hrr", "resumed"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    for (k, v) in &r.handshakes {
        *h.entry(k.clone()).or_default() += v;
    }
    h
}

/// The lines people read; the first one keeps a fixed shape.
pub fn report_lines(r: &StormResult, client_cpu: Option<Duration>) -> Vec<String> {
    let secs = r.elapsed.as_secs_f64();
    let d = Distribution::of(&r.latency_us);
    let h = handshake_counts(r);
    let mut lines = vec![
        format!(
            "tls-storm: {} answered of {} in {secs:.1}s = {:.0}/s; handshakes full {}, resumed {}, full-hrr {}",
            r.answered(),
            r.operations,
            r.answered() as f64 / secs.max(1e-9),
            h["full"],
            h["resumed"],
            h["full-hrr"],
        ),
        format!("statuses: {:?}", r.statuses),
        format!("errors: {:?}", r.errors),
        format!("latency: {}", d.line("µs")),
    ];
    if r.closes_without_notify > 0 {
        lines.push(format!(
            "closes without close_notify: {}",
            r.closes_without_notify
        ));
    }
    if let Some(cpu) = client_cpu {
        let busy = cpu.as_secs_f64() / secs.max(1e-9);
        lines.push(format!(
            "client CPU: {:.2}s of {secs:.1}s ({:.0}% of one core){}",
            cpu.as_secs_f64(),
            busy * 100.0,
            if busy > 0.9 {
                ": the client may be what limits the rate"
            } else {
                ""
            }
        ));
    }
    lines
}

/// Answers outside `expected`, plus every error, when `expected` is set.
pub fn unexpected(r: &StormResult, expected: &[u16]) -> u64 {
    if expected.is_empty() {
        return 0;
    }
    let bad_statuses: u64 = r
        .statuses
        .iter()
        .filter(|(s, _)| !expected.contains(s))
        .map(|(_, n)| n)
        .sum();
    bad_statuses + r.errors.values().sum::<u64>()
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat`; `None` off Linux. The fields are in clock ticks of
/// `USER_HZ`, which Linux fixes at 100 for user space on every mainstream
/// architecture (reading `sysconf` would need `unsafe` libc).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `tls-storm`: resolves the URL, runs the storm on a single-threaded
/// runtime, prints and (optionally) writes the result.
pub fn run(args: &TlsStormArgs) -> Result<Verdict, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let url = &args.url;
    let host_str = url
        .host_str()
        .ok_or_else(|| Error::Setup(format!("{url} has no host")))?;
    // IPv6 hosts come bracketed (`[::1]`), as the Host header wants them.
    let bare = host_str.trim_start_matches('[').trim_end_matches(']');
    let server_name = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        Err(_) => ServerName::try_from(bare.to_owned())
            .map_err(|e| Error::Setup(format!("{bare:?} as a TLS server name: {e}")))?,
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Error::Setup(format!("{url} has no port")))?;
    let host = match url.port() {
        Some(p) => format!("{host_str}:{p}"),
        None => host_str.to_owned(),
    };
    let addr = rt
        .block_on(tokio::net::lookup_host((bare, port)))
        .map_err(|e| Error::Setup(format!("resolving {url}: {e}")))?
        .next()
        .ok_or_else(|| Error::Setup(format!("{url} resolves to no address")))?;
    let tls = Arc::new(tls_client::config(TlsOptions {
        resume: args.resume,
        cafile: args.cafile.as_deref(),
        check_signatures: !args.skip_signature_check,
        concurrency: args.concurrency,
    })?);
    let resume = match args.resume {
        Resume::On => "on",
        Resume::Off => "off",
    };
    let cpu_before = process_cpu();
    let result = rt.block_on(storm(Storm {
        addr,
        server_name,
        host,
        path: args.path.clone(),
        prefix: args.prefix.clone(),
        devices: args.devices,
        password: args.password.clone(),
        tls,
        concurrency: args.concurrency,
        duration: args.duration,
        timeout: args.timeout,
        progress: !args.quiet,
    }));
    let client_cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    for line in report_lines(&result, client_cpu) {
        println!("{line}");
    }
    let unexpected = unexpected(&result, &args.expect);
    if !args.expect.is_empty() {
        println!("unexpected: {unexpected}");
    }
    if let Some(path) = &args.json {
        let secs = result.elapsed.as_secs_f64();
        let s = TlsSummary {
            scenario: "tls-storm".to_owned(),
            target: url.to_string(),
            addr: addr.to_string(),
            path: args.path.clone(),
            concurrency: args.concurrency,
            devices: args.devices,
            resume: resume.to_owned(),
            signatures_checked: !args.skip_signature_check,
            operations: result.operations,
            answered: result.answered(),
            elapsed_secs: (secs * 1000.0).round() / 1000.0,
            per_second: (result.answered() as f64 / secs.max(1e-9) * 10.0).round() / 10.0,
            statuses: summary::string_keys(&result.statuses),
            handshakes: handshake_counts(&result),
            errors: result.errors.clone(),
            closes_without_notify: result.closes_without_notify,
            latency_us: Distribution::of(&result.latency_us),
            client_cpu_secs: client_cpu.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0),
            expected: args.expect.clone(),
            unexpected,
        };
        summary::write_json(path, &s).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(if unexpected == 0 {
        Verdict::Clean
    } else {
        Verdict::Unexpected
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 202 as the gateway sends it, plus `extra` bytes after the body.
    const PENDING: &[u8] = b"HTTP/1.1 202 Accepted\r\n\
        Content-Type: application/json\r\n\
        Retry-After: 5\r\n\
        Content-Length: 41\r\n\
        Connection: close\r\n\
        \r\n\
        {\"status\":\"pending\",\"pairingId\":\"000000\"}";

    #[test]
    fn an_answer_is_complete_only_with_its_whole_body() {
        assert_eq!(check_answer(PENDING), Answer::Complete(202));
        // Bytes past the body do not change the answer.
        assert_eq!(
            check_answer(&[PENDING, b"HTTP/1.1 500 x\r\n\r\n"].concat()),
            Answer::Complete(202)
        );
        // Every proper prefix is incomplete: the head, then the body.
        for end in 0..PENDING.len() {
            assert_eq!(
                check_answer(&PENDING[..end]),
                Answer::Incomplete,
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn an_answer_without_a_length_runs_to_the_close() {
        assert_eq!(
            check_answer(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy"),
            Answer::Complete(503)
        );
    }

    #[test]
    fn garbage_and_bad_lengths_are_invalid() {
        assert_eq!(check_answer(b"SSH-2.0-OpenSSH\r\n\r\n"), Answer::Invalid);
        assert_eq!(
            check_answer(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n"),
            Answer::Invalid
        );
    }

    fn storm_for_requests(devices: u64) -> Storm {
        Storm {
            addr: "127.0.0.1:8443".parse().unwrap(),
            server_name: ServerName::try_from("localhost").unwrap(),
            host: "localhost:8443".into(),
            path: "/api/client-registry/register".into(),
            prefix: "bench-device".into(),
            devices,
            password: "s3cret-pass".into(),
            tls: Arc::new(
                tls_client::config(TlsOptions {
                    resume: Resume::Off,
                    cafile: None,
                    check_signatures: true,
                    concurrency: 1,
                })
                .unwrap(),
            ),
            concurrency: 1,
            duration: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            progress: false,
        }
    }

    #[test]
    fn the_request_is_one_post_with_connection_close_and_cycling_usernames() {
        let s = storm_for_requests(3);
        let r = String::from_utf8(s.request(4)).unwrap();
        let body = r#"{"password":"s3cret-pass","username":"bench-device-1"}"#;
        assert_eq!(
            r,
            format!(
                "POST /api/client-registry/register HTTP/1.1\r\nHost: localhost:8443\r\n\
                 User-Agent: fleetgate-loadtest/{}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
        );
        let one = storm_for_requests(1);
        assert_eq!(one.request(0), one.request(7), "one device: the same poll");
    }

    #[test]
    fn unexpected_counts_statuses_outside_the_set_and_every_error() {
        let r = StormResult {
            operations: 13,
            elapsed: Duration::from_secs(1),
            statuses: BTreeMap::from([(202, 10), (429, 2)]),
            handshakes: BTreeMap::from([("full".to_owned(), 13)]),
            errors: BTreeMap::from([("error:timeout".to_owned(), 1)]),
            closes_without_notify: 0,
            latency_us: summary::new_histogram(),
        };
        assert_eq!(unexpected(&r, &[202]), 3);
        assert_eq!(unexpected(&r, &[202, 429]), 1);
        assert_eq!(unexpected(&r, &[]), 0, "no --expect: everything allowed");
        let lines = report_lines(&r, None);
        assert_eq!(
            lines[0],
            "tls-storm: 12 answered of 13 in 1.0s = 12/s; handshakes full 13, resumed 0, full-hrr 0"
        );
    }

    #[test]
    fn process_cpu_reads_proc_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu().is_some());
        }
    }
}
