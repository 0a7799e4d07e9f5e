//! The embedded store's audit log: the records in memory, in id order,
//! and their own journal, `<data-dir>/audit.log`.
//!
//! A file of its own, beside `journal.log`, so that audit writes (a failed
//! login is one) never hold the journal mutex that grants and user changes
//! take, and so that this file can be compacted while the process runs
//! without rewriting the users.
//!
//! # Format
//! As the main journal: eight lowercase hex digits of the CRC-32 of the
//! JSON, a space, the JSON, `\n`. Two kinds of line (`op`):
//! - `record`: `{"op":"record","max":n,"record":{…}}`, one per record, with
//!   the `max` the append was given, so replay evicts exactly what the
//!   running store evicted;
//! - `prune`: `{"op":"prune","before":ms}`, the sweeper's retention cut.
//!
//! A torn last line is dropped (never acknowledged); a bad line before good
//! ones refuses to open, as for the main journal: a damaged audit trail is
//! for an operator to look at, not to paper over.
//!
//! # Bounds
//! The memory holds at most the last append's `max` records. The file
//! grows by one line per record and is rewritten with just the records in
//! memory (temp file, fsync, rename, directory fsync) whenever it holds
//! more than twice as many lines as records, plus [`COMPACT_SLACK`]: so
//! it stays within about twice the cap, whatever a flood of failed logins
//! appends.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditId, AuditRecord};
use crate::clock::UnixMillis;

use super::journal::JournalError;

/// Lines the file may hold beyond twice the records before a rewrite.
pub const COMPACT_SLACK: usize = 1024;

/// One line of `audit.log`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum AuditLine {
    Record { max: usize, record: AuditRecord },
    Prune { before: u64 },
}

/// One line of `audit.log`, framed as the journal frames its records.
fn encode(line: &AuditLine) -> Vec<u8> {
    super::journal::encode_json(serde_json::to_vec(line).expect("audit lines always serialise"))
}

fn decode(line: &[u8]) -> Result<AuditLine, String> {
    serde_json::from_slice(super::journal::checked_json(line)?)
        .map_err(|e| format!("bad audit line: {e}"))
}

/// The records and, for a store with a data dir, their file.
#[derive(Debug, Default)]
pub struct AuditLog {
    records: VecDeque<AuditRecord>,
    file: Option<AuditJournal>,
    /// Only while the store opens: the records the main journal holds
    /// (`audited` lines, [`AuditLog::adopt`]), merged in by
    /// [`AuditLog::finish_open`].
    adopted: Vec<AuditRecord>,
    /// Only while the store opens: the latest retention cut replayed from
    /// the file, which adopted records older than it fall under too.
    pruned_before: u64,
    /// Only while the store opens: the cap given with the newest record
    /// replayed so far (file or journal), and that record's id.
    newest_max: Option<(AuditId, usize)>,
}

#[derive(Debug)]
struct AuditJournal {
    dir: PathBuf,
    file: File,
    /// Lines in the file now.
    lines: usize,
    /// The `max` of the last append, written with the records by a rewrite.
    max: usize,
}

impl AuditLog {
    /// Replays `dir/audit.log` (none yet: empty), compacts it and opens
    /// it for appends: [`AuditLog::replay`], then [`AuditLog::finish_open`]
    /// with nothing adopted.
    pub fn open(dir: &Path) -> Result<AuditLog, JournalError> {
        let mut log = Self::replay(dir)?;
        log.finish_open()?;
        Ok(log)
    }

    /// Replays `dir/audit.log` (none yet: empty). The store then hands over
    /// the records its journal holds ([`AuditLog::adopt`]) and calls
    /// [`AuditLog::finish_open`], which writes them here before the journal
    /// is compacted.
    pub fn replay(dir: &Path) -> Result<AuditLog, JournalError> {
        let path = dir.join("audit.log");
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |source| JournalError::Io { path: p, source }
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut log = AuditLog::default();
        let mut max = crate::audit::DEFAULT_MAX_RECORDS;
        let mut lines = bytes
            .split_inclusive(|b| *b == b'\n')
            .enumerate()
            .peekable();
        while let Some((i, raw)) = lines.next() {
            let complete = raw.ends_with(b"\n");
            let body = raw.strip_suffix(b"\n").unwrap_or(raw);
            match decode(body) {
                Ok(AuditLine::Record { max: m, record }) if complete => {
                    max = m;
                    log.note_max(record.id, m);
                    log.push(record, m);
                }
                Ok(AuditLine::Prune { before }) if complete => {
                    log.pruned_before = log.pruned_before.max(before);
                    log.prune(UnixMillis(before));
                }
                _ if lines.peek().is_none() => {
                    tracing::warn!(path = %path.display(), "dropped a torn audit line at the end");
                }
                Ok(_) => unreachable!("an incomplete line is always the last"),
                Err(reason) => {
                    return Err(JournalError::Corrupt {
                        path,
                        line: i + 1,
                        reason,
                    })
                }
            }
        }
        log.file = Some(AuditJournal {
            dir: dir.to_owned(),
            // Replaced by the rewrite of `finish_open`.
            file: File::open(dir).map_err(io_err(dir))?,
            lines: 0,
            max,
        });
        Ok(log)
    }

