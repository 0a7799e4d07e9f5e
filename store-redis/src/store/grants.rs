//! Grants: the `grant` script's command and reply, and group commit.
//!
//! A single grant is one `EVALSHA grant` (followed by `WAIT` in the same
//! pipeline when `--redis-wait-replicas` is set). A group of grants
//! ([`Store::commit_grants`]) is sent as **pipelines of at most
//! [`GROUP_MAX`] scripts**, each followed by one `WAIT` when configured, on
//! the store's own grants connection (never the shared one the polls use,
//! so a poll's cache miss does not queue behind a pipeline). Each script is
//! still its own atomic transition, run in list order, so a second grant of
//! a request in the same group sees the first and answers `already`.
//!
//! Each pipeline has a deadline that grows with its length
//! ([`group_deadline`]: `op_timeout` plus [`PER_GRANT`] per script), so
//! every write still has a bound, but a long group is not failed for being
//! long: one 512-script pipeline under a 1 s bound answered 503 on a loaded
//! machine (docs/BENCHMARKS.md, "Bulk grants, group commit…").
//!
//! - **Single Redis:** the pipelines go one after the other; the first
//!   that fails ends the call (the grants before it are applied, and a
//!   retry answers them `already`).
//! - **Cluster:** a redis-rs cluster pipeline goes to one node and must
//!   stay in one slot (it refuses a cross-slot pipeline; a per-node
//!   pipeline would need one request per slot anyway, and `MOVED` handling
//!   per command). Every key of a grant is under its bucket's hash tag, so
//!   the group is split **per bucket**: one pipeline (and one `WAIT`) per
//!   bucket of the group, all buckets at once. The per-node connections
//!   are multiplexed, so concurrent bucket pipelines to one master share
//!   its round trips: a 512-grant group costs about one round trip per
//!   master and at most 64 `WAIT`s, instead of 512 of each.
//!
//! [`Store::commit_grants`]: fleetgate_registry::store::Store::commit_grants

use std::time::Duration;

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::model::RequestRecord;
use fleetgate_registry::rule::DecidedBy;
use fleetgate_registry::store::{GrantCommit, GrantResult, StoreError};
use futures_util::future::join_all;
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::{to_json, RedisStore};
use crate::keys::{bucket_of, BUCKETS};
use crate::record::{self, BadReply};

/// The most grants sent in one pipeline. Small enough that a pipeline is a
/// few milliseconds of Redis time (each script is a few hash and
/// sorted-set writes and a `PUBLISH`), so polls on other connections are
/// answered between pipelines; large enough that the round trip per
/// pipeline is small next to the argon2id hashing of the same grants.
pub const GROUP_MAX: usize = 128;

/// Time allowed per script of a pipeline, on top of `op_timeout`. A grant
/// script takes tens of microseconds on an idle Redis; this is about a
/// hundred times that, for a Redis that shares its cores with a loaded
/// machine (the 512-script pipeline that missed 1 s did so at load 9–11).
pub const PER_GRANT: Duration = Duration::from_millis(4);

/// The deadline of one pipeline of `n` grants: `op_timeout` plus
/// [`PER_GRANT`] per grant (1 s + 0.5 s for [`GROUP_MAX`] at the default).
pub fn group_deadline(op_timeout: Duration, n: usize) -> Duration {
    op_timeout + PER_GRANT * n.min(GROUP_MAX) as u32
}

impl RedisStore {
    /// `EVALSHA grant` for one grant.
    pub(super) fn grant_cmd(&self, grant: &GrantCommit, now: UnixMillis) -> redis::Cmd {
        let username = grant.username.as_str();
        let uk = self.keys.user_keys(username);
        let bk = self.keys.bucket_keys_of(username);
        let mut cmd = self.scripts.grant.evalsha(&[
            &uk.request,
            &uk.user,
            &bk.pending,
            &bk.pending_expiry,
            &bk.granted,
            &bk.granted_expiry,
            &bk.users,
            &bk.outbox,
        ]);
        let [ttl, collect, deny] = self.windows_ms;
        cmd.arg(username)
            .arg(hex::encode(grant.fingerprint.0))
            .arg(now.0)
            .arg(ttl)
            .arg(collect)
            .arg(deny)
            .arg(grant.granted_at.0)
            .arg(to_json(&grant.user))
            .arg(to_json(&grant.user.roles))
            .arg(to_json(&grant.user.permissions))
            .arg(&self.channel)
            .arg(grant.certificate.as_deref().unwrap_or(""))
            .arg(
                grant
                    .user
                    .decided_by
                    .as_ref()
                    .and_then(DecidedBy::rule)
                    .unwrap_or(""),
            )
            .arg(self.outbox_cap())
            .arg(self.outbox_event_id())
            .arg(self.outbox_event_id());
        cmd
    }

