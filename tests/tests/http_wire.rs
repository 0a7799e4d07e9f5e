//! The proxy's HTTP/1.1 handling over raw sockets: keep-alive, pipelining,
//! limits and time limits, as a real client would meet them.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fleetgate_tests::*;

const POLL: &str = "/api/client-registry/register";

fn connect(g: &Gateway) -> TcpStream {
    let s = TcpStream::connect(g.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn keep_alive_and_pipelined_requests_answer_in_order() {
    let g = Gateway::start(&[]);
    let mut s = connect(&g);
    let body = creds("dev01", "secret").to_string();
    // Three requests in one write: a poll, a health check, a bad poll.
    let mut wire = encode_request("POST", POLL, &[], body.as_bytes());
    wire.extend(encode_request("GET", "/healthz", &[], b""));
    wire.extend(encode_request("POST", POLL, &[], b"{"));
    s.write_all(&wire).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().status, 423);
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    assert_eq!(read_response(&mut r).unwrap().status, 400);
    // The connection is still open for a fourth, sent byte by byte.
    for b in encode_request("GET", "/healthz", &[], b"") {
        s.write_all(&[b]).unwrap();
    }
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // Connection: close is honoured.
    s.write_all(&encode_request(
        "GET",
        "/healthz",
        &[("Connection", "close")],
        b"",
    ))
    .unwrap();
    let last = read_response(&mut r).unwrap();
    assert_eq!(last.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the response"
    );
}

#[test]
fn oversized_heads_and_bodies_are_refused_before_buffering() {
    let g = Gateway::start(&[]);
    // A declared 1 GiB body is refused from the head alone.
    let mut s = connect(&g);
    s.write_all(b"POST /api/client-registry/register HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["status"], "invalid");

    // A head that never ends is cut at 16 KiB.
    let mut s = connect(&g);
    let mut head = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(20 * 1024, b'a');
    let _ = s.write_all(&head);
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 431);

    // Chunked bodies are refused with a clear 411.
    let mut s = connect(&g);
    s.write_all(
        b"POST /api/client-registry/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 411);

    // The gateway still serves everyone else.
    assert_eq!(request(g.http, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn slow_senders_get_408_and_idle_connections_close() {
    let g = Gateway::start(&["--request-timeout", "500ms", "--idle-timeout", "800ms"]);
    let mut s = connect(&g);
    s.write_all(
        b"POST /api/client-registry/register HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"user",
    )
    .unwrap();
    let t = Instant::now();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 408);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "cut too early: {waited:?}"
    );

    let s = connect(&g);
    let t = Instant::now();
    let mut buf = [0u8; 1];
    let n = (&s).read(&mut buf).unwrap();
    assert_eq!(n, 0, "an idle connection is closed without a response");
    assert!(t.elapsed() >= Duration::from_millis(700));
}

#[test]
fn bad_config_exits_2_with_one_line() {
    for (args, flag) in [
        (vec!["--workers", "0"], "--workers"),
        (vec!["--http-listen", "nowhere"], "--http-listen"),
        (vec!["--pending-ttl", "0s"], "--pending-ttl"),
        (vec!["--store", "cassandra://x"], "--store"),
        (vec!["--io-driver", "kqueue"], "--io-driver"),
        (vec!["--tls-session-cache", "0"], "--tls-session-cache"),
        (vec!["--https-listen", "nowhere"], "--https-listen"),
    ] {
        let mut p = spawn("fleetgate", &args, &[]);
        let status = p.child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
        let lines = p.collect_log(Duration::from_secs(5));
        assert_eq!(lines.len(), 1, "{args:?} printed:\n{}", lines.join("\n"));
        assert!(lines[0].contains(flag), "{args:?}: {}", lines[0]);
    }
}

#[test]
fn environment_variables_configure_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(
        "fleetgate",
        &[],
        &[
            ("FLEETGATE_HTTP_LISTEN", "127.0.0.1:0"),
            ("FLEETGATE_ADMIN_LISTEN", "off"),
            ("FLEETGATE_WORKERS", "1"),
            ("FLEETGATE_MQTT_LISTEN", "off"),
            ("FLEETGATE_HTTPS_LISTEN", "off"),
            ("FLEETGATE_MQTTS_LISTEN", "off"),
            ("FLEETGATE_METRICS_LISTEN", "off"),
            ("FLEETGATE_DATA_DIR", dir.path().to_str().unwrap()),
            ("FLEETGATE_ADMIN_PASSWORD", ADMIN_PASSWORD),
            // The io_uring path where the kernel has it (the other tests
            // run on the default, epoll).
            ("FLEETGATE_IO_DRIVER", "auto"),
        ],
    );
    let http = p.logged_addr("device API listening");
    p.wait_for_line("admin API listener off", Duration::from_secs(5));
    let line = p.wait_for_line("worker started", Duration::from_secs(5));
    assert!(
        line.contains("driver=\"io_uring\"") || line.contains("driver=\"epoll\""),
        "{line}"
    );
    login(http, "admin", ADMIN_PASSWORD);
    let r = register(http, &creds("env-device", "secret-pw"));
    assert_eq!(r.status, 423, "{}", r.text());
}

#[test]
fn a_generated_admin_password_is_printed_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = [
        "--http-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--https-listen",
        "off",
        "--mqtt-listen",
        "off",
        "--mqtts-listen",
        "off",
        "--metrics-listen",
        "off",
        "--data-dir",
        &data,
    ];
    let mut p = spawn("fleetgate", &args, &[]);
    let admin = p.logged_addr("admin API listening");
    let mut out = String::new();
    let mut stdout = p.stdout.take().unwrap();
    let mut buf = [0u8; 512];
    while !out.contains('\n') {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "no password printed");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let password = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(password.len(), 24, "{out}");
    login(admin, "admin", &password);
    assert!(
        !p.log.iter().any(|l| l.contains(&password)),
        "the password must not be logged"
    );
    p.kill9();
    drop(p);

    // Restarted: nothing printed, the same password still works.
    let mut p = spawn("fleetgate", &args, &[]);
    let admin = p.logged_addr("admin API listening");
    login(admin, "admin", &password);
    p.terminate(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    let mut rest = String::new();
    p.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("password"), "printed again: {rest}");
}
