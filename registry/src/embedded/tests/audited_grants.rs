//! A grant and its audit record in one journal line (`audited`): one
//! `fdatasync` for both, the record in id order with the others, kept once
//! through a reopen (and a crash between the two rewrites of the open),
//! gone with the grant when the line is torn, and under the audit log's cap
//! and retention cut after a reopen as before it.

use super::*;
use crate::audit::{AuditAction, AuditOrder, AuditQuery};
use crate::webhook::EventType;

const MAX: usize = 1000;

fn grant_entry(name: &str) -> AuditEntry {
    AuditEntry::new(T0, "admin", None, AuditAction::Grant).target(name)
}

fn login_entry(actor: &str) -> AuditEntry {
    AuditEntry::new(T0, actor, None, AuditAction::Login)
}

fn unlocked_store(dir: &Path) -> EmbeddedStore {
    let s = EmbeddedStore::open(dir, Windows::default(), 100, T0).unwrap();
    now_or_never(s.set_lock_state(LockState {
        unlocked_until: Some(T0.plus(Duration::from_secs(3600))),
    }))
    .unwrap();
    s
}

fn reopen(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, Windows::default(), 100, T0).unwrap()
}

/// `(actor, target)` of every record, oldest first.
fn audit_trail(s: &EmbeddedStore) -> Vec<(String, Option<String>)> {
    let page = now_or_never(s.list_audit(&AuditQuery {
        since: None,
        actor: None,
        target: None,
        limit: 100,
        cursor: None,
        order: AuditOrder::Oldest,
    }))
    .unwrap();
    assert!(page.next_cursor.is_none());
    page.items
        .into_iter()
        .map(|r| (r.entry.actor, r.entry.target))
        .collect()
}

fn trail(items: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    items
        .iter()
        .map(|(a, t)| (a.to_string(), t.map(str::to_owned)))
        .collect()
}

fn grant_recorded(s: &EmbeddedStore, name: &str, max: usize) -> AuditRecord {
    now_or_never(s.register(poll(name, 1), T0)).unwrap();
    let (result, recorded) =
        now_or_never(s.commit_grant_recorded(commit(name, 1), grant_entry(name), max, T0)).unwrap();
    assert!(matches!(result, GrantResult::Granted(_)), "{result:?}");
    recorded.expect("the embedded store writes the record with the grant")
}

