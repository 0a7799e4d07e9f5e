//! The embedded store's durable part: an append-only journal of users,
//! grants and roles, fsynced before a change is acknowledged, compacted on
//! start.
//!
//! # Format
//! One record per line: eight lowercase hex digits of the CRC-32 of the JSON
//! payload, a space, the JSON payload, `\n`. Text keeps the file inspectable
//! with `less`; the CRC catches a torn or corrupted line.
//!
//! Record kinds (`op`): `putUser`, `deleteUser`, `grant`, `grants` (a
//! group of grants committed with one `fdatasync`), `granted`, `putRole`,
//! `deleteRole`, the rule kinds, and the webhook outbox's `withEvents`,
//! `events` and `delivered` (`embedded::outbox`), and `audited` (a grant
//! with the audit record of the decision). The role kinds were added later; a journal
//! without them reads as before (no roles), so old journals open unchanged.
//! An older binary cannot open a journal that holds a role record (it stops
//! at the unknown `op` as at corruption).
//!
//! # Recovery
//! A crash can leave at most one torn record, at the end, because every
//! append is followed by `fdatasync` before the caller is answered. A group
//! of grants is one record, so a torn group is dropped whole: none of its
//! grants had been acknowledged. On open, a
//! bad *last* line is dropped (that write was never acknowledged). A bad line
//! followed by good ones is real corruption, and opening fails rather than
//! silently dropping acknowledged grants.
//!
//! # Compaction
//! On open, the replayed state (roles, users, and granted requests still
//! inside their collection window) is written to `journal.log.compact`, fsynced, and renamed
//! over `journal.log`, and the directory is fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::model::{RequestRecord, Role, UserRecord};
use crate::rule::Rule;
use crate::webhook::WebhookEvent;

/// One durable change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum JournalRecord {
    /// Create or replace a user.
    PutUser { user: UserRecord },
    /// Delete a user (and their granted request).
    DeleteUser { username: String },
    /// A grant: the new user and the granted request, as one record so that
    /// replay never sees one without the other.
    Grant {
        user: UserRecord,
        request: RequestRecord,
    },
    /// A granted request without its user (written only by compaction, after
    /// the users).
    Granted { request: RequestRecord },
    /// Several grants committed together (group commit: one bulk call, or
    /// single grants that arrived while the previous append was being
    /// fsynced), as one line with one CRC, so that replay sees the whole
    /// group or, if the line is torn, none of it (`{"op":"grants",
    /// "grants":[{"user":…,"request":…},…]}`). A group of one is written as
    /// a plain `grant` record.
    Grants { grants: Vec<GrantEntry> },
    /// Create or replace a role (`{"op":"putRole","role":{"name",
    /// "permissions"}}`).
    PutRole { role: Role },
    /// Delete a role (`{"op":"deleteRole","name":...}`).
    DeleteRole { name: String },
    /// Create (placed last) or replace in place an auto-approval rule
    /// (`{"op":"putRule","rule":{…}}`).
    PutRule { rule: Rule },
    /// Delete a rule and its use count (`{"op":"deleteRule","name":…}`).
    DeleteRule { name: String },
    /// The rules' evaluation order (`{"op":"ruleOrder","names":[…]}`).
    RuleOrder { names: Vec<String> },
    /// A rule's use count, absolute (`{"op":"ruleUses","name":…,"uses":n}`),
    /// written by every claimed use.
    RuleUses { name: String, uses: u64 },
    /// A decision and its webhook events in one line, so that the events
    /// are durable exactly when the decision is (`{"op":"withEvents",
    /// "record":{…},"events":[…]}`); written only while webhooks are
    /// configured (`embedded::outbox`).
    WithEvents {
        record: Box<JournalRecord>,
        events: Vec<WebhookEvent>,
    },
    /// Webhook events of a decision the journal does not otherwise keep
    /// (deny, forget, lock), and the undelivered events compaction keeps
    /// (`{"op":"events","events":[…]}`).
    Events { events: Vec<WebhookEvent> },
    /// Events delivered (or given up on) everywhere: retired from the
    /// outbox (`{"op":"delivered","ids":[…]}`).
    Delivered { ids: Vec<String> },
    /// A grant (possibly `withEvents`) and the audit records of the
    /// decision, in one line: the record is durable exactly when the grant
    /// is, with the grant's one `fdatasync` instead of a second one in
    /// `audit.log` (`{"op":"audited","record":{…},"audit":[…],"max":n}`,
    /// `max` as in `audit.log`). Replay hands the records to the audit log,
    /// which writes them to `audit.log` on open before this journal is
    /// compacted (compaction drops this line).
    Audited {
        record: Box<JournalRecord>,
        audit: Vec<AuditRecord>,
        max: usize,
    },
}

