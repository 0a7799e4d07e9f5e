//! The goose harness every HTTP scenario runs on: the shared [`Devices`]
//! state, goose's configuration, the stop signal, the progress line, and the
//! end of a run (summary, reports, verdict).
//!
//! # Who decides when a run ends
//!
//! Goose waits for every user's transaction to return before it stops, and
//! a device may be sleeping out a `Retry-After` of two minutes inside its
//! transaction. So goose gets no `--run-time`: a supervisor task here owns
//! the clock. At the deadline (`--ramp-up` + `--duration` after the start),
//! when every device of `polling-storm` has its 201, or when goose's
//! killswitch fires (Ctrl-C), it flips the stop signal, which wakes every
//! sleeping device at once, and then triggers goose's killswitch so goose
//! shuts its users down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::prelude::*;
use hdrhistogram::Histogram;
use rand::distributions::{Alphanumeric, DistString};
use tokio::sync::watch;

use crate::cli::CommonArgs;
use crate::device::{self, Connections};
use crate::outcome::{self, StatusCounts};
use crate::summary::{self, Distribution, RunSummary};
use crate::target::Target;
use crate::{Error, Verdict};

/// What every simulated device of a run shares.
#[derive(Debug)]
pub struct Devices {
    /// Part of every username (`lt-<run>-<index>`).
    pub run_id: String,
    /// The password every device of this run uses.
    pub password: String,
    /// How many devices the run simulates.
    pub count: u64,
    /// The client every device sends through (see [`crate::device`]).
    pub client: reqwest::Client,
    /// One permit per connection of `--connections`: a device holds one
    /// from sending its request until it has read the whole answer, so at
    /// most that many requests are in flight and the client's pool never
    /// needs more connections than that (it opens one whenever no idle
    /// connection is free). Without it 100,000 devices starting within the
    /// ramp-up opened a connection each and ran out of file descriptors.
    pub connections: tokio::sync::Semaphore,
    /// Send `Connection: close`, so the gateway closes each connection
    /// after its answer (`tls-reconnect`).
    pub connection_close: bool,
    /// Multiplies every `Retry-After` wait.
    pub pace_scale: f64,
    /// The statuses this scenario allows.
    pub expected: &'static [u16],
    /// Every answer, by status.
    pub statuses: StatusCounts,
    /// Per-request latency (µs) as the device saw it, body included.
    pub latency: Mutex<Histogram<u64>>,
    /// `polling-storm`: first poll → 201, per device (ms).
    pub time_to_201: Mutex<Histogram<u64>>,
    /// Devices that have collected their 201.
    pub collected: AtomicU64,
    /// Devices goose has started.
    pub started: AtomicU64,
    /// When the shared state was made, just before the load starts.
    pub created: Instant,
    /// From `created` to the 201 of the last device (set once, by it).
    pub fleet_collected: Mutex<Option<Duration>>,
    /// Flips to true once when the run ends; every sleeping device wakes.
    stop: watch::Receiver<bool>,
}

impl Devices {
    /// Shared state for `count` devices; the returned sender ends the run.
    pub fn new(
        run_id: &str,
        count: u64,
        connections: Connections,
        common: &CommonArgs,
        expected: &'static [u16],
    ) -> Result<(Arc<Devices>, watch::Sender<bool>), Error> {
        let (stop_tx, stop) = watch::channel(false);
        let devices = Devices {
            run_id: run_id.to_owned(),
            password: device::password(run_id),
            count,
            client: device::device_client(
                connections,
                common.connections as usize,
                common.timeout,
            )?,
            connections: tokio::sync::Semaphore::new(common.connections as usize),
            connection_close: matches!(connections, Connections::NewPerRequest { .. }),
            pace_scale: common.pace_scale,
            expected,
            statuses: StatusCounts::default(),
            latency: Mutex::new(summary::new_histogram()),
            time_to_201: Mutex::new(summary::new_histogram()),
            collected: AtomicU64::new(0),
            started: AtomicU64::new(0),
            created: Instant::now(),
            fleet_collected: Mutex::new(None),
            stop,
        };
        Ok((Arc::new(devices), stop_tx))
    }

    /// Whether the run has ended.
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// A receiver of the stop signal, for tasks beside the devices.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Sleeps `d`, or less if the run ends first. True if the run goes on.
    pub async fn pause(&self, d: Duration) -> bool {
        if !d.is_zero() {
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        !self.is_stopped()
    }

    /// What a device with nothing left to do does in its transaction: waits
    /// for the end of the run (in slices, so goose's own stop is seen), and
    /// once the run has ended, returns after a short nap so that goose's
    /// transaction loop does not spin until it tells the user to exit.
    pub async fn idle(&self) {
        if self.is_stopped() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            self.pause(Duration::from_secs(5)).await;
        }
    }

