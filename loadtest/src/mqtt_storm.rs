//! `mqtt-storm`: many concurrent clients, each opening a fresh TCP
//! connection, sending one CONNECT and waiting for the CONNACK. It reports
//! the rate, the count per return code, and an HDR histogram of CONNACK
//! latency. The same tool drives both the gateway and a Mosquitto baseline
//! in `scripts/bench-mqtt.sh`, which reads its first line
//! (`connects: N in Ss = R/s; ...`).
//!
//! ```text
//! fleetgate-loadtest mqtt-storm 127.0.0.1:1883 --mode unknown --concurrency 64 --seconds 10
//! fleetgate-loadtest mqtt-storm --mode unknown --seconds 5 --expect 0x05   # starts its own gateway
//! ```
//!
//! Modes:
//! - `unknown`: every CONNECT has a new username (`storm-<run>-<n>`).
//! - `granted --prefix P --count N --password W`: cycle through the granted
//!   users `P0 … P(N-1)`; the answer is the upstream broker's CONNACK, the
//!   first spliced packet. With a started gateway, those users are
//!   registered and granted over HTTP first.
//! - `same --username U --password W`: one credential over and over (a
//!   flapping client, which the per-username rate limit answers).
//!
//! `--rate R` caps new connections per second over all clients: connection
//! `n` starts no earlier than `n / R` seconds after the storm began, so the
//! offered load is steady, and `--concurrency` only bounds how many wait for
//! their CONNACK at once. Latency is measured from the start of the TCP
//! connect to the whole CONNACK; only exchanges that got a CONNACK are in
//! the histogram, the others are counted as `error:<why>`.
//!
//! It runs on one thread, so that on a 2-core machine the server under test
//! keeps the other core.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::admin::Admin;
use crate::cli::{MqttMode, MqttStormArgs};
use crate::device::{self, Connections};
use crate::mqtt_packet::{self, Connack};
use crate::summary::{self, Distribution};
use crate::target::{Gateway, GatewayOptions};
use crate::{Error, Verdict};

/// The credential each CONNECT of a storm carries.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `storm-<run>-<n>`, new every time.
    Unknown { run: u32, password: String },
    /// `<prefix><n mod count>`.
    Granted {
        prefix: String,
        count: u64,
        password: String,
    },
    /// The same one every time.
    Same { username: String, password: String },
}

impl Credentials {
    /// The CONNECT for connection number `n`.
    fn packet(&self, level: u8, n: u64) -> Vec<u8> {
        match self {
            Credentials::Unknown { run, password } => mqtt_packet::connect(
                level,
                &format!("c{n}"),
                &format!("storm-{run}-{n}"),
                password,
            ),
            Credentials::Granted {
                prefix,
                count,
                password,
            } => {
                let i = n % count;
                mqtt_packet::connect(level, &format!("c{i}"), &format!("{prefix}{i}"), password)
            }
            Credentials::Same { username, password } => {
                mqtt_packet::connect(level, "flapper", username, password)
            }
        }
    }
}

/// One storm's settings.
#[derive(Debug, Clone)]
pub struct Storm {
    pub target: SocketAddr,
    pub credentials: Credentials,
    pub level: u8,
    /// Exchanges in flight at once.
    pub concurrency: u64,
    pub duration: Duration,
    /// Most new connections per second, if capped.
    pub rate: Option<f64>,
    /// Longest one exchange may take.
    pub timeout: Duration,
    /// Print a line a second on stderr.
    pub progress: bool,
}

/// What a storm saw.
#[derive(Debug)]
pub struct StormResult {
    /// Exchanges attempted (answered or not).
    pub connects: u64,
    pub elapsed: Duration,
    /// `0x05` → n for CONNACKs; `error:<why>` → n for the others.
    pub codes: BTreeMap<String, u64>,
    /// CONNACK latency in microseconds.
    pub connack_us: Histogram<u64>,
}

