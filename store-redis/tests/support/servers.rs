//! Real `redis-server` processes on free loopback ports, for tests. Shared
//! with the workspace's end-to-end tests (`tests/support`), which include
//! this file by path; it depends on nothing but std.
//!
//! [`RedisServer`] starts one server with no persistence in its own temp
//! dir; [`RedisCluster`] starts six cluster-enabled servers and joins them
//! with `redis-cli --cluster create` into three masters with one replica
//! each. Both kill their processes, by PID, when dropped (also when a test
//! panics), and never touch a server the machine happens to run.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A key prefix no other test in this process uses.
pub fn fresh_prefix(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A port that is free now, and whose cluster bus port (+10000) is too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Sends one inline command and returns the raw reply (enough for PING and
/// CLUSTER INFO; the tests' real client is redis-rs).
pub fn raw_command(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    // Replies here are small; read until the reply is complete or a pause.
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if reply_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8(out).ok()
}

fn reply_complete(b: &[u8]) -> bool {
    match b.first() {
        Some(b'+' | b'-' | b':') => b.ends_with(b"\r\n"),
        Some(b'$') => {
            let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let len: i64 = std::str::from_utf8(&b[1..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            len < 0 || b.len() >= end + 2 + len as usize + 2
        }
        _ => false,
    }
}

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.port))
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--logfile", self.log_path().to_str().unwrap()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while raw_command(self.port, "PING").as_deref() != Some("+PONG\r\n") {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("redis-server on {} exited with {status}:\n{log}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, by PID) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends a signal to this server's PID (`STOP` freezes it: it keeps its
    /// sockets but answers nothing; `CONT` thaws it).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server running");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Runs `redis-cli -p <port> <args>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server ignores nothing but SIGKILL, which is what stop
            // sends; thaw it anyway so nothing lingers stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().unwrap().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.stop();
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three masters and three replicas on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let dir_conf = |port: u16| format!("nodes-{port}.conf");
                let mut s = RedisServer {
                    port: free_port(),
                    child: None,
                    dir: tempfile::tempdir().unwrap(),
                    extra: Vec::new(),
                };
                s.extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &s.dir.path().join(dir_conf(s.port)).to_string_lossy(),
                    // Fail over within about a second of a master dying.
                    "--cluster-node-timeout",
                    "1000",
                    // Sync a new replica at once (the default waits 5 s for
                    // more replicas to share one transfer).
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|a| a.to_string())
                .collect();
                s.spawn();
                s
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ready(Duration::from_secs(20));
        cluster
    }

    /// Waits until every live node says `cluster_state:ok` and every master
    /// has a connected replica.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let ok = live
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"));
            // Every master has a replica whose initial sync is done
            // (`state=online`), so `WAIT 1` can succeed.
            let replicated = live.iter().all(|n| {
                let info = n.cli(&["info", "replication"]);
                !info.contains("role:master")
                    || (!info.contains("connected_slaves:0") && info.contains("state=online"))
            });
            if ok && replicated {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Waits until a live node is master of `key`'s slot (after a master
    /// was killed: until its replica has been promoted) and returns it.
    pub fn wait_for_master_of(&self, key: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.try_master_of(key) {
                return m;
            }
            assert!(Instant::now() < deadline, "no live master for {key}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The live node that is master of `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        self.try_master_of(key)
            .expect("a live master owns every slot")
    }

    fn try_master_of(&self, key: &str) -> Option<usize> {
        let live = self.nodes.iter().position(|n| n.child.is_some()).unwrap();
        let slot: u16 = self.nodes[live]
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("keyslot");
        self.nodes
            .iter()
            .position(|n| n.child.is_some() && owns_slot(n.port, slot))
    }
}

/// Whether the node on `port` is a master that owns `slot`, from its own
/// `CLUSTER NODES` line (`myself,master` … `0-5460`).
fn owns_slot(port: u16, slot: u16) -> bool {
    cli(port, &["cluster", "nodes"]).lines().any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 8
            && cols[2].contains("myself")
            && cols[2].contains("master")
            && cols[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => a <= slot && slot <= b,
                    _ => false,
                },
                None => range.parse::<u16>().ok() == Some(slot),
            })
    })
}
