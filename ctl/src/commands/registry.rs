//! `login`, and the registry's lock: `status`, `unlock [--for D]`, `lock`.
//!
//! `login` asks for the password on the terminal without echo (or reads
//! one line of `--password-stdin`), posts it to `/api/login`, and stores
//! the token with [`crate::token::store`]. Neither the password nor the
//! token is ever printed.

use std::io::Read;
use std::time::{Duration, SystemTime};

use http::Method;
use serde_json::{json, Value};

use crate::cli::{Format, LoginArgs, UnlockArgs};
use crate::client::Client;
use crate::output::{Table, Ui};
use crate::token::{self, TokenEnv, TOKEN_VAR};
use crate::{CtlError, Outcome};

/// The longest password read: the gateway's own limit (docs/API.md).
pub const MAX_PASSWORD: usize = 1024;

/// The longest `unlock --for` the API accepts.
pub const MAX_UNLOCK: Duration = Duration::from_secs(24 * 3600);

pub async fn login(
    client: &Client,
    ui: &Ui,
    env: &TokenEnv,
    args: LoginArgs,
) -> Result<Outcome, CtlError> {
    let path = env.token_path()?;
    if let Some(host) = plain_http_host(client.server()) {
        ui.note(&format!(
            "warning: the password goes to {host} unencrypted (http://); use https:// \
             unless this network is trusted"
        ));
    }
    let password = if args.password_stdin {
        read_password(std::io::stdin().lock())?
    } else {
        rpassword::prompt_password(format!("Password for {}: ", args.username)).map_err(|e| {
            CtlError::Usage(format!(
                "cannot ask for the password ({e}): there is no terminal; use --password-stdin"
            ))
        })?
    };
    if password.is_empty() {
        return Err(CtlError::Usage("the password is empty".into()));
    }
    let mut body = json!({"username": args.username, "password": password});
    if let Some(hours) = args.expire_hours {
        body["expireTimeInHours"] = json!(hours);
    }
    let reply = client
        .call(Method::POST, "/api/login", Some(&body))
        .await?
        .success()?;
    let token = reply
        .json()?
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CtlError::BadReply("the login answer has no `token`".into()))?;
    token::store(&path, &token)?;
    ui.note(&format!(
        "logged in to {} as {}; token stored in {}",
        client.server(),
        args.username,
        path.display()
    ));
    if env.token.is_some() {
        ui.note(&format!(
            "note: {TOKEN_VAR} is set, and overrides the stored token until it is unset"
        ));
    }
    Ok(Outcome::Success)
}

/// The host of an `http://` server that is not this machine: a password
/// sent there crosses a network in the clear.
fn plain_http_host(server: &str) -> Option<String> {
    let uri: http::Uri = server.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

/// One line of `reader`, without its line ending, at most
/// [`MAX_PASSWORD`] bytes.
pub fn read_password(reader: impl Read) -> Result<String, CtlError> {
    let mut raw = Vec::new();
    reader
        .take(MAX_PASSWORD as u64 + 2)
        .read_to_end(&mut raw)
        .map_err(|e| CtlError::Local(format!("cannot read the password from stdin: {e}")))?;
    let line = raw.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_PASSWORD {
        return Err(CtlError::Usage(format!(
            "the password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    String::from_utf8(line.to_vec())
        .map_err(|_| CtlError::Usage("the password is not UTF-8".into()))
}

pub async fn status(client: &Client, ui: &Ui) -> Result<Outcome, CtlError> {
    let reply = client.get("/api/client-registry").await?;
    show_status(ui, &reply.body, &reply.json()?)?;
    Ok(Outcome::Success)
}

pub async fn unlock(client: &Client, ui: &Ui, args: UnlockArgs) -> Result<Outcome, CtlError> {
    let body = match args.duration {
        Some(d) if d.is_zero() || d > MAX_UNLOCK => {
            return Err(CtlError::Usage(format!(
                "--for must be more than 0 and at most {}",
                humantime::format_duration(MAX_UNLOCK)
            )))
        }
        Some(d) => json!({"durationMs": d.as_millis() as u64}),
        None => json!({}),
    };
    let reply = client
        .call(Method::POST, "/api/client-registry/unlock", Some(&body))
        .await?
        .success()?;
    show_status(ui, &reply.body, &reply.json()?)?;
    Ok(Outcome::Success)
}

pub async fn lock(client: &Client, ui: &Ui) -> Result<Outcome, CtlError> {
    let reply = client
        .call(Method::POST, "/api/client-registry/lock", None)
        .await?
        .success()?;
    show_status(ui, &reply.body, &reply.json()?)?;
    Ok(Outcome::Success)
}

/// `{"locked", "unlockedUntil", "pending"}` in the chosen format; `-o
/// name` prints `locked` or `unlocked`.
fn show_status(ui: &Ui, raw: &[u8], status: &Value) -> Result<(), CtlError> {
    let locked = status
        .get("locked")
        .and_then(Value::as_bool)
        .ok_or_else(|| CtlError::BadReply("the status has no `locked`".into()))?;
    let state = if locked { "locked" } else { "unlocked" };
    match ui.format {
        Format::Json => ui.print_json(raw),
        Format::Name => ui.print_names([state]),
        Format::Table => {
            let until = status.get("unlockedUntil").and_then(Value::as_str);
            let left = until
                .and_then(|u| humantime::parse_rfc3339_weak(u).ok())
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                // `4m 59s` without the space, so the cell is one word.
                .map(|d| {
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                        .to_string()
                        .replace(' ', "")
                });
            let mut table = Table::new(&["REGISTRY", "UNLOCKED-UNTIL", "LEFT", "PENDING"]);
            table.row([
                state.to_owned(),
                until.unwrap_or("-").to_owned(),
                left.unwrap_or_else(|| "-".into()),
                super::cell(status, "pending"),
            ]);
            ui.print_table(&table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_off_this_machine_is_named() {
        assert_eq!(plain_http_host("http://127.0.0.1:8081"), None);
        assert_eq!(plain_http_host("http://localhost:8081"), None);
        assert_eq!(plain_http_host("http://[::1]:8081"), None);
        assert_eq!(plain_http_host("https://gw.example:8081"), None);
        assert_eq!(
            plain_http_host("http://gw.example:8081").as_deref(),
            Some("gw.example")
        );
    }

    #[test]
    fn the_password_is_the_first_line_without_its_ending() {
        assert_eq!(read_password(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_password(&b"s3cret\r\nrest"[..]).unwrap(), "s3cret");
        assert_eq!(read_password(&b"no newline"[..]).unwrap(), "no newline");
    }

    #[test]
    fn a_password_at_the_cap_is_read_and_over_it_is_refused() {
        let at = "p".repeat(MAX_PASSWORD);
        assert_eq!(read_password(format!("{at}\n").as_bytes()).unwrap(), at);
        let over = "p".repeat(MAX_PASSWORD + 1);
        let err = read_password(over.as_bytes()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        // The message never repeats the password.
        assert!(!err.to_string().contains("ppp"));
    }
}
