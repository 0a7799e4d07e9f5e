//! CI smoke runs: every goose scenario and the MQTT storm, for a few
//! seconds each, through the real `fleetgate-loadtest` binary against a
//! real `fleetgate` it starts on loopback. Each test reads back the summary
//! the run wrote and checks that every status it counted is one the
//! contract allows, and that the run did what the scenario is for (devices
//! collected their 201, logins succeeded, every poll was a new TLS
//! connection, every CONNECT was refused with 5).
//!
//! The `fleetgate` binary is built once per test process, with the same
//! selection as `scripts/test.sh` (`cargo build --workspace --bins`), so an
//! up-to-date build is not redone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fleetgate_loadtest::mqtt_storm::MqttSummary;
use fleetgate_loadtest::summary::RunSummary;
use fleetgate_loadtest::target::{Gateway, GatewayOptions};

mod support;

/// The longest one smoke run may take before the test kills it (by PID).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `target/<profile>/`, with the workspace's binaries built.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_fleetgate-loadtest"));
        let dir = exe.parent().expect("binary dir").to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--workspace", "--bins"]);
        // `cargo test` runs this process with the test package's `CARGO_PKG_*`,
        // `CARGO_MANIFEST_DIR` and `OUT_DIR` in its environment. Build
        // scripts (ring's) rerun when those change, and a rerun of ring
        // rebuilds everything above it (about 3 minutes on 2 cores). Without
        // them, the build sees the environment of `scripts/test.sh`'s own
        // `cargo build` and finds it up to date.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            const SET_FOR_TESTS: [&str; 7] = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ];
            if SET_FOR_TESTS.iter().any(|p| key.starts_with(p)) || key == "OUT_DIR" {
                cmd.env_remove(key.as_ref());
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building the fleetgate binaries failed");
        dir
    })
}

fn fleetgate_bin() -> PathBuf {
    bin_dir().join("fleetgate")
}

/// Runs `fleetgate-loadtest` with `args`, waits (at most [`RUN_TIMEOUT`]),
/// and returns its exit code and output.
fn loadtest(args: &[String], dir: &Path) -> (Option<i32>, String) {
    let out_path = dir.join("output.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate-loadtest"))
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
            panic!(
                "fleetgate-loadtest {args:?} still running after {RUN_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
    )
}

/// Runs an HTTP scenario against a gateway the loadtest starts, and
/// returns its summary. `args` come after the scenario name.
fn http_scenario(scenario: &str, args: &[&str]) -> RunSummary {
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("reports");
    let mut all: Vec<String> = vec![
        scenario.into(),
        "--report-dir".into(),
        report_dir.display().to_string(),
        "--gateway-bin".into(),
        fleetgate_bin().display().to_string(),
        "--gateway-arg=--workers=1".into(),
        // A request the gateway never answers fails the run in seconds.
        "--timeout".into(),
        "10s".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (code, output) = loadtest(&all, dir.path());
    assert_eq!(code, Some(0), "{scenario} failed:\n{output}");
    let text = std::fs::read_to_string(report_dir.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}):\n{output}"));
    let summary: RunSummary = serde_json::from_str(&text).unwrap();
    // goose's own reports, next to the summary.
    for report in ["goose-report.html", "goose-report.json"] {
        assert!(report_dir.join(report).exists(), "no {report}:\n{output}");
    }
    assert!(
        output.contains(&format!("{scenario}: ")),
        "no final report:\n{output}"
    );
    summary
}

/// The statuses a summary counted.
fn statuses(s: &RunSummary) -> BTreeSet<u16> {
    s.status_counts().keys().copied().collect()
}

fn assert_only(s: &RunSummary, allowed: &[u16]) {
    let seen = statuses(s);
    assert!(
        seen.iter().all(|st| allowed.contains(st)),
        "{}: statuses {seen:?} outside {allowed:?}: {s:#?}",
        s.scenario
    );
    assert_eq!(s.unexpected, 0, "{s:#?}");
    assert_eq!(s.transport_errors, 0, "{s:#?}");
    assert_eq!(s.expected, allowed);
}