    /// Takes the audit records of one `audited` line of the main journal,
    /// replayed after this file (see [`AuditLog::replay`]).
    pub fn adopt(&mut self, records: Vec<AuditRecord>, max: usize) {
        if let Some(last) = records.last() {
            self.note_max(last.id, max);
        }
        self.adopted.extend(records);
    }

    fn note_max(&mut self, id: AuditId, max: usize) {
        if self.newest_max.is_none_or(|(newest, _)| id >= newest) {
            self.newest_max = Some((id, max));
        }
    }

    /// Merges the adopted records in id order (the order the running
    /// store kept them in: ids are given under this log's mutex), drops
    /// those the file's latest retention cut covers, evicts beyond the
    /// newest record's cap, and rewrites the file with the result: so the
    /// records are here, durably, before the main journal is compacted
    /// without them. A record in both (a crash between this rewrite and the
    /// journal's) is kept once.
    pub fn finish_open(&mut self) -> Result<(), JournalError> {
        let adopted = std::mem::take(&mut self.adopted);
        if !adopted.is_empty() {
            let cut = self.pruned_before;
            let mut all: Vec<AuditRecord> = self.records.drain(..).collect();
            all.extend(adopted.into_iter().filter(|r| r.id.ms >= cut));
            all.sort_by_key(|r| r.id);
            all.dedup_by_key(|r| r.id);
            let max = self.newest_max.map_or(all.len(), |(_, m)| m.max(1));
            let skip = all.len().saturating_sub(max);
            self.records = all.into_iter().skip(skip).collect();
            if let (Some(j), Some((_, m))) = (self.file.as_mut(), self.newest_max) {
                j.max = m;
            }
        }
        self.newest_max = None;
        self.pruned_before = 0;
        let Some(j) = &self.file else { return Ok(()) };
        let path = j.dir.join("audit.log");
        self.rewrite()
            .map_err(|source| JournalError::Io { path, source })
    }

    fn push(&mut self, record: AuditRecord, max: usize) {
        self.records.push_back(record);
        while self.records.len() > max.max(1) {
            self.records.pop_front();
        }
    }

    fn prune(&mut self, before: UnixMillis) -> usize {
        let cut = self.records.partition_point(|r| r.id.ms < before.0);
        self.records.drain(..cut);
        cut
    }

    /// The records, oldest first.
    pub fn records(&self) -> &VecDeque<AuditRecord> {
        &self.records
    }

    /// The next id for an entry at `at`.
    fn next_id(&self, at: UnixMillis, last: Option<AuditId>) -> AuditId {
        let last = last.or_else(|| self.records.back().map(|r| r.id));
        match last {
            Some(l) if l.ms >= at.0 => AuditId {
                ms: l.ms,
                seq: l.seq + 1,
            },
            _ => AuditId { ms: at.0, seq: 0 },
        }
    }

    /// Gives each entry its id, after the last record's: the records of
    /// the next [`AuditLog::append`] or [`AuditLog::keep`], which the
    /// caller makes before it lets go of this log.
    pub fn assign(&self, entries: Vec<AuditEntry>) -> Vec<AuditRecord> {
        let mut last = None;
        entries
            .into_iter()
            .map(|entry| {
                let id = self.next_id(entry.at, last);
                last = Some(id);
                AuditRecord { id, entry }
            })
            .collect()
    }

    /// Keeps `records` (from [`AuditLog::assign`], under the same lock) in
    /// memory, evicting beyond `max`, without writing them here: the main
    /// journal has made them durable (`audited` lines), and they reach this
    /// file with its next rewrite, at the latest on the next open.
    pub fn keep(&mut self, records: &[AuditRecord], max: usize) {
        if let Some(j) = self.file.as_mut() {
            j.max = max;
        }
        for r in records {
            self.push(r.clone(), max);
        }
    }

    /// Gives each entry its id, writes them (one append, one
    /// `fdatasync`), then keeps them in memory, evicting beyond `max`.
    pub fn append(&mut self, entries: Vec<AuditEntry>, max: usize) -> io::Result<Vec<AuditRecord>> {
        let records = self.assign(entries);
        if let Some(j) = self.file.as_mut() {
            let mut buf = Vec::new();
            for r in &records {
                buf.extend_from_slice(&encode(&AuditLine::Record {
                    max,
                    record: r.clone(),
                }));
            }
            j.append(&buf, records.len())?;
            j.max = max;
        }
        for r in &records {
            self.push(r.clone(), max);
        }
        self.compact_if_large();
        Ok(records)
    }