    /// Counts one request's latency.
    pub fn record_latency(&self, d: Duration) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        summary::record_us(&mut h, d);
    }

    /// Counts one device's first poll → 201.
    pub fn record_collected(&self, d: Duration) {
        {
            let mut h = self.time_to_201.lock().unwrap_or_else(|p| p.into_inner());
            summary::record_ms(&mut h, d);
        }
        if self.collected.fetch_add(1, Ordering::Relaxed) + 1 == self.count {
            *self
                .fleet_collected
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(self.created.elapsed());
        }
    }

    /// Answers outside the expected set so far (transport errors included).
    pub fn unexpected(&self) -> u64 {
        outcome::unexpected(
            &self.statuses.snapshot(),
            self.statuses.transport_errors(),
            self.expected,
        )
    }
}

/// One run of an HTTP scenario: its id, its folder and its target.
#[derive(Debug)]
pub struct Run {
    /// `polling-storm`, ...
    pub scenario: &'static str,
    pub run_id: String,
    /// Where goose's reports and `summary.json` go.
    pub report_dir: PathBuf,
    pub target: Target,
    pub common: CommonArgs,
}

impl Run {
    /// Picks the run id and report folder, and resolves the target
    /// (starting a gateway when no `--url` was given; with `https`, the
    /// started gateway is polled on its HTTPS listener).
    pub fn prepare(scenario: &'static str, common: &CommonArgs, https: bool) -> Result<Run, Error> {
        let run_id = common.run_id.clone().unwrap_or_else(|| {
            Alphanumeric
                .sample_string(&mut rand::thread_rng(), 6)
                .to_lowercase()
        });
        let report_dir = common.report_dir.clone().unwrap_or_else(|| {
            PathBuf::from("loadtest-reports").join(format!("{scenario}-{run_id}"))
        });
        std::fs::create_dir_all(&report_dir).map_err(|source| Error::Io {
            path: report_dir.clone(),
            source,
        })?;
        let target = Target::resolve(&common.target, false, https)?;
        match &target.gateway {
            Some(g) => eprintln!(
                "{scenario}: started fleetgate (pid {}) at {} (admin {})",
                g.pid(),
                target.url,
                target.admin_url
            ),
            None => eprintln!("{scenario}: target {}", target.url),
        }
        Ok(Run {
            scenario,
            run_id,
            report_dir,
            target,
            common: common.clone(),
        })
    }

    /// A client for the admin side: keep-alive, certificates unchecked.
    pub fn admin_client(&self) -> Result<reqwest::Client, Error> {
        Ok(device::device_client(
            Connections::KeepAlive,
            usize::MAX,
            self.common.timeout,
        )?)
    }

    /// Goose's reports in the run's folder.
    fn goose_reports(&self) -> Vec<PathBuf> {
        vec![
            self.report_dir.join("goose-report.html"),
            self.report_dir.join("goose-report.json"),
        ]
    }

    /// Runs `scenario` with goose until the deadline, the stop condition
    /// (`end_when_all_collected`) or Ctrl-C.
    pub async fn attack(
        &self,
        devices: &Arc<Devices>,
        stop_tx: watch::Sender<bool>,
        scenario: Scenario,
        end_when_all_collected: bool,
    ) -> Result<Ended, Error> {
        let config = goose_configuration(
            &self.common,
            &self.target.url,
            devices.count,
            &self.goose_reports(),
        )?;
        let attack = GooseAttack::initialize_with_config(config)?
            // Goose builds one shared client here; every device replaces it
            // with `Devices::client` when it starts.
            .set_client_builder_without_cookies(
                goose::client::GooseClientBuilder::new().without_cookies(),
            )?
            .register_scenario(scenario);

        goose::reset_killswitch();
        let started = Instant::now();
        let deadline = started + self.common.ramp_up + self.common.duration;
        let reason: Arc<OnceLock<&'static str>> = Arc::new(OnceLock::new());
        let supervisor = tokio::spawn(supervise(
            devices.clone(),
            stop_tx,
            deadline,
            end_when_all_collected,
            reason.clone(),
        ));
        let progress =
            (!self.common.quiet).then(|| tokio::spawn(progress(devices.clone(), started)));

        let result = attack.execute().await;
        supervisor.abort();
        if let Some(p) = progress {
            p.abort();
        }
        result?;
        Ok(Ended {
            elapsed: started.elapsed(),
            ended_by: reason.get().copied().unwrap_or("goose"),
        })
    }

