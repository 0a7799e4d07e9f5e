//! The register protocol: one poll, as one to three script calls.
//!
//! `register.lua` applies steps 3 to 5 of the decision order atomically on
//! the poll's bucket. What it cannot do on a cluster is take a slot of the
//! `--max-pending` counter, a single global key that cannot share a slot
//! with every bucket:
//!
//! - **Single Redis**: a script may touch keys of any slot, so the script
//!   takes the slot itself (`counted` mode, the counter as `KEYS[10]`) and
//!   answers `full` at the cap. Every poll, creating or not, is one round
//!   trip.
//! - **Cluster**: a poll that would create a pending request takes three
//!   round trips (once in a device's life): the register script answers
//!   `need_slot` (`decide` mode, having changed nothing but expired
//!   leftovers), the `reserve` script takes a slot on the counter, and the
//!   register script runs again in `create` mode, deciding afresh. If the
//!   decision changed in between (another poll created it, the registry was
//!   locked), the slot is given back. Every other poll is one script call.
//!
//! Slots freed by a transition (a sweep inside a script, a denial, a grant)
//! are given back by a separate `release` call afterwards
//! ([`RedisStore::release_slots`]); a lost release only makes the cap
//! stricter (see the `# Accuracy` section of [`crate::store`]).

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::decision::Decision;
use fleetgate_registry::model::RequestRecord;
use fleetgate_registry::store::{Poll, StoreError};
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::RedisStore;
use crate::conn::Conn;
use crate::keys::{BucketKeys, UserKeys};
use crate::record::{self, BadReply};

/// What every `register` script call of one poll passes.
pub(super) struct RegisterCall<'a> {
    username: &'a str,
    user: UserKeys,
    bucket: BucketKeys,
    fingerprint: String,
    /// The source address, or empty.
    source: String,
    /// A `whileLocked` rule preauthorized the device (`ARGV[10]`).
    preauthorized: bool,
}

/// The mode of one `register.lua` call, its `ARGV[7]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RegisterMode {
    /// Cluster, first call: decide and apply anything but a creation,
    /// which it answers `need_slot` instead.
    Decide,
    /// Cluster, third call: a `--max-pending` slot is reserved; create if
    /// the decision is still to create.
    Create,
    /// Single Redis: the script takes the slot itself from the counter
    /// (`KEYS[10]`, `ARGV[10]` the cap), answering `full` at the cap.
    Counted,
}

impl RegisterMode {
    /// Every mode, for the test that pins them against the script.
    #[cfg(test)]
    const ALL: [RegisterMode; 3] = [
        RegisterMode::Decide,
        RegisterMode::Create,
        RegisterMode::Counted,
    ];

    /// The string `register.lua` compares `ARGV[7]` with.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RegisterMode::Decide => "decide",
            RegisterMode::Create => "create",
            RegisterMode::Counted => "counted",
        }
    }

    /// Whether the call names the global slot counter as `KEYS[10]`.
    fn takes_the_counter(self) -> bool {
        self == RegisterMode::Counted
    }
}

/// The decision codes of `register.lua` replies, one per [`Decision`].
const DECISION_CODES: [(&str, Decision); 7] = [
    ("collect", Decision::Collect),
    ("pending", Decision::StillPending),
    ("pending_locked", Decision::PendingWhileLocked),
    ("conflict", Decision::Conflict),
    ("denied", Decision::Denied),
    ("locked", Decision::Locked),
    ("create", Decision::Create),
];

fn decision_of(code: &str) -> Option<Decision> {
    DECISION_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
}

/// The first item of a `register.lua` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegisterCode {
    /// A decision, applied by the script.
    Decided(Decision),
    /// `need_slot` (mode `decide` only): the poll would create a pending
    /// request; nothing was created.
    NeedSlot,
    /// `full` (mode `counted` only): creating would pass `--max-pending`;
    /// nothing was created.
    Full,
}

impl RegisterCode {
    /// The code of a reply; an unknown one is `Corrupt`.
    fn parse(code: &str) -> Result<RegisterCode, StoreError> {
        match code {
            "need_slot" => Ok(RegisterCode::NeedSlot),
            "full" => Ok(RegisterCode::Full),
            other => decision_of(other)
                .map(RegisterCode::Decided)
                .ok_or_else(|| corrupt("register", BadReply(format!("decision {other:?}")))),
        }
    }

    /// The decision, or `Corrupt` for a code `mode` never answers.
    fn decision(self, mode: RegisterMode) -> Result<Decision, StoreError> {
        match self {
            RegisterCode::Decided(d) => Ok(d),
            other => Err(corrupt(
                "register",
                BadReply(format!("{other:?} in mode {}", mode.as_str())),
            )),
        }
    }
}