    /// Drops records older than `before`, durably.
    pub fn prune_before(&mut self, before: UnixMillis) -> io::Result<usize> {
        let cut = self.records.partition_point(|r| r.id.ms < before.0);
        if cut == 0 {
            return Ok(0);
        }
        if let Some(j) = self.file.as_mut() {
            j.append(&encode(&AuditLine::Prune { before: before.0 }), 1)?;
        }
        let n = self.prune(before);
        self.compact_if_large();
        Ok(n)
    }

    fn compact_if_large(&mut self) {
        let Some(j) = &self.file else { return };
        if j.lines > 2 * self.records.len() + COMPACT_SLACK {
            if let Err(e) = self.rewrite() {
                // The appends stay valid; the next one tries again.
                tracing::error!(error = %e, "audit log compaction failed");
            }
        }
    }

    /// Rewrites the file with exactly the records in memory.
    fn rewrite(&mut self) -> io::Result<()> {
        let Some(j) = self.file.as_mut() else {
            return Ok(());
        };
        let path = j.dir.join("audit.log");
        let tmp = j.dir.join("audit.log.compact");
        {
            let mut f = crate::durable::create_with_mode(&tmp, 0o600)?;
            let mut buf = Vec::new();
            for r in &self.records {
                buf.extend_from_slice(&encode(&AuditLine::Record {
                    max: j.max,
                    record: r.clone(),
                }));
            }
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&j.dir)?.sync_all()?;
        j.file = OpenOptions::new().append(true).open(&path)?;
        j.lines = self.records.len();
        Ok(())
    }

    /// Lines in the file (tests check the bound).
    pub fn file_lines(&self) -> Option<usize> {
        self.file.as_ref().map(|j| j.lines)
    }
}

impl AuditJournal {
    fn append(&mut self, bytes: &[u8], lines: usize) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.lines += lines;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(len);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditAction;

    fn entry(at: u64, actor: &str) -> AuditEntry {
        AuditEntry::new(UnixMillis(at), actor, None, AuditAction::Login)
    }

    #[test]
    fn replay_evicts_and_prunes_as_the_running_store_did() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AuditLog::open(dir.path()).unwrap();
            for i in 0..10 {
                log.append(vec![entry(1000 + i, &format!("a{i}"))], 4)
                    .unwrap();
            }
            assert_eq!(log.records().len(), 4);
            assert_eq!(log.prune_before(UnixMillis(1008)).unwrap(), 2);
        }
        let log = AuditLog::open(dir.path()).unwrap();
        let actors: Vec<_> = log
            .records()
            .iter()
            .map(|r| r.entry.actor.as_str())
            .collect();
        assert_eq!(actors, ["a8", "a9"]);
        assert_eq!(log.file_lines(), Some(2), "compacted on open");
    }

    #[test]
    fn a_flood_keeps_the_file_within_twice_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path()).unwrap();
        let max = 10;
        for i in 0..5000 {
            log.append(vec![entry(i, "flood")], max).unwrap();
            assert!(log.file_lines().unwrap() <= 2 * max + COMPACT_SLACK + 1);
        }
        assert_eq!(log.records().len(), max);
        let text = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(text.lines().count() <= 2 * max + COMPACT_SLACK + 1);
    }

    #[test]
    fn ids_never_go_back_with_the_clock() {
        let mut log = AuditLog::default();
        let a = log
            .append(vec![entry(500, "x"), entry(500, "y")], 10)
            .unwrap();
        let b = log.append(vec![entry(100, "z")], 10).unwrap();
        assert_eq!(a[0].id, AuditId { ms: 500, seq: 0 });
        assert_eq!(a[1].id, AuditId { ms: 500, seq: 1 });
        assert_eq!(b[0].id, AuditId { ms: 500, seq: 2 });
        assert_eq!(
            b[0].entry.at,
            UnixMillis(100),
            "the entry keeps its own time"
        );
    }

    #[test]
    fn a_corrupt_line_before_good_ones_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AuditLog::open(dir.path()).unwrap();
            log.append(vec![entry(1, "a"), entry(2, "b")], 10).unwrap();
        }
        let path = dir.path().join("audit.log");
        let mut text = fs::read(&path).unwrap();
        text[12] ^= 1;
        fs::write(&path, &text).unwrap();
        assert!(matches!(
            AuditLog::open(dir.path()),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
    }
}
