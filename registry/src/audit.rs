//! The audit log: who did what to which target, from where, and with what
//! result — one record per admin action and per rule decision.
//!
//! The admin service records every login (success and failure), lock and
//! unlock, grant, deny and delete (single, bulk: one record per item, and
//! by rule from the device path in `registry::rules`), and every user,
//! role and rule change, through [`crate::Registry::audit`]. That call
//! writes the records to the store ([`crate::store::Store::append_audit`]:
//! the embedded store's `audit.log`, a Redis stream) and then hands them to
//! the optional JSON-lines file of `--audit-log` ([`AuditFile`]).
//!
//! # What a record never holds
//! No password, token, CSR, sealed secret or password hash: the entry is
//! built from the route, the actor's name, the target's name and the
//! error's message, never from a request body. Every string an entry holds
//! is text from a client (a device's username, the name typed into a failed
//! login) and is capped at [`FIELD_MAX`] bytes, cut on a character
//! boundary, so a flood of long names cannot inflate the store.
//!
//! # Bounds
//! - count: at most `max_records` ([`AuditConfig`], `--audit-max-records`),
//!   the oldest evicted first, enforced in the same store write that adds
//!   (failed logins are attacker-triggered, so the count must never grow
//!   with them);
//! - age: the sweeper drops records older than `--audit-retention`
//!   ([`crate::store::Store::prune_audit`]);
//! - a page: at most [`AUDIT_PAGE_MAX`] items, and at most
//!   [`AUDIT_SCAN_MAX`] records looked at per page when filtering;
//! - the file's queue: [`FILE_QUEUE`] lines; past it, lines are dropped and
//!   counted, never waited for.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

/// Longest actor, target, source, detail or error kept, in bytes.
pub const FIELD_MAX: usize = 256;
/// The largest page `list_audit` returns.
pub const AUDIT_PAGE_MAX: usize = 1000;
/// Records a page looks at, at most, before it answers with what it found
/// and a cursor (a filter that matches rarely still answers fast).
pub const AUDIT_SCAN_MAX: usize = 10_000;
/// Default of `--audit-max-records`.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;
/// The highest `--audit-max-records` accepted.
pub const MAX_RECORDS_LIMIT: usize = 10_000_000;
/// Default of `--audit-retention`: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lines the `--audit-log` writer may have queued.
pub const FILE_QUEUE: usize = 10_000;

/// What was done. Serialised as the dotted names of the API
/// (`request.grant`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditAction {
    #[serde(rename = "login")]
    Login,
    #[serde(rename = "registry.unlock")]
    Unlock,
    #[serde(rename = "registry.lock")]
    Lock,
    #[serde(rename = "request.grant")]
    Grant,
    #[serde(rename = "request.deny")]
    Deny,
    #[serde(rename = "request.delete")]
    DeleteRequest,
    #[serde(rename = "user.update")]
    UpdateUser,
    #[serde(rename = "user.delete")]
    DeleteUser,
    #[serde(rename = "role.put")]
    PutRole,
    #[serde(rename = "role.delete")]
    DeleteRole,
    #[serde(rename = "rule.put")]
    PutRule,
    #[serde(rename = "rule.delete")]
    DeleteRule,
    #[serde(rename = "rule.order")]
    OrderRules,
}

impl AuditAction {
    /// The name as the API and the file spell it.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Login => "login",
            AuditAction::Unlock => "registry.unlock",
            AuditAction::Lock => "registry.lock",
            AuditAction::Grant => "request.grant",
            AuditAction::Deny => "request.deny",
            AuditAction::DeleteRequest => "request.delete",
            AuditAction::UpdateUser => "user.update",
            AuditAction::DeleteUser => "user.delete",
            AuditAction::PutRole => "role.put",
            AuditAction::DeleteRole => "role.delete",
            AuditAction::PutRule => "rule.put",
            AuditAction::DeleteRule => "rule.delete",
            AuditAction::OrderRules => "rule.order",
        }
    }
}

/// One thing that happened, before the store gives it an id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When, by the clock of the process that did it.
    pub at: UnixMillis,
    /// The admin's username (the JWT subject), the username a failed login
    /// tried, or `rule:<name>` for a rule decision.
    pub actor: String,
    /// The client's IP address as the admin service saw it (after a
    /// trusted forwarder's `X-Forwarded-For`); a device's for a rule
    /// decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub action: AuditAction,
    /// A username, role or rule name; none for login, lock and unlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, or the API's short error name (`conflict`, `not_found`, …).
    pub result: String,
    /// The error's message when `result` is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pairing id of the request acted on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_id: Option<String>,
    /// A short note: `bulk` for an item of a bulk call, the unlock's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Cuts `s` to at most [`FIELD_MAX`] bytes on a character boundary.
