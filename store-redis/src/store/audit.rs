//! The audit log on Redis: one stream, `<prefix>:audit`.
//!
//! - **Append** is the `audit_append` script: it gives each record the id
//!   `<at>-<seq>` (the caller's clock, raised to the stream's last
//!   generated id when a clock went back; Redis picks the sequence) and
//!   `XADD`s it with an exact `MAXLEN`, so the cap holds after every call,
//!   whatever a flood of failed logins sends. A call of more than
//!   [`APPEND_CHUNK`] records (a bulk decision of 10,000) is split into
//!   scripts of that size, one after the other on the durable connection
//!   (followed by `WAIT` when configured), so no script holds Redis for
//!   long; the deadline grows with the count, as for a group of grants.
//! - **A page** walks the stream with `XRANGE`/`XREVRANGE` from the cursor
//!   (exclusive) and `since` (as the id bound `<since>-0`), in batches,
//!   and cuts it with the same rule as the embedded store
//!   (`audit::page_from_walk`).
//! - **Retention** is `XTRIM MINID <before>-0`.
//!
//! One key: on a cluster the whole log is in one slot, and every command
//! and the script name only that key.

use std::time::Duration;

use fleetgate_registry::audit::{
    page_from_walk, AuditEntry, AuditId, AuditOrder, AuditQuery, AuditRecord, AUDIT_PAGE_MAX,
    AUDIT_SCAN_MAX,
};
use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::store::{Page, StoreError};
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::{to_json, RedisStore};
use crate::record::BadReply;

/// Records per `audit_append` script.
pub const APPEND_CHUNK: usize = 1000;

/// Stream entries read per `XRANGE` of a filtered page.
const READ_BATCH: usize = 1000;

/// One stream entry as `XRANGE` answers it: the id and its field-value
/// list (`j`, the entry's JSON).
type StreamEntry = (String, Vec<Vec<u8>>);

fn decode(entries: Vec<StreamEntry>) -> Result<Vec<AuditRecord>, StoreError> {
    entries
        .into_iter()
        .map(|(id, fields)| {
            let bad = |m: String| corrupt("audit", BadReply(m));
            let id: AuditId = id.parse().map_err(|()| bad(format!("bad id {id}")))?;
            let json = fields
                .chunks(2)
                .find(|kv| kv.first().map(Vec::as_slice) == Some(b"j"))
                .and_then(|kv| kv.get(1))
                .ok_or_else(|| bad(format!("entry {id} has no `j` field")))?;
            let mut entry: AuditEntry =
                serde_json::from_slice(json).map_err(|e| bad(format!("entry {id}: {e}")))?;
            entry.cap_fields();
            Ok(AuditRecord { id, entry })
        })
        .collect()
}

impl RedisStore {
    pub(super) async fn append_audit_records(
        &self,
        entries: Vec<AuditEntry>,
        max: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let deadline = self.op_timeout + Duration::from_micros(100) * entries.len() as u32;
        self.bounded_within("append_audit", deadline, async {
            let key = self.keys.audit();
            let mut stored = Vec::with_capacity(entries.len());
            for chunk in entries.chunks(APPEND_CHUNK) {
                let mut cmd = self.scripts.audit_append.evalsha(&[&key]);
                cmd.arg(max.max(1));
                for e in chunk {
                    cmd.arg(e.at.0).arg(to_json(e));
                }
                let (reply, acked) = self
                    .durable_conn()
                    .eval_durable(&self.scripts, &cmd, self.wait)
                    .await
                    .map_err(|e| redis_error("audit_append", e))?;
                self.check_wait("audit_append", acked)?;
                let bad = || corrupt("audit_append", BadReply(format!("reply {reply:?}")));
                let Value::Array(ids) = &reply else {
                    return Err(bad());
                };
                if ids.len() != chunk.len() {
                    return Err(bad());
                }
                for (id, entry) in ids.iter().zip(chunk) {
                    let id = crate::record::bytes(id)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse::<AuditId>().ok())
                        .ok_or_else(bad)?;
                    stored.push(AuditRecord {
                        id,
                        entry: entry.clone(),
                    });
                }
            }
            Ok(stored)
        })
        .await
    }

    pub(super) async fn list_audit_records(
        &self,
        query: &AuditQuery,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.bounded("list_audit", async {
            let key = self.keys.audit();
            let limit = query.limit.clamp(1, AUDIT_PAGE_MAX);
            let filtered = query.actor.is_some() || query.target.is_some();
            // Unfiltered, one record past the page tells whether there is
            // a next one; filtered, read in batches up to the scan budget.
            let batch = if filtered { READ_BATCH } else { limit + 1 };
            let since = query.since.map(|s| AuditId { ms: s.0, seq: 0 });
            let mut walked: Vec<AuditRecord> = Vec::new();
            let mut after = query.cursor;
            loop {
                // Nothing lies before `0-0` or after the largest id, and
                // Redis refuses those exclusive bounds.
                let edge = match query.order {
                    AuditOrder::Newest => AuditId { ms: 0, seq: 0 },
                    AuditOrder::Oldest => AuditId {
                        ms: u64::MAX,
                        seq: u64::MAX,
                    },
                };
                if after == Some(edge) {
                    break;
                }
                let (cmd, start, end) = match query.order {
                    AuditOrder::Oldest => {
                        let start = match (after, since) {
                            (Some(c), Some(s)) if s > c => s.to_string(),
                            (Some(c), _) => format!("({c}"),
                            (None, Some(s)) => s.to_string(),
                            (None, None) => "-".into(),
                        };
                        ("XRANGE", start, "+".to_string())
                    }
                    AuditOrder::Newest => {
                        let end = after.map_or("+".into(), |c| format!("({c}"));
                        let start = since.map_or("-".into(), |s| s.to_string());
                        ("XREVRANGE", end, start)
                    }
                };
                let read: Vec<StreamEntry> = redis::cmd(cmd)
                    .arg(&key)
                    .arg(&start)
                    .arg(&end)
                    .arg("COUNT")
                    .arg(batch)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| redis_error("XRANGE audit", e))?;
                let n = read.len();
                let records = decode(read)?;
                after = records.last().map(|r| r.id);
                walked.extend(records);
                let matched = walked.iter().filter(|r| query.matches(r)).count();
                if n < batch || matched > limit || walked.len() > AUDIT_SCAN_MAX {
                    break;
                }
            }
            Ok(page_from_walk(&walked, query))
        })
        .await
    }

    pub(super) async fn prune_audit_records(
        &self,
        before: UnixMillis,
    ) -> Result<usize, StoreError> {
        self.bounded("prune_audit", async {
            let n: usize = redis::cmd("XTRIM")
                .arg(self.keys.audit())
                .arg("MINID")
                .arg(format!("{}-0", before.0))
                .query_async(&mut self.durable_conn())
                .await
                .map_err(|e| redis_error("XTRIM audit", e))?;
            Ok(n)
        })
        .await
    }
}
