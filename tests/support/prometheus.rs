//! A real Prometheus for the observability tests, and the small pieces
//! around it: `promtool`, a plain HTTP GET, and reading the text exposition
//! format.
//!
//! [`Prometheus::start`] writes a `prometheus.yml` that scrapes the given
//! targets every second, starts Debian's `/usr/bin/prometheus` on a free
//! loopback port with its TSDB in a temporary directory, and waits for
//! `GET /-/ready`. The process is owned by a [`Process`] guard, so it is
//! killed by PID when the test ends, pass or fail. Nothing here ever uses
//! Prometheus's default port 9090: a packaged daemon may already hold it.
//!
//! The tests must not pass by skipping. When `prometheus` or `promtool` is
//! missing, [`tool`] panics with a message naming the package;
//! `scripts/test.sh` installs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, spawn_program, Process};

/// How often the generated configuration scrapes its targets. Short, so a
/// test sees a change within a second or two.
pub const SCRAPE_INTERVAL: &str = "1s";

/// The path of a Prometheus tool (`prometheus`, `promtool`). Debian puts
/// both in `/usr/bin`; other installs are found on `PATH`.
///
/// # Panics
///
/// When the tool is not installed, so a missing Prometheus fails the test
/// instead of skipping it.
pub fn tool(name: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed. The observability tests need a real Prometheus: \
                 run ./scripts/test.sh (it installs Debian's `prometheus` package, which \
                 provides /usr/bin/prometheus and /usr/bin/promtool) or \
                 `apt-get install prometheus`"
            )
        })
}

/// Runs `promtool` with `args`, feeding `stdin` when given, and returns its
/// output (exit status, stdout, stderr).
pub fn promtool(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    if let Some(input) = stdin {
        // Written from the main thread and then closed: promtool reads all
        // of stdin before it writes anything, so this cannot deadlock.
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write to promtool's stdin");
    }
    child.wait_with_output().expect("promtool's output")
}

/// A response to [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, with chunked transfer coding already removed.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection with `Connection: close`, reading until
/// the server closes. Unlike the crate's [`crate::request`], this accepts
/// chunked responses, which Prometheus (Go's net/http) sends for larger
/// bodies.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Removes chunked transfer coding (chunk extensions and trailers ignored).
fn dechunk(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = input.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&input[..line_end]).ok()?;
        let size_hex = size_field.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(input.get(..size)?);
        input = input.get(size + 2..)?; // the chunk and its CRLF
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986
/// unreserved characters).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /metrics` on `addr`, expecting 200 and a text exposition.
pub fn scrape(addr: SocketAddr) -> String {
    let r = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
    assert_eq!(r.status, 200, "GET {addr}/metrics: {}", r.text());
    r.text()
}

/// The `# TYPE name type` lines of a text exposition, as (name, type).
pub fn metric_types(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// A Prometheus server scraping test targets, killed by PID on drop.
pub struct Prometheus {
    pub process: Process,
    /// Its HTTP API and UI, on a free loopback port (never 9090).
    pub addr: SocketAddr,
    /// The generated configuration file.
    pub config: PathBuf,
    /// Holds the configuration and the TSDB; removed on drop.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// The configuration [`Prometheus::start`] writes: one job, `job_name`,
    /// scraping `/metrics` on every target each [`SCRAPE_INTERVAL`].
    pub fn config(job_name: &str, targets: &[SocketAddr]) -> String {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            "# Generated by fleetgate's observability tests.\n\
             global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n  \
             evaluation_interval: {SCRAPE_INTERVAL}\n\
             scrape_configs:\n  - job_name: {job_name}\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        )
    }

    /// Starts Prometheus scraping `targets` as job `job_name`, and waits
    /// until it reports ready.
    pub fn start(job_name: &str, targets: &[SocketAddr]) -> Prometheus {
        Prometheus::start_with_config(&Prometheus::config(job_name, targets))
    }

    /// Starts Prometheus with the given configuration file contents, and
    /// waits until it reports ready.
    pub fn start_with_config(config_yaml: &str) -> Prometheus {
        let program = tool("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml).expect("write config");
        let tsdb = dir.path().join("tsdb");
        // A free port can be taken between our probe and Prometheus's bind;
        // then it exits at once and we try another.
        let mut last_log = Vec::new();
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let args = [
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", tsdb.display()),
                format!("--web.listen-address={addr}"),
                "--log.level=warn".to_owned(),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut process = spawn_program(&program, &args, &[]);
            if wait_ready(&mut process, addr) {
                return Prometheus {
                    process,
                    addr,
                    config,
                    _dir: dir,
                };
            }
            last_log = process.collect_log(Duration::from_secs(5));
        }
        panic!(
            "prometheus exited before it was ready, 5 times; its last log:\n{}",
            last_log.join("\n")
        );
    }

    /// Runs an instant query and returns its `data` (`resultType`,
    /// `result`). Panics when Prometheus rejects the query, quoting why.
    pub fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let r = http_get(self.addr, &path).unwrap_or_else(|e| panic!("query {promql:?}: {e}"));
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("query {promql:?}: not JSON ({e}): {}", r.text()));
        assert_eq!(
            (r.status, body["status"].as_str()),
            (200, Some("success")),
            "query {promql:?} failed: {body}"
        );
        body["data"].clone()
    }

    /// The value of a query whose result is one sample (a one-element
    /// vector, or a scalar); `None` while the vector is empty.
    pub fn query_value(&self, promql: &str) -> Option<f64> {
        let data = self.query(promql);
        let sample = match data["resultType"].as_str() {
            Some("vector") => {
                let result = data["result"].as_array().expect("vector result");
                assert!(result.len() <= 1, "{promql:?} gave several series: {data}");
                result.first()?["value"].clone()
            }
            Some("scalar") => data["result"].clone(),
            other => panic!("{promql:?} gave a {other:?} result: {data}"),
        };
        // A sample is [unix time, "value as a string"].
        let value = sample[1].as_str().expect("sample value string");
        Some(value.parse().unwrap_or_else(|e| panic!("{value:?}: {e}")))
    }

    /// Polls `promql` until `done(value)` holds, returning the value that
    /// satisfied it. Panics after `timeout` with the last value seen.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(Option<f64>) -> bool,
    ) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.query_value(promql);
            if done(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{promql:?} still {value:?} after {timeout:?}; targets: {}",
                self.targets()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `GET /api/v1/targets`, for failure messages (scrape errors are
    /// reported there).
    pub fn targets(&self) -> String {
        http_get(self.addr, "/api/v1/targets")
            .map(|r| r.text())
            .unwrap_or_else(|e| format!("(targets unavailable: {e})"))
    }
}

/// Waits up to 30 s for `GET /-/ready` to answer 200. False when the
/// process exited first (its port was taken).
fn wait_ready(process: &mut Process, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http_get(addr, "/-/ready") {
            if r.status == 200 {
                return true;
            }
        }
        if let Ok(Some(_)) = process.child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("prometheus on {addr} not ready after 30 s");
}

/// The grafana/ directory of the workspace.
pub fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana")
}

/// The value of one series in a text exposition, named exactly as the
/// exporter writes it (`name{label="value"}`), or `None` if absent.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
