//! Where the load goes: a gateway given by URL, or an all-in-one `fleetgate`
//! this process starts on free loopback ports and kills when it is done.
//!
//! A started gateway is the `fleetgate` binary from the same target
//! directory as this one (`target/release/` for `cargo run --release`), run
//! with the embedded store in a temporary directory, a random admin
//! password, metrics off and the per-IP rate limit off (every simulated
//! device shares 127.0.0.1, which a real fleet does not). The addresses it
//! bound are read back from its log (`device API listening addr=...`), the
//! same lines an operator reads. It is killed by its PID, never by name.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};

use crate::cli::TargetArgs;

/// How long a started gateway may take to log its listening addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why there is nothing to send load to.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--url must start with http:// or https://, not {0:?}")]
    BadUrl(String),
    #[error(
        "no fleetgate binary at {0}; build it (`cargo build --release -p fleetgate`), \
         or pass --gateway-bin, or give --url"
    )]
    BinaryMissing(PathBuf),
    #[error("building the fleetgate binary with cargo failed")]
    Build,
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("the gateway exited ({status}) before it was listening; its log ends with:\n{tail}")]
    Exited {
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error(
        "the gateway did not log {needle:?} within {START_TIMEOUT:?}; its log ends with:\n{tail}"
    )]
    NotListening { needle: String, tail: String },
    #[error("gateway temp dir: {0}")]
    Io(#[from] std::io::Error),
}

/// What a started gateway should have besides the device API.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// The binary (default: `fleetgate` next to the current executable).
    pub bin: Option<PathBuf>,
    /// Extra flags; a flag given here replaces the default for it.
    pub extra_args: Vec<String>,
    /// Open the MQTT listener (on a free loopback port).
    pub mqtt: bool,
    /// Open the HTTPS listener (on a free loopback port, with the
    /// certificate the gateway generates into its data dir).
    pub https: bool,
}

