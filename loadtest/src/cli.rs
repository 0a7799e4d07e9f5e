//! The command line: one subcommand per scenario, plus `mqtt-storm` and
//! `tls-storm`.
//!
//! Goose normally parses the process's own arguments. It never sees ours:
//! [`crate::attack`] builds goose's configuration from these flags, and only
//! what follows `--` is handed to goose's parser, for goose options this
//! tool does not set itself (`-- --running-metrics 5 --request-log r.log`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// fleetgate-loadtest: storms against a fleetgate gateway, with goose's
/// reports and a verdict on every answer.
#[derive(Parser, Debug)]
#[command(name = "fleetgate-loadtest", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Devices register and poll at their Retry-After pace while an admin
    /// unlocks and grants in batches. Expected: 201, 202, 423, 429.
    PollingStorm(PollingStormArgs),
    /// Devices poll a locked registry. Expected: 423, 429.
    LockedStorm(LockedStormArgs),
    /// Granted devices log in over and over. Expected: 200.
    LoginStorm(LoginStormArgs),
    /// Devices poll with a new connection (a new TLS handshake on https://)
    /// for every request. Expected: 202, 423, 429.
    TlsReconnect(TlsReconnectArgs),
    /// MQTT CONNECT storm: fresh TCP connections, one CONNECT each, CONNACK
    /// latency and counts per return code.
    MqttStorm(MqttStormArgs),
    /// TLS new-connection storm: every poll opens a new TLS connection (as
    /// curl does), sends one request with `Connection: close` and reads the
    /// answer to EOF. Counts full and resumed handshakes apart.
    TlsStorm(TlsStormArgs),
}

/// Where the load goes: a given gateway, or one this process starts.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// The gateway's device API, `http://host:port` or `https://host:port`.
    /// Without it, an all-in-one `fleetgate` is started on loopback with the
    /// embedded store in a temporary directory, and killed at the end.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// The admin API (default: `--url`, whose `/api/*` the gateway forwards
    /// to its admin service).
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,

    /// The `admin` user's password on a given gateway (a started gateway
    /// gets a random one).
    #[arg(long, value_name = "PASSWORD")]
    pub admin_password: Option<String>,

    /// The `fleetgate` binary to start (default: the one next to this
    /// binary, from the same target directory).
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,

    /// One more flag for a started gateway; repeatable, e.g.
    /// `--gateway-arg=--workers=1 --gateway-arg=--rate-limit-per-user=off`.
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
}

/// Flags every HTTP scenario has.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Simulated devices (goose users), each with its own username.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub devices: u64,

    /// How long the load runs once every device has started (`60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Time over which the devices start, evenly.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ramp_up: Duration,

    /// Multiplies every wait a device takes from `Retry-After` (0.1 polls
    /// ten times as often; 0 polls back to back). For short smoke runs and
    /// for deliberate overload.
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub pace_scale: f64,

    /// Folder for goose's HTML and JSON reports, `summary.json` and a
    /// started gateway's log (default: `loadtest-reports/<scenario>-<run>`).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,

    /// The run's id, part of every username (`lt-<run>-<index>`); default:
    /// random. Reuse one to poll as the same devices again.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// Keep-alive connections the devices share: at most this many
    /// requests are in flight at once, and the client keeps at most this
    /// many connections open. A device is a username and a credential, not
    /// a socket: a gateway sees a fleet's polls arrive over many
    /// connections, and 100,000 sockets from one process (more than a
    /// 20,000 open-files limit allows) are not needed to model it. A
    /// device whose poll is due waits for a free connection; its latency
    /// is measured from when it has one.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Longest a device waits for one answer; past it the request counts
    /// as a transport error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// No once-a-second progress line.
    #[arg(long)]
    pub quiet: bool,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Options for goose itself, after `--` (those this tool sets are
    /// overridden): e.g. `-- --running-metrics 5 --request-log req.log`.
    #[arg(last = true, value_name = "GOOSE_OPTIONS")]
    pub goose_args: Vec<String>,
}

/// How `polling-storm`'s admin grants.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantMode {
    /// `POST /api/client-registry/requests/grant` with a prefix selector.
    Bulk,
    /// List, then one `POST .../{username}/grant` per request.
    Single,
}