impl RedisStore {
    /// Gives `n` slots back to the `--max-pending` counter. A failure is
    /// logged, not returned: the transition it follows has happened, and a
    /// counter that stays too high only makes the cap stricter.
    pub(super) async fn release_slots(&self, n: i64) {
        if n <= 0 {
            return;
        }
        let mut cmd = self.scripts.release.evalsha(&[&self.keys.pending_slots()]);
        cmd.arg(n);
        if let Err(e) = self.conn().eval(&self.scripts, &cmd).await {
            tracing::warn!(error = %e, slots = n, "could not give pending slots back; the --max-pending cap stays stricter by that many");
        }
    }

    /// `EVALSHA register` for `call` in `mode`.
    fn register_cmd(
        &self,
        call: &RegisterCall<'_>,
        now: UnixMillis,
        mode: RegisterMode,
    ) -> redis::Cmd {
        let (uk, bk) = (&call.user, &call.bucket);
        let slots = self.keys.pending_slots();
        let mut keys: Vec<&str> = vec![
            &uk.request,
            &uk.user,
            &bk.pending,
            &bk.pending_expiry,
            &bk.granted,
            &bk.granted_expiry,
            &bk.lock,
            &bk.denied,
            &bk.denied_expiry,
        ];
        if mode.takes_the_counter() {
            keys.push(&slots);
        }
        let mut cmd = self.scripts.register.evalsha(&keys);
        let [ttl, collect, deny] = self.windows_ms;
        cmd.arg(call.username)
            .arg(&call.fingerprint)
            .arg(now.0)
            .arg(ttl)
            .arg(collect)
            .arg(deny)
            .arg(mode.as_str())
            .arg(&uk.tag)
            .arg(&call.source)
            .arg(if call.preauthorized { "1" } else { "0" });
        cmd
    }

    /// One poll, unbounded (the `Store` impl bounds it).
    pub(super) async fn register_inner(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let call = RegisterCall {
            username: poll.username,
            user: self.keys.user_keys(poll.username),
            bucket: self.keys.bucket_keys_of(poll.username),
            fingerprint: hex::encode(poll.fingerprint.0),
            source: poll.source_addr.map(|a| a.to_string()).unwrap_or_default(),
            preauthorized: poll.preauthorized,
        };
        let mut conn = self.conn();

        // On a single Redis a script may touch the global slot counter too,
        // so every poll, creating or not, is one round trip.
        if !self.is_cluster() {
            let mode = RegisterMode::Counted;
            let mut cmd = self.register_cmd(&call, now, mode);
            cmd.arg(self.max_pending).arg(record::create_fields(poll));
            let (code, swept, rest) = self.run_register(&mut conn, &cmd).await?;
            if code == RegisterCode::Full {
                return Err(StoreError::PendingLimit {
                    max: self.max_pending,
                });
            }
            self.release_slots(swept).await;
            return register_outcome(call.username, code.decision(mode)?, rest);
        }

        // On a cluster the counter cannot share a slot with every bucket.
        // Round trip 1: decide, and apply anything but a creation.
        let mode = RegisterMode::Decide;
        let cmd = self.register_cmd(&call, now, mode);
        let (code, swept, rest) = self.run_register(&mut conn, &cmd).await?;
        if code != RegisterCode::NeedSlot {
            return register_outcome(poll.username, code.decision(mode)?, rest);
        }

        // Round trip 2: a slot under --max-pending, after giving back the
        // slots of the expired requests the script just dropped.
        let mut reserve = self.scripts.reserve.evalsha(&[&self.keys.pending_slots()]);
        reserve.arg(self.max_pending).arg(swept);
        let count = conn
            .eval(&self.scripts, &reserve)
            .await
            .map_err(|e| redis_error("reserve", e))?;
        let count = record::int(&count)
            .ok_or_else(|| corrupt("reserve", BadReply(format!("count {count:?}"))))?;
        if count < 0 {
            return Err(StoreError::PendingLimit {
                max: self.max_pending,
            });
        }

        // Round trip 3: decide again and create. Only now is the credential
        // sealed (the one poll in a device's life that needs it).
        let mode = RegisterMode::Create;
        let mut cmd = self.register_cmd(&call, now, mode);
        cmd.arg(record::create_fields(poll));
        // On an error (outcome unknown, or a reply that makes no sense)
        // the reserved slot is kept: it may be in use, and keeping it only
        // makes the cap stricter.
        let (code, swept, rest) = self.run_register(&mut conn, &cmd).await?;
        let unused_slot = i64::from(code != RegisterCode::Decided(Decision::Create));
        self.release_slots(swept + unused_slot).await;
        register_outcome(call.username, code.decision(mode)?, rest)
    }

