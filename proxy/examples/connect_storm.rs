//! An MQTT CONNECT storm: many concurrent clients, each opening a fresh TCP
//! connection, sending one CONNECT and waiting for the CONNACK. It reports
//! the rate, counts per return code, and latency percentiles. The same tool
//! drives both the gateway and a Mosquitto baseline in `scripts/bench-mqtt.sh`.
//!
//! ```text
//! cargo run --release -p fleetgate-proxy --example connect_storm -- \
//!     127.0.0.1:1883 --mode unknown --concurrency 64 --seconds 10
//! ```
//!
//! Modes:
//! - `unknown`: every CONNECT has a new username (`storm-<run>-<n>`).
//! - `granted --prefix P --count N --password W`: cycle through the granted
//!   users `P0 … P(N-1)`; the answer is the upstream broker's CONNACK, the
//!   first spliced packet.
//! - `same --username U --password W`: one credential over and over (a
//!   flapping client).
//!
//! It runs on one thread, so that on a 2-core machine the server under test
//! keeps the other core.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
enum Mode {
    Unknown,
    Granted {
        prefix: String,
        count: u64,
        password: String,
    },
    Same {
        username: String,
        password: String,
    },
}

struct Args {
    target: SocketAddr,
    mode: Mode,
    concurrency: usize,
    seconds: u64,
    level: u8,
}

fn usage() -> ! {
    eprintln!(
        "usage: connect_storm ADDR [--mode unknown|granted|same] [--prefix P --count N] \
         [--username U] [--password W] [--concurrency C] [--seconds S] [--level 4|5]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let target = it
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let (mut mode, mut prefix, mut count, mut username, mut password) = (
        "unknown".to_string(),
        "dev-".to_string(),
        1u64,
        String::new(),
        "secret-1".to_string(),
    );
    let (mut concurrency, mut seconds, mut level) = (64usize, 10u64, 4u8);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--mode" => mode = v,
            "--prefix" => prefix = v,
            "--count" => count = v.parse().unwrap_or_else(|_| usage()),
            "--username" => username = v,
            "--password" => password = v,
            "--concurrency" => concurrency = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            "--level" => level = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let mode = match mode.as_str() {
        "unknown" => Mode::Unknown,
        "granted" => Mode::Granted {
            prefix,
            count: count.max(1),
            password,
        },
        "same" => Mode::Same { username, password },
        _ => usage(),
    };
    Args {
        target,
        mode,
        concurrency,
        seconds,
        level,
    }
}

fn connect_packet(level: u8, client_id: &str, username: &str, password: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut body = Vec::with_capacity(64);
    field(&mut body, b"MQTT");
    body.push(level);
    body.push(0xC2); // username, password, clean session
    body.extend_from_slice(&30u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    field(&mut body, client_id.as_bytes());
    field(&mut body, username.as_bytes());
    field(&mut body, password.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// One CONNECT → CONNACK exchange; returns the return/reason code.
async fn one(target: SocketAddr, packet: &[u8], level: u8) -> std::io::Result<u8> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(packet).await?;
    let mut ack = [0u8; 5];
    let n = if level == 5 { 5 } else { 4 };
    s.read_exact(&mut ack[..n]).await?;
    if ack[0] != 0x20 {
        return Err(std::io::Error::other("not a CONNACK"));
    }
    Ok(ack[3])
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let run_id: u32 = std::process::id();
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let next = next.clone();
        let mode = args.mode.clone();
        let (target, level) = (args.target, args.level);
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut latencies: Vec<u32> = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let packet = match &mode {
                    Mode::Unknown => connect_packet(
                        level,
                        &format!("c{n}"),
                        &format!("storm-{run_id}-{n}"),
                        "secret-1",
                    ),
                    Mode::Granted {
                        prefix,
                        count,
                        password,
                    } => {
                        let i = n % *count;
                        connect_packet(level, &format!("c{i}"), &format!("{prefix}{i}"), password)
                    }
                    Mode::Same { username, password } => {
                        connect_packet(level, "flapper", username, password)
                    }
                };
                let t = Instant::now();
                let key = match one(target, &packet, level).await {
                    Ok(code) => format!("0x{code:02x}"),
                    Err(e) => format!("error:{}", e.kind()),
                };
                latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *codes.entry(key).or_default() += 1;
            }
            (codes, latencies)
        }));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let (c, l) = t.await.expect("a storm task panicked");
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let total = latencies.len();
    println!(
        "connects: {total} in {elapsed:.1}s = {:.0}/s; latency p50 {} µs, p99 {} µs, max {} µs",
        total as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!("codes: {codes:?}");
}