/// [`JournalRecord::Audited`] by reference (`record` is a
/// [`JournalRecord`] or a [`WithEventsRef`]); the same JSON.
#[derive(Serialize)]
#[serde(tag = "op", rename = "audited")]
struct AuditedRef<'a, R: Serialize> {
    record: &'a R,
    audit: &'a [AuditRecord],
    max: usize,
}

/// [`JournalRecord::WithEvents`] by reference, so a large group of grants
/// is not cloned to be written with its events; the same JSON.
#[derive(Serialize)]
#[serde(tag = "op", rename = "withEvents")]
struct WithEventsRef<'a> {
    record: &'a JournalRecord,
    events: &'a [WebhookEvent],
}

/// One grant of a [`JournalRecord::Grants`] group: the new user and the
/// granted request, as in [`JournalRecord::Grant`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEntry {
    pub user: UserRecord,
    pub request: RequestRecord,
}

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Length of the file after the last successful append; a failed append
    /// truncates back to it so no torn bytes stay in the middle of the file.
    len: u64,
    /// Successful appends (each one `fdatasync`) since open; the group
    /// commit tests count them.
    appends: u64,
}

/// The journal could not be opened or replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal {path} is corrupt at line {line}: {reason} (later lines are intact, so this is not a torn write; refusing to start)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One record as its journal line (checksum, space, JSON, `\n`). Public
/// so that the fuzz targets (`fuzz/`) can build journals and check the
/// round trip through [`replay_bytes`].
pub fn encode(record: &JournalRecord) -> Vec<u8> {
    encode_json(serde_json::to_vec(record).expect("journal records always serialise"))
}

/// `record` with its webhook events ([`JournalRecord::WithEvents`]) and
/// the audit records of the decision ([`JournalRecord::Audited`], evicting
/// beyond `max`), as one line; without either, as [`encode`] writes it.
/// Built from references, so a large group of grants is not cloned.
pub fn encode_parts(
    record: &JournalRecord,
    events: &[WebhookEvent],
    audit: &[AuditRecord],
    max: usize,
) -> Vec<u8> {
    fn json<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("journal records always serialise")
    }
    let with_events = WithEventsRef { record, events };
    encode_json(match (events.is_empty(), audit.is_empty()) {
        (true, true) => json(record),
        (false, true) => json(&with_events),
        (true, false) => json(&AuditedRef { record, audit, max }),
        (false, false) => json(&AuditedRef {
            record: &with_events,
            audit,
            max,
        }),
    })
}

/// Frames one JSON document as a journal line: `<crc32 as 8 lowercase hex>
/// <json>\n`. Shared by the journal and the audit file (`embedded::audit`).
pub(super) fn encode_json(json: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&json);
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(format!("{crc:08x} ").as_bytes());
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// The JSON of one line written by [`encode_json`] (without its newline),
/// once its checksum holds.
pub(super) fn checked_json(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("line too short or missing checksum".into());
    }
    // Exactly eight lowercase hex digits, as `encode_json` writes them:
    // `from_str_radix` alone would also take `A`-`F` and a leading `+`, so
    // a flipped case bit in the checksum went unnoticed (found by the
    // `journal_replay` fuzz target; see docs/FUZZING.md).
    let digits = &line[..8];
    if !digits
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("checksum is not eight lowercase hex digits".into());
    }
    let crc_hex = std::str::from_utf8(digits).map_err(|_| "checksum not ascii")?;
    let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| "checksum not hex")?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(json)
}

fn decode(line: &[u8]) -> Result<JournalRecord, String> {
    serde_json::from_slice(checked_json(line)?).map_err(|e| format!("bad record: {e}"))
}