#[test]
fn polling_storm_devices_collect_their_grants() {
    let s = http_scenario(
        "polling-storm",
        &[
            "--devices",
            "20",
            "--ramp-up",
            "500ms",
            "--duration",
            "20s",
            // Retry-After 5 s becomes 250 ms.
            "--pace-scale",
            "0.05",
            "--grant-interval",
            "200ms",
            "--grant-batch",
            "7",
            "--quiet",
        ],
    );
    assert_only(&s, &[201, 202, 423, 429]);
    assert_eq!(s.ended_by, "all-collected", "{s:#?}");
    let c = s.collect.as_ref().expect("a collect section");
    assert_eq!((c.collected, c.not_collected), (20, 0), "{s:#?}");
    assert_eq!(c.time_to_201_ms.count, 20);
    assert!(c.time_to_201_ms.max >= c.time_to_201_ms.p50);
    // Each device collects exactly once, then stops polling.
    assert_eq!(s.status_counts().get(&201), Some(&20), "{s:#?}");
    assert!(
        s.status_counts().get(&202).is_some_and(|n| *n >= 20),
        "{s:#?}"
    );
    let admin = s.admin.as_ref().expect("an admin section");
    assert_eq!(admin.granted, 20, "{admin:#?}");
    assert!(admin.was_locked, "a fresh gateway starts locked");
    // Granted through the bulk route, never one by one.
    assert!(admin.bulk_calls >= 1, "{admin:#?}");
    assert!(
        admin
            .statuses
            .keys()
            .all(|k| k.starts_with("bulk:200") || !k.starts_with("grant")),
        "{admin:#?}"
    );
    let fleet = c.fleet_collected_secs.expect("the whole fleet collected");
    assert!(
        fleet * 1000.0 >= c.time_to_201_ms.max as f64 - 1000.0,
        "{s:#?}"
    );
}

/// 60 devices over a pool of 3 keep-alive connections: the devices wait
/// their turn for a connection, and the fleet still collects.
#[test]
fn polling_storm_shares_a_small_connection_pool() {
    let s = http_scenario(
        "polling-storm",
        &[
            "--devices",
            "60",
            "--connections",
            "3",
            "--ramp-up",
            "200ms",
            "--duration",
            "20s",
            "--pace-scale",
            "0.05",
            "--grant-interval",
            "200ms",
            "--quiet",
        ],
    );
    assert_only(&s, &[201, 202, 423, 429]);
    assert_eq!(s.ended_by, "all-collected", "{s:#?}");
    let c = s.collect.as_ref().expect("a collect section");
    assert_eq!((c.collected, c.not_collected), (60, 0), "{s:#?}");
    assert!(c.fleet_collected_secs.is_some(), "{s:#?}");
}

#[test]
fn locked_storm_is_all_423() {
    let s = http_scenario(
        "locked-storm",
        &[
            "--devices",
            "20",
            "--ramp-up",
            "500ms",
            "--duration",
            "3s",
            "--pace-scale",
            "0.02",
        ],
    );
    assert_only(&s, &[423, 429]);
    assert_eq!(s.ended_by, "duration");
    // 20 devices polling every ~100 ms for 3 s: many polls each.
    assert!(s.requests >= 100, "{s:#?}");
    assert!(s.status_counts().contains_key(&423), "{s:#?}");
}

#[test]
fn login_storm_granted_devices_log_in() {
    let s = http_scenario(
        "login-storm",
        &[
            "--devices",
            "10",
            "--ramp-up",
            "200ms",
            "--duration",
            "3s",
            "--interval",
            "100ms",
        ],
    );
    assert_only(&s, &[200]);
    assert!(
        s.requests >= 30,
        "each device logged in several times: {s:#?}"
    );
    let admin = s.admin.as_ref().expect("an admin section");
    assert_eq!((admin.registered, admin.granted), (10, 10), "{admin:#?}");
}

#[test]
fn tls_reconnect_against_a_started_gateway_polls_its_https_listener() {
    let s = http_scenario(
        "tls-reconnect",
        &[
            "--devices",
            "10",
            "--ramp-up",
            "200ms",
            "--duration",
            "3s",
            "--pace-scale",
            "0.02",
        ],
    );
    assert!(s.target.starts_with("https://"), "{s:#?}");
    assert_only(&s, &[202, 423, 429]);
    assert!(s.status_counts().contains_key(&202), "unlocked: {s:#?}");
    assert!(s.requests >= 30, "{s:#?}");
}

