//! What each verb does with the admin API, and the helpers they share.
//!
//! [`run`] takes the parsed command line and returns an [`Outcome`] (exit 0
//! or 1) or a [`CtlError`] (exit 1, or 2 for usage). Every verb prints
//! through a [`Ui`], so `-o table|json|name` and the escaping of device
//! strings are decided in one place.
//!
//! # Layout
//! - [`registry`]: `login`, `status`, `unlock`, `lock`.
//! - [`requests`]: `requests list|show|delete`, and `--watch`.
//! - [`decide`]: `grant` and `deny`, by name, prefix, pairing id, every
//!   pending request or a file, through the bulk routes.
//! - [`users`]: `users list|show|delete|set-roles|set-permissions`.
//! - [`roles`]: `roles list|show|put|delete`.
//! - [`rules`]: `rules list|get|put|delete|order`.
//! - [`audit`]: `audit [--follow]`, the audit log.

pub mod audit;
pub mod decide;
pub mod registry;
pub mod requests;
pub mod roles;
pub mod rules;
pub mod users;

use std::time::{Duration, SystemTime};

use clap::CommandFactory;
use serde_json::Value;

use crate::cli::{Cli, Command, GlobalArgs, Shell};
use crate::client::{encode, Client, Reply, TlsTrust};
use crate::output::{Table, Ui};
use crate::token::TokenEnv;
use crate::{CtlError, Outcome};

/// The largest page the listing routes serve.
pub const MAX_LIST_PAGE: u64 = 1000;

/// Runs one command.
pub async fn run(cli: Cli, ui: &Ui, env: &TokenEnv) -> Result<Outcome, CtlError> {
    let global = &cli.global;
    match cli.command {
        Command::Completions(args) => {
            let shell = match args.shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fleetgate-ctl", &mut out);
            ui.print(&String::from_utf8_lossy(&out))?;
            Ok(Outcome::Success)
        }
        Command::Login(args) => {
            let client = connect(global, None)?;
            registry::login(&client, ui, env, args).await
        }
        command => {
            let client = connect(global, Some(env.load()?))?;
            let result = match command {
                Command::Status => registry::status(&client, ui).await,
                Command::Unlock(args) => registry::unlock(&client, ui, args).await,
                Command::Lock => registry::lock(&client, ui).await,
                Command::Requests(cmd) => requests::run(&client, ui, cmd).await,
                Command::Grant(args) => decide::grant(&client, ui, args).await,
                Command::Deny(args) => decide::deny(&client, ui, args).await,
                Command::Users(cmd) => users::run(&client, ui, cmd).await,
                Command::Roles(cmd) => roles::run(&client, ui, cmd).await,
                Command::Rules(cmd) => rules::run(&client, ui, cmd).await,
                Command::Audit(args) => audit::run(&client, ui, args).await,
                Command::Completions(_) | Command::Login(_) => unreachable!("handled above"),
            };
            result.map_err(hint_login)
        }
    }
}

/// A refused token gets the way out added: its message alone ("invalid
/// or expired token") does not say what to do.
fn hint_login(e: CtlError) -> CtlError {
    match e {
        CtlError::Api { status, message } if status == http::StatusCode::UNAUTHORIZED => {
            CtlError::Api {
                status,
                message: format!("{message}; run `fleetgate-ctl login` (or set FLEETGATE_TOKEN)"),
            }
        }
        other => other,
    }
}

fn connect(global: &GlobalArgs, token: Option<String>) -> Result<Client, CtlError> {
    let trust = match (&global.cacert, global.insecure) {
        (Some(path), _) => TlsTrust::CaFile(path.clone()),
        (None, true) => TlsTrust::Insecure,
        (None, false) => TlsTrust::System,
    };
    Client::new(&global.server, trust, global.timeout, token)
}

/// One page of a listing: its body as the API sent it, and its items.
pub struct Page {
    pub reply: Reply,
    pub items: Vec<Value>,
}