/// Reads every intact record of the journal at `path` (none if it does not
/// exist). A torn last line is dropped; corruption before intact lines is an
/// error.
pub fn replay(path: &Path) -> Result<(Vec<JournalRecord>, usize), JournalError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    replay_bytes(&bytes).map_err(|c| JournalError::Corrupt {
        path: path.to_owned(),
        line: c.line,
        reason: c.reason,
    })
}

/// A line of the journal that fails its checksum or does not decode, with
/// intact lines after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// [`replay`] over the journal's bytes, already read: the intact records
/// and the length of the torn last line (0 if none). Split from `replay`
/// so the fuzz target (`fuzz/fuzz_targets/journal_replay.rs`) can feed it
/// arbitrary bytes without a file.
pub fn replay_bytes(bytes: &[u8]) -> Result<(Vec<JournalRecord>, usize), CorruptLine> {
    let mut records = Vec::new();
    let mut torn = 0;
    let mut lines = bytes
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .peekable();
    while let Some((i, raw)) = lines.next() {
        let complete = raw.ends_with(b"\n");
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        match decode(body) {
            Ok(r) if complete => records.push(r),
            Ok(_) | Err(_) if lines.peek().is_none() => {
                // The last line: a write that was never acknowledged.
                torn = raw.len();
            }
            Ok(_) => unreachable!("an incomplete line is always the last"),
            Err(reason) => {
                return Err(CorruptLine {
                    line: i + 1,
                    reason,
                })
            }
        }
    }
    Ok((records, torn))
}

impl Journal {
    /// Writes `records` as the new journal at `dir/journal.log` (atomically,
    /// through a temporary file and rename) and opens it for appending.
    pub fn rewrite(dir: &Path, records: &[JournalRecord]) -> Result<Journal, JournalError> {
        let path = dir.join("journal.log");
        let tmp = dir.join("journal.log.compact");
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |source| JournalError::Io { path: p, source }
        };
        {
            // 0600 like the journal itself: it holds password hashes.
            let mut f = crate::durable::create_with_mode(&tmp, 0o600).map_err(io_err(&tmp))?;
            let mut buf = Vec::new();
            for r in records {
                buf.extend_from_slice(&encode(r));
            }
            f.write_all(&buf).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        Ok(Journal {
            path,
            file,
            len,
            appends: 0,
        })
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, record: &JournalRecord) -> io::Result<()> {
        self.append_line(encode(record))
    }

    /// Appends `record` with its webhook events and audit records as one
    /// line ([`encode_parts`]), one `fdatasync`.
    pub fn append_parts(
        &mut self,
        record: &JournalRecord,
        events: &[WebhookEvent],
        audit: &[AuditRecord],
        max: usize,
    ) -> io::Result<()> {
        self.append_line(encode_parts(record, events, audit, max))
    }

