//! Shared helpers for the end-to-end tests: build and start the real
//! binaries on free loopback ports (`127.0.0.1:0`, with the bound addresses
//! read back from their logs), and talk to them over real sockets with a
//! minimal HTTP/1.1 client that shows exactly what went over the wire.
//!
//! Every process a test starts is owned by a guard that kills it (by PID)
//! when the test ends, pass or fail.
pub mod prometheus;
/// Real `redis-server` processes and clusters (shared with the Redis
/// store's own tests).
#[path = "../../store-redis/tests/support/servers.rs"]
pub mod redis;

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

/// How long a test waits for a grant, deny or user change acknowledged on
/// one instance to show on another: the documented worst case (1 s, the
/// poll cache's `STALE_BOUND`; docs/API.md "Right after a decision") plus a
/// margin for a loaded 2-core machine. Visibility normally takes about a
/// millisecond; a test that asserted the very next answer would race the
/// pub/sub event.
pub const VISIBILITY_DEADLINE: Duration = Duration::from_secs(3);

/// Calls `attempt` every 10 ms until `done` accepts its answer, and returns
/// that answer with the time it took. Panics with the last answer when
/// `deadline` passes first, so a change that never shows fails the test.
pub fn poll_until<T: std::fmt::Debug>(
    deadline: Duration,
    mut attempt: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        let answer = attempt();
        if done(&answer) {
            return (answer, start.elapsed());
        }
        assert!(
            start.elapsed() < deadline,
            "still {answer:?} after {:?} (deadline {deadline:?})",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

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
        // The same selection as scripts/test.sh, so features unify the same
        // way and an up-to-date build is not redone.
        cmd.args(["build", "--workspace", "--bins"]);
        // `cargo test` runs this process with the test package's `CARGO_PKG_*`,
        // `CARGO_MANIFEST_DIR` and `OUT_DIR` in its environment. Build
        // scripts (ring's) rerun when those change, and a rerun of ring
        // rebuilds everything above it (about 3 minutes on 2 cores). Without
        // them, the build sees the environment of `scripts/test.sh`'s own
        // `cargo build` and finds it up to date.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            const SET_FOR_TESTS: [&str; 7] = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ];
            if SET_FOR_TESTS.iter().any(|p| key.starts_with(p)) || key == "OUT_DIR" {
                cmd.env_remove(key.as_ref());
            }
        }
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
    spawn_program(&bin_dir().join(bin), args, env)
}