/// Why an exchange got no CONNACK.
#[derive(Debug)]
enum ExchangeError {
    Io(std::io::Error),
    /// The server closed the connection before a whole CONNACK.
    Closed,
    /// The server sent something that is not a CONNACK.
    Invalid,
    /// No CONNACK within the timeout.
    Timeout,
}

impl ExchangeError {
    fn key(&self) -> String {
        match self {
            ExchangeError::Io(e) => format!("error:{}", e.kind()),
            ExchangeError::Closed => "error:closed".to_owned(),
            ExchangeError::Invalid => "error:not-a-connack".to_owned(),
            ExchangeError::Timeout => "error:timeout".to_owned(),
        }
    }
}

/// One CONNECT → CONNACK exchange on a fresh connection; the return code.
async fn exchange(target: SocketAddr, packet: &[u8]) -> Result<u8, ExchangeError> {
    let mut s = TcpStream::connect(target)
        .await
        .map_err(ExchangeError::Io)?;
    s.set_nodelay(true).map_err(ExchangeError::Io)?;
    s.write_all(packet).await.map_err(ExchangeError::Io)?;
    let mut buf = [0u8; 64];
    let mut filled = 0;
    loop {
        match mqtt_packet::check_connack(&buf[..filled]) {
            Connack::Complete(code) => return Ok(code),
            Connack::Invalid => return Err(ExchangeError::Invalid),
            Connack::Incomplete(_) if filled == buf.len() => return Err(ExchangeError::Invalid),
            Connack::Incomplete(_) => {}
        }
        let n = s
            .read(&mut buf[filled..])
            .await
            .map_err(ExchangeError::Io)?;
        if n == 0 {
            return Err(ExchangeError::Closed);
        }
        filled += n;
    }
}

/// Hands out connection numbers and, with a rate, their start times.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    /// Time between two connection starts, with `--rate`.
    interval: Option<Duration>,
    next: AtomicU64,
}

impl Schedule {
    /// The next connection's number and the instant it may start.
    fn take(&self) -> (u64, Instant) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let at = match self.interval {
            Some(i) => self.start + i.mul_f64(n as f64),
            None => Instant::now(),
        };
        (n, at)
    }
}

/// Runs the storm on the current tokio runtime.
pub async fn storm(cfg: Storm) -> StormResult {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let schedule = Arc::new(Schedule {
        start,
        interval: cfg.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        next: AtomicU64::new(0),
    });
    let done = Arc::new(AtomicU64::new(0));
    let progress = cfg
        .progress
        .then(|| crate::summary::spawn_progress(done.clone(), start, "connects"));
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let (schedule, done, cfg) = (schedule.clone(), done.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut hist = summary::new_histogram();
            loop {
                let (n, at) = schedule.take();
                if at >= deadline || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let packet = cfg.credentials.packet(cfg.level, n);
                let t = Instant::now();
                let key =
                    match tokio::time::timeout(cfg.timeout, exchange(cfg.target, &packet)).await {
                        Ok(Ok(code)) => {
                            summary::record_us(&mut hist, t.elapsed());
                            format!("0x{code:02x}")
                        }
                        Ok(Err(e)) => e.key(),
                        Err(_) => ExchangeError::Timeout.key(),
                    };
                *codes.entry(key).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            (codes, hist)
        }));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut connack_us = summary::new_histogram();
    for t in tasks {
        let (c, h) = t.await.expect("a storm task panicked");
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
        connack_us.add(&h).expect("histograms share their bounds");
    }
    if let Some(p) = progress {
        p.abort();
    }
    StormResult {
        connects: codes.values().sum(),
        elapsed: start.elapsed(),
        codes,
        connack_us,
    }
}

/// The JSON form of a storm (`--summary FILE`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MqttSummary {
    pub scenario: String,
    /// The MQTT listener.
    pub target: String,
    pub self_started: bool,
    /// `unknown`, `granted` or `same`.
    pub mode: String,
    pub level: u8,
    pub concurrency: u64,
    /// The cap on new connections per second, if any.
    pub rate_limit: Option<f64>,
    /// Exchanges attempted.
    pub connects: u64,
    pub elapsed_secs: f64,
    pub per_second: f64,
    /// `"0x05"` → n, `"error:<why>"` → n.
    pub codes: BTreeMap<String, u64>,
    pub connack_latency_us: Distribution,
    /// The allowed codes (`--expect`); empty: everything allowed.
    pub expected: Vec<String>,
    /// Exchanges outside `expected` (errors included), when it is set.
    pub unexpected: u64,
}

