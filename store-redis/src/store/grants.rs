//! Grants: the `grant` script's command and reply, and group commit.
//!
//! A single grant is one `EVALSHA grant` (followed by `WAIT` in the same
//! pipeline when `--redis-wait-replicas` is set). A group of grants
//! ([`Store::commit_grants`]) on a single Redis is **one pipeline**: every
//! grant's `EVALSHA`, then one `WAIT`, on the durable connection, so the
//! group costs one round trip and one replica wait instead of one each.
//! Each script is still its own atomic transition, run in list order, so a
//! second grant of a request in the same group sees the first and answers
//! `already`. A group larger than [`GROUP_MAX`] goes as several pipelines,
//! one after the other, each bounded by `op_timeout`.
//!
//! On a cluster the grants of a group live in many slots, and a pipeline
//! goes to one node, so there each grant is sent on its own (concurrently,
//! with its own `WAIT` on its master): no round trip is saved, but the
//! results and guarantees are the same.
//!
//! [`Store::commit_grants`]: fleetgate_registry::store::Store::commit_grants

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::model::RequestRecord;
use fleetgate_registry::rule::DecidedBy;
use fleetgate_registry::store::{GrantCommit, GrantResult, Store, StoreError};
use futures_util::future::join_all;
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::{to_json, RedisStore};
use crate::record::{self, BadReply};

/// The most grants sent in one pipeline. 512 scripts run in well under
/// `op_timeout` (each is a few hash and sorted-set writes).
pub const GROUP_MAX: usize = 512;

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
            );
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

    /// [`Store::commit_grants`]: pipelines of at most [`GROUP_MAX`] on a
    /// single Redis, concurrent single grants on a cluster.
    pub(super) async fn commit_grants_inner(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        if self.is_cluster() {
            let calls = grants.into_iter().map(|g| self.commit_grant(g, now));
            return join_all(calls).await.into_iter().collect();
        }
        let mut results = Vec::with_capacity(grants.len());
        for group in grants.chunks(GROUP_MAX) {
            let answered = self
                .bounded("commit_grants", self.commit_group(group, now))
                .await?;
            results.extend(answered);
        }
        Ok(results)
    }

    /// One pipeline: every grant's script, then `WAIT` once if configured.
    async fn commit_group(
        &self,
        group: &[GrantCommit],
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        let cmds: Vec<redis::Cmd> = group.iter().map(|g| self.grant_cmd(g, now)).collect();
        let (replies, acked) = self
            .durable_conn()
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
