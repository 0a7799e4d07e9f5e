//! TLS on the device listeners, with real clients only: `curl` registers
//! and logs in over HTTPS (verifying the generated server certificate with
//! `--cacert`), `openssl s_client` resumes sessions, and `mosquitto_pub` /
//! `mosquitto_sub` go through the MQTTS listener to a real upstream
//! Mosquitto with the certificate the gateway's CA issued.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_registry::ca::CertificateAuthority;
use fleetgate_registry::UnixMillis;
use fleetgate_tests::prometheus::{sample, scrape};
use fleetgate_tests::*;
use serde_json::{json, Value};

/// The generated server certificate of `g` (what devices pin with `--cacert`).
fn server_cert(g: &Gateway) -> PathBuf {
    g.data_dir.join("tls-cert.pem")
}

fn https(g: &Gateway) -> SocketAddr {
    g.https.expect("the HTTPS listener is on")
}

fn mqtts(g: &Gateway) -> SocketAddr {
    g.mqtts.expect("the MQTTS listener is on")
}

/// An HTTPS request with curl, verifying the generated server certificate
/// by name (`localhost`).
fn curl(
    g: &Gateway,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> Result<(u16, String), String> {
    curl_https(https(g), Some(&server_cert(g)), method, path, body, extra)
}

fn register_https(g: &Gateway, body: &Value) -> (u16, Value) {
    let (status, text) = curl(
        g,
        "POST",
        "/api/client-registry/register",
        Some(&body.to_string()),
        &[],
    )
    .expect("an HTTPS answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn unlock(g: &Gateway, token: &str) {
    let r = authed(g.admin, token, "POST", "/api/client-registry/unlock", b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Grants `username` the right to publish to `fleet/<username>` (a newly
/// granted user has no permissions; the relay enforces them).
fn grant(g: &Gateway, token: &str, username: &str) {
    let path = format!("/api/client-registry/requests/{username}/grant");
    let body = json!({"permissions": [
        {"resource": "fleet/{username}", "operation": "write", "context": "mqtt"}
    ]});
    let r = authed(g.admin, token, "POST", &path, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A device's files: its key, and after enrolment its certificate and the CA.
struct Enrolled {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Enrolled {
    fn cert_args(&self) -> [&str; 4] {
        [
            "--cert",
            self.cert.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ]
    }
}

/// Registers `username` with a CSR over HTTPS, has the admin grant it, and
/// collects the certificate from the 201.
fn enrol(g: &Gateway, token: &str, dir: &Path, username: &str) -> Enrolled {
    let csr = make_csr(dir, username, &format!("/CN={username}"));
    let body = json!({"username": username, "csr": csr});
    let (status, _) = register_https(g, &body);
    assert_eq!(status, 202, "the registry must be unlocked");
    grant(g, token, username);
    let (status, granted) = register_https(g, &body);
    assert_eq!(status, 201, "{granted}");
    let cert = dir.join(format!("{username}.crt"));
    let ca = dir.join("ca.crt");
    std::fs::write(&cert, granted["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(&ca, granted["caCertificate"].as_str().unwrap()).unwrap();
    Enrolled {
        cert,
        key: dir.join(format!("{username}.key")),
        ca,
    }
}

/// A self-signed ECDSA P-256 certificate for `/CN=<cn>`, valid 30 days,
/// with `-addext` for each of `exts`: (certificate, key) paths in `dir`.
fn self_signed(dir: &Path, cn: &str, exts: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let subj = format!("/CN={cn}");
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        &subj,
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    for ext in exts {
        args.extend(["-addext", ext]);
    }
    let (ok, out) = openssl(&args);
    assert!(ok, "{out}");
    (cert, key)
}

fn metric(g: &Gateway, series: &str) -> f64 {
    let text = scrape(g.metrics);
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn a_csr_device_registers_over_https_and_logs_in_with_its_certificate() {
    let g = Gateway::start(&["--cert-validity-days", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let token = g.admin_token();

    // Locked by default, over HTTPS as over HTTP.
    let csr = make_csr(dir.path(), "tls-dev-1", "/CN=tls-dev-1");
    let (status, body) = register_https(&g, &json!({"username": "tls-dev-1", "csr": csr}));
    assert_eq!(status, 423, "{body}");

    unlock(&g, &token);
    let device = enrol(&g, &token, dir.path(), "tls-dev-1");

    // The certificate verifies against the CA and is a 30-day client cert.
    let cert = device.cert.to_str().unwrap();
    let (ok, out) = openssl(&["verify", "-CAfile", device.ca.to_str().unwrap(), cert]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", cert, "-noout", "-text"]);
    assert!(
        text.contains("CN=tls-dev-1") || text.contains("CN = tls-dev-1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let (valid_29, _) = openssl(&["x509", "-in", cert, "-noout", "-checkend", "2505600"]);
    let (valid_31, _) = openssl(&["x509", "-in", cert, "-noout", "-checkend", "2678400"]);
    assert!(valid_29 && !valid_31, "validity must be 30 days");

    // Mutual-TLS login: the certificate, no password.
    let (status, text) = curl(&g, "POST", "/api/login", None, &device.cert_args()).unwrap();
    assert_eq!(status, 200, "{text}");
    let login: Value = serde_json::from_str(&text).unwrap();
    let device_token = login["token"].as_str().unwrap().to_owned();
    // A valid token of a user without the admin role: 403, not 401.
    let r = authed(g.admin, &device_token, "GET", "/api/client-registry", b"");
    assert_eq!(r.status, 403, "{}", r.text());

    // Naming the certificate's own user is fine; another user is not.
    let (status, _) = curl(
        &g,
        "POST",
        "/api/login",
        Some(r#"{"username":"tls-dev-1","expireTimeInHours":2}"#),
        &device.cert_args(),
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, text) = curl(
        &g,
        "POST",
        "/api/login",
        Some(r#"{"username":"admin"}"#),
        &device.cert_args(),
    )
    .unwrap();
    assert_eq!(status, 401, "{text}");
    let (status, text) = curl(
        &g,
        "POST",
        "/api/login",
        Some(r#"{"expireTimeInHours":0}"#),
        &device.cert_args(),
    )
    .unwrap();
    assert_eq!(status, 400, "{text}");
    // With a password it is a password login, answered by the admin
    // service: the certificate user has no password.
    let (status, _) = curl(
        &g,
        "POST",
        "/api/login",
        Some(r#"{"username":"tls-dev-1","password":"guess-this"}"#),
        &device.cert_args(),
    )
    .unwrap();
    assert_eq!(status, 401);
    // No certificate and no password: a bad request, not a login.
    let (status, _) = curl(&g, "POST", "/api/login", Some("{}"), &[]).unwrap();
    assert_eq!(status, 400);
    // The admin's password login works over HTTPS too.
    let admin_login = json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string();
    let (status, _) = curl(&g, "POST", "/api/login", Some(&admin_login), &[]).unwrap();
    assert_eq!(status, 200);

    assert_eq!(
        metric(
            &g,
            r#"fleetgate_certificate_logins_total{result="success"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &g,
            r#"fleetgate_certificate_logins_total{result="failure"}"#
        ),
        1.0
    );

    // Deleting the user revokes the certificate and the token.
    let r = authed(g.admin, &token, "DELETE", "/api/users/tls-dev-1", b"");
    assert_eq!(r.status, 204);
    let (status, text) = curl(&g, "POST", "/api/login", None, &device.cert_args()).unwrap();
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("no such user"), "{text}");
    let r = authed(g.admin, &device_token, "GET", "/api/client-registry", b"");
    assert_eq!(r.status, 401);
}

#[test]
fn csr_rows_over_https() {
    let g = Gateway::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    unlock(&g, &g.admin_token());
    let mismatch = make_csr(dir.path(), "a", "/CN=someone-else");
    let empty_cn = make_csr(dir.path(), "b", "/O=plant");
    let good = make_csr(dir.path(), "c", "/CN=tls-row");
    // Flip one character inside the base64 body: the signature (or the
    // structure) no longer checks out.
    let mut tampered: Vec<char> = good.chars().collect();
    let at = good.len() / 2;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for (csr, expected) in [
        (mismatch.as_str(), 422),
        (empty_cn.as_str(), 422),
        ("-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n", 400),
        (tampered.as_str(), 400),
    ] {
        let (status, body) = register_https(&g, &json!({"username": "tls-row", "csr": csr}));
        assert_eq!(status, expected, "{body}");
    }
}

#[test]
fn mqtts_clients_reach_the_upstream_broker_with_a_certificate_or_a_password() {
    let mut broker = Mosquitto::start("");
    let upstream = broker.addr.to_string();
    let g = Gateway::start(&["--mqtt-upstream", &upstream]);
    let dir = tempfile::tempdir().unwrap();
    let token = g.admin_token();
    unlock(&g, &token);
    let device = enrol(&g, &token, dir.path(), "tls-mqtt-1");
    let cafile = server_cert(&g);
    let port = mqtts(&g).port().to_string();
    let cafile = cafile.to_str().unwrap();
    // mosquitto_pub through the MQTTS listener, pinning the server
    // certificate; `with_cert` adds the device's certificate and key.
    let publish = |extra: &[&str]| {
        let mut args = vec!["-h", "localhost", "-p", &port, "--cafile", cafile];
        args.extend_from_slice(extra);
        run_tool("mosquitto_pub", &args)
    };
    let with_cert = |extra: &[&str]| {
        let mut args = device.cert_args().to_vec();
        args.extend_from_slice(extra);
        publish(&args)
    };

    // A subscriber on the upstream broker sees what the device publishes
    // through the gateway.
    let bport = broker.addr.port().to_string();
    let sub = std::thread::spawn(move || {
        let args = ["-h", "127.0.0.1", "-p", &bport, "-t", "fleet/#"];
        let wait = ["-C", "2", "-W", "20", "-v"];
        run_tool("mosquitto_sub", &[&args[..], &wait[..]].concat())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = with_cert(&[
        "-i",
        "cert-pub",
        "-t",
        "fleet/tls-mqtt-1",
        "-m",
        "hello-over-mtls",
    ]);
    assert_eq!(code, 0, "{err}");
    // The broker knows who it is: the certificate's CN is the username it
    // sees (the CONNECT carried none), and the client id is namespaced by
    // that user. Mosquitto logs both on connect.
    let line = broker
        .process
        .wait_for_line("u'tls-mqtt-1'", Duration::from_secs(5));
    assert!(line.contains(" as tls-mqtt-1:cert-pub "), "{line}");

    // A password device over MQTTS: implicit registration, then granted.
    let password_device = [
        "-u",
        "tls-mqtt-pw",
        "-P",
        "pw-secret-1",
        "-i",
        "tls-mqtt-pw",
        "-t",
        "fleet/tls-mqtt-pw",
        "-m",
        "hello-over-tls",
    ];
    let (code, _, err) = publish(&password_device);
    assert_ne!(code, 0, "pending must be refused: {err}");
    assert!(err.contains("not authorised"), "{err}");
    grant(&g, &token, "tls-mqtt-pw");
    let (code, _, err) = publish(&password_device);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = sub.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fleet/tls-mqtt-1 hello-over-mtls"), "{out}");
    assert!(out.contains("fleet/tls-mqtt-pw hello-over-tls"), "{out}");

    // The certificate with another username in the CONNECT: not authorised.
    let (code, _, err) = with_cert(&["-u", "someone-else", "-t", "fleet/x", "-m", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("not authorised"), "{err}");

    // Deleting the user revokes the certificate on MQTTS too.
    let r = authed(g.admin, &token, "DELETE", "/api/users/tls-mqtt-1", b"");
    assert_eq!(r.status, 204);
    let (code, _, err) = with_cert(&["-t", "fleet/tls-mqtt-1", "-m", "after-delete"]);
    assert_ne!(code, 0);
    assert!(err.contains("not authorised"), "{err}");
    assert_eq!(
        metric(
            &g,
            r#"fleetgate_certificate_logins_total{result="success"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &g,
            r#"fleetgate_certificate_logins_total{result="failure"}"#
        ),
        2.0
    );
}

#[test]
fn expired_and_foreign_certificates_are_refused_in_the_handshake() {
    let g = Gateway::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // A certificate from the gateway's own CA that expired yesterday.
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(g.data_dir.join("ca-cert.pem")).unwrap(),
        &std::fs::read_to_string(g.data_dir.join("ca-key.pem")).unwrap(),
        30,
    )
    .unwrap();
    let csr = make_csr(dir.path(), "old-dev", "/CN=old-dev");
    let now = UnixMillis::now();
    let day = Duration::from_secs(86_400);
    let expired = ca
        .issue_between(
            &csr,
            "old-dev",
            UnixMillis(now.0 - 3 * day.as_millis() as u64),
            UnixMillis(now.0 - day.as_millis() as u64),
        )
        .unwrap();
    let expired_path = dir.path().join("old-dev.crt");
    std::fs::write(&expired_path, &expired.pem).unwrap();
    let old_key = dir.path().join("old-dev.key");
    // A self-signed certificate no CA of ours issued.
    let (foreign_cert, foreign_key) = self_signed(dir.path(), "foreign", &[]);

    let failures = "fleetgate_tls_handshake_failures_total";
    let before = metric(&g, failures);
    for (cert, key) in [(&expired_path, &old_key), (&foreign_cert, &foreign_key)] {
        let args = [
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        let refused = curl(&g, "POST", "/api/login", None, &args);
        assert!(refused.is_err(), "{refused:?}");
    }
    // MQTTS refuses the expired certificate the same way.
    let port = mqtts(&g).port().to_string();
    let cafile = server_cert(&g);
    let (code, _, err) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            cafile.to_str().unwrap(),
            "--cert",
            expired_path.to_str().unwrap(),
            "--key",
            old_key.to_str().unwrap(),
            "-t",
            "t",
            "-m",
            "m",
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert_eq!(metric(&g, failures) - before, 3.0);
    // The workers are fine: plain HTTPS still answers.
    let (status, _) = curl(&g, "GET", "/healthz", None, &[]).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn resumed_sessions_are_counted_as_resumed() {
    // One worker: the per-worker session cache sees both connections.
    let g = Gateway::start(&["--workers", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let addr = https(&g).to_string();
    let session = dir.path().join("session.pem");
    let session = session.to_str().unwrap();
    // One HTTP request that closes the connection, read to the end with
    // -ign_eof: the session tickets, sent before the answer, are in.
    let s_client = |args: &[&str]| -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "localhost",
                "-ign_eof",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("HTTP/1.1 200"), "{text}");
        text
    };
    let full = "fleetgate_tls_handshakes_total{kind=\"full\"}";
    let resumed = "fleetgate_tls_handshakes_total{kind=\"resumed\"}";
    assert_eq!(metric(&g, full), 0.0);

    // TLS 1.3: a stateless ticket.
    let first = s_client(&["-sess_out", session]);
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let second = s_client(&["-sess_in", session]);
    assert!(second.contains("Reused, TLSv1.3"), "{second}");
    // TLS 1.2 without tickets: the worker's stateful session cache.
    let first = s_client(&["-tls1_2", "-no_ticket", "-sess_out", session]);
    assert!(first.contains("New, TLSv1.2"), "{first}");
    let second = s_client(&["-tls1_2", "-no_ticket", "-sess_in", session]);
    assert!(second.contains("Reused, TLSv1.2"), "{second}");

    assert_eq!(metric(&g, full), 2.0);
    assert_eq!(metric(&g, resumed), 2.0);
}

#[test]
fn a_given_server_certificate_is_served_and_a_generated_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "gw.test", &["subjectAltName=DNS:gw.test"]);
    let g = Gateway::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = https(&g).port();
    let resolve = format!("gw.test:{port}:127.0.0.1");
    let url = format!("https://gw.test:{port}/healthz");
    let (code, out, err) = run_tool(
        "curl",
        &[
            "-sS",
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
    assert!(
        !server_cert(&g).exists(),
        "nothing is generated when a certificate is given"
    );

    // Generated once, then reused after a restart.
    let data = tempfile::tempdir().unwrap();
    let mut first = Gateway::start_in(data.path(), &[]);
    let generated = std::fs::read_to_string(server_cert(&first)).unwrap();
    first.process.terminate(Duration::from_secs(10));
    let again = Gateway::start_in(data.path(), &[]);
    assert_eq!(
        std::fs::read_to_string(server_cert(&again)).unwrap(),
        generated
    );
    let (status, _) = curl(&again, "GET", "/healthz", None, &[]).unwrap();
    assert_eq!(status, 200);

    // A key without a certificate is a configuration error (exit 2), and a
    // missing file names itself (exit 1).
    let mut p = spawn("fleetgate", &["--tls-key", key.to_str().unwrap()], &[]);
    assert_eq!(p.child.wait().unwrap().code(), Some(2));
    let missing = dir.path().join("missing.crt");
    let mut p = spawn(
        "fleetgate",
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "off",
            "--mqtts-listen",
            "off",
            "--admin-listen",
            "off",
            "--metrics-listen",
            "off",
            "--admin-password",
            ADMIN_PASSWORD,
            "--data-dir",
            data.path().join("other").to_str().unwrap(),
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let line = p.wait_for_line("missing.crt", Duration::from_secs(30));
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(p.child.wait().unwrap().code(), Some(1));
}

#[test]
fn silent_and_garbage_tls_clients_are_closed_and_counted() {
    use std::io::{Read, Write};
    let g = Gateway::start(&["--tls-handshake-timeout", "1s"]);
    let failures = "fleetgate_tls_handshake_failures_total";
    assert_eq!(metric(&g, failures), 0.0);

    // Says nothing: closed once the handshake time is up.
    let mut silent = std::net::TcpStream::connect(https(&g)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed without a word");

    // Speaks plain HTTP to the TLS port: an alert, then closed.
    let mut plain = std::net::TcpStream::connect(https(&g)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer on the TLS port"
    );

    // A truncated ClientHello on MQTTS, then silence: timed out too.
    let mut partial = std::net::TcpStream::connect(mqtts(&g)).unwrap();
    partial
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert_eq!(partial.read(&mut buf).unwrap_or(0), 0);

    // Counted once each, after the closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&g, failures) < 3.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&g, failures), 3.0);
    let (status, _) = curl(&g, "GET", "/healthz", None, &[]).unwrap();
    assert_eq!(status, 200);
}