/// The lines `scripts/bench-mqtt.sh` and people read.
pub fn report_lines(r: &StormResult) -> Vec<String> {
    let secs = r.elapsed.as_secs_f64();
    let d = Distribution::of(&r.connack_us);
    vec![
        format!(
            "connects: {} in {secs:.1}s = {:.0}/s; latency p50 {} µs, p99 {} µs, max {} µs",
            r.connects,
            r.connects as f64 / secs.max(1e-9),
            d.p50,
            d.p99,
            d.max
        ),
        format!("codes: {:?}", r.codes),
        format!("connack latency: {}", d.line("µs")),
    ]
}

/// Answers outside `expected` (every one, errors included, counts).
pub fn unexpected(codes: &BTreeMap<String, u64>, expected: &[u8]) -> u64 {
    if expected.is_empty() {
        return 0;
    }
    let allowed: Vec<String> = expected.iter().map(|c| format!("0x{c:02x}")).collect();
    codes
        .iter()
        .filter(|(k, _)| !allowed.contains(k))
        .map(|(_, n)| n)
        .sum()
}

/// `mqtt-storm`: starts a gateway if no address was given, runs the storm
/// on a single-threaded runtime, prints and (optionally) writes the result.
pub fn run(args: &MqttStormArgs) -> Result<Verdict, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let gateway = match args.addr {
        Some(_) => None,
        None => {
            let g = Gateway::start(&GatewayOptions {
                bin: args.gateway_bin.clone(),
                extra_args: args.gateway_args.clone(),
                mqtt: true,
                https: false,
            })?;
            eprintln!(
                "mqtt-storm: started fleetgate (pid {}), MQTT at {}",
                g.pid(),
                g.mqtt.map(|a| a.to_string()).unwrap_or_default()
            );
            Some(g)
        }
    };
    let target = match (args.addr, &gateway) {
        (Some(a), _) => a,
        (None, Some(g)) => g
            .mqtt
            .ok_or_else(|| Error::Setup("the started gateway has no MQTT listener".into()))?,
        (None, None) => unreachable!("a gateway is started when no address is given"),
    };
    let credentials = match args.mode {
        MqttMode::Unknown => Credentials::Unknown {
            run: std::process::id(),
            password: args.password.clone(),
        },
        MqttMode::Granted => Credentials::Granted {
            prefix: args.prefix.clone(),
            count: args.count,
            password: args.password.clone(),
        },
        MqttMode::Same => Credentials::Same {
            username: args.username.clone(),
            password: args.password.clone(),
        },
    };
    if let (MqttMode::Granted, Some(g)) = (args.mode, &gateway) {
        rt.block_on(provision_granted(g, args))?;
    }
    let result = rt.block_on(storm(Storm {
        target,
        credentials,
        level: args.level,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.seconds),
        rate: args.rate,
        timeout: args.timeout,
        progress: !args.quiet,
    }));
    for line in report_lines(&result) {
        println!("{line}");
    }
    let unexpected = unexpected(&result.codes, &args.expect);
    if !args.expect.is_empty() {
        println!("unexpected: {unexpected}");
    }
    if let Some(path) = &args.summary {
        let secs = result.elapsed.as_secs_f64();
        let s = MqttSummary {
            scenario: "mqtt-storm".to_owned(),
            target: target.to_string(),
            self_started: gateway.is_some(),
            mode: format!("{:?}", args.mode).to_lowercase(),
            level: args.level,
            concurrency: args.concurrency,
            rate_limit: args.rate,
            connects: result.connects,
            elapsed_secs: (secs * 100.0).round() / 100.0,
            per_second: (result.connects as f64 / secs.max(1e-9)).round(),
            codes: result.codes.clone(),
            connack_latency_us: Distribution::of(&result.connack_us),
            expected: args.expect.iter().map(|c| format!("0x{c:02x}")).collect(),
            unexpected,
        };
        summary::write_json(path, &s).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    drop(gateway);
    Ok(if unexpected == 0 {
        Verdict::Clean
    } else {
        Verdict::Unexpected
    })
}