    /// The summary of the devices' side of the run.
    pub fn summary(&self, devices: &Devices, ended: &Ended) -> RunSummary {
        let counts = devices.statuses.snapshot();
        let errors = devices.statuses.transport_errors();
        let detail = devices.statuses.error_detail();
        let latency = devices.latency.lock().unwrap_or_else(|p| p.into_inner());
        RunSummary {
            scenario: self.scenario.to_owned(),
            run_id: self.run_id.clone(),
            target: self.target.url.clone(),
            self_started: self.target.gateway.is_some(),
            devices: devices.count,
            elapsed_secs: (ended.elapsed.as_secs_f64() * 100.0).round() / 100.0,
            ended_by: ended.ended_by.to_owned(),
            requests: devices.statuses.total(),
            statuses: summary::string_keys(&counts),
            transport_errors: errors,
            transport_error_kinds: detail.kinds,
            first_transport_error: detail.first,
            expected: devices.expected.to_vec(),
            unexpected: outcome::unexpected(&counts, errors, devices.expected),
            latency_us: Distribution::of(&latency),
            collect: None,
            admin: None,
            files: Vec::new(),
        }
    }

    /// Writes `summary.json` (and the gateway's log), prints the result,
    /// and returns the verdict.
    pub fn finish(&self, mut summary: RunSummary) -> Result<Verdict, Error> {
        let mut files: Vec<PathBuf> = self
            .goose_reports()
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        if let Some(g) = &self.target.gateway {
            let log = self.report_dir.join("gateway.log");
            if g.copy_log_to(&log).is_ok() {
                files.push(log);
            }
        }
        let path = self.report_dir.join("summary.json");
        files.push(path.clone());
        summary.files = files.iter().map(|p| p.display().to_string()).collect();
        summary::write_json(&path, &summary).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        print_summary(&summary);
        Ok(if summary.unexpected == 0 {
            Verdict::Clean
        } else {
            Verdict::Unexpected
        })
    }
}

/// How a goose run ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub elapsed: Duration,
    /// `duration`, `all-collected`, `canceled`, or `goose` (goose stopped by
    /// itself, e.g. `--iterations` given after `--`).
    pub ended_by: &'static str,
}

/// Goose's configuration: anything after `--` first, then what this tool
/// must control (host, users, ramp, no telnet controller, the reports).
pub fn goose_configuration(
    common: &CommonArgs,
    host: &str,
    users: u64,
    reports: &[PathBuf],
) -> Result<GooseConfiguration, Error> {
    let mut config = if common.goose_args.is_empty() {
        GooseConfiguration::default()
    } else {
        GooseConfiguration::parse_args_default(&common.goose_args)?
    };
    config.host = Some(host.to_owned());
    config.users = Some(users as usize);
    // Users per second, so that all have started after --ramp-up.
    let ramp = common.ramp_up.as_secs_f64();
    let rate = if ramp > 0.0 {
        (users as f64 / ramp).max(0.01)
    } else {
        users as f64 * 1000.0
    };
    config.increase_rate = Some(format!("{rate:.3}"));
    config.increase_time = None;
    // The supervisor owns the clock (see the module docs).
    config.run_time = None;
    // No controller listening on fixed ports: parallel runs must not clash.
    config.no_telnet = true;
    config.websocket = false;
    // Count everything, ramp-up included: the storm starts with the ramp.
    config.no_reset_metrics = true;
    // A transaction includes the device's Retry-After sleep, so goose's
    // transaction and scenario times would measure the pacing, not the
    // gateway. Request metrics are kept.
    config.no_transaction_metrics = true;
    config.no_scenario_metrics = true;
    config.report_file = reports.iter().map(|p| p.display().to_string()).collect();
    // Goose logs each user's start at info level: 100,000 lines. Warnings
    // only, unless -v was asked for after `--`.
    if config.verbose == 0 {
        config.quiet = config.quiet.max(1);
    }
    Ok(config)
}

/// Ends the run at the deadline, when every device has collected (if
/// asked), or on Ctrl-C (goose's killswitch).
async fn supervise(
    devices: Arc<Devices>,
    stop_tx: watch::Sender<bool>,
    deadline: Instant,
    end_when_all_collected: bool,
    reason: Arc<OnceLock<&'static str>>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let why = if goose::is_killswitch_triggered() {
            Some("canceled")
        } else if end_when_all_collected
            && devices.collected.load(Ordering::Relaxed) >= devices.count
        {
            Some("all-collected")
        } else if Instant::now() >= deadline {
            Some("duration")
        } else {
            None
        };
        if let Some(why) = why {
            let _ = reason.set(why);
            let _ = stop_tx.send(true);
            goose::trigger_killswitch(why);
            return;
        }
    }
}