/// A running all-in-one `fleetgate` that this process started.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// The device API.
    pub http: SocketAddr,
    /// The admin API, when the gateway has its own admin listener.
    pub admin: Option<SocketAddr>,
    /// The MQTT listener, when asked for.
    pub mqtt: Option<SocketAddr>,
    /// The HTTPS listener, when asked for.
    pub https: Option<SocketAddr>,
    /// The random password of the `admin` user.
    pub admin_password: String,
    /// Holds `data/` (the embedded store) and `gateway.log`; removed on drop.
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway and waits until it has logged its listening
    /// addresses.
    pub fn start(opts: &GatewayOptions) -> Result<Gateway, TargetError> {
        let bin = match &opts.bin {
            Some(bin) => bin.clone(),
            None => default_binary()?,
        };
        if !bin.exists() {
            return Err(TargetError::BinaryMissing(bin));
        }
        let dir = tempfile::Builder::new()
            .prefix("fleetgate-loadtest-")
            .tempdir()?;
        let data = dir.path().join("data");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path)?;
        let admin_password = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);

        let data_arg = data.display().to_string();
        let mqtt_listen = if opts.mqtt { "127.0.0.1:0" } else { "off" };
        let https_listen = if opts.https { "127.0.0.1:0" } else { "off" };
        // Every listener is on a free loopback port or off: never the
        // defaults (0.0.0.0:8443, ...), which parallel runs would share.
        let defaults: [(&str, &str); 9] = [
            ("--http-listen", "127.0.0.1:0"),
            ("--https-listen", https_listen),
            ("--admin-listen", "127.0.0.1:0"),
            ("--mqtt-listen", mqtt_listen),
            ("--mqtts-listen", "off"),
            ("--metrics-listen", "off"),
            ("--data-dir", &data_arg),
            ("--admin-password", &admin_password),
            ("--rate-limit-per-ip", "off"),
        ];
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in defaults {
            if !has_flag(&opts.extra_args, flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args.extend(opts.extra_args.iter().cloned());

        let child = Command::new(&bin)
            .args(&args)
            // The addresses are read from INFO lines, whatever the caller's
            // RUST_LOG says.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                bin: bin.clone(),
                source,
            })?;
        let mut gateway = Gateway {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            mqtt: None,
            https: None,
            admin_password,
            dir,
        };
        gateway.http = gateway.wait_for_addr("device API listening")?;
        // The admin listener is bound (and logged) before the device API.
        gateway.admin = logged_addr(&gateway.read_log(), "admin API listening");
        if opts.mqtt {
            gateway.mqtt = Some(gateway.wait_for_addr("MQTT listening")?);
        }
        if opts.https && !has_flag(&opts.extra_args, "--https-listen") {
            gateway.https = Some(gateway.wait_for_addr("HTTPS listening")?);
        }
        Ok(gateway)
    }

    /// The gateway's log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn tail(&self) -> String {
        let log = self.read_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls the log until a line containing `needle` carries `addr=`.
    fn wait_for_addr(&mut self, needle: &str) -> Result<SocketAddr, TargetError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = logged_addr(&self.read_log(), needle) {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TargetError::Exited {
                    status,
                    tail: self.tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(TargetError::NotListening {
                    needle: needle.to_owned(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Copies the gateway's log to `path` (for the report folder).
    pub fn copy_log_to(&self, path: &Path) -> std::io::Result<()> {
        std::fs::copy(self.log_path(), path).map(|_| ())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGKILL to this child's PID, then reap it. Nothing else is killed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the first line of `log` that contains `needle`, from its
/// `addr=` field.
pub fn logged_addr(log: &str, needle: &str) -> Option<SocketAddr> {
    log.lines()
        .find(|l| l.contains(needle))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?
        .parse()
        .ok()
}

/// Whether `args` sets `flag`, as `--flag value` or `--flag=value`.
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| {
        a == flag
            || a.strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// `fleetgate` next to the running binary. Under `cargo run` (which sets
/// `CARGO`), a missing one is built first, in the same profile and target
/// directory.
fn default_binary() -> Result<PathBuf, TargetError> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| TargetError::BinaryMissing(exe.clone()))?;
    let bin = dir.join(format!("fleetgate{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        return Ok(bin);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Err(TargetError::BinaryMissing(bin));
    };
    eprintln!("fleetgate-loadtest: no {}; building it", bin.display());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "fleetgate", "--bin", "fleetgate"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    if ok && bin.exists() {
        Ok(bin)
    } else {
        Err(TargetError::Build)
    }
}

/// The resolved target of an HTTP scenario.
#[derive(Debug)]
pub struct Target {
    /// The device API, without a trailing slash.
    pub url: String,
    /// The admin API, without a trailing slash.
    pub admin_url: String,
    /// The admin password, when known.
    pub admin_password: Option<String>,
    /// The gateway this process started, if it did.
    pub gateway: Option<Gateway>,
}

impl Target {
    /// The given `--url`, or a gateway started now. With `https`, a started
    /// gateway's HTTPS listener is the target.
    pub fn resolve(args: &TargetArgs, mqtt: bool, https: bool) -> Result<Target, TargetError> {
        match &args.url {
            Some(url) => {
                let url = check_url(url)?;
                let admin_url = match &args.admin_url {
                    Some(a) => check_url(a)?,
                    None => url.clone(),
                };
                Ok(Target {
                    url,
                    admin_url,
                    admin_password: args.admin_password.clone(),
                    gateway: None,
                })
            }
            None => {
                let gateway = Gateway::start(&GatewayOptions {
                    bin: args.gateway_bin.clone(),
                    extra_args: args.gateway_args.clone(),
                    mqtt,
                    https,
                })?;
                let url = match gateway.https {
                    Some(a) => format!("https://{a}"),
                    None => format!("http://{}", gateway.http),
                };
                let admin_url = match gateway.admin {
                    Some(a) => format!("http://{a}"),
                    None => url.clone(),
                };
                Ok(Target {
                    url,
                    admin_url,
                    admin_password: Some(gateway.admin_password.clone()),
                    gateway: Some(gateway),
                })
            }
        }
    }
}

fn check_url(url: &str) -> Result<String, TargetError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(TargetError::BadUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bound_address_from_the_log_line() {
        let log = "2026-11-21T19:55:00.331689Z  INFO fleetgate: admin API listening addr=127.0.0.1:8081\n\
                   2026-11-21T19:55:00.331752Z  INFO fleetgate: device API listening addr=127.0.0.1:40123 workers=2\n";
        assert_eq!(
            logged_addr(log, "device API listening"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            logged_addr(log, "admin API listening"),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(logged_addr(log, "MQTT listening"), None);
    }

    #[test]
    fn a_flag_given_by_the_caller_replaces_the_default() {
        let args = vec![
            "--workers=1".to_owned(),
            "--data-dir".to_owned(),
            "/x".to_owned(),
        ];
        assert!(has_flag(&args, "--workers"));
        assert!(has_flag(&args, "--data-dir"));
        assert!(!has_flag(&args, "--work"));
        assert!(!has_flag(&args, "--http-listen"));
    }

    #[test]
    fn a_gateway_that_cannot_start_is_an_error_with_its_log() {
        let missing = Gateway::start(&GatewayOptions {
            bin: Some("/nonexistent/fleetgate".into()),
            ..GatewayOptions::default()
        });
        assert!(matches!(missing, Err(TargetError::BinaryMissing(_))));
        // `false` exits at once without listening.
        let exited = Gateway::start(&GatewayOptions {
            bin: Some("/bin/false".into()),
            ..GatewayOptions::default()
        });
        assert!(
            matches!(exited, Err(TargetError::Exited { .. })),
            "{exited:?}"
        );
    }

    #[test]
    fn urls_need_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(
            check_url("https://127.0.0.1:8443/").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert!(matches!(
            check_url("127.0.0.1:8080"),
            Err(TargetError::BadUrl(_))
        ));
    }
}
