//! Shared helpers for the end-to-end tests: build and start the real
//! binaries on free loopback ports (`127.0.0.1:0`, with the bound addresses
//! read back from their logs), and talk to them over real sockets with a
//! minimal HTTP/1.1 client that shows exactly what went over the wire.
//!
//! Every process a test starts is owned by a guard that kills it (by PID)
//! when the test ends, pass or fail.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The admin password the tests start gateways with.
pub const ADMIN_PASSWORD: &str = "admin-test-password";

/// The directory the workspace's binaries are built into, building them
/// (once per test process) in the same profile as the tests.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--bins",
            "-p",
            "fleetgate-proxy",
            "-p",
            "fleetgate-admin",
        ]);
        if release {
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

/// A running binary, killed by PID on drop.
pub struct Process {
    pub child: Child,
    /// Every stderr line so far arrives here.
    lines: mpsc::Receiver<String>,
    /// Lines already read from `lines`.
    pub log: Vec<String>,
    pub stdout: Option<std::process::ChildStdout>,
}

impl Process {
    /// Waits until a log line contains `needle`, returning it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?} within {timeout:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The address logged in the first line containing `needle`, from its
    /// `addr=` field.
    pub fn logged_addr(&mut self, needle: &str) -> SocketAddr {
        let line = self.wait_for_line(needle, Duration::from_secs(30));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.parse()
            .unwrap_or_else(|e| panic!("bad addr in {line:?}: {e}"))
    }

    /// Every stderr line until the process closes stderr (it has exited).
    pub fn collect_log(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.log.clone(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stderr still open after {timeout:?}: {:?}", self.log)
                }
            }
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Sends a signal to one of our own children by PID (std has no signal
/// API; the `kill` command does it without unsafe code).
fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `bin` (from [`bin_dir`]) with `args` and extra environment.
pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut cmd = Command::new(bin_dir().join(bin));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdout = child.stdout.take();
    Process {
        child,
        lines: rx,
        log: Vec::new(),
        stdout,
    }
}

/// A running all-in-one `fleetgate` with its data dir.
pub struct Gateway {
    pub process: Process,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Keeps the temporary data dir alive (when the test did not give one).
    _dir: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts `fleetgate` on free loopback ports with a fresh data dir.
    pub fn start(extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let mut g = Gateway::start_in(&path, extra);
        g._dir = Some(dir);
        g
    }

    /// Starts `fleetgate` on free loopback ports with the given data dir.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Gateway {
        let data = data_dir.to_str().expect("utf-8 temp path");
        let mut args = vec![
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--data-dir",
            data,
            "--admin-password",
            ADMIN_PASSWORD,
        ];
        args.extend_from_slice(extra);
        let mut process = spawn("fleetgate", &args, &[]);
        let admin = process.logged_addr("admin API listening");
        let http = process.logged_addr("device API listening");
        Gateway {
            process,
            http,
            admin,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// Logs in as the admin through the admin port and returns the token.
    pub fn admin_token(&self) -> String {
        login(self.admin, "admin", ADMIN_PASSWORD)
    }
}

/// `POST /api/login`, expecting 200, returning the token.
pub fn login(addr: SocketAddr, username: &str, password: &str) -> String {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let r = request(addr, "POST", "/api/login", &[], body.as_bytes());
    assert_eq!(r.status, 200, "login of {username} failed: {}", r.text());
    r.json()["token"]
        .as_str()
        .expect("token in login response")
        .to_owned()
}

/// One parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response from `reader` (which must frame with Content-Length,
/// or be a 204/304, or end at EOF).
pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').expect("header line has a colon");
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None if status == 204 || status == 304 => {}
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Serialises one request.
pub fn encode_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: fleetgate.test\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&encode_request(method, path, headers, body))
        .unwrap();
    read_response(&mut BufReader::new(stream)).expect("a response")
}

/// A request with an admin bearer token.
pub fn authed(addr: SocketAddr, token: &str, method: &str, path: &str, body: &[u8]) -> Response {
    let auth = format!("Bearer {token}");
    request(addr, method, path, &[("Authorization", &auth)], body)
}

/// A register poll with a JSON body.
pub fn register(addr: SocketAddr, body: &Value) -> Response {
    request(
        addr,
        "POST",
        "/api/client-registry/register",
        &[],
        body.to_string().as_bytes(),
    )
}

/// The `{"username","password"}` body of a password registration.
pub fn creds(username: &str, password: &str) -> Value {
    serde_json::json!({"username": username, "password": password})
}