pub fn capped(s: &str) -> String {
    if s.len() <= FIELD_MAX {
        return s.to_owned();
    }
    let mut end = FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl AuditEntry {
    /// An entry with result `ok` and no target; chain the setters.
    pub fn new(
        at: UnixMillis,
        actor: &str,
        source: Option<std::net::IpAddr>,
        action: AuditAction,
    ) -> Self {
        AuditEntry {
            at,
            actor: capped(actor),
            source: source.map(|ip| ip.to_string()),
            action,
            target: None,
            result: "ok".into(),
            error: None,
            pairing_id: None,
            detail: None,
        }
    }

    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(capped(target));
        self
    }

    pub fn pairing_id(mut self, id: Option<String>) -> Self {
        self.pairing_id = id.map(|s| capped(&s));
        self
    }

    pub fn detail(mut self, detail: &str) -> Self {
        self.detail = Some(capped(detail));
        self
    }

    /// Marks the entry failed with the API's short name and message.
    pub fn failed(mut self, result: &str, error: &str) -> Self {
        self.result = capped(result);
        self.error = Some(capped(error));
        self
    }

    /// Applies the caps to every field (a backend reading records back).
    pub fn cap_fields(&mut self) {
        for v in [
            &mut self.source,
            &mut self.target,
            &mut self.error,
            &mut self.pairing_id,
            &mut self.detail,
        ]
        .into_iter()
        .flatten()
        {
            *v = capped(v);
        }
        self.actor = capped(&self.actor);
        self.result = capped(&self.result);
    }
}

/// A record's id: the time part (ms, never smaller than the previous
/// record's) and a sequence within that millisecond. Ids order records;
/// they print as `<ms>-<seq>`, the shape of a Redis stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditId {
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for AuditId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let digits = |p: &str| {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(())
            } else {
                p.parse::<u64>().map_err(|_| ())
            }
        };
        Ok(AuditId {
            ms: digits(ms)?,
            seq: digits(seq)?,
        })
    }
}

impl Serialize for AuditId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AuditId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|()| serde::de::Error::custom(format!("bad audit id `{s}`")))
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: AuditId,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// A record as `GET /api/audit` and the `--audit-log` file show it: the
/// entry's fields, `id`, and `time` in RFC 3339 (UTC, ms).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView<'a> {
    /// `None` only in the file, for a record the store failed to keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<AuditId>,
    pub time: String,
    pub actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    pub action: AuditAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    pub result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

impl AuditEntry {
    pub fn view(&self, id: Option<AuditId>) -> AuditView<'_> {
        AuditView {
            id,
            time: self.at.to_rfc3339(),
            actor: &self.actor,
            source: self.source.as_deref(),
            action: self.action,
            target: self.target.as_deref(),
            result: &self.result,
            error: self.error.as_deref(),
            pairing_id: self.pairing_id.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

impl AuditRecord {
    pub fn view(&self) -> AuditView<'_> {
        self.entry.view(Some(self.id))
    }
}

/// Which way a page walks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuditOrder {
    /// Newest first (the default: what an operator looks at).
    #[default]
    Newest,
    /// Oldest first (what a follower reads: pass the last id as the cursor).
    Oldest,
}

/// A page of the audit log. Every filter is exact; `cursor` is the id of
/// the last record of the previous page (or any record's id: the page
/// continues after it, in `order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records at or after this time.
    pub since: Option<UnixMillis>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub limit: usize,
    pub cursor: Option<AuditId>,
    pub order: AuditOrder,
}

impl AuditQuery {
    /// Whether `r` passes the filters (not the cursor). `since` compares
    /// with the id's time, which orders records (the entry's `at`, raised
    /// to the previous record's when a clock went back), so it is a range
    /// bound in every backend.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.since.is_none_or(|s| r.id.ms >= s.0)
            && self.actor.as_deref().is_none_or(|a| r.entry.actor == a)
            && self
                .target
                .as_deref()
                .is_none_or(|t| r.entry.target.as_deref() == Some(t))
    }
}

/// A page of `records` (ascending by id, as every backend keeps them) for
/// `query`: the embedded store's `list_audit`.
pub fn page_of(
    records: &std::collections::VecDeque<AuditRecord>,
    query: &AuditQuery,
) -> crate::store::Page<AuditRecord> {
    match query.order {
        AuditOrder::Oldest => {
            let from_since = query
                .since
                .map_or(0, |s| records.partition_point(|r| r.id.ms < s.0));
            let from_cursor = query
                .cursor
                .map_or(0, |c| records.partition_point(|r| r.id <= c));
            page_from_walk(records.range(from_since.max(from_cursor)..), query)
        }
        AuditOrder::Newest => {
            let end = query
                .cursor
                .map_or(records.len(), |c| records.partition_point(|r| r.id < c));
            let from_since = query
                .since
                .map_or(0, |s| records.partition_point(|r| r.id.ms < s.0));
            page_from_walk(records.range(from_since.min(end)..end).rev(), query)
        }
    }
}

