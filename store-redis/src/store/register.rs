//! The register protocol: one poll, as one to three script calls.
//!
//! `register.lua` applies steps 3 to 5 of the decision order atomically on
//! the poll's bucket. What it cannot do on a cluster is take a slot of the
//! `--max-pending` counter, a single global key that cannot share a slot
//! with every bucket:
//!
//! - **Single Redis**: a script may touch keys of any slot, so the script
//!   takes the slot itself (`counted` mode, the counter as `KEYS[8]`) and
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
}

fn decision_of(code: &str) -> Option<Decision> {
    Some(match code {
        "collect" => Decision::Collect,
        "pending" => Decision::StillPending,
        "pending_locked" => Decision::PendingWhileLocked,
        "conflict" => Decision::Conflict,
        "denied" => Decision::Denied,
        "locked" => Decision::Locked,
        "create" => Decision::Create,
        _ => return None,
    })
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

    /// `EVALSHA register` for `call` in `mode` (`decide`, `create`, or
    /// `counted`, which also names the global slot counter).
    fn register_cmd(&self, call: &RegisterCall<'_>, now: UnixMillis, mode: &str) -> redis::Cmd {
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
        ];
        if mode == "counted" {
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
            .arg(mode)
            .arg(&uk.tag)
            .arg(&call.source);
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
        };
        let mut conn = self.conn();

        // On a single Redis a script may touch the global slot counter too,
        // so every poll, creating or not, is one round trip.
        if !self.is_cluster() {
            let mut cmd = self.register_cmd(&call, now, "counted");
            cmd.arg(self.max_pending).arg(record::create_fields(poll));
            let reply = conn
                .eval(&self.scripts, &cmd)
                .await
                .map_err(|e| redis_error("register", e))?;
            let (code, swept, rest) =
                record::split_reply(reply).map_err(|e| corrupt("register", e))?;
            if code == "full" {
                return Err(StoreError::PendingLimit {
                    max: self.max_pending,
                });
            }
            self.release_slots(swept).await;
            return self.register_outcome(call.username, &code, rest);
        }

        // On a cluster the counter cannot share a slot with every bucket.
        // Round trip 1: decide, and apply anything but a creation.
        let cmd = self.register_cmd(&call, now, "decide");
        let reply = conn
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| redis_error("register", e))?;
        let (code, swept, rest) = record::split_reply(reply).map_err(|e| corrupt("register", e))?;
        if code != "need_slot" {
            return self.register_outcome(poll.username, &code, rest);
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
        let mut cmd = self.register_cmd(&call, now, "create");
        cmd.arg(record::create_fields(poll));
        let reply = conn
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| redis_error("register", e))?;
        let (code, swept, rest) = record::split_reply(reply).map_err(|e| corrupt("register", e))?;
        let unused_slot = i64::from(code != "create");
        self.release_slots(swept + unused_slot).await;
        self.register_outcome(call.username, &code, rest)
    }

    fn register_outcome(
        &self,
        username: &str,
        code: &str,
        rest: Vec<Value>,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let decision = decision_of(code)
            .ok_or_else(|| corrupt("register", BadReply(format!("decision {code:?}"))))?;
        let record = if decision == Decision::Collect {
            let f = record::fields(rest).map_err(|e| corrupt("register", e))?;
            record::decode_request(username, &f).map_err(|e| corrupt("register", e))?
        } else {
            None
        };
        Ok((decision, record))
    }
}
