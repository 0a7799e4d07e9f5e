//! `grant` and `deny`: one decision for many requests.
//!
//! What is decided ([`Target`]):
//! - names (arguments or `-f FILE|-`): `POST .../requests/grant|deny` with
//!   `{"usernames": [...]}`, `--page-size` names a call;
//! - one name with `--pairing-id`: the single route
//!   `POST .../requests/{name}/grant|deny` with `{"pairingId"}`, which the
//!   server refuses (409) if the request's id differs;
//! - `--prefix`, `--all-pending`, or `--pairing-id` alone: the bulk route
//!   with a `selector`, `limit` = `--page-size`, and `nextCursor` passed
//!   back as `cursor` until the server sends none.
//!
//! Each item comes back `granted`/`already_granted` (or `denied`/
//! `already_denied`), which are successes, or `conflict`/`not_found`,
//! which are failures: each is named on stderr with why (for up to
//! [`MAX_EXPLAINED`] conflicts the request is looked up to say which
//! conflict it is), and the exit code is 1. A grant gives the roles and
//! permissions of `--role`/`--permission`, and nothing else.
//!
//! `--dry-run` reads instead of deciding: the pending listing for a
//! selector, each request for names, and prints what would happen.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::cli::{DenyArgs, Format, GrantArgs, Selection, Transport};
use crate::client::{encode, Client};
use crate::output::{escape, Table, Ui};
use crate::permission;
use crate::progress::Progress;
use crate::{CtlError, Outcome};

use super::{list_pages, text};

/// The most names `-f` reads: the gateway's default `--max-pending`, so a
/// file can name every request one gateway holds.
pub const MAX_FILE_NAMES: usize = 1_000_000;
/// The longest line `-f` accepts (a username is at most 128 characters).
pub const MAX_NAME_LINE: usize = 1024;
/// How many failed items are looked up to say why they failed; the rest
/// get the general reason.
pub const MAX_EXPLAINED: usize = 100;
/// The most pages one bulk decision follows (10,000 pages of 10,000 is far
/// beyond any store); a server whose cursor never ends cannot loop us.
pub const MAX_PAGES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Grant,
    Deny,
}

impl Kind {
    fn verb(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Deny => "deny",
        }
    }
    fn verb_ing(self) -> &'static str {
        match self {
            Kind::Grant => "granting",
            Kind::Deny => "denying",
        }
    }
    fn done(self) -> &'static str {
        match self {
            Kind::Grant => "granted",
            Kind::Deny => "denied",
        }
    }
    fn already(self) -> &'static str {
        match self {
            Kind::Grant => "already_granted",
            Kind::Deny => "already_denied",
        }
    }
    fn is_success(self, result: &str) -> bool {
        result == self.done() || result == self.already()
    }
}

/// What a decision applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Names(Vec<String>),
    One {
        name: String,
        pairing_id: String,
    },
    Selector {
        prefix: Option<String>,
        transport: Option<Transport>,
        pairing_ids: Vec<String>,
    },
}

impl Target {
    fn from_selection(sel: &Selection) -> Result<Target, CtlError> {
        let mut names = sel.names.clone();
        if let Some(path) = &sel.file {
            names.extend(read_names_from(path)?);
        }
        let mut seen = HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        if !sel.names.is_empty() || sel.file.is_some() {
            if sel.transport.is_some() {
                return Err(CtlError::Usage(
                    "--transport goes with --prefix, --all-pending or --pairing-id; names are exact"
                        .into(),
                ));
            }
            return match (names.len(), sel.pairing_id.as_slice()) {
                (_, []) => Ok(Target::Names(names)),
                (1, [id]) => Ok(Target::One {
                    name: names.remove(0),
                    pairing_id: id.clone(),
                }),
                _ => Err(CtlError::Usage(
                    "--pairing-id with names takes exactly one NAME and one ID".into(),
                )),
            };
        }
        if sel.prefix.as_deref() == Some("") {
            return Err(CtlError::Usage(
                "--prefix is empty: say --all-pending to decide every pending request".into(),
            ));
        }
        Ok(Target::Selector {
            prefix: sel.prefix.clone(),
            transport: sel.transport,
            pairing_ids: sel.pairing_id.clone(),
        })
    }
}