/// The one paging rule of [`crate::store::Store::list_audit`], over the
/// records after the cursor and within `since`, in walk order: keep the
/// ones the filters match until `limit` of them or [`AUDIT_SCAN_MAX`]
/// looked at. The next cursor is the page's last item when the page is
/// full, or the last record looked at when the budget ran out; none when
/// the walk reached its end. A backend that reads in batches (Redis)
/// passes what it read; records past the stop are ignored.
pub fn page_from_walk<'a>(
    walk: impl IntoIterator<Item = &'a AuditRecord>,
    query: &AuditQuery,
) -> crate::store::Page<AuditRecord> {
    let limit = query.limit.clamp(1, AUDIT_PAGE_MAX);
    let mut items: Vec<AuditRecord> = Vec::new();
    let mut last_seen = None;
    let mut more = false;
    for (scanned, r) in walk.into_iter().enumerate() {
        if items.len() == limit || scanned == AUDIT_SCAN_MAX {
            more = true;
            break;
        }
        last_seen = Some(r.id);
        if query.matches(r) {
            items.push(r.clone());
        }
    }
    let next_cursor = if !more {
        None
    } else if items.len() == limit {
        items.last().map(|r| r.id)
    } else {
        last_seen
    };
    crate::store::Page {
        items,
        next_cursor: next_cursor.map(|id| id.to_string()),
    }
}

/// An RFC 3339 time in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as `since`
/// takes it; `None` for anything else (offsets other than `Z`, a space for
/// the `T`).
pub fn parse_utc(raw: &str) -> Option<UnixMillis> {
    let t = humantime::parse_rfc3339(raw).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok().map(UnixMillis)
}

/// A page of audit records.
pub type AuditPage = crate::store::Page<AuditRecord>;

/// The audit settings of a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// `--audit-max-records`: the oldest records beyond it are evicted.
    pub max_records: usize,
    /// `--audit-retention`: the sweeper drops older records.
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_records: DEFAULT_MAX_RECORDS,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The `--audit-log` file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditFileError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// The `--audit-log` JSON-lines file: one line per record, appended by a
/// thread of its own from a queue of at most [`FILE_QUEUE`] lines, so a
/// slow or stalled disk never delays an admin request or a poll. When the
/// queue is full (the disk has stalled), new lines are dropped and counted
/// (`fleetgate_audit_log_dropped_total`, and a warning); the store keeps
/// every record regardless.
#[derive(Debug, Clone)]
pub struct AuditFile {
    queue: mpsc::SyncSender<Vec<u8>>,
}

impl AuditFile {
    /// Opens (creates, mode 0600) `path` for appending and starts its
    /// writer thread.
    pub fn open(path: &Path) -> Result<AuditFile, AuditFileError> {
        let err = |source| AuditFileError {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(err)?;
        let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(FILE_QUEUE);
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("fleetgate-audit-log".into())
            .spawn(move || {
                for line in lines {
                    if let Err(e) = file.write_all(&line) {
                        tracing::error!(path = %shown, error = %e, "audit log write failed");
                    }
                }
            })
            .map_err(err)?;
        Ok(AuditFile { queue })
    }

    /// Queues one line per record; never blocks.
    pub fn write(&self, records: &[AuditView<'_>]) {
        for view in records {
            let mut line = serde_json::to_vec(view).expect("an audit view always serialises");
            line.push(b'\n');
            match self.queue.try_send(line) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => {
                    metrics::counter!(crate::metrics::AUDIT_LOG_DROPPED_TOTAL).increment(1);
                    tracing::warn!("audit log queue full (disk stalled?): line dropped");
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    metrics::counter!(crate::metrics::AUDIT_LOG_DROPPED_TOTAL).increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_round_trip() {
        let a: AuditId = "1700000000000-0".parse().unwrap();
        let b: AuditId = "1700000000000-12".parse().unwrap();
        let c: AuditId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-1-1",
            "+1-0",
            "1 -0",
            "999999999999999999999-0",
        ] {
            assert!(bad.parse::<AuditId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_are_capped_on_a_character_boundary() {
        let long = "é".repeat(FIELD_MAX); // 2 bytes each
        let e = AuditEntry::new(UnixMillis(1), &long, None, AuditAction::Login).target(&long);
        assert!(e.actor.len() <= FIELD_MAX && e.actor.len() >= FIELD_MAX - 1);
        assert!(e.actor.chars().all(|c| c == 'é'));
        assert_eq!(e.target.as_deref(), Some(e.actor.as_str()));
        assert_eq!(capped(&"a".repeat(FIELD_MAX)).len(), FIELD_MAX);
    }

    #[test]
    fn the_view_spells_the_api_names() {
        let r = AuditRecord {
            id: AuditId { ms: 5, seq: 1 },
            entry: AuditEntry::new(
                UnixMillis(0),
                "admin",
                Some("127.0.0.1".parse().unwrap()),
                AuditAction::Grant,
            )
            .target("dev-1")
            .pairing_id(Some("ABCD-1234".into())),
        };
        let v = serde_json::to_value(r.view()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "5-1", "time": "1970-01-01T00:00:00.000Z", "actor": "admin",
                "source": "127.0.0.1", "action": "request.grant", "target": "dev-1",
                "result": "ok", "pairingId": "ABCD-1234"
            })
        );
    }
}