#[derive(Args, Debug, Clone)]
pub struct PollingStormArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// How the admin grants: `bulk` (one `POST .../requests/grant` with a
    /// prefix selector per batch) or `single` (list the pending requests,
    /// then one `POST .../{username}/grant` each, as before bulk grants
    /// existed; the baseline).
    #[arg(long, value_enum, default_value_t = GrantMode::Bulk)]
    pub grant_mode: GrantMode,

    /// Pending requests granted per batch, 1 to 10000 (the bulk route's
    /// cap; `single` lists at most 1000 per batch).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub grant_batch: u64,

    /// Pause between two grant batches (none after a full bulk batch: more
    /// are waiting).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub grant_interval: Duration,

    /// `single`: grants in flight at once within a batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub grant_concurrency: u64,

    /// Run for the whole `--duration` even after every device has its 201
    /// (by default the run ends then).
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LockedStormArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LoginStormArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Pause between two logins of one device (not scaled by
    /// `--pace-scale`; 0 logs in back to back).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Registrations and grants in flight at once while setting up.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub setup_concurrency: u64,
}

#[derive(Args, Debug, Clone)]
pub struct TlsReconnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Let TLS resume sessions (tickets). By default every poll is a full
    /// handshake, the worst case for the gateway.
    #[arg(long)]
    pub tls_resumption: bool,
}

/// The CONNECT a storm sends.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttMode {
    /// Every CONNECT has a new username (`storm-<run>-<n>`).
    Unknown,
    /// Cycle through granted users `<prefix>0 … <prefix><count-1>`.
    Granted,
    /// One credential over and over (a flapping client).
    Same,
}

#[derive(Args, Debug, Clone)]
pub struct MqttStormArgs {
    /// The MQTT listener (`host:port`). Without it, a gateway is started
    /// with MQTT on a free loopback port.
    pub addr: Option<SocketAddr>,

    #[arg(long, value_enum, default_value = "unknown")]
    pub mode: MqttMode,

    /// `granted`: the username prefix.
    #[arg(long, default_value = "dev-")]
    pub prefix: String,

    /// `granted`: how many users to cycle through.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// `same`: the username.
    #[arg(long, default_value = "flapper")]
    pub username: String,

    /// The password every CONNECT carries.
    #[arg(long, default_value = "secret-1")]
    pub password: String,

    /// Connections in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,

    /// How long the storm runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,

    /// Most new connections per second, over all of `--concurrency`
    /// (default: as fast as the answers come).
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub level: u8,

    /// Longest one CONNECT → CONNACK exchange may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Return codes that are allowed, e.g. `0x05,0x87` (or `5`). Any other
    /// answer, or none, makes the run exit 1. Default: everything allowed.
    #[arg(long, value_delimiter = ',', value_parser = parse_code)]
    pub expect: Vec<u8>,

    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// No once-a-second progress line.
    #[arg(long)]
    pub quiet: bool,

    /// A started gateway's binary and extra flags.
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,

    /// One more flag for a started gateway; repeatable.
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
}

/// Whether `tls-storm` lets TLS resume sessions.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every handshake is a full one (the client keeps no session).
    Off,
    /// One in-memory session cache shared by every connection: after the
    /// first handshakes, connections resume with the server's TLS 1.3
    /// tickets.
    On,
}

#[derive(Args, Debug, Clone)]
pub struct TlsStormArgs {
    /// The TLS listener, `https://host:port`.
    #[arg(long, value_name = "URL", value_parser = parse_https_url)]
    pub url: reqwest::Url,

    /// The path every request is sent to.
    #[arg(long, default_value = crate::device::REGISTER_PATH, value_parser = parse_path)]
    pub path: String,

    /// Connections in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,

    /// How long the storm runs (`10s`, `1m`); connections in flight at the
    /// end are finished, none are started after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// `off`: every handshake is full; `on`: connections resume sessions
    /// from a cache they all share.
    #[arg(long, value_enum, default_value = "off")]
    pub resume: Resume,

    /// Usernames cycle over `<prefix>-0 … <prefix>-<devices-1>`; with 1,
    /// every request polls the same (pending) request.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub devices: u64,

    /// The username prefix.
    #[arg(long, default_value = "bench-device")]
    pub prefix: String,

    /// The password every request carries.
    #[arg(long, default_value = "s3cret-pass")]
    pub password: String,

    /// Verify the server's certificate against the PEM certificates in
    /// this file (default: any certificate is accepted, like
    /// `curl --insecure`). A self-signed server certificate must not be a
    /// CA (webpki refuses one as the server's): `openssl req -x509` makes
    /// one unless given `-addext basicConstraints=critical,CA:FALSE`.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,

    /// Do not verify the server's handshake signature (CertificateVerify,
    /// or the TLS 1.2 key exchange signature). The server signs all the
    /// same, so its work is unchanged; the client saves a P-256 verify per
    /// full handshake, about a fifth of its own CPU, and is less likely to
    /// be what limits the rate. A load tool's shortcut, not what curl
    /// does.
    #[arg(long)]
    pub skip_signature_check: bool,

