//! End-to-end tests of `fleetgate-ctl`: the real binary, run as an operator
//! runs it, against a real `fleetgate` started on free loopback ports by
//! the shared `tests/support` helpers. Devices register over real HTTP
//! (and MQTT) sockets; every assertion is on what the operator sees: the
//! exit code, stdout, stderr, the token file, and what the devices get
//! back afterwards.
//!
//! The grant and deny tests use the bulk routes (`POST
//! /api/client-registry/requests/grant|deny`, issue 14).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetgate_tests::{
    authed, bin_dir, creds, encode_request, mqtt_connect, mqtt_exchange, read_response, register,
    spawn_program, Gateway, MqttLevel, ADMIN_PASSWORD,
};
use serde_json::{json, Value};

/// The most any one `fleetgate-ctl` run may take in these tests (the
/// 10,000-device grant included), so a hung run fails instead of hanging.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// The `fleetgate-ctl` binary, built with the gateway's binaries.
fn ctl_bin() -> PathBuf {
    bin_dir().join("fleetgate-ctl")
}

/// What one run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// An operator's shell: a config dir of its own (`XDG_CONFIG_HOME`), and
/// `FLEETGATE_SERVER` pointing at one gateway's admin API.
struct Operator {
    server: String,
    config: tempfile::TempDir,
}

impl Operator {
    fn new(server: String) -> Operator {
        Operator {
            server,
            config: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// An operator of `g`'s admin API, logged in as the admin.
    fn logged_in(g: &Gateway) -> Operator {
        let op = Operator::new(format!("http://{}", g.admin));
        op.login();
        op
    }

    fn token_path(&self) -> PathBuf {
        self.config.path().join("fleetgate").join("token")
    }

    fn login(&self) {
        let r = self.run_with(&["login", "--password-stdin"], &[], Some(ADMIN_PASSWORD));
        assert_eq!(r.code, 0, "login: {r:?}");
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(ctl_bin());
        self.prepare(&mut cmd, env);
        cmd.args(args);
        run_command(cmd, stdin)
    }

    fn prepare(&self, cmd: &mut Command, env: &[(&str, &str)]) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.config.path())
            .env("XDG_CONFIG_HOME", self.config.path())
            .env("FLEETGATE_SERVER", &self.server);
        for (k, v) in env {
            cmd.env(k, v);
        }
    }
}