    /// Runs one `register.lua` call and splits its reply into the typed
    /// code, the swept count and the record fields.
    async fn run_register(
        &self,
        conn: &mut Conn,
        cmd: &redis::Cmd,
    ) -> Result<(RegisterCode, i64, Vec<Value>), StoreError> {
        let reply = conn
            .eval(&self.scripts, cmd)
            .await
            .map_err(|e| redis_error("register", e))?;
        let (code, swept, rest) = record::split_reply(reply).map_err(|e| corrupt("register", e))?;
        Ok((RegisterCode::parse(&code)?, swept, rest))
    }
}

/// The answer to a poll: the decision, with the stored record for a
/// collection (the script sends it only then).
fn register_outcome(
    username: &str,
    decision: Decision,
    rest: Vec<Value>,
) -> Result<(Decision, Option<RequestRecord>), StoreError> {
    let record = if decision == Decision::Collect {
        let f = record::fields(rest).map_err(|e| corrupt("register", e))?;
        record::decode_request(username, &f).map_err(|e| corrupt("register", e))?
    } else {
        None
    };
    Ok((decision, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER_LUA: &str = include_str!("../lua/register.lua");

    /// The single-quoted literals that follow `pattern` in the script.
    fn literals_after<'a>(pattern: &str, source: &'a str) -> Vec<&'a str> {
        source
            .match_indices(pattern)
            .filter_map(|(at, _)| {
                let rest = &source[at + pattern.len()..];
                rest.split_once('\'').map(|(lit, _)| lit)
            })
            .collect()
    }

    #[test]
    fn mode_strings_are_the_ones_the_script_compares() {
        // Pinned: changing one means changing register.lua with it.
        let wire: Vec<&str> = RegisterMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(wire, ["decide", "create", "counted"]);
        assert!(REGISTER_LUA.contains("local mode, tag, source = ARGV[7], ARGV[8], ARGV[9]"));
        // Every literal the script compares `mode` with is a mode...
        let mut compared = literals_after("mode == '", REGISTER_LUA);
        compared.extend(literals_after("mode ~= '", REGISTER_LUA));
        assert_eq!(compared, ["counted", "create"]);
        for lit in &compared {
            assert!(wire.contains(lit), "the script compares mode with {lit:?}");
        }
        // ...and `decide`, the mode it never names in a comparison (any
        // other mode answers need_slot), is the one its ARGV[7] doc says.
        assert!(REGISTER_LUA.contains("ARGV[7] mode: 'decide'"));
        assert!(RegisterMode::ALL
            .iter()
            .all(|m| REGISTER_LUA.contains(&format!("'{}'", m.as_str()))));
        // Only the counted mode names the counter (KEYS[10]).
        let counted: Vec<bool> = RegisterMode::ALL
            .iter()
            .map(|m| m.takes_the_counter())
            .collect();
        assert_eq!(counted, [false, false, true]);
    }

    #[test]
    fn every_code_the_script_answers_is_typed_and_unknown_ones_are_corrupt() {
        let mut answered = literals_after("return { '", REGISTER_LUA);
        answered.extend(literals_after("with_record({ '", REGISTER_LUA));
        assert!(answered.len() >= 9, "{answered:?}");
        for code in &answered {
            assert!(RegisterCode::parse(code).is_ok(), "untyped code {code:?}");
        }
        // Every decision has a code, and the script answers each one.
        for (code, decision) in DECISION_CODES {
            assert_eq!(decision_of(code), Some(decision));
            assert!(answered.contains(&code), "{code:?} never answered");
            // Exhaustive: a new Decision needs a code here.
            match decision {
                Decision::Collect
                | Decision::StillPending
                | Decision::PendingWhileLocked
                | Decision::Conflict
                | Decision::Denied
                | Decision::Locked
                | Decision::Create => {}
            }
        }
        assert_eq!(
            RegisterCode::parse("need_slot").unwrap(),
            RegisterCode::NeedSlot
        );
        assert_eq!(RegisterCode::parse("full").unwrap(), RegisterCode::Full);
        for unknown in ["", "granted", "Collect", "pending "] {
            assert!(matches!(
                RegisterCode::parse(unknown),
                Err(StoreError::Corrupt(_))
            ));
        }
        // A code a mode never answers is corrupt too.
        assert!(matches!(
            RegisterCode::Full.decision(RegisterMode::Decide),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            RegisterCode::Decided(Decision::Locked).decision(RegisterMode::Counted),
            Ok(Decision::Locked)
        );
    }
}
