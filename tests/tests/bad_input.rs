//! The bad-input battery (issue 18): hostile bytes through real sockets
//! against the real `fleetgate` binary. Slowloris connections are closed by
//! `--request-timeout` while a device keeps getting 202. Garbage on every
//! listener (HTTP, HTTPS, MQTT, MQTTS) leaves the workers serving. Oversized
//! and malformed requests each get their documented error (docs/API.md),
//! and the gateway's resident memory (VmRSS) stays bounded throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetgate_tests::*;

/// The gateway's resident set size, in KiB, from `/proc/<pid>/status`.
fn rss_kib(g: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", g.process.child.id()))
        .expect("the gateway's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line")
}

fn unlock(g: &Gateway) {
    let r = authed(
        g.admin,
        &g.admin_token(),
        "POST",
        "/api/client-registry/unlock",
        br#"{"durationMs":600000}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A device's register poll from another loopback source, so it is not
/// counted against the connections the test opens from 127.0.0.1.
fn device_poll(g: &Gateway) -> u16 {
    let device: IpAddr = "127.0.0.2".parse().unwrap();
    request_from(
        device,
        g.http,
        "POST",
        "/api/client-registry/register",
        &[("Content-Type", "application/json")],
        br#"{"username":"steady-01","password":"secret-1"}"#,
    )
    .status
}

/// Raises this process's soft open-file limit to at least `want` (up to the
/// hard limit); the gateway, started after, inherits it.
fn raise_nofile(want: u64) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard): (u64, u64) = (
        fields[3].parse().unwrap(),
        fields[4].parse().unwrap_or(u64::MAX),
    );
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    // `prlimit` (util-linux) sets this process's limit from outside it, so
    // the test needs no unsafe setrlimit call.
    let pid = std::process::id().to_string();
    let arg = format!("--nofile={target}:{hard}");
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &arg])
        .status()
        .expect("prlimit");
    assert!(status.success(), "could not raise the open-file limit");
    target
}

/// Reads what the server sent on a closed or closing slow connection:
/// `Some(bytes)` once it has closed (possibly after a 408), `None` while it
/// is still open.
fn closed_by_server(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return if got.is_empty() { None } else { Some(got) };
            }
            Err(_) => return Some(got), // reset: closed
        }
    }
}

#[test]
fn slowloris_connections_are_closed_while_a_device_keeps_getting_202() {
    const SLOW: usize = 5_000;
    let limit = raise_nofile(SLOW as u64 + 1_000);
    assert!(
        limit > SLOW as u64 + 200,
        "the open-file limit {limit} is too low for the test"
    );
    let g = Gateway::start(&[
        "--request-timeout",
        "3s",
        "--max-connections-per-ip",
        "10000",
    ]);
    unlock(&g);
    assert_eq!(device_poll(&g), 202);
    let rss_before = rss_kib(&g);

    // 5,000 connections, each sending its request head one byte a second.
    let head = b"POST /api/client-registry/register HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
    let mut slow: Vec<(TcpStream, usize, bool)> = (0..SLOW)
        .map(|_| {
            let s = TcpStream::connect(g.http).expect("a slow connection");
            s.set_nonblocking(true).unwrap();
            (s, 0, false)
        })
        .collect();
    let started = Instant::now();
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let tick = Instant::now();
        for (s, sent, closed) in slow.iter_mut().filter(|(_, _, c)| !*c) {
            if let Some(answer) = closed_by_server(s) {
                // Closed by the gateway: with a 408, or without a word.
                let text = String::from_utf8_lossy(&answer);
                assert!(
                    answer.is_empty() || text.starts_with("HTTP/1.1 408"),
                    "{text}"
                );
                *closed = true;
                continue;
            }
            let byte = head[*sent % head.len()];
            if s.write(&[byte]).is_ok() {
                *sent += 1;
            }
        }
        // The device keeps being served while the slow ones hang on.
        assert_eq!(
            device_poll(&g),
            202,
            "the device was not served under slowloris"
        );
        polls += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let open = slow.iter().filter(|(_, _, c)| !*c).count();
    assert_eq!(
        open, 0,
        "{open} slow connections outlived --request-timeout 3s"
    );
    assert!(polls >= 5);
    let rss_after = rss_kib(&g);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// A TLS ClientHello with every length field near its maximum: 32,767
/// cipher suites, a 255-byte session id, and a 16 KiB value for each of
/// several extensions (a server name, ALPN, supported groups, signature
/// algorithms, a key share, an unknown one), in records of 16 KiB.
fn maxed_client_hello() -> Vec<u8> {
    let mut ext = Vec::new();
    for (kind, len) in [
        (0x0000u16, 8_000usize),
        (0x0010, 8_000),
        (0x000a, 8_000),
        (0x000d, 8_000),
        (0x0033, 8_000),
        (0xfafa, 8_000),
    ] {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(len as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0x41u8, len));
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x22; 32]); // session id
    let suites = 8_000usize; // cipher suites, 2 bytes each
    body.extend_from_slice(&((suites * 2) as u16).to_be_bytes());
    for i in 0..suites {
        body.extend_from_slice(&(0x1301u16.wrapping_add(i as u16)).to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut records = Vec::new();
    for chunk in handshake.chunks(16_384) {
        records.extend_from_slice(&[0x16, 0x03, 0x01]);
        records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        records.extend_from_slice(chunk);
    }
    records
}

/// Sends `bytes`, ends the sending side (a client that sent its junk and
/// hung up), and waits (at most 10 s) for the server to close.
fn send_and_expect_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{addr}: not closed"
    );
    got
}

