//! `requests list|show|delete`, and `requests list --watch`.
//!
//! A listing reads every page (`nextCursor`) unless `--limit` stops it.
//! The API filters by state and prefix; `--transport` is applied here, as
//! the listing route has no such parameter. `-o json` prints each page as
//! the API sent it, one document a line; with `--transport` each page is
//! printed with only the matching items (the items themselves unchanged).
//!
//! `--watch` lists again every `--interval`. On a terminal with `-o table`
//! it redraws the whole table; otherwise it prints the listing once, then
//! only the requests that were not in the previous listing, so
//! `requests list --watch -o name` is a stream of new usernames.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use http::Method;
use serde_json::{json, Value};

use crate::cli::{Format, RequestsCommand, RequestsListArgs};
use crate::client::{encode, Client};
use crate::output::{Table, Ui};
use crate::{CtlError, Outcome};

use super::{age, cell, list_pages, print_described, text, Page};

pub async fn run(client: &Client, ui: &Ui, cmd: RequestsCommand) -> Result<Outcome, CtlError> {
    match cmd {
        RequestsCommand::List(args) if args.watch => watch(client, ui, &args).await,
        RequestsCommand::List(args) => {
            let pages = list(client, &args).await?;
            print_pages(ui, &pages, args.transport.is_some())?;
            Ok(Outcome::Success)
        }
        RequestsCommand::Show(arg) => {
            let reply = client
                .get(&format!(
                    "/api/client-registry/requests/{}",
                    encode(&arg.name)
                ))
                .await?;
            let item = reply.json()?;
            match ui.format {
                Format::Json => ui.print_json(&reply.body)?,
                Format::Name => ui.print_names([text(&item, "username")])?,
                Format::Table => print_described(ui, &item, SHOW_ORDER)?,
            }
            Ok(Outcome::Success)
        }
        RequestsCommand::Delete(args) => {
            let mut failed = 0;
            for name in &args.names {
                let path = format!("/api/client-registry/requests/{}", encode(name));
                match client.call(Method::DELETE, &path, None).await?.success() {
                    Ok(_) => match ui.format {
                        Format::Name => ui.print_names([name.as_str()])?,
                        Format::Json => {}
                        Format::Table => {
                            ui.print_names([format!("request {name} deleted").as_str()])?
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        ui.item_failed(&format!("delete request {name}: {e}"));
                    }
                }
            }
            Ok(Outcome::from_failures(failed))
        }
    }
}

/// The fields `requests show` puts first.
const SHOW_ORDER: &[&str] = &[
    "username",
    "state",
    "transport",
    "pairingId",
    "sourceAddr",
    "clientId",
    "context",
    "roles",
    "permissions",
    "firstSeen",
    "lastSeen",
    "polls",
    "grantedAt",
    "deniedAt",
];

/// Every page of the listing `args` asks for, with `--transport` applied
/// to each page's items.
async fn list(client: &Client, args: &RequestsListArgs) -> Result<Vec<Page>, CtlError> {
    let mut path = format!(
        "/api/client-registry/requests?state={}",
        args.state.as_str()
    );
    if let Some(prefix) = &args.prefix {
        path.push_str(&format!("&prefix={}", encode(prefix)));
    }
    // With a transport filter, a --limit counts matching items, so the
    // pages are read whole and cut here.
    let server_limit = if args.transport.is_some() {
        None
    } else {
        args.limit
    };
    let mut pages = list_pages(client, &path, server_limit).await?;
    if let Some(transport) = args.transport {
        let mut left = args.limit.unwrap_or(u64::MAX);
        for page in &mut pages {
            page.items
                .retain(|item| text(item, "transport") == transport.as_str());
            page.items.truncate(left.min(usize::MAX as u64) as usize);
            left -= page.items.len() as u64;
        }
    }
    Ok(pages)
}

fn print_pages(ui: &Ui, pages: &[Page], filtered: bool) -> Result<(), CtlError> {
    match ui.format {
        Format::Json => {
            for page in pages {
                if filtered {
                    let next = page.reply.json()?.get("nextCursor").cloned();
                    let doc = json!({"items": page.items, "nextCursor": next});
                    ui.print_json(doc.to_string().as_bytes())?;
                } else {
                    ui.print_json(&page.reply.body)?;
                }
            }
            Ok(())
        }
        Format::Name => ui.print_names(
            pages
                .iter()
                .flat_map(|p| &p.items)
                .map(|i| text(i, "username")),
        ),
        Format::Table => {
            let items: Vec<&Value> = pages.iter().flat_map(|p| &p.items).collect();
            if items.is_empty() {
                ui.note("no requests");
                return Ok(());
            }
            ui.print_table(&table(&items))
        }
    }
}

/// The table of requests: who, in which state, over what, since when, and
/// what the device asked for (its wish, which a grant does not give).
pub fn table(items: &[&Value]) -> Table {
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "TRANSPORT",
        "PAIRING-ID",
        "AGE",
        "POLLS",
        "SOURCE",
        "WANTS",
        "CONTEXT",
    ])
    .flexible(&["SOURCE", "WANTS", "CONTEXT"]);
    for item in items {
        let mut wants = Vec::new();
        if let Some(roles) = item.get("roles").and_then(Value::as_array) {
            if !roles.is_empty() {
                wants.push(format!("roles: {}", cell(item, "roles")));
            }
        }
        if let Some(perms) = item.get("permissions").and_then(Value::as_array) {
            if !perms.is_empty() {
                wants.push(format!("permissions: {}", cell(item, "permissions")));
            }
        }
        table.row([
            text(item, "username").to_owned(),
            text(item, "state").to_owned(),
            text(item, "transport").to_owned(),
            cell(item, "pairingId"),
            age(item, "firstSeen", now),
            cell(item, "polls"),
            cell(item, "sourceAddr"),
            if wants.is_empty() {
                "-".to_owned()
            } else {
                wants.join("; ")
            },
            cell(item, "context"),
        ]);
    }
    table
}