    fn append_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        let result = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += line.len() as u64;
                self.appends += 1;
                Ok(())
            }
            Err(e) => {
                // Leave no torn bytes behind a later good record.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many appends (and so `fdatasync` calls) succeeded since open.
    pub fn appends(&self) -> u64 {
        self.appends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixMillis;

    #[cfg(unix)]
    #[test]
    fn a_compacted_journal_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::rewrite(dir.path(), &[]).unwrap();
        let mode = fs::metadata(&journal.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the journal holds password hashes");
        assert!(!dir.path().join("journal.log.compact").exists());
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            certificate: None,
            username: name.into(),
            password_hash: Some("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
            roles: vec![],
            permissions: vec![],
            created_at: UnixMillis(5),
            origin: crate::model::UserOrigin::Http,
            decided_by: None,
        }
    }

    #[test]
    fn round_trip_through_rewrite_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut j =
            Journal::rewrite(dir.path(), &[JournalRecord::PutUser { user: user("a") }]).unwrap();
        j.append(&JournalRecord::DeleteUser {
            username: "a".into(),
        })
        .unwrap();
        let (records, torn) = replay(&dir.path().join("journal.log")).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(
            records,
            vec![
                JournalRecord::PutUser { user: user("a") },
                JournalRecord::DeleteUser {
                    username: "a".into()
                }
            ]
        );
    }

    #[test]
    fn role_records_round_trip_with_their_pinned_json() {
        use crate::model::{Operation, Permission, PermissionContext};
        let role = Role {
            name: "sensors".into(),
            permissions: vec![Permission {
                resource: "plant/#".into(),
                operation: Operation::Read,
                context: PermissionContext::Mqtt,
            }],
        };
        let put = JournalRecord::PutRole { role: role.clone() };
        let delete = JournalRecord::DeleteRole {
            name: "sensors".into(),
        };
        // The payloads as they sit in the file: part of the on-disk format.
        assert_eq!(
            serde_json::to_string(&put).unwrap(),
            r#"{"op":"putRole","role":{"name":"sensors","permissions":[{"resource":"plant/#","operation":"read","context":"mqtt"}]}}"#
        );
        assert_eq!(
            serde_json::to_string(&delete).unwrap(),
            r#"{"op":"deleteRole","name":"sensors"}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::rewrite(dir.path(), std::slice::from_ref(&put)).unwrap();
        j.append(&delete).unwrap();
        let (records, torn) = replay(&dir.path().join("journal.log")).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(records, vec![put, delete]);
    }

    /// A journal written before roles existed (hand-written here, byte for
    /// byte what that version wrote) still replays.
    #[test]
    fn a_journal_from_before_roles_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let json = br#"{"op":"putUser","user":{"username":"a","password_hash":null,"roles":["sensor"],"permissions":[],"created_at":5,"origin":"http"}}"#;
        let mut line = format!("{:08x} ", crc32fast::hash(json)).into_bytes();
        line.extend_from_slice(json);
        line.push(b'\n');
        fs::write(&path, &line).unwrap();
        let (records, torn) = replay(&path).unwrap();
        assert_eq!(torn, 0);
        match &records[..] {
            [JournalRecord::PutUser { user }] => assert_eq!(user.roles, ["sensor"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn torn_last_line_is_dropped_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let first = encode(&JournalRecord::PutUser { user: user("a") });
        let second = encode(&JournalRecord::PutUser { user: user("b") });
        // Cut the second record at every byte: the first always survives.
        for cut in 0..second.len() {
            let mut bytes = first.clone();
            bytes.extend_from_slice(&second[..cut]);
            fs::write(&path, &bytes).unwrap();
            let (records, torn) = replay(&path).unwrap();
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(torn, cut);
        }
    }

    /// Regression (fuzzing, `journal_replay`): a checksum whose case was
    /// flipped (`A` for `a`) or that carries a `+` is damage, not the same
    /// number; before, `from_str_radix` read both as the stored CRC.
    #[test]
    fn a_checksum_in_another_spelling_is_corruption() {
        let good = encode(&JournalRecord::DeleteUser {
            username: "a".into(),
        });
        let tail = encode(&JournalRecord::DeleteUser {
            username: "b".into(),
        });
        let hex = std::str::from_utf8(&good[..8]).unwrap().to_owned();
        let mut spellings = vec![hex.to_uppercase()];
        if let Some(rest) = hex.strip_prefix('0') {
            spellings.push(format!("+{rest}"));
        }
        for spelling in spellings.into_iter().filter(|s| *s != hex) {
            let mut bytes = spelling.into_bytes();
            bytes.extend_from_slice(&good[8..]);
            bytes.extend_from_slice(&tail);
            match replay_bytes(&bytes) {
                Err(CorruptLine { line: 1, .. }) => {}
                other => panic!(
                    "{:?}: expected corruption at line 1, got {other:?}",
                    &bytes[..8]
                ),
            }
        }
        // The checksum of this record has a letter in it, so the case
        // flip above was really tried.
        assert!(
            good[..8].iter().any(u8::is_ascii_lowercase),
            "{:?}",
            &good[..8]
        );
    }

    #[test]
    fn corruption_before_intact_lines_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let mut bad = encode(&JournalRecord::PutUser { user: user("a") });
        bad[12] ^= 0x20;
        bad.extend_from_slice(&encode(&JournalRecord::PutUser { user: user("b") }));
        fs::write(&path, &bad).unwrap();
        match replay(&path) {
            Err(JournalError::Corrupt { line: 1, .. }) => {}
            other => panic!("expected corruption at line 1, got {other:?}"),
        }
    }
}