/// A CONNECT over MQTTS with `openssl s_client`, returning what came back.
fn mqtts_connect(addr: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(packet).unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() >= 4 {
                break;
            }
        }
        got
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    reader.join().unwrap()
}

#[test]
fn garbage_on_every_listener_leaves_the_workers_serving() {
    let g = Gateway::start(&[]);
    unlock(&g);
    let rss_before = rss_kib(&g);
    let https = g.https.expect("HTTPS is on");
    let mqtts = g.mqtts.expect("MQTTS is on");
    // Deterministic garbage: a xorshift stream, some of it starting like
    // each protocol so it gets past the first byte.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let prefixes: [&[u8]; 5] = [
        b"",
        b"POST / HTTP/1.1\r\n",
        b"\x10",
        b"\x16\x03\x01",
        b"\x00\x00",
    ];
    for round in 0..20 {
        for prefix in prefixes {
            let mut bytes = prefix.to_vec();
            bytes.extend(noise(64 << (round % 8)));
            for addr in [g.http, https, g.mqtt, mqtts] {
                send_and_expect_close(addr, &bytes);
            }
        }
    }
    // A maxed-out ClientHello on both TLS listeners: refused and closed.
    let hello = maxed_client_hello();
    for addr in [https, mqtts] {
        send_and_expect_close(addr, &hello);
    }

    // Every listener still serves a real request.
    let body = r#"{"username":"after-garbage","password":"secret-1"}"#;
    assert_eq!(
        register(g.http, &serde_json::from_str(body).unwrap()).status,
        202
    );
    let (status, text) = curl_https(
        https,
        None,
        "POST",
        "/api/client-registry/register",
        Some(body),
        &[],
    )
    .expect("an HTTPS answer");
    assert_eq!(status, 202, "{text}");
    let connect = mqtt_connect(
        MqttLevel::V311,
        "c-1",
        Some("after-mqtt"),
        Some(b"secret-1"),
    );
    let answer = mqtt_exchange(g.mqtt, &connect);
    assert_eq!(
        answer.first(),
        Some(&0x20),
        "no CONNACK over MQTT: {answer:?}"
    );
    let answer = mqtts_connect(mqtts, &connect);
    assert_eq!(
        answer.first(),
        Some(&0x20),
        "no CONNACK over MQTTS: {answer:?}"
    );

    let rss_after = rss_kib(&g);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Sends raw request bytes and reads the status code of the answer.
fn raw_status(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut reader = std::io::BufReader::new(s);
    read_response(&mut reader).expect("an answer").status
}

#[test]
fn hostile_requests_get_their_documented_errors_and_memory_stays_bounded() {
    let g = Gateway::start(&[]);
    unlock(&g);
    let rss_before = rss_kib(&g);
    let post = |body: &[u8]| {
        let mut bytes = format!(
            "POST /api/client-registry/register HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    for _ in 0..20 {
        // A username that is not UTF-8, and a body that is not UTF-8 in a
        // field the gateway ignores: 400 (docs/API.md, decision step 1).
        assert_eq!(
            raw_status(
                g.http,
                &post(b"{\"username\":\"dev\xff\xfe01\",\"password\":\"secret-1\"}")
            ),
            400
        );
        assert_eq!(
            raw_status(
                g.http,
                &post(b"{\"username\":\"dev-01\",\"password\":\"secret-1\",\"fw\":\"\xc3\"}")
            ),
            400
        );
        // A JSON nesting bomb just under the 64 KiB body cap: 400.
        let mut bomb = b"{\"username\":".to_vec();
        bomb.extend(std::iter::repeat_n(b'[', 60_000));
        assert_eq!(raw_status(g.http, &post(&bomb)), 400);
        // 10,000 header lines: 431 (the cap is 64 lines and a 16 KiB head).
        let mut many = b"POST /api/client-registry/register HTTP/1.1\r\n".to_vec();
        for i in 0..10_000 {
            many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(raw_status(g.http, &many), 431);
        // A declared 1 GiB body: 413 from the head alone.
        let huge =
            b"POST /api/client-registry/register HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n";
        assert_eq!(raw_status(g.http, huge), 413);
        // An MQTT CONNECT whose username is not UTF-8: closed without a
        // CONNACK (3.1.1, docs/API.md's MQTT table).
        let bad = mqtt_connect(MqttLevel::V311, "c-1", Some("dev-\u{1}"), Some(b"secret-1"));
        let at = bad.windows(5).position(|w| w == b"dev-\x01").unwrap();
        let mut bad = bad;
        bad[at + 4] = 0xff;
        assert_eq!(mqtt_exchange(g.mqtt, &bad), Vec::<u8>::new());
    }
    // The gateway still serves, and its memory did not grow with the junk.
    assert_eq!(
        register(
            g.http,
            &serde_json::json!({"username": "fine-01", "password": "secret-1"})
        )
        .status,
        202
    );
    let rss_after = rss_kib(&g);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