/// Runs `cmd` to its end (or kills it, by PID, at [`RUN_DEADLINE`]).
fn run_command(mut cmd: Command, stdin: Option<&str>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start fleetgate-ctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
        pipe.write_all(b"\n").expect("write stdin");
    }
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fleetgate-ctl ran longer than {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Registers `name` with password `pw` over HTTP, returning the status.
fn poll(g: &Gateway, name: &str, pw: &str) -> u16 {
    register(g.http, &creds(name, pw)).status
}

/// The admin API's own answer to `GET path`, for comparing with `-o json`.
fn api_get(g: &Gateway, path: &str) -> (u16, String) {
    let r = authed(g.admin, &g.admin_token(), "GET", path, b"");
    (r.status, r.text())
}

#[test]
fn login_stores_a_0600_token_and_the_variable_overrides_it() {
    let g = Gateway::start(&[]);
    let op = Operator::new(format!("http://{}", g.admin));

    // Not logged in yet: a clear failure, exit 1.
    let r = op.run(&["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not logged in"), "{r:?}");

    // A wrong password: exit 1, and the password is never echoed.
    let r = op.run_with(
        &["login", "--password-stdin"],
        &[],
        Some("wrong-password-123"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    assert!(!r.stderr.contains("wrong-password-123") && !r.stdout.contains("wrong-password-123"));
    assert!(!op.token_path().exists());

    // The right one: the token file is written with mode 0600 in a 0700 dir.
    let r = op.run_with(&["login", "--password-stdin"], &[], Some(ADMIN_PASSWORD));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.is_empty(), "login prints nothing on stdout: {r:?}");
    let meta = std::fs::metadata(op.token_path()).expect("the token file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(op.token_path().parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let token = std::fs::read_to_string(op.token_path()).unwrap();
    let token = token.trim();
    assert!(!r.stderr.contains(token), "the token is not printed: {r:?}");
    assert_eq!(op.run(&["status"]).code, 0);

    // FLEETGATE_TOKEN overrides the file: a bad one is refused even though
    // the file's token is good...
    let r = op.run_with(&["status"], &[("FLEETGATE_TOKEN", "not-a-token")], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("HTTP 401") && r.stderr.contains("fleetgate-ctl login"),
        "{r:?}"
    );
    // ...and a good one works without any file.
    let bare = Operator::new(op.server.clone());
    let r = bare.run_with(&["status"], &[("FLEETGATE_TOKEN", token)], None);
    assert_eq!(r.code, 0, "{r:?}");

    // Without a terminal and without --password-stdin there is nobody to
    // ask: a usage error. (setsid: no controlling terminal at all.)
    let mut cmd = Command::new("setsid");
    op.prepare(&mut cmd, &[]);
    cmd.arg(ctl_bin()).arg("login");
    let r = run_command(cmd, None);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--password-stdin"), "{r:?}");
}

#[test]
fn status_unlock_and_lock() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);

    let r = op.run(&["status"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.lines()[0].split_whitespace().collect::<Vec<_>>(),
        ["REGISTRY", "UNLOCKED-UNTIL", "LEFT", "PENDING"]
    );
    assert!(r.lines()[1].starts_with("locked "), "{r:?}");
    assert_eq!(op.run(&["status", "-o", "name"]).stdout, "locked\n");

    let r = op.run(&["unlock", "--for", "90s", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let state = r.json();
    assert_eq!(state["locked"], false);
    assert!(state["unlockedUntil"].is_string());
    // The device sees the registry open.
    assert_eq!(poll(&g, "dev-open", "password1"), 202);
    let r = op.run(&["status"]);
    let row: Vec<&str> = r.lines()[1].split_whitespace().collect();
    assert_eq!(row[0], "unlocked");
    assert_eq!(row.last(), Some(&"1"), "one pending: {r:?}");
    // LEFT is at most the 90 s asked for.
    assert!(
        row[2].ends_with('s') && (row[2].starts_with("1m") || !row[2].contains('m')),
        "{r:?}"
    );

    assert_eq!(op.run(&["lock", "-o", "name"]).stdout, "locked\n");
    assert_eq!(poll(&g, "dev-late", "password1"), 423);

    // Out of range or not a duration: usage errors, and nothing changes.
    for bad in ["25h", "0s", "soon"] {
        let r = op.run(&["unlock", "--for", bad]);
        assert_eq!(r.code, 2, "{bad}: {r:?}");
    }
    assert_eq!(op.run(&["status", "-o", "name"]).stdout, "locked\n");
}

#[test]
fn requests_list_show_delete_in_every_format() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    assert_eq!(poll(&g, "dev-a", "password1"), 202);
    assert_eq!(poll(&g, "dev-b", "password2"), 202);
    // A device whose context tries to drive the admin's terminal.
    let hostile = json!({"username": "dev-c", "password": "password3",
        "context": "line 4 \u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m \u{202e}evil"});
    assert_eq!(register(g.http, &hostile).status, 202);
    // One over MQTT.
    let connack = mqtt_exchange(
        g.mqtt,
        &mqtt_connect(MqttLevel::V311, "cid-1", Some("mq-dev"), Some(b"password4")),
    );
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x05], "refused while pending");

    // -o name: one name a line, in username order.
    let r = op.run(&["requests", "list", "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "dev-a\ndev-b\ndev-c\nmq-dev\n");
    let r = op.run(&["requests", "list", "--transport", "mqtt", "-o", "name"]);
    assert_eq!(r.stdout, "mq-dev\n");
    let r = op.run(&[
        "requests", "list", "--prefix", "dev-", "--limit", "2", "-o", "name",
    ]);
    assert_eq!(r.stdout, "dev-a\ndev-b\n");

    // -o json: exactly the API's answer.
    let r = op.run(&["requests", "list", "-o", "json"]);
    let (status, api) = api_get(&g, "/api/client-registry/requests?state=pending&limit=1000");
    assert_eq!(status, 200);
    assert_eq!(r.stdout, format!("{api}\n"));
    let r = op.run(&["requests", "show", "dev-c", "-o", "json"]);
    assert_eq!(
        r.stdout,
        format!("{}\n", api_get(&g, "/api/client-registry/requests/dev-c").1)
    );

    // The table: aligned columns, and the hostile context escaped, so not
    // one control byte reaches the terminal.
    let r = op.run(&["requests", "list"]);
    assert_eq!(r.code, 0);
    let lines = r.lines();
    assert_eq!(lines.len(), 5, "{r:?}");
    let header = lines[0];
    for column in ["STATE", "TRANSPORT", "PAIRING-ID", "CONTEXT"] {
        let at = header.find(column).expect(column);
        for line in &lines[1..] {
            let chars: Vec<char> = line.chars().collect();
            assert!(
                chars[at - 1] == ' ' && chars[at] != ' ',
                "column {column} starts at {at} in every row: {line:?}"
            );
        }
    }
    let mq = lines.iter().find(|l| l.starts_with("mq-dev")).unwrap();
    assert!(mq.contains(" mqtt "), "{mq}");
    assert!(
        !r.stdout
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "no control character in the table: {:?}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("line 4 \\x1b]0;pwned\\x07\\x1b[2J\\u{009b}31m \\u{202e}evil"),
        "{}",
        r.stdout
    );
    // On a narrow terminal every line fits, cut with an ellipsis.
    let r = op.run_with(&["requests", "list"], &[("COLUMNS", "70")], None);
    for line in r.lines() {
        assert!(line.chars().count() <= 70, "{line:?} is wider than 70");
    }
    assert!(r.stdout.contains('…'), "{}", r.stdout);
    assert!(r.stdout.contains("dev-c"), "{}", r.stdout);

    // show: every field, and the device's strings escaped.
    let r = op.run(&["requests", "show", "dev-c"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("username:"), "{}", r.stdout);
    assert!(r.stdout.contains("pending") && r.stdout.contains("\\x1b]0;pwned"));
    assert!(!r.stdout.contains('\u{1b}'));
    let r = op.run(&["requests", "show", "nobody"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no request for `nobody`") && r.stderr.contains("404"),
        "{r:?}"
    );

    // delete: the existing one goes, the missing one is named, exit 1.
    let r = op.run(&["requests", "delete", "dev-a", "nobody"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("request dev-a deleted"), "{r:?}");
    assert!(r.stderr.contains("delete request nobody"), "{r:?}");
    assert!(!r.stderr.contains("dev-a"), "{r:?}");
    assert_eq!(op.run(&["requests", "show", "dev-a"]).code, 1);
    // The username is free at once: the same device is pending again.
    assert_eq!(poll(&g, "dev-a", "password1"), 202);

    // --state denied: the denied ones only, paged and filtered by the API.
    let r = op.run(&["requests", "list", "--state", "denied", "-o", "name"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, ""),
        "none denied yet: {r:?}"
    );
    assert_eq!(op.run(&["deny", "dev-b", "mq-dev"]).code, 0);
    let r = op.run(&["requests", "list", "--state", "denied", "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "dev-b\nmq-dev\n");
    let r = op.run(&[
        "requests", "list", "--state", "denied", "--prefix", "mq", "-o", "name",
    ]);
    assert_eq!(r.stdout, "mq-dev\n");
    let r = op.run(&["requests", "list", "--state", "denied", "-o", "json"]);
    let (status, api) = api_get(&g, "/api/client-registry/requests?state=denied&limit=1000");
    assert_eq!(status, 200);
    assert_eq!(r.stdout, format!("{api}\n"));
    let r = op.run(&["requests", "list", "--state", "denied"]);
    let lines = r.lines();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert!(lines[1..].iter().all(|l| l.contains(" denied ")), "{r:?}");
    // Denied ones are not pending; the pending listing lost them.
    let r = op.run(&["requests", "list", "-o", "name"]);
    assert_eq!(r.stdout, "dev-a\ndev-c\n");
    // A forgotten denial leaves the denied listing.
    assert_eq!(op.run(&["requests", "delete", "dev-b"]).code, 0);
    let r = op.run(&["requests", "list", "--state", "denied", "-o", "name"]);
    assert_eq!(r.stdout, "mq-dev\n");
}

#[test]
fn watch_prints_each_new_request_once() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    assert_eq!(poll(&g, "early", "password1"), 202);
    let mut cmd_env: Vec<(&str, &str)> = vec![];
    let home = op.config.path().to_str().unwrap().to_owned();
    cmd_env.push(("XDG_CONFIG_HOME", &home));
    cmd_env.push(("FLEETGATE_SERVER", &op.server));
    let mut watch = spawn_program(
        &ctl_bin(),
        &[
            "requests",
            "list",
            "--watch",
            "--interval",
            "200ms",
            "-o",
            "name",
        ],
        &cmd_env,
    );
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line from --watch")
    };
    assert_eq!(next(), "early");
    assert_eq!(poll(&g, "late-1", "password1"), 202);
    assert_eq!(next(), "late-1");
    // Polling again changes nothing the watch reports.
    assert_eq!(poll(&g, "late-1", "password1"), 202);
    assert_eq!(poll(&g, "late-2", "password1"), 202);
    assert_eq!(next(), "late-2");
    assert!(
        rx.recv_timeout(Duration::from_millis(800)).is_err(),
        "each request once"
    );
    // `watch` is killed (by PID) when it drops.
}

#[test]
fn grant_and_deny_by_name_with_roles_permissions_and_pairing_ids() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    for name in ["g-1", "g-2", "g-3", "g-4", "g-5"] {
        assert_eq!(poll(&g, name, "password1"), 202);
    }
    let r = op.run(&["roles", "put", "sensors", "plant/+/temp:write"]);
    assert_eq!(r.code, 0, "{r:?}");

    // A grant with a role and a permission: the user has exactly those.
    let r = op.run(&[
        "grant",
        "g-1",
        "--role",
        "sensors",
        "--permission",
        "devices/{username}/#:readWrite",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("g-1") && r.stdout.contains("granted"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("1 granted, 0 already granted, 0 failed"),
        "{r:?}"
    );
    assert_eq!(poll(&g, "g-1", "password1"), 201);
    let user = op.run(&["users", "show", "g-1", "-o", "json"]).json();
    assert_eq!(user["roles"], json!(["sensors"]));
    assert_eq!(
        user["permissions"],
        json!([{"resource": "devices/{username}/#", "operation": "readWrite", "context": "mqtt"}])
    );
    // A plain grant gives nothing.
    assert_eq!(op.run(&["grant", "g-2"]).code, 0);
    let user = op.run(&["users", "show", "g-2", "-o", "json"]).json();
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["permissions"], json!([]));

    // Granting again is success (already granted), as kubectl does.
    let r = op.run(&["grant", "g-1", "g-2", "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "g-1\ng-2\n");
    // Denying a granted request fails, and says why.
    let r = op.run(&["deny", "g-1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("deny g-1: conflict"), "{r:?}");
    assert!(
        r.stderr.contains("already granted") && r.stderr.contains("delete the user"),
        "{r:?}"
    );

    // Deny, deny again (success), then a grant of it fails: denied.
    assert_eq!(op.run(&["deny", "g-3"]).code, 0);
    assert_eq!(poll(&g, "g-3", "password1"), 403);
    assert_eq!(op.run(&["deny", "g-3"]).code, 0);
    let r = op.run(&["grant", "g-3"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("grant g-3: conflict: the request was denied"),
        "{r:?}"
    );

    // A mix: the good ones are granted, the missing one is named, exit 1.
    let r = op.run(&["grant", "g-4", "nobody", "-o", "name"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "g-4\n");
    assert!(r.stderr.contains("grant nobody: not_found"), "{r:?}");
    assert!(!r.stderr.contains("g-4"), "{r:?}");

    // An undefined role: the server refuses the call, nothing is granted.
    let r = op.run(&["grant", "g-5", "--role", "no-such-role"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no-such-role"), "{r:?}");
    assert_eq!(poll(&g, "g-5", "password1"), 202);

    // The pairing id the device shows must match.
    let item = op.run(&["requests", "show", "g-5", "-o", "json"]).json();
    let pairing = item["pairingId"].as_str().unwrap().to_owned();
    let wrong = if pairing == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = op.run(&["grant", "g-5", "--pairing-id", wrong]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("grant g-5: conflict"), "{r:?}");
    assert_eq!(poll(&g, "g-5", "password1"), 202);
    let r = op.run(&["grant", "g-5", "--pairing-id", &pairing]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(poll(&g, "g-5", "password1"), 201);

    // A bad permission is a usage error, before anything is sent.
    let r = op.run(&["grant", "g-5", "--permission", "plant/#:delete"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn grant_from_a_file_by_pairing_id_and_dry_run() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    for name in ["f-1", "f-2", "f-3", "p-1", "p-2"] {
        assert_eq!(poll(&g, name, "password1"), 202);
    }
    let mq = mqtt_connect(MqttLevel::V5, "c", Some("f-mqtt"), Some(b"password1"));
    assert_eq!(mqtt_exchange(g.mqtt, &mq).first(), Some(&0x20), "a CONNACK");

    // A dry run lists what would be granted, and grants nothing.
    let r = op.run(&["grant", "--prefix", "f-", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("would_grant"), "{r:?}");
    assert!(r.stdout.contains("4 would be granted"), "{r:?}");
    let r = op.run(&[
        "grant",
        "--prefix",
        "f-",
        "--transport",
        "mqtt",
        "--dry-run",
        "-o",
        "name",
    ]);
    assert_eq!(r.stdout, "f-mqtt\n");
    let r = op.run(&["deny", "f-1", "nobody", "--dry-run", "-o", "name"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "f-1\n");
    assert!(r.stderr.contains("deny nobody: not_found"), "{r:?}");
    assert_eq!(
        poll(&g, "f-1", "password1"),
        202,
        "still pending after the dry runs"
    );

    // Names from a file, and from stdin (`-`), with comments and blanks.
    let file = op.config.path().join("names.txt");
    std::fs::write(&file, "# line 4\nf-1\n\nf-2\n").unwrap();
    let r = op.run(&["grant", "-f", file.to_str().unwrap(), "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "f-1\nf-2\n");
    let r = op.run_with(&["deny", "-f", "-", "-o", "name"], &[], Some("f-3"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "f-3\n");
    assert_eq!(poll(&g, "f-3", "password1"), 403);
    // An empty list is nothing to do.
    let r = op.run_with(&["grant", "-f", "-"], &[], Some(""));
    assert_eq!(r.code, 0, "{r:?}");

    // The pairing id the device shows, alone, selects its request.
    let item = op.run(&["requests", "show", "p-2", "-o", "json"]).json();
    let pairing = item["pairingId"].as_str().unwrap().to_owned();
    let r = op.run(&["grant", "--pairing-id", &pairing, "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "p-2\n");
    assert_eq!(poll(&g, "p-2", "password1"), 201);
    assert_eq!(poll(&g, "p-1", "password1"), 202);

    // -o json: each bulk answer as the API sent it.
    let r = op.run(&["deny", "--prefix", "p-", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let answer = r.json();
    assert_eq!(answer["denied"], 1, "{answer}");
    assert_eq!(answer["items"][0]["username"], "p-1");
    assert_eq!(answer["items"][0]["result"], "denied");
}

#[test]
fn users_and_roles() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    // A user to work on, made the way curl users do (one grant route).
    assert_eq!(op.run(&["unlock"]).code, 0);
    assert_eq!(poll(&g, "u-1", "password1"), 202);
    let token = g.admin_token();
    let r = authed(
        g.admin,
        &token,
        "POST",
        "/api/client-registry/requests/u-1/grant",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // roles
    let r = op.run(&["roles", "list", "-o", "name"]);
    assert_eq!(r.stdout, "admin\n");
    let r = op.run(&[
        "roles",
        "put",
        "line4",
        "plant/4/#:read",
        "cmd/4:write:mqtt",
        "/api/x:read:http",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("plant/4/#:read:mqtt") && r.stdout.contains("/api/x:read:http"),
        "{r:?}"
    );
    let r = op.run(&["roles", "list"]);
    assert_eq!(
        r.lines()[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PERMISSIONS"]
    );
    assert!(r.lines()[2].starts_with("line4 "), "{r:?}");
    let r = op.run(&["roles", "show", "line4", "-o", "json"]);
    assert_eq!(r.stdout, format!("{}\n", api_get(&g, "/api/roles/line4").1));
    let r = op.run(&["roles", "delete", "admin"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("delete role admin") && r.stderr.contains("409"),
        "{r:?}"
    );
    let r = op.run(&["roles", "put", "admin"]);
    assert_eq!(r.code, 1, "the admin role cannot be emptied: {r:?}");
    let r = op.run(&["roles", "put", "bad name", "a:read"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("422"), "{r:?}");

    // users
    let r = op.run(&["users", "list", "-o", "name"]);
    assert_eq!(r.stdout, "admin\nu-1\n");
    let r = op.run(&["users", "list"]);
    assert!(r.lines()[0].starts_with("NAME"), "{r:?}");
    assert!(
        r.lines()[1].starts_with("admin ") && r.lines()[1].contains("admin"),
        "{r:?}"
    );
    let r = op.run(&["users", "set-roles", "u-1", "line4"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("roles:") && r.stdout.contains("line4"),
        "{r:?}"
    );
    let r = op.run(&["users", "set-roles", "u-1", "undefined-role"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("undefined-role"), "{r:?}");
    let r = op.run(&[
        "users",
        "set-permissions",
        "u-1",
        "devices/{username}/#:readWrite",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let user = r.json();
    assert_eq!(
        user["roles"],
        json!(["line4"]),
        "set-permissions keeps the roles"
    );
    assert_eq!(user["permissions"][0]["resource"], "devices/{username}/#");
    let r = op.run(&["users", "set-permissions", "u-1", "no-operation"]);
    assert_eq!(r.code, 2, "{r:?}");
    // No role named: none.
    let r = op.run(&["users", "set-roles", "u-1", "-o", "json"]);
    assert_eq!(r.json()["roles"], json!([]));
    let r = op.run(&["users", "show", "u-1"]);
    assert!(r.stdout.starts_with("username:"), "{r:?}");
    assert!(
        r.stdout.contains("hasPassword:") && r.stdout.contains("yes"),
        "{r:?}"
    );
    assert_eq!(
        op.run(&["users", "show", "u-1", "-o", "name"]).stdout,
        "u-1\n"
    );

    let r = op.run(&["users", "delete", "admin", "u-1", "nobody"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("user u-1 deleted"), "{r:?}");
    assert!(
        r.stderr.contains("delete user admin") && r.stderr.contains("409"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("delete user nobody") && r.stderr.contains("404"),
        "{r:?}"
    );
    assert_eq!(op.run(&["users", "show", "u-1"]).code, 1);
    assert_eq!(op.run(&["roles", "delete", "line4"]).code, 0);
    assert_eq!(op.run(&["roles", "show", "line4"]).code, 1);
}

#[test]
fn rules_list_get_put_order_delete() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(
        op.run(&["roles", "put", "sensor", "plant/4/#:write"]).code,
        0
    );
    let r = op.run(&[
        "rules",
        "put",
        "plant4",
        "--action",
        "grant",
        "--pattern",
        "plant4-[0-9]+",
        "--cidr",
        "127.0.0.0/8",
        "--cidr",
        "::1",
        "--role",
        "sensor",
        "--permission",
        "cmd/4:read",
        "--max-uses",
        "5",
        "--while-locked",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let rule = r.json();
    assert_eq!(rule["usernamePattern"], "plant4-[0-9]+");
    assert_eq!(rule["sourceCidrs"], json!(["127.0.0.0/8", "::1/128"]));
    assert_eq!(rule["roles"], json!(["sensor"]));
    assert_eq!(
        rule["permissions"],
        json!([{"resource": "cmd/4", "operation": "read", "context": "mqtt"}])
    );
    assert_eq!(rule["maxUses"], 5);
    assert_eq!(rule["whileLocked"], true);
    assert_eq!(rule["uses"], 0);
    let r = op.run(&[
        "rules",
        "put",
        "blocklist",
        "--action",
        "deny",
        "--pattern",
        "bad-.*",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("blocklist") && r.stdout.contains("deny"),
        "{r:?}"
    );

    let r = op.run(&["rules", "list", "-o", "name"]);
    assert_eq!(r.stdout, "plant4\nblocklist\n");
    let r = op.run(&["rules", "list"]);
    assert_eq!(
        r.lines()[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ACTION", "PATTERN", "SOURCES", "USES"]
    );
    assert!(r.lines()[1].starts_with("plant4 "), "{r:?}");
    let r = op.run(&["rules", "get", "plant4", "-o", "json"]);
    assert_eq!(
        r.stdout,
        format!("{}\n", api_get(&g, "/api/client-registry/rules/plant4").1)
    );

    // The rule decides a device's first poll, even while locked.
    assert_eq!(poll(&g, "plant4-7", "password1"), 201);
    let r = op.run(&["rules", "get", "plant4", "-o", "json"]);
    assert_eq!(r.json()["uses"], 1);

    let r = op.run(&["rules", "order", "blocklist", "plant4", "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "blocklist\nplant4\n");
    let r = op.run(&["rules", "order", "blocklist"]);
    assert_eq!(r.code, 1, "an order must name every rule: {r:?}");
    assert!(r.stderr.contains("422"), "{r:?}");

    // The server's validation is shown as is.
    let r = op.run(&[
        "rules",
        "put",
        "broken",
        "--action",
        "grant",
        "--pattern",
        "(",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("422") && r.stderr.contains("regex"),
        "{r:?}"
    );
    let r = op.run(&[
        "rules",
        "put",
        "broken",
        "--action",
        "grant",
        "--cidr",
        "10.0.0.0/99",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("10.0.0.0/99"), "{r:?}");
    let r = op.run(&["rules", "put", "broken", "--action", "maybe"]);
    assert_eq!(r.code, 2, "a usage mistake: {r:?}");

    let r = op.run(&["rules", "delete", "blocklist", "nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("rule blocklist deleted"), "{r:?}");
    assert!(
        r.stderr.contains("delete rule nope") && r.stderr.contains("404"),
        "{r:?}"
    );
    let r = op.run(&["rules", "list", "-o", "name"]);
    assert_eq!(r.stdout, "plant4\n");
}

#[test]
fn usage_mistakes_exit_2_and_failures_exit_1() {
    let op = Operator::new(format!("http://127.0.0.1:{}", fleetgate_tests::free_port()));
    for args in [
        &[][..],
        &["frobnicate"],
        &["grant"],
        &["grant", "a", "--prefix", "b"],
        &["deny", "a", "--role", "x"],
        &["requests", "list", "--state", "lost"],
        &["requests", "list", "-o", "yaml"],
        &["completions", "powershell"],
        &["--server", "ftp://127.0.0.1", "status"],
        &["--cacert", "/nonexistent", "--insecure", "status"],
    ] {
        let r = op.run_with(args, &[("FLEETGATE_TOKEN", "t")], None);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "{args:?}: says what is wrong");
    }
    // Nothing listens there: a failure, named.
    let r = op.run_with(&["status"], &[("FLEETGATE_TOKEN", "t")], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot reach"), "{r:?}");
    assert!(!r.stderr.contains("Bearer"), "{r:?}");
}

#[test]
fn a_server_that_never_answers_fails_at_the_deadline() {
    // A real socket that accepts and then says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let conn = listener.accept().map(|(s, _)| s);
        std::thread::sleep(Duration::from_secs(5));
        drop(conn);
    });
    let op = Operator::new(format!("http://{addr}"));
    ctl_bin(); // built before the clock starts
    let start = Instant::now();
    let r = op.run_with(
        &["--timeout", "1s", "status"],
        &[("FLEETGATE_TOKEN", "t")],
        None,
    );
    let took = start.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no answer from") && r.stderr.contains("within 1s"),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(4), "gave up after {took:?}");
    held.join().unwrap();
}

#[test]
fn https_with_cacert_or_insecure() {
    let g = Gateway::start(&["--admin-on-device-port", "on"]);
    let https = g.https.expect("an HTTPS listener");
    let ca = g.data_dir.join("tls-cert.pem");
    let op = Operator::new(format!("https://localhost:{}", https.port()));
    let ca_arg = ca.to_str().unwrap();
    let r = op.run_with(
        &["--cacert", ca_arg, "login", "--password-stdin"],
        &[],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = op.run(&["--cacert", ca_arg, "status", "-o", "name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "locked\n"), "{r:?}");
    // The self-signed certificate is not in the system's roots.
    let r = op.run(&["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot reach"), "{r:?}");
    let r = op.run(&["--insecure", "status", "-o", "name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "locked\n"), "{r:?}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let op = Operator::new("http://127.0.0.1:1".into());
    for shell in ["bash", "zsh", "fish"] {
        let r = op.run(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {r:?}");
        assert!(r.stdout.contains("fleetgate-ctl"), "{shell}");
        for verb in ["requests", "grant", "set-permissions", "--all-pending"] {
            assert!(r.stdout.contains(verb), "{shell} completes {verb}");
        }
    }
    // bash itself reads the script without a syntax error.
    let script = op.config.path().join("fleetgate-ctl.bash");
    std::fs::write(&script, op.run(&["completions", "bash"]).stdout).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(status.success());
}

/// Registers `count` devices `<prefix>00000`… over one keep-alive
/// connection each `per_conn` requests, expecting `expect` for every one.
fn register_fleet(addr: SocketAddr, prefix: &str, count: usize, expect: u16) {
    let per_conn = 500;
    let mut n = 0;
    while n < count {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        for _ in 0..per_conn.min(count - n) {
            let body = creds(&format!("{prefix}{n:05}"), "fleet-password").to_string();
            stream
                .write_all(&encode_request(
                    "POST",
                    "/api/client-registry/register",
                    &[],
                    body.as_bytes(),
                ))
                .unwrap();
            let r = read_response(&mut reader).expect("a response");
            assert_eq!(r.status, expect, "{prefix}{n:05}: {}", r.text());
            n += 1;
        }
    }
}

#[test]
fn a_bulk_grant_by_prefix_admits_10000_devices() {
    const FLEET: usize = 10_000;
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock", "--for", "30m"]).code, 0);
    // Some that must stay pending: the prefix is exact.
    assert_eq!(poll(&g, "other-1", "password1"), 202);
    let start = Instant::now();
    register_fleet(g.http, "fleet-", FLEET, 202);
    let registered = start.elapsed();
    // The listing follows its pages (10 of 1000).
    let r = op.run(&["requests", "list", "--prefix", "fleet-", "-o", "name"]);
    assert_eq!(r.lines().len(), FLEET);

    let start = Instant::now();
    let r = op.run(&["grant", "--prefix", "fleet-", "-o", "name"]);
    let granted = start.elapsed();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.lines().len(), FLEET);
    assert_eq!(r.lines()[0], "fleet-00000");
    assert_eq!(r.lines()[FLEET - 1], format!("fleet-{:05}", FLEET - 1));
    // Piped: no progress bar, nothing extra at all.
    assert_eq!(r.stderr, "", "nothing on stderr when piped");

    // Every device collects its 201.
    let start = Instant::now();
    register_fleet(g.http, "fleet-", FLEET, 201);
    let collected = start.elapsed();
    assert_eq!(poll(&g, "other-1", "password1"), 202);
    let r = op.run(&["users", "list", "--prefix", "fleet-", "-o", "name"]);
    assert_eq!(r.lines().len(), FLEET);
    eprintln!(
        "{FLEET} devices: registered in {registered:?}, granted by prefix in {granted:?}, \
         collected in {collected:?}"
    );
}

#[test]
fn a_bulk_grant_on_a_terminal_shows_progress() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock", "--for", "30m"]).code, 0);
    register_fleet(g.http, "tty-", 1_200, 202);
    // `script` runs the command on a pseudo-terminal: stderr is a terminal.
    let command = format!(
        "{} grant --all-pending --page-size 300 -o name",
        ctl_bin().display()
    );
    let mut cmd = Command::new("script");
    op.prepare(&mut cmd, &[]);
    cmd.args(["-qec", &command, "/dev/null"]);
    let r = run_command(cmd, None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("granting ["),
        "a bar on the terminal: {:?}",
        r.stdout
    );
    assert!(r.stdout.contains("1200/1200"), "{:?}", r.stdout);
    assert!(r.stdout.contains("tty-01199"), "{:?}", r.stdout);
    assert_eq!(poll(&g, "tty-00000", "fleet-password"), 201);
}

#[test]
fn watch_on_a_terminal_redraws_the_table() {
    let g = Gateway::start(&[]);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    assert_eq!(poll(&g, "first", "password1"), 202);
    let command = format!(
        "{} requests list --watch --interval 200ms",
        ctl_bin().display()
    );
    let home = op.config.path().to_str().unwrap().to_owned();
    // `script` gives the watch a terminal; dropping it kills `script` by
    // PID, which closes the terminal and hangs the watch up.
    let mut script = spawn_program(
        std::path::Path::new("script"),
        &["-qec", &command, "/dev/null"],
        &[
            ("XDG_CONFIG_HOME", home.as_str()),
            ("FLEETGATE_SERVER", op.server.as_str()),
            ("COLUMNS", "100"),
        ],
    );
    let mut stdout = script.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&screen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => screen.extend(bytes),
                Err(_) => panic!(
                    "no {needle:?} on the terminal: {:?}",
                    String::from_utf8_lossy(&screen)
                ),
            }
        }
        let text = String::from_utf8_lossy(&screen).into_owned();
        screen.clear();
        text
    };
    let text = wait_for("first");
    assert!(
        text.contains("\u{1b}[H\u{1b}[2J"),
        "the screen is redrawn: {text:?}"
    );
    assert!(
        text.contains("NAME") && text.contains("(1 shown)"),
        "{text:?}"
    );
    assert_eq!(poll(&g, "second", "password1"), 202);
    let text = wait_for("(2 shown)");
    // The whole table again, not only the new row.
    assert!(text.contains("first") || wait_for("second").contains("first"));
}

/// `audit`: the log oldest first in every format, filters, a username
/// typed into a failed login shown as escaped text, `--since` refused when
/// it does not read, and `--follow` printing each new record once.
#[test]
fn audit_lists_filters_and_follows() {
    let g = Gateway::start(&[]);
    // A failed login whose "username" would move the cursor of a terminal.
    let body = json!({"username": "evil\u{1b}[2J", "password": "nope"}).to_string();
    let r = fleetgate_tests::request(g.admin, "POST", "/api/login", &[], body.as_bytes());
    assert_eq!(r.status, 401);
    let op = Operator::logged_in(&g);
    assert_eq!(op.run(&["unlock"]).code, 0);
    assert_eq!(poll(&g, "dev-1", "password1"), 202);
    assert_eq!(op.run(&["grant", "dev-1"]).code, 0);

    let r = op.run(&["audit"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines = r.lines();
    assert!(lines[0].starts_with("TIME"), "{r:?}");
    let actions: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(
        actions,
        ["login", "login", "registry.unlock", "request.grant"],
        "{r:?}"
    );
    assert!(!r.stdout.contains('\u{1b}'), "escaped: {r:?}");
    assert!(lines[1].contains("unauthorized") && lines[4].contains("dev-1"));

    let r = op.run(&["audit", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let page = r.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[1]["actor"], "admin");
    assert_eq!(items[1]["source"], "127.0.0.1");
    assert_eq!(items[3]["detail"], "bulk");

    let r = op.run(&["audit", "--target", "dev-1", "-o", "name"]);
    assert_eq!(r.lines(), [items[3]["id"].as_str().unwrap()], "{r:?}");
    let r = op.run(&["audit", "--actor", "nobody"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    assert!(r.stderr.contains("no audit records"), "{r:?}");
    let r = op.run(&["audit", "--since", "2999-01-01T00:00:00Z", "-o", "name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = op.run(&["audit", "--since", "last tuesday"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = op.run(&["audit", "--interval", "1s"]);
    assert_eq!(r.code, 2, "--interval needs --follow: {r:?}");

    let home = op.config.path().to_str().unwrap().to_owned();
    let env = [
        ("XDG_CONFIG_HOME", home.as_str()),
        ("FLEETGATE_SERVER", op.server.as_str()),
    ];
    let mut follow = spawn_program(
        &ctl_bin(),
        &["audit", "--follow", "--interval", "200ms", "-o", "name"],
        &env,
    );
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line from --follow")
    };
    for item in items {
        assert_eq!(next(), item["id"].as_str().unwrap());
    }
    assert_eq!(op.run(&["lock"]).code, 0);
    let lock_id = next();
    let (_, text) = api_get(&g, "/api/audit?actor=admin&limit=2");
    let newest: Value = serde_json::from_str(&text).unwrap();
    // api_get logged in once more: the newest is that login, then the lock.
    assert_eq!(newest["items"][1]["id"], lock_id.as_str());
    assert_eq!(newest["items"][1]["action"], "registry.lock");
    // The login of api_get comes next, and nothing twice.
    let login_id = next();
    assert_eq!(newest["items"][0]["id"], login_id.as_str());
    assert!(
        rx.recv_timeout(Duration::from_millis(800)).is_err(),
        "each record once"
    );
}