/// Registers and grants `<prefix>0 … <prefix><count-1>` on a started
/// gateway, so `--mode granted` has users to connect as.
async fn provision_granted(g: &Gateway, args: &MqttStormArgs) -> Result<(), Error> {
    let client = device::device_client(Connections::KeepAlive, usize::MAX, args.timeout)?;
    let http = format!("http://{}", g.http);
    let admin_url = g
        .admin
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| http.clone());
    let admin = Admin::login(client, &admin_url, Some(&g.admin_password)).await?;
    let usernames: Vec<String> = (0..args.count)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    eprintln!(
        "mqtt-storm: registering and granting {} users",
        usernames.len()
    );
    let usable = admin
        .provision(&http, &usernames, &args.password, 32)
        .await?;
    if usable < args.count {
        return Err(Error::Setup(format!(
            "only {usable} of {} users could be registered and granted",
            args.count
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_connections_by_the_rate() {
        let s = Schedule {
            start: Instant::now(),
            interval: Some(Duration::from_millis(10)),
            next: AtomicU64::new(0),
        };
        let (n0, t0) = s.take();
        let (n1, t1) = s.take();
        let (n2, t2) = s.take();
        assert_eq!((n0, n1, n2), (0, 1, 2));
        assert_eq!(t1 - t0, Duration::from_millis(10));
        assert_eq!(t2 - t0, Duration::from_millis(20));
    }

    #[test]
    fn unexpected_counts_codes_and_errors_outside_the_set() {
        let codes = BTreeMap::from([
            ("0x05".to_owned(), 10),
            ("0x03".to_owned(), 2),
            ("error:closed".to_owned(), 1),
        ]);
        assert_eq!(unexpected(&codes, &[5]), 3);
        assert_eq!(unexpected(&codes, &[3, 5]), 1);
        assert_eq!(
            unexpected(&codes, &[]),
            0,
            "no --expect: everything allowed"
        );
    }

    #[test]
    fn the_first_line_keeps_the_format_the_bench_script_parses() {
        let mut h = summary::new_histogram();
        summary::record_us(&mut h, Duration::from_micros(150));
        let r = StormResult {
            connects: 42,
            elapsed: Duration::from_secs(2),
            codes: BTreeMap::from([("0x05".to_owned(), 42)]),
            connack_us: h,
        };
        let lines = report_lines(&r);
        assert!(
            lines[0].starts_with("connects: 42 in 2.0s = 21/s; latency p50 "),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], r#"codes: {"0x05": 42}"#);
    }

    /// A fake broker that answers every CONNECT with CONNACK 5, over real
    /// loopback sockets: the shell around the codec works end to end.
    #[test]
    fn storms_a_fake_broker_at_the_given_rate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let target = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 256];
                        if s.read(&mut buf).await.unwrap_or(0) > 0 {
                            let _ = s.write_all(&[0x20, 0x02, 0x00, 0x05]).await;
                        }
                    });
                }
            });
            let r = storm(Storm {
                target,
                credentials: Credentials::Unknown {
                    run: 1,
                    password: "secret-1".into(),
                },
                level: 4,
                concurrency: 4,
                duration: Duration::from_millis(500),
                rate: Some(100.0),
                timeout: Duration::from_secs(2),
                progress: false,
            })
            .await;
            // 100/s for 0.5 s: about 50 connections, never many more.
            assert!((30..=55).contains(&r.connects), "{r:?}");
            assert_eq!(r.codes.keys().collect::<Vec<_>>(), ["0x05"]);
            assert_eq!(r.connack_us.len(), r.connects);
        });
    }
}