/// Starts any program with `args`, capturing its output.
pub fn spawn_program(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
    let bin = program.display().to_string();
    let mut cmd = Command::new(program);
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
    pub mqtt: SocketAddr,
    /// The HTTPS device API (`None` when started with `--https-listen off`).
    pub https: Option<SocketAddr>,
    /// The MQTTS listener (`None` when started with `--mqtts-listen off`).
    pub mqtts: Option<SocketAddr>,
    /// The proxy's Prometheus endpoint (`GET /metrics`).
    pub metrics: SocketAddr,
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
    ///
    /// Rate limits are off unless `extra` sets them: most tests poll far
    /// faster than a device may, on purpose.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Gateway {
        let data = data_dir.to_str().expect("utf-8 temp path");
        let defaults: [(&str, &str); 11] = [
            ("--http-listen", "127.0.0.1:0"),
            ("--https-listen", "127.0.0.1:0"),
            ("--admin-listen", "127.0.0.1:0"),
            ("--mqtt-listen", "127.0.0.1:0"),
            ("--mqtts-listen", "127.0.0.1:0"),
            ("--metrics-listen", "127.0.0.1:0"),
            ("--workers", "2"),
            ("--data-dir", data),
            ("--admin-password", ADMIN_PASSWORD),
            ("--rate-limit-per-user", "off"),
            ("--rate-limit-per-ip", "off"),
        ];
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let mut process = spawn("fleetgate", &args, &[]);
        let admin = process.logged_addr("admin API listening");
        let http = process.logged_addr("device API listening");
        let mqtt = process.logged_addr("MQTT listening");
        let off = |flag: &str| args.windows(2).any(|w| w[0] == flag && w[1] == "off");
        let https = (!off("--https-listen")).then(|| process.logged_addr("HTTPS listening"));
        let mqtts = (!off("--mqtts-listen")).then(|| process.logged_addr("MQTTS listening"));
        let metrics = process.logged_addr("metrics listening");
        Gateway {
            process,
            http,
            admin,
            mqtt,
            https,
            mqtts,
            metrics,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// Logs in as the admin through the admin port and returns the token.
    pub fn admin_token(&self) -> String {
        login(self.admin, "admin", ADMIN_PASSWORD)
    }
}

/// A free loopback port (bound, then released: the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real Mosquitto broker on a free loopback port, stopped on drop.
pub struct Mosquitto {
    pub process: Process,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` accepting anonymous clients (the gateway in front
    /// of it does the authentication). `extra_config` is appended to its
    /// configuration file.
    pub fn start(extra_config: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                     log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n{extra_config}\n"
                ),
            )
            .expect("write mosquitto.conf");
            let mut process = spawn_program(
                Path::new(&mosquitto_bin()),
                &["-c", conf.to_str().expect("utf-8 path")],
                &[],
            );
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(addr).is_ok() {
                    return Mosquitto {
                        process,
                        addr,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = process.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("mosquitto did not start");
    }
}

/// Where the mosquitto broker binary is (Debian installs it in /usr/sbin).
fn mosquitto_bin() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    "mosquitto".to_owned()
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

/// One request on a fresh connection from the loopback source `from`
/// (e.g. `127.0.0.2`: all of 127.0.0.0/8 is this machine), so a test can
/// act as a second client host.
pub fn request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr} from {from}: {e}"));
    let mut stream: TcpStream = socket.into();
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

/// MQTT protocol levels, for hand-built CONNECT packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttLevel {
    V31,
    V311,
    V5,
}

/// Builds a CONNECT packet (clean session, keep alive 30 s, no will).
pub fn mqtt_connect(
    level: MqttLevel,
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut body = Vec::new();
    match level {
        MqttLevel::V31 => {
            field(&mut body, b"MQIsdp");
            body.push(3);
        }
        MqttLevel::V311 => {
            field(&mut body, b"MQTT");
            body.push(4);
        }
        MqttLevel::V5 => {
            field(&mut body, b"MQTT");
            body.push(5);
        }
    }
    let mut flags = 0x02;
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    if level == MqttLevel::V5 {
        body.push(0); // no properties
    }
    field(&mut body, client_id.as_bytes());
    if let Some(u) = username {
        field(&mut body, u.as_bytes());
    }
    if let Some(p) = password {
        field(&mut body, p);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Sends `packet` to `addr` and returns every byte received until the
/// server closes the connection (or 5 s pass).
pub fn mqtt_exchange(addr: SocketAddr, packet: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).expect("connect to the MQTT listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(packet).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Runs a command-line tool (`mosquitto_pub`, `curl`, `openssl`, ...) to
/// completion, returning (exit code, stdout, stderr).
pub fn run_tool(tool: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (scripts/test.sh installs it): {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj SUBJ`:
/// returns the CSR PEM and writes the key to `dir/<name>.key`.
pub fn make_csr(dir: &Path, name: &str, subj: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let (code, _, err) = run_tool(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            csr.to_str().expect("utf-8 path"),
            "-subj",
            subj,
        ],
    );
    assert_eq!(code, 0, "openssl req: {err}");
    std::fs::read_to_string(csr).expect("the CSR file")
}

/// Runs `openssl` with `args`: (success, stdout and stderr together).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let (code, out, err) = run_tool("openssl", args);
    (code == 0, format!("{out}{err}"))
}

/// An HTTPS request with `curl`. With `cacert`, the server certificate is
/// verified against it by the name `localhost`; without, any certificate is
/// accepted (`--insecure`, as the reference documentation does). Returns the
/// status and body, or curl's error when no HTTP answer came (for example a
/// refused handshake).
pub fn curl_https(
    addr: SocketAddr,
    cacert: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> Result<(u16, String), String> {
    let url = match cacert {
        Some(_) => format!("https://localhost:{}{path}", addr.port()),
        None => format!("https://{addr}{path}"),
    };
    let mut args = vec![
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    match cacert {
        Some(ca) => args.extend(["--cacert", ca.to_str().expect("utf-8 path")]),
        None => args.push("--insecure"),
    }
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out, err) = run_tool("curl", &args);
    if code != 0 {
        return Err(format!("curl exit {code}: {err}"));
    }
    let (text, status) = out.rsplit_once('\n').expect("the status line");
    Ok((status.parse().expect("a status"), text.to_owned()))
}
