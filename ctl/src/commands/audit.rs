//! `audit [--since ..] [--actor ..] [--target ..] [--limit N] [--follow]`:
//! the audit log (`GET /api/audit`), oldest first, as a log reads.
//!
//! Without `--since` it starts 24 hours back. `--follow` then keeps
//! asking every `--interval` (at least 200 ms, default 2 s) for what came
//! after the last record it printed, passing that record's `id` as the
//! cursor (with `order=oldest`), so nothing is printed twice or skipped;
//! an unreachable server is retried for up to 60 s, as `requests list
//! --watch` does. `-o json` prints each page as the API sent it, `-o name`
//! the record ids, `-o table` one row per record; every cell is escaped
//! (the actor of a failed login is whatever was typed).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cli::{AuditArgs, Format};
use crate::client::{encode, Client, Reply};
use crate::output::{Table, Ui};
use crate::{CtlError, Outcome};

use super::{cell, list_pages, text};

/// How far back `audit` starts without `--since`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);

/// How long `--follow` keeps trying an unreachable server.
const FOLLOW_OUTAGE: Duration = Duration::from_secs(60);

/// The largest page asked for (the server's cap).
const PAGE: usize = 1000;

/// `--since` as the API takes it: an RFC 3339 time as given, or a duration
/// (`1h`, `30m`) back from now.
pub fn since_param(since: Option<&str>, now: SystemTime) -> Result<String, CtlError> {
    let Some(raw) = since else {
        return Ok(rfc3339(
            now.checked_sub(DEFAULT_SINCE)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    };
    if let Ok(t) = humantime::parse_rfc3339(raw) {
        return Ok(rfc3339(t));
    }
    match humantime::parse_duration(raw) {
        Ok(d) => Ok(rfc3339(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))),
        Err(_) => Err(CtlError::Usage(format!(
            "--since takes a duration back from now (1h, 30m) or an RFC 3339 time in UTC, not `{raw}`"
        ))),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn base_path(args: &AuditArgs, since: &str) -> String {
    let mut path = format!("/api/audit?order=oldest&since={}", encode(since));
    if let Some(a) = &args.actor {
        path.push_str(&format!("&actor={}", encode(a)));
    }
    if let Some(t) = &args.target {
        path.push_str(&format!("&target={}", encode(t)));
    }
    path
}

pub async fn run(client: &Client, ui: &Ui, args: AuditArgs) -> Result<Outcome, CtlError> {
    let since = since_param(args.since.as_deref(), SystemTime::now())?;
    let path = base_path(&args, &since);
    let pages = list_pages(client, &path, args.limit).await?;
    let mut last: Option<String> = None;
    let mut printed_header = false;
    for page in &pages {
        print_page(ui, &page.reply, &page.items, &mut printed_header)?;
        if let Some(id) = page.items.last().map(|r| text(r, "id").to_owned()) {
            last = Some(id);
        }
    }
    if !args.follow {
        if ui.format == Format::Table && !printed_header {
            ui.note("no audit records");
        }
        return Ok(Outcome::Success);
    }
    let mut outage_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Success),
        }
        match follow_once(client, ui, &path, &mut last, &mut printed_header).await {
            Ok(()) => outage_since = None,
            Err(e @ (CtlError::Unreachable { .. } | CtlError::Timeout { .. })) => {
                let since = *outage_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > FOLLOW_OUTAGE {
                    return Err(e);
                }
                ui.item_failed(&format!("{e} (retrying)"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads and prints everything after `last`, page by page.
async fn follow_once(
    client: &Client,
    ui: &Ui,
    path: &str,
    last: &mut Option<String>,
    printed_header: &mut bool,
) -> Result<(), CtlError> {
    loop {
        let mut url = format!("{path}&limit={PAGE}");
        if let Some(c) = last.as_deref() {
            url.push_str(&format!("&cursor={}", encode(c)));
        }
        let reply = client.get(&url).await?;
        let page = reply.json()?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| CtlError::BadReply("the audit answer has no `items`".into()))?;
        if !items.is_empty() {
            print_page(ui, &reply, &items, printed_header)?;
        }
        let next = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(id) = items.last().map(|r| text(r, "id").to_owned()) {
            *last = Some(id);
        }
        match next {
            // A page cut by the scan budget names where it stopped.
            Some(next) if last.as_deref() != Some(next.as_str()) || !items.is_empty() => {
                *last = Some(next);
            }
            _ => return Ok(()),
        }
    }
}

fn print_page(
    ui: &Ui,
    reply: &Reply,
    items: &[Value],
    printed_header: &mut bool,
) -> Result<(), CtlError> {
    match ui.format {
        Format::Json => ui.print_json(&reply.body),
        Format::Name => ui.print_names(items.iter().map(|r| text(r, "id"))),
        Format::Table => {
            if items.is_empty() {
                return Ok(());
            }
            let mut table = Table::new(&[
                "TIME",
                "ACTOR",
                "SOURCE",
                "ACTION",
                "TARGET",
                "RESULT",
                "PAIRING-ID",
                "DETAIL",
            ])
            .flexible(&["DETAIL", "SOURCE"]);
            for r in items {
                let detail = match r.get("error").and_then(Value::as_str) {
                    Some(e) => e.to_owned(),
                    None => cell(r, "detail"),
                };
                table.row([
                    cell(r, "time"),
                    cell(r, "actor"),
                    cell(r, "source"),
                    cell(r, "action"),
                    cell(r, "target"),
                    cell(r, "result"),
                    cell(r, "pairingId"),
                    detail,
                ]);
            }
            let out = table.render(ui.width, !*printed_header);
            *printed_header = true;
            ui.print(&out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_utc_time() {
        let now = humantime::parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
        assert_eq!(
            since_param(Some("1h"), now).unwrap(),
            "2026-12-02T11:00:00.000Z"
        );
        assert_eq!(
            since_param(Some("2026-12-01T08:30:00Z"), now).unwrap(),
            "2026-12-01T08:30:00.000Z"
        );
        assert_eq!(since_param(None, now).unwrap(), "2026-12-01T12:00:00.000Z");
        assert!(since_param(Some("yesterday"), now).is_err());
    }
}