    /// The result of one `grant` script reply, and the pending slots it
    /// freed (to give back).
    pub(super) fn grant_outcome(
        &self,
        username: &str,
        reply: Value,
    ) -> Result<(GrantResult, i64), StoreError> {
        let (code, swept, rest) = record::split_reply(reply).map_err(|e| corrupt("grant", e))?;
        let read = |rest| -> Result<RequestRecord, StoreError> {
            let f = record::fields(rest).map_err(|e| corrupt("grant", e))?;
            record::decode_request(username, &f)
                .map_err(|e| corrupt("grant", e))?
                .ok_or_else(|| corrupt("grant", BadReply("granted record missing".into())))
        };
        let result = match code.as_str() {
            "granted" => GrantResult::Granted(read(rest)?),
            "already" => GrantResult::AlreadyGranted(read(rest)?),
            "not_found" => GrantResult::NotFound,
            "other_granted" => {
                GrantResult::Conflict("a different request for this username was granted")
            }
            "user_exists" => GrantResult::Conflict("a user with this username already exists"),
            "changed" => GrantResult::Conflict(
                "the pending request changed since it was read; read it again",
            ),
            "denied" => GrantResult::Conflict("the request was denied"),
            other => return Err(corrupt("grant", BadReply(format!("outcome {other:?}")))),
        };
        Ok((result, swept))
    }

    /// [`Store::commit_grants`]: pipelines of at most [`GROUP_MAX`] on the
    /// grants connection; one after the other on a single Redis, one or
    /// more per bucket and all at once on a cluster.
    pub(super) async fn commit_grants_inner(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        if !self.is_cluster() {
            let mut results = Vec::with_capacity(grants.len());
            for group in grants.chunks(GROUP_MAX) {
                let deadline = group_deadline(self.op_timeout, group.len());
                let answered = self
                    .bounded_within("commit_grants", deadline, self.commit_group(group, now))
                    .await?;
                results.extend(answered);
            }
            return Ok(results);
        }
        // Per bucket, in list order within each bucket (the order that
        // matters: two grants of one username are in the same bucket).
        let total = grants.len();
        let mut by_bucket: Vec<Vec<(usize, GrantCommit)>> = vec![Vec::new(); BUCKETS];
        for (i, grant) in grants.into_iter().enumerate() {
            by_bucket[bucket_of(&grant.username)].push((i, grant));
        }
        let mut groups: Vec<(Vec<usize>, Vec<GrantCommit>)> = Vec::new();
        for bucket in by_bucket {
            let mut bucket = bucket.into_iter().peekable();
            while bucket.peek().is_some() {
                groups.push(bucket.by_ref().take(GROUP_MAX).unzip());
            }
        }
        let answered = join_all(groups.iter().map(|(_, group)| {
            let deadline = group_deadline(self.op_timeout, group.len());
            self.bounded_within("commit_grants", deadline, self.commit_group(group, now))
        }))
        .await;
        let mut results: Vec<Option<GrantResult>> = (0..total).map(|_| None).collect();
        for ((indexes, _), answer) in groups.iter().zip(answered) {
            for (&i, result) in indexes.iter().zip(answer?) {
                results[i] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every grant is in one group"))
            .collect())
    }

    /// One pipeline on the grants connection: every grant's script, then
    /// `WAIT` once if configured. On a cluster every grant of `group` must
    /// be in one bucket (one slot).
    async fn commit_group(
        &self,
        group: &[GrantCommit],
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        let cmds: Vec<redis::Cmd> = group.iter().map(|g| self.grant_cmd(g, now)).collect();
        let (replies, acked) = self
            .grants_conn()
            .eval_pipeline(&self.scripts, &cmds, self.wait)
            .await
            .map_err(|e| redis_error("grant", e))?;
        if replies.len() != group.len() {
            return Err(corrupt(
                "grant",
                BadReply(format!(
                    "{} replies for {} grants",
                    replies.len(),
                    group.len()
                )),
            ));
        }
        let mut results = Vec::with_capacity(group.len());
        let mut swept_total = 0;
        let mut any_granted = false;
        for (grant, reply) in group.iter().zip(replies) {
            let (result, swept) = self.grant_outcome(&grant.username, reply)?;
            if matches!(result, GrantResult::Granted(_)) {
                swept_total += swept;
                any_granted = true;
            }
            results.push(result);
        }
        self.release_slots(swept_total).await;
        if any_granted {
            self.check_wait("grant", acked)?;
        }
        Ok(results)
    }
}