/// A request's identity across listings: a replaced request (new pairing
/// id) counts as new.
fn identity(item: &Value) -> (String, String) {
    (
        text(item, "username").to_owned(),
        text(item, "pairingId").to_owned(),
    )
}

/// How long a watch keeps trying while the server cannot be reached
/// before it gives up.
const WATCH_OUTAGE: Duration = Duration::from_secs(60);

async fn watch(client: &Client, ui: &Ui, args: &RequestsListArgs) -> Result<Outcome, CtlError> {
    let redraw = ui.stdout_is_terminal && ui.format == Format::Table;
    let mut previous: Option<HashSet<(String, String)>> = None;
    let mut outage_since: Option<std::time::Instant> = None;
    loop {
        match list(client, args).await {
            Ok(pages) => {
                outage_since = None;
                let items: Vec<&Value> = pages.iter().flat_map(|p| &p.items).collect();
                if redraw {
                    let mut screen = String::from("\x1b[H\x1b[2J");
                    screen.push_str(&format!(
                        "every {}: {} requests on {} ({} shown)\n\n",
                        humantime::format_duration(args.interval),
                        args.state.as_str(),
                        crate::output::escape(client.server()),
                        items.len()
                    ));
                    if !items.is_empty() {
                        screen.push_str(&table(&items).render(ui.width, true));
                    }
                    ui.print(&screen)?;
                } else {
                    let new: Vec<&Value> = items
                        .iter()
                        .copied()
                        .filter(|i| previous.as_ref().is_none_or(|p| !p.contains(&identity(i))))
                        .collect();
                    if !new.is_empty() {
                        match ui.format {
                            Format::Json => {
                                for item in &new {
                                    ui.print_json(item.to_string().as_bytes())?;
                                }
                            }
                            Format::Name => {
                                ui.print_names(new.iter().map(|i| text(i, "username")))?
                            }
                            Format::Table => {
                                ui.print(&table(&new).render(ui.width, previous.is_none()))?
                            }
                        }
                    }
                }
                previous = Some(items.iter().map(|i| identity(i)).collect());
            }
            Err(e @ (CtlError::Unreachable { .. } | CtlError::Timeout { .. })) => {
                let since = *outage_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > WATCH_OUTAGE {
                    return Err(e);
                }
                ui.item_failed(&format!("{e} (retrying)"));
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Success),
        }
    }
}