/// Reads every page of a listing route (`path` with its query, without
/// `limit` and `cursor`), following `nextCursor`, until the listing ends or
/// `limit` items have been read.
pub async fn list_pages(
    client: &Client,
    path: &str,
    limit: Option<u64>,
) -> Result<Vec<Page>, CtlError> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    let mut read = 0u64;
    loop {
        let want = limit.map_or(MAX_LIST_PAGE, |l| (l - read).min(MAX_LIST_PAGE));
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={want}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", encode(c)));
        }
        let reply = client.get(&url).await?;
        let page = reply.json()?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| CtlError::BadReply("a listing without `items`".into()))?;
        read += items.len() as u64;
        let next = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let empty = items.is_empty();
        pages.push(Page { reply, items });
        match next {
            Some(next) if limit.is_none_or(|l| read < l) => {
                // A cursor that does not move would loop for ever.
                if empty && cursor.as_deref() == Some(next.as_str()) {
                    return Err(CtlError::BadReply(
                        "the listing's cursor does not advance".into(),
                    ));
                }
                cursor = Some(next);
            }
            _ => return Ok(pages),
        }
    }
}

/// A string field of an object, or "".
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Any field as a short cell: strings as they are, `null` or missing as
/// `-`, arrays of strings joined by `, `, permissions as
/// `resource:operation:context`.
pub fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(value) => render_value(value),
    }
}

fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(render_value)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) if value.get("resource").is_some() => format!(
            "{}:{}:{}",
            text(value, "resource"),
            text(value, "operation"),
            text(value, "context")
        ),
        Value::Object(_) => value.to_string(),
    }
}

/// A two-column "field: value" view of one object: the `first` keys in
/// that order, then every other key the API sent.
pub fn describe(obj: &Value, first: &[&str]) -> Table {
    let mut table = Table::new(&["FIELD", "VALUE"]).flexible(&["VALUE"]);
    let mut keys: Vec<&str> = first
        .iter()
        .copied()
        .filter(|k| obj.get(*k).is_some())
        .collect();
    if let Some(map) = obj.as_object() {
        for k in map.keys() {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    for key in keys {
        table.row([format!("{key}:"), cell(obj, key)]);
    }
    table
}

/// Prints [`describe`]'s table without its header.
pub fn print_described(ui: &Ui, obj: &Value, first: &[&str]) -> Result<(), CtlError> {
    ui.print(&describe(obj, first).render(ui.width, false))
}

/// How long ago an RFC 3339 time was, as `42s`, `5m`, `3h` or `2d`;
/// `-` when the field is missing or unreadable.
pub fn age(v: &Value, key: &str, now: SystemTime) -> String {
    let Some(t) = v
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return "-".to_owned();
    };
    short_duration(now.duration_since(t).unwrap_or(Duration::ZERO))
}

/// A duration in its largest whole unit.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_render_the_api_shapes() {
        let v = json!({"roles": ["a", "b"], "permissions": [
            {"resource": "plant/#", "operation": "read", "context": "mqtt"}],
            "context": null, "polls": 3, "hasPassword": true, "none": []});
        assert_eq!(cell(&v, "roles"), "a, b");
        assert_eq!(cell(&v, "permissions"), "plant/#:read:mqtt");
        assert_eq!(cell(&v, "context"), "-");
        assert_eq!(cell(&v, "missing"), "-");
        assert_eq!(cell(&v, "polls"), "3");
        assert_eq!(cell(&v, "hasPassword"), "yes");
        assert_eq!(cell(&v, "none"), "-");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = humantime::parse_rfc3339("2026-11-21T20:00:00Z").unwrap();
        let v = json!({"a": "2026-11-21T19:59:18.000Z", "b": "2026-11-21T17:00:00Z",
                       "c": "2026-11-18T20:00:00Z", "d": "not a time"});
        assert_eq!(age(&v, "a", now), "42s");
        assert_eq!(age(&v, "b", now), "3h");
        assert_eq!(age(&v, "c", now), "3d");
        assert_eq!(age(&v, "d", now), "-");
    }
}