    /// Longest one connection (connect, handshake, request, answer to EOF)
    /// may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Statuses that are allowed, e.g. `202` or `202,429`. Any other
    /// status, or an error, makes the run exit 1. Default: everything
    /// allowed.
    #[arg(long, value_delimiter = ',')]
    pub expect: Vec<u16>,

    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No once-a-second progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// `https://host[:port]`, nothing after the authority but `/`.
fn parse_https_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{e}"))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err("an https://host:port URL".to_owned());
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err("only https://host:port (the path is --path)".to_owned());
    }
    Ok(url)
}

/// An origin-form request target: `/` then visible ASCII, so it cannot
/// break the request line.
fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() <= 2048 && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_owned())
    } else {
        Err("a path starting with /, visible ASCII only".to_owned())
    }
}

/// `60s`, `1m30s`, `250ms`: humantime's syntax.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 60s, 2m, 250ms)"))
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err("a number from 0 to 1000".to_owned()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 10_000_000.0 => Ok(v),
        _ => Err("connections per second, above 0".to_owned()),
    }
}

/// Run ids become part of usernames: `[A-Za-z0-9]`, 1 to 16 characters.
fn parse_run_id(s: &str) -> Result<String, String> {
    if (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_owned())
    } else {
        Err("1 to 16 letters or digits".to_owned())
    }
}

/// A CONNACK return code, decimal or `0x` hex.
pub fn parse_code(s: &str) -> Result<u8, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a return code (0 to 255, or 0x00 to 0xff)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_flags_and_goose_options_are_kept_apart() {
        let cli = Cli::try_parse_from([
            "fleetgate-loadtest",
            "polling-storm",
            "--devices",
            "100000",
            "--duration",
            "60s",
            "--gateway-arg=--workers=1",
            "--",
            "--running-metrics",
            "5",
        ])
        .unwrap();
        let Command::PollingStorm(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.common.devices, 100_000);
        assert_eq!(a.common.connections, 256, "the default pool");
        assert_eq!(a.common.duration, Duration::from_secs(60));
        assert_eq!(a.common.target.gateway_args, ["--workers=1"]);
        assert_eq!(a.common.goose_args, ["--running-metrics", "5"]);
    }

    #[test]
    fn mqtt_storm_takes_the_old_tools_arguments() {
        let cli = Cli::try_parse_from([
            "fleetgate-loadtest",
            "mqtt-storm",
            "127.0.0.1:1883",
            "--mode",
            "granted",
            "--prefix",
            "bench-",
            "--count",
            "10000",
            "--password",
            "bench-secret-1",
            "--concurrency",
            "64",
            "--seconds",
            "10",
            "--rate",
            "500",
            "--expect",
            "0x05,0x87",
        ])
        .unwrap();
        let Command::MqttStorm(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.addr, Some("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(a.mode, MqttMode::Granted);
        assert_eq!((a.count, a.concurrency, a.seconds), (10_000, 64, 10));
        assert_eq!(a.rate, Some(500.0));
        assert_eq!(a.expect, [5, 0x87]);
    }

    #[test]
    fn tls_storm_defaults_poll_one_pending_request_without_resumption() {
        let cli =
            Cli::try_parse_from(["x", "tls-storm", "--url", "https://127.0.0.1:8443"]).unwrap();
        let Command::TlsStorm(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.url.port(), Some(8443));
        assert_eq!(a.path, "/api/client-registry/register");
        assert_eq!((a.concurrency, a.devices), (32, 1));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.resume, Resume::Off);
        let cli = Cli::try_parse_from([
            "x",
            "tls-storm",
            "--url",
            "https://localhost",
            "--resume",
            "on",
            "--expect",
            "202,429",
        ])
        .unwrap();
        let Command::TlsStorm(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.url.port_or_known_default(), Some(443));
        assert_eq!(a.resume, Resume::On);
        assert_eq!(a.expect, [202, 429]);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["x", "locked-storm", "--devices", "0"][..],
            &["x", "locked-storm", "--duration", "soon"],
            &["x", "locked-storm", "--pace-scale", "-1"],
            &["x", "locked-storm", "--run-id", "has-dash"],
            &["x", "mqtt-storm", "--rate", "0"],
            &["x", "mqtt-storm", "--expect", "0x1ff"],
            &["x", "tls-storm"],
            &["x", "tls-storm", "--url", "http://127.0.0.1:80"],
            &["x", "tls-storm", "--url", "https://127.0.0.1:1/api"],
            &["x", "tls-storm", "--url", "https://h:1", "--path", "/a b"],
            &[
                "x",
                "tls-storm",
                "--url",
                "https://h:1",
                "--path",
                "/a\r\nX: y",
            ],
            &["x", "tls-storm", "--url", "https://h:1", "--resume", "yes"],
            &[
                "x",
                "tls-storm",
                "--url",
                "https://h:1",
                "--concurrency",
                "0",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }
}