/// `tls-reconnect` against an `https://` URL with a self-signed
/// certificate: a TLS terminator in front of a gateway counts handshakes,
/// and every poll must have been one.
#[test]
fn tls_reconnect_over_https_is_a_handshake_per_poll() {
    let gateway = Gateway::start(&GatewayOptions {
        bin: Some(fleetgate_bin()),
        extra_args: vec!["--workers=1".into()],
        mqtt: false,
        https: false,
    })
    .expect("start fleetgate");
    let tls = TlsTerminator::start(gateway.http);
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("reports");
    let args: Vec<String> = [
        "tls-reconnect",
        "--url",
        &format!("https://{}", tls.addr),
        "--admin-url",
        &format!("http://{}", gateway.admin.expect("admin listener")),
        "--admin-password",
        &gateway.admin_password,
        "--report-dir",
        &report_dir.display().to_string(),
        "--devices",
        "5",
        "--ramp-up",
        "200ms",
        "--duration",
        "2s",
        "--pace-scale",
        "0.02",
        "--timeout",
        "10s",
        "--quiet",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, output) = loadtest(&args, dir.path());
    assert_eq!(code, Some(0), "tls-reconnect failed:\n{output}");
    let s: RunSummary =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_only(&s, &[202, 423, 429]);
    assert!(s.requests >= 10, "{s:#?}");
    let handshakes = tls.handshakes.load(Ordering::Relaxed);
    assert_eq!(
        handshakes, s.requests,
        "one TLS handshake per poll: {handshakes} handshakes for {} polls",
        s.requests
    );
}

#[test]
fn mqtt_storm_unknown_users_on_a_locked_registry_get_connack_5() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("mqtt.json");
    let args: Vec<String> = [
        "mqtt-storm",
        "--mode",
        "unknown",
        "--concurrency",
        "4",
        "--seconds",
        "2",
        "--rate",
        "300",
        "--expect",
        "0x05",
        "--summary",
        &summary.display().to_string(),
        "--gateway-bin",
        &fleetgate_bin().display().to_string(),
        "--gateway-arg=--workers=1",
        // Unknown users each count once against the per-username limit;
        // this storm is about the locked registry, not the limiter.
        "--gateway-arg=--rate-limit-per-user=off",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, output) = loadtest(&args, dir.path());
    assert_eq!(code, Some(0), "mqtt-storm failed:\n{output}");
    assert!(output.contains("connects: "), "{output}");
    let s: MqttSummary = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(s.self_started);
    assert!(s.connects >= 100, "{s:#?}");
    assert_eq!(
        s.codes,
        BTreeMap::from([("0x05".to_owned(), s.connects)]),
        "{s:#?}"
    );
    assert_eq!(s.unexpected, 0);
    assert_eq!(s.connack_latency_us.count, s.connects);
    // 300/s for 2 s: the rate cap holds.
    assert!(s.connects <= 620, "{s:#?}");
}

/// A minimal TLS terminator: accepts TLS with a fresh self-signed
/// certificate, forwards each connection's bytes to `upstream` in plain
/// TCP and the answer back. Counts completed handshakes. Threads per
/// connection; the test's polls are few.
struct TlsTerminator {
    addr: SocketAddr,
    handshakes: Arc<AtomicU64>,
}

impl TlsTerminator {
    fn start(upstream: SocketAddr) -> TlsTerminator {
        let (config, _) = support::self_signed_server(&["localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicU64::new(0));
        let counter = handshakes.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (config, counter) = (config.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = terminate(conn, config, upstream, &counter);
                });
            }
        });
        TlsTerminator { addr, handshakes }
    }
}

/// One TLS connection: handshake, then copy the client's request to the
/// upstream and the upstream's answer (until it closes) back.
fn terminate(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
    upstream: SocketAddr,
    handshakes: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(
        rustls::ServerConnection::new(config).map_err(std::io::Error::other)?,
        conn,
    );
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    handshakes.fetch_add(1, Ordering::Relaxed);
    let request = support::read_request(&mut tls)?;
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(10)))?;
    up.write_all(&request)?;
    // The devices send `Connection: close`: the gateway closes after its
    // answer, which ends this copy.
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    tls.write_all(&answer)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    let _ = tls.sock.shutdown(Shutdown::Write);
    Ok(())
}