fn read_names_from(path: &std::path::Path) -> Result<Vec<String>, CtlError> {
    if path.as_os_str() == "-" {
        return parse_names(std::io::stdin().lock());
    }
    let file = std::fs::File::open(path)
        .map_err(|e| CtlError::Local(format!("cannot open {}: {e}", path.display())))?;
    parse_names(BufReader::new(file))
}

/// Usernames one a line; blank lines and `#` comments are skipped, and
/// spaces around a name are dropped. At most [`MAX_FILE_NAMES`] names of
/// lines up to [`MAX_NAME_LINE`] bytes.
pub fn parse_names(reader: impl BufRead) -> Result<Vec<String>, CtlError> {
    let mut names = Vec::new();
    let mut reader = reader.take(u64::MAX);
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        reader.set_limit(MAX_NAME_LINE as u64 + 1);
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CtlError::Local(format!("cannot read names: {e}")))?;
        if n == 0 {
            return Ok(names);
        }
        number += 1;
        if line.last() != Some(&b'\n') && line.len() > MAX_NAME_LINE {
            return Err(CtlError::Usage(format!(
                "line {number} of the names is longer than {MAX_NAME_LINE} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&line);
        let name = text.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if names.len() == MAX_FILE_NAMES {
            return Err(CtlError::Usage(format!(
                "more than {MAX_FILE_NAMES} names: split the file"
            )));
        }
        names.push(name.to_owned());
    }
}

/// One decided (or, in a dry run, examined) request.
#[derive(Clone, Debug)]
struct Decided {
    username: String,
    result: String,
    pairing_id: Option<String>,
    /// Why it failed, for a failure.
    why: Option<String>,
}

pub async fn grant(client: &Client, ui: &Ui, args: GrantArgs) -> Result<Outcome, CtlError> {
    let mut overrides = Map::new();
    if !args.roles.is_empty() {
        overrides.insert("roles".into(), json!(args.roles));
    }
    if !args.permissions.is_empty() {
        overrides.insert(
            "permissions".into(),
            Value::Array(permission::parse_all(&args.permissions)?),
        );
    }
    decide(client, ui, Kind::Grant, &args.selection, overrides).await
}

pub async fn deny(client: &Client, ui: &Ui, args: DenyArgs) -> Result<Outcome, CtlError> {
    decide(client, ui, Kind::Deny, &args.selection, Map::new()).await
}

async fn decide(
    client: &Client,
    ui: &Ui,
    kind: Kind,
    sel: &Selection,
    overrides: Map<String, Value>,
) -> Result<Outcome, CtlError> {
    let target = Target::from_selection(sel)?;
    if sel.dry_run {
        return dry_run(client, ui, kind, &target).await;
    }
    let mut bodies: Vec<bytes::Bytes> = Vec::new();
    let mut decided: Vec<Decided> = Vec::new();
    let page = sel.page_size as usize;
    let route = format!("/api/client-registry/requests/{}", kind.verb());
    // A call that fails after others succeeded: what they decided is still
    // reported, then the command fails with this.
    let mut broke_off: Option<CtlError> = None;
    match &target {
        Target::Names(names) if names.is_empty() => {
            ui.note(&format!("nothing to {}: no names", kind.verb()));
            return Ok(Outcome::Success);
        }
        Target::Names(names) => {
            let mut progress = Progress::new(
                ui.stderr_is_terminal && names.len() > page,
                kind.verb_ing(),
                Some(names.len() as u64),
            );
            for chunk in names.chunks(page) {
                let mut body = overrides.clone();
                body.insert("usernames".into(), json!(chunk));
                let (raw, answer) = match bulk_page(client, &route, body).await {
                    Ok(page) => page,
                    Err(e) => {
                        broke_off = Some(e);
                        break;
                    }
                };
                let items = bulk_items(&answer);
                progress.advance(items.len() as u64);
                decided.extend(items);
                bodies.push(raw);
            }
            progress.finish();
        }
        Target::One { name, pairing_id } => {
            let mut body = overrides.clone();
            body.insert("pairingId".into(), json!(pairing_id));
            let path = format!(
                "/api/client-registry/requests/{}/{}",
                encode(name),
                kind.verb()
            );
            let reply = client
                .call(Method::POST, &path, Some(&Value::Object(body)))
                .await?;
            let (result, why) = match reply.status {
                s if s.is_success() => (kind.done().to_owned(), None),
                StatusCode::NOT_FOUND => ("not_found".to_owned(), Some(reply_error(&reply.body))),
                StatusCode::CONFLICT => ("conflict".to_owned(), Some(reply_error(&reply.body))),
                _ => return Err(reply.into_error()),
            };
            if !reply.body.is_empty() {
                bodies.push(reply.body.clone());
            }
            decided.push(Decided {
                username: name.clone(),
                result,
                pairing_id: Some(pairing_id.clone()),
                why,
            });
        }
        Target::Selector {
            prefix,
            transport,
            pairing_ids,
        } => {
            let mut selector = Map::new();
            if let Some(p) = prefix {
                selector.insert("prefix".into(), json!(p));
            }
            if let Some(t) = transport {
                selector.insert("transport".into(), json!(t.as_str()));
            }
            if !pairing_ids.is_empty() {
                selector.insert("pairingIds".into(), json!(pairing_ids));
            }
            // The total is known for every pending request; a prefix's
            // count is not, and the bar shows a running count instead.
            let total = if ui.stderr_is_terminal && selector.is_empty() {
                client
                    .get("/api/client-registry")
                    .await
                    .ok()
                    .and_then(|r| r.json().ok())
                    .and_then(|s| s.get("pending").and_then(Value::as_u64))
            } else {
                None
            };
            let mut progress = Progress::new(ui.stderr_is_terminal, kind.verb_ing(), total);
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut body = overrides.clone();
                body.insert("selector".into(), Value::Object(selector.clone()));
                body.insert("limit".into(), json!(page));
                if let Some(c) = &cursor {
                    body.insert("cursor".into(), json!(c));
                }
                let (raw, answer) = match bulk_page(client, &route, body).await {
                    Ok(page) => page,
                    Err(e) => {
                        broke_off = Some(e);
                        break;
                    }
                };
                let items = bulk_items(&answer);
                progress.advance(items.len() as u64);
                let next = answer
                    .get("nextCursor")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned);
                let stuck = items.is_empty() && next.is_some() && next == cursor;
                decided.extend(items);
                bodies.push(raw);
                match next {
                    Some(_) if stuck => {
                        broke_off = Some(CtlError::BadReply(
                            "the bulk answer's cursor does not advance".into(),
                        ));
                        break;
                    }
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            progress.finish();
        }
    }
    explain_failures(client, kind, &target, &mut decided).await;
    match broke_off {
        None => report(ui, kind, &decided, &bodies, false),
        Some(e) if decided.is_empty() => Err(e),
        Some(e) => {
            report(ui, kind, &decided, &bodies, false)?;
            ui.note(&format!(
                "the run stopped after {} requests; those above were decided",
                decided.len()
            ));
            Err(e)
        }
    }
}

/// One call of a bulk route, and its answer as bytes and as JSON.
async fn bulk_page(
    client: &Client,
    route: &str,
    body: Map<String, Value>,
) -> Result<(bytes::Bytes, Value), CtlError> {
    let reply = bulk_call(client, route, body).await?;
    let answer = reply.json()?;
    if !answer.get("items").is_some_and(Value::is_array) {
        return Err(CtlError::BadReply("a bulk answer without `items`".into()));
    }
    Ok((reply.body, answer))
}

/// One call of a bulk route. A gateway from before the bulk routes
/// answers them as the single-request route of a user named `grant`
/// (405) or not at all (404); that is said plainly.
async fn bulk_call(
    client: &Client,
    route: &str,
    body: Map<String, Value>,
) -> Result<crate::client::Reply, CtlError> {
    let reply = client
        .call(Method::POST, route, Some(&Value::Object(body)))
        .await?;
    match reply.status {
        // The bulk routes answer 200 with per-item results, even for
        // names that do not exist: a 404 or 405 is about the route.
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND => Err(CtlError::Api {
            status: reply.status,
            message: format!(
                "{} has no bulk decision route (POST {route}); it is older than \
                     fleetgate-ctl (name one request with --pairing-id to use the \
                     single-request route)",
                client.server()
            ),
        }),
        _ => reply.success(),
    }
}

/// The `items` of a bulk answer ([`bulk_page`] checked they are there).
fn bulk_items(answer: &Value) -> Vec<Decided> {
    let empty = Vec::new();
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    items
        .iter()
        .map(|item| Decided {
            username: text(item, "username").to_owned(),
            result: text(item, "result").to_owned(),
            pairing_id: item
                .get("pairingId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            why: None,
        })
        .collect()
}

/// The `error` sentence of an error body.
fn reply_error(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Fills in `why` for failed items: for the first [`MAX_EXPLAINED`]
/// conflicts, the request's current state says which conflict it is.
async fn explain_failures(client: &Client, kind: Kind, target: &Target, decided: &mut [Decided]) {
    let pairing_ids: &[String] = match target {
        Target::Selector { pairing_ids, .. } => pairing_ids,
        _ => &[],
    };
    let mut looked_up = 0;
    for item in decided.iter_mut() {
        if kind.is_success(&item.result) || item.why.as_deref().is_some_and(|w| !w.is_empty()) {
            continue;
        }
        let general = match (kind, item.result.as_str()) {
            (_, "not_found") => "no pending request of that name".to_owned(),
            (Kind::Grant, "conflict") => {
                "the request was denied, or the username already belongs to a user".to_owned()
            }
            (Kind::Deny, "conflict") => {
                "the request was already granted: delete the user instead".to_owned()
            }
            (_, other) => format!("the server answered `{other}`"),
        };
        item.why = Some(general);
        if item.result != "conflict" || looked_up >= MAX_EXPLAINED {
            continue;
        }
        looked_up += 1;
        let path = format!("/api/client-registry/requests/{}", encode(&item.username));
        let Ok(reply) = client.get(&path).await else {
            continue;
        };
        let Ok(request) = reply.json() else { continue };
        let state = text(&request, "state");
        let pairing = text(&request, "pairingId");
        let why = match (kind, state) {
            (Kind::Deny, "granted") => Some(format!(
                "the request was already granted: delete the user instead (fleetgate-ctl users delete {})",
                item.username
            )),
            (Kind::Grant, "denied") => Some("the request was denied".to_owned()),
            (_, "pending") if !pairing_ids.is_empty() && !pairing_ids.iter().any(|p| p == pairing) => {
                Some(format!("the request's pairing id is now {pairing}"))
            }
            (Kind::Grant, _) => Some("the username already belongs to a user".to_owned()),
            _ => None,
        };
        if let Some(why) = why {
            item.why = Some(why);
        }
    }
}

/// Prints the decided items in the chosen format, names each failure on
/// stderr, and returns the outcome.
fn report(
    ui: &Ui,
    kind: Kind,
    decided: &[Decided],
    bodies: &[bytes::Bytes],
    dry_run: bool,
) -> Result<Outcome, CtlError> {
    let failed: Vec<&Decided> = decided
        .iter()
        .filter(|d| !is_ok(kind, &d.result, dry_run))
        .collect();
    match ui.format {
        Format::Json => {
            for body in bodies {
                ui.print_json(body)?;
            }
        }
        Format::Name => ui.print_names(
            decided
                .iter()
                .filter(|d| is_ok(kind, &d.result, dry_run))
                .map(|d| d.username.as_str()),
        )?,
        Format::Table => {
            let mut table = Table::new(&["NAME", "RESULT", "PAIRING-ID"]);
            for d in decided {
                table.row([
                    d.username.as_str(),
                    d.result.as_str(),
                    d.pairing_id.as_deref().unwrap_or("-"),
                ]);
            }
            if !table.is_empty() {
                ui.print_table(&table)?;
            }
            let count = |r: &str| decided.iter().filter(|d| d.result == r).count();
            let summary = if dry_run {
                let would = format!("would_{}", kind.verb());
                format!(
                    "dry run: {} would be {}, {} {}, {} would fail; nothing was changed\n",
                    count(&would),
                    kind.done(),
                    count(kind.already()),
                    kind.already().replace('_', " "),
                    failed.len()
                )
            } else {
                format!(
                    "{} {}, {} {}, {} failed\n",
                    count(kind.done()),
                    kind.done(),
                    count(kind.already()),
                    kind.already().replace('_', " "),
                    failed.len()
                )
            };
            ui.print(&summary)?;
        }
    }
    for d in &failed {
        ui.item_failed(&format!(
            "{} {}: {}: {}",
            kind.verb(),
            d.username,
            d.result,
            d.why.as_deref().unwrap_or("")
        ));
    }
    Ok(Outcome::from_failures(failed.len()))
}

fn is_ok(kind: Kind, result: &str, dry_run: bool) -> bool {
    kind.is_success(result) || (dry_run && result == format!("would_{}", kind.verb()))
}

async fn dry_run(
    client: &Client,
    ui: &Ui,
    kind: Kind,
    target: &Target,
) -> Result<Outcome, CtlError> {
    let would = format!("would_{}", kind.verb());
    let mut decided = Vec::new();
    let mut bodies = Vec::new();
    match target {
        Target::Selector {
            prefix,
            transport,
            pairing_ids,
        } => {
            let mut path = "/api/client-registry/requests?state=pending".to_owned();
            if let Some(p) = prefix {
                path.push_str(&format!("&prefix={}", encode(p)));
            }
            let filtered = transport.is_some() || !pairing_ids.is_empty();
            for page in list_pages(client, &path, None).await? {
                let items: Vec<Value> = page
                    .items
                    .into_iter()
                    .filter(|i| transport.is_none_or(|t| text(i, "transport") == t.as_str()))
                    .filter(|i| {
                        pairing_ids.is_empty()
                            || pairing_ids.iter().any(|p| p == text(i, "pairingId"))
                    })
                    .collect();
                for item in &items {
                    decided.push(Decided {
                        username: text(item, "username").to_owned(),
                        result: would.clone(),
                        pairing_id: item
                            .get("pairingId")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        why: None,
                    });
                }
                if filtered {
                    let next = page.reply.json()?.get("nextCursor").cloned();
                    bodies.push(bytes::Bytes::from(
                        json!({"items": items, "nextCursor": next}).to_string(),
                    ));
                } else {
                    bodies.push(page.reply.body);
                }
            }
        }
        Target::Names(names) => {
            for name in names {
                let (d, body) = examine(client, kind, name, None).await?;
                decided.push(d);
                bodies.extend(body);
            }
        }
        Target::One { name, pairing_id } => {
            let (d, body) = examine(client, kind, name, Some(pairing_id)).await?;
            decided.push(d);
            bodies.extend(body);
        }
    }
    report(ui, kind, &decided, &bodies, true)
}

/// What deciding `name` would do, from the request's current state.
async fn examine(
    client: &Client,
    kind: Kind,
    name: &str,
    pairing_id: Option<&str>,
) -> Result<(Decided, Option<bytes::Bytes>), CtlError> {
    let path = format!("/api/client-registry/requests/{}", encode(name));
    let reply = client.call(Method::GET, &path, None).await?;
    let mut d = Decided {
        username: name.to_owned(),
        result: String::new(),
        pairing_id: None,
        why: None,
    };
    if reply.status == StatusCode::NOT_FOUND {
        d.result = "not_found".into();
        d.why = Some("no pending request of that name".into());
        return Ok((d, None));
    }
    let reply = reply.success()?;
    let request = reply.json()?;
    let state = text(&request, "state");
    let current = text(&request, "pairingId");
    d.pairing_id = Some(current.to_owned()).filter(|p| !p.is_empty());
    let (result, why) = match (kind, state) {
        (_, "pending") if pairing_id.is_some_and(|p| p != current) => (
            "conflict",
            Some(format!("the request's pairing id is now {current}")),
        ),
        (_, "pending") => ("would", None),
        (Kind::Grant, "granted") | (Kind::Deny, "denied") => (kind.already(), None),
        (Kind::Grant, "denied") => ("conflict", Some("the request was denied".to_owned())),
        (Kind::Deny, "granted") => (
            "conflict",
            Some("the request was already granted: delete the user instead".to_owned()),
        ),
        (_, other) => (
            "conflict",
            Some(format!("the request is {}", escape(other))),
        ),
    };
    d.result = if result == "would" {
        format!("would_{}", kind.verb())
    } else {
        result.to_owned()
    };
    d.why = why;
    Ok((d, Some(reply.body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn selection(args: &[&str]) -> Result<Target, CtlError> {
        let mut argv = vec!["fleetgate-ctl", "deny"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            crate::cli::Command::Deny(d) => Target::from_selection(&d.selection),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_target_follows_the_selectors() {
        assert_eq!(
            selection(&["a", "b", "a"]).unwrap(),
            Target::Names(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            selection(&["a", "--pairing-id", "3fa9c1"]).unwrap(),
            Target::One {
                name: "a".into(),
                pairing_id: "3fa9c1".into()
            }
        );
        assert_eq!(
            selection(&["--prefix", "s-", "--transport", "mqtt"]).unwrap(),
            Target::Selector {
                prefix: Some("s-".into()),
                transport: Some(Transport::Mqtt),
                pairing_ids: vec![]
            }
        );
        assert_eq!(
            selection(&["--pairing-id", "3fa9c1", "--pairing-id", "000000"]).unwrap(),
            Target::Selector {
                prefix: None,
                transport: None,
                pairing_ids: vec!["3fa9c1".into(), "000000".into()]
            }
        );
        for bad in [
            &["a", "b", "--pairing-id", "x"][..],
            &["a", "--transport", "http"],
            &["--prefix", ""],
        ] {
            assert_eq!(selection(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn names_files_skip_blanks_and_comments() {
        let text = "# fleet of line 4\nsensor-1\n\n  sensor-2  \r\n#sensor-3\nsensor-4";
        assert_eq!(
            parse_names(text.as_bytes()).unwrap(),
            ["sensor-1", "sensor-2", "sensor-4"]
        );
    }

    #[test]
    fn a_names_file_at_the_caps_is_read_and_over_them_is_refused() {
        let at: String = (0..MAX_FILE_NAMES).map(|i| format!("d{i}\n")).collect();
        assert_eq!(parse_names(at.as_bytes()).unwrap().len(), MAX_FILE_NAMES);
        let over = format!("{at}one-more\n");
        assert_eq!(parse_names(over.as_bytes()).unwrap_err().exit_code(), 2);
        let long_at = format!("{}\n", "n".repeat(MAX_NAME_LINE - 1));
        assert_eq!(parse_names(long_at.as_bytes()).unwrap().len(), 1);
        let long_at_no_newline = "n".repeat(MAX_NAME_LINE);
        assert_eq!(parse_names(long_at_no_newline.as_bytes()).unwrap().len(), 1);
        let long_over = format!("{}\n", "n".repeat(MAX_NAME_LINE + 1));
        assert_eq!(
            parse_names(long_over.as_bytes()).unwrap_err().exit_code(),
            2
        );
    }
}