/// Once a second, one line on stderr: started devices, requests and their
/// rate, statuses, and (when devices collect) how many have their 201.
async fn progress(devices: Arc<Devices>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let counts = devices.statuses.snapshot();
        let errors = devices.statuses.transport_errors();
        let total = devices.statuses.total();
        let collected = devices.collected.load(Ordering::Relaxed);
        let collected = if collected > 0 {
            format!(" | collected {collected}/{}", devices.count)
        } else {
            String::new()
        };
        eprintln!(
            "[{:>6.1}s] devices {}/{} | {} req, {}/s | {} | unexpected {}{collected}",
            started.elapsed().as_secs_f64(),
            devices.started.load(Ordering::Relaxed),
            devices.count,
            total,
            total - last,
            outcome::format_counts(&counts, errors),
            outcome::unexpected(&counts, errors, devices.expected),
        );
        last = total;
    }
}

/// The human form of a summary, on stdout.
pub fn print_summary(s: &RunSummary) {
    let rate = s.requests as f64 / s.elapsed_secs.max(0.001);
    println!(
        "{}: {} devices against {}, {:.1} s, ended by {}",
        s.scenario, s.devices, s.target, s.elapsed_secs, s.ended_by
    );
    println!(
        "requests: {} ({rate:.0}/s); statuses: {}",
        s.requests,
        outcome::format_counts(&s.status_counts(), s.transport_errors)
    );
    if let Some(first) = &s.first_transport_error {
        println!(
            "transport errors: {} (first: {first})",
            crate::admin::format_statuses(&s.transport_error_kinds)
        );
    }
    let expected: Vec<String> = s.expected.iter().map(u16::to_string).collect();
    println!(
        "unexpected: {} (expected {})",
        s.unexpected,
        expected.join(" ")
    );
    println!("latency: {}", s.latency_us.line("µs"));
    if let Some(c) = &s.collect {
        println!(
            "time from first poll to 201: {} (collected {}, not collected {})",
            c.time_to_201_ms.line("ms"),
            c.collected,
            c.not_collected
        );
        match c.fleet_collected_secs {
            Some(secs) => println!("whole fleet collected its 201 after {secs:.1} s"),
            None => println!(
                "whole fleet collected its 201: no ({} missing)",
                c.not_collected
            ),
        }
    }
    if let Some(a) = &s.admin {
        println!(
            "admin: registered {}, granted {} ({} bulk calls over {:.1} s, slowest {:.1} s), setup {:.1} s; {}{}",
            a.registered,
            a.granted,
            a.bulk_calls,
            a.granting_secs,
            a.slowest_bulk_secs,
            a.setup_secs,
            crate::admin::format_statuses(&a.statuses),
            if a.transport_errors > 0 {
                format!(" transport-errors={}", a.transport_errors)
            } else {
                String::new()
            }
        );
    }
    println!("files: {}", s.files.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn common(args: &[&str]) -> CommonArgs {
        let argv = ["fleetgate-loadtest", "locked-storm"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::LockedStorm(a) => a.common,
            _ => unreachable!(),
        }
    }

    #[test]
    fn goose_gets_our_settings_and_only_the_options_after_the_double_dash() {
        let c = common(&[
            "--devices",
            "500",
            "--ramp-up",
            "5s",
            "--",
            "--running-metrics",
            "5",
            // Ours win over goose's own flags for what this tool controls.
            "--users",
            "3",
        ]);
        let reports = [PathBuf::from("r/goose-report.html")];
        let config = goose_configuration(&c, "http://127.0.0.1:8080", 500, &reports).unwrap();
        assert_eq!(config.host.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(config.users, Some(500));
        assert_eq!(config.increase_rate.as_deref(), Some("100.000"));
        assert_eq!(config.running_metrics, Some(5));
        assert_eq!(config.run_time, None, "the supervisor owns the clock");
        assert!(config.no_telnet && !config.websocket);
        assert!(config.no_reset_metrics && config.no_transaction_metrics);
        assert_eq!(config.report_file, ["r/goose-report.html"]);
        assert_eq!(config.quiet, 1);
    }

    #[test]
    fn bad_goose_options_are_an_error_not_an_exit() {
        let c = common(&["--", "--no-such-goose-flag"]);
        assert!(matches!(
            goose_configuration(&c, "http://x", 1, &[]),
            Err(Error::Goose(_))
        ));
    }
}