#[test]
fn a_grant_and_its_record_are_one_fdatasync_and_outlive_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path());
    now_or_never(s.append_audit(vec![login_entry("before")], MAX)).unwrap();
    let (appends, audit_lines) = (s.journal_appends(), s.audit_file_lines());
    let record = grant_recorded(&s, "dev01", MAX);
    assert_eq!(s.journal_appends(), appends + 1, "one journal append");
    assert_eq!(
        s.audit_file_lines(),
        audit_lines,
        "no second write (and fdatasync) in audit.log"
    );
    let after = now_or_never(s.append_audit(vec![login_entry("after")], MAX)).unwrap();
    assert!(record.id < after[0].id, "ids in the order of the decisions");
    let expected = trail(&[("before", None), ("admin", Some("dev01")), ("after", None)]);
    assert_eq!(audit_trail(&s), expected);
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    assert!(journal.contains(r#"{"op":"audited","record":{"op":"grant""#));

    // No shutdown step: the process is gone as after a crash.
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(audit_trail(&s), expected);
    assert!(now_or_never(s.get_user("dev01")).unwrap().is_some());
    // Moved into audit.log by the open, before the journal was compacted.
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(audit.contains(r#""target":"dev01""#), "{audit}");
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    assert!(!journal.contains("audited"));
    drop(s);
    assert_eq!(audit_trail(&reopen(dir.path())), expected, "kept once");
}

/// The open rewrites `audit.log` (with the journal's records) and then the
/// journal (without them). A crash between the two leaves the record in
/// both files; the next open keeps it once.
#[test]
fn a_crash_between_the_two_rewrites_keeps_the_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path());
    grant_recorded(&s, "dev01", MAX);
    drop(s);
    let journal = std::fs::read(dir.path().join("journal.log")).unwrap();
    drop(reopen(dir.path()));
    // As if the journal's rewrite had never happened.
    std::fs::write(dir.path().join("journal.log"), journal).unwrap();
    let s = reopen(dir.path());
    assert_eq!(audit_trail(&s), trail(&[("admin", Some("dev01"))]));
}

/// Cut anywhere, the `audited` line takes the grant and its record with
/// it: neither was acknowledged.
#[test]
fn a_torn_audited_line_drops_the_grant_and_its_record_together() {
    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path());
    now_or_never(s.put_user(user("ops"))).unwrap();
    grant_recorded(&s, "dev01", MAX);
    drop(s);
    let journal = std::fs::read(dir.path().join("journal.log")).unwrap();
    let lines: Vec<&[u8]> = journal.split_inclusive(|b| *b == b'\n').collect();
    let (head, audited) = lines.split_at(lines.len() - 1);
    let audited = audited[0];
    assert!(String::from_utf8_lossy(audited).contains(r#""op":"audited""#));
    for cut in (0..audited.len()).step_by(97).chain([audited.len() - 1]) {
        let torn = tempfile::tempdir().unwrap();
        let mut bytes = head.concat();
        bytes.extend_from_slice(&audited[..cut]);
        std::fs::write(torn.path().join("journal.log"), &bytes).unwrap();
        let s = reopen(torn.path());
        assert!(now_or_never(s.get_user("ops")).unwrap().is_some());
        assert!(
            now_or_never(s.get_user("dev01")).unwrap().is_none(),
            "cut {cut}"
        );
        assert!(audit_trail(&s).is_empty(), "cut {cut}");
    }
}

/// The cap and the retention cut apply to records the journal holds as
/// they did in the running store: an evicted or pruned record does not
/// come back with the reopen.
#[test]
fn evicted_and_pruned_records_stay_gone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path());
    grant_recorded(&s, "dev01", 2);
    for actor in ["l1", "l2"] {
        now_or_never(s.append_audit(vec![login_entry(actor)], 2)).unwrap();
    }
    let capped = trail(&[("l1", None), ("l2", None)]);
    assert_eq!(audit_trail(&s), capped, "the grant's record evicted");
    drop(s);
    assert_eq!(audit_trail(&reopen(dir.path())), capped);

    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path());
    grant_recorded(&s, "dev02", MAX);
    assert_eq!(
        now_or_never(s.prune_audit(T0.plus(Duration::from_millis(1)))).unwrap(),
        1
    );
    let later = AuditEntry::new(
        T0.plus(Duration::from_secs(1)),
        "l3",
        None,
        AuditAction::Login,
    );
    now_or_never(s.append_audit(vec![later], MAX)).unwrap();
    drop(s);
    assert_eq!(audit_trail(&reopen(dir.path())), trail(&[("l3", None)]));
}

/// Recorded single grants that queue behind a held journal share one
/// append, and each caller gets its own record, with distinct ids.
#[test]
fn concurrent_recorded_grants_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(unlocked_store(dir.path()));
    let names: Vec<String> = (0..8).map(|i| format!("dev{i}")).collect();
    for name in &names {
        now_or_never(store.register(poll(name, 1), T0)).unwrap();
    }
    let held = store.journal();
    let threads: Vec<_> = names
        .iter()
        .cloned()
        .map(|name| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let (result, record) = now_or_never(store.commit_grant_recorded(
                    commit(&name, 1),
                    grant_entry(&name),
                    MAX,
                    T0,
                ))
                .unwrap();
                assert!(matches!(result, GrantResult::Granted(_)), "{result:?}");
                (name, record.expect("recorded with the grant"))
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.grant_queue.lock().unwrap().len() < names.len() {
        assert!(std::time::Instant::now() < deadline, "grants never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = held.as_ref().unwrap().appends();
    drop(held);
    let mut ids = Vec::new();
    for t in threads {
        let (name, record) = t.join().unwrap();
        assert_eq!(record.entry.target.as_deref(), Some(name.as_str()));
        ids.push(record.id);
    }
    assert_eq!(store.journal_appends() - before, 1, "one append for eight");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), names.len(), "distinct ids");
    assert_eq!(audit_trail(&store).len(), names.len());
    drop(store);
    assert_eq!(audit_trail(&reopen(dir.path())).len(), names.len());
}

/// With webhooks, the grant's line holds its events too: the record, the
/// events and the grant are durable together, and all come back.
#[test]
fn with_webhooks_the_line_holds_the_grant_its_events_and_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = unlocked_store(dir.path()).with_webhook_outbox(100);
    grant_recorded(&s, "dev01", MAX);
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    assert!(
        journal.contains(r#"{"op":"audited","record":{"op":"withEvents","record":{"op":"grant""#),
        "{journal}"
    );
    drop(s);
    let s = reopen(dir.path()).with_webhook_outbox(100);
    assert_eq!(audit_trail(&s), trail(&[("admin", Some("dev01"))]));
    let events = now_or_never(s.outbox_take(10)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventType::RequestGranted && e.data["username"] == "dev01"),
        "{events:?}"
    );
}
