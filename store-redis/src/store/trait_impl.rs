//! The [`Store`] implementation: each trait method, bounded by
//! `op_timeout`, on top of the other parts of the store.
//!
//! `register` is the protocol in `register`, the lock methods are in
//! `lock`. What is here: the reads (one request hash, one user, the
//! listings and `pending_count` fanned out to the 64 buckets and merged by
//! [`crate::page`]) and the transitions that are one script call each
//! (grant, deny, forget, `put_user`, `delete_user`, `put_role`,
//! `delete_role`), the durable ones followed by `WAIT` on the durable
//! connection. Roles live in one global hash, `<prefix>:roles`, and the
//! auto-approval rules in another, `<prefix>:rules` (rules, use counts,
//! order and version, each changed by one script). The audit log's
//! methods delegate to `audit` (one stream).

use fleetgate_registry::audit::{AuditEntry, AuditQuery, AuditRecord};
use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::model::{RequestRecord, Role, UserRecord};
use fleetgate_registry::rule::{
    DecidedBy, PutRuleResult, Rule, RuleClaim, RuleOrderResult, StoredRule,
};
use fleetgate_registry::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, ListState, Page,
    Poll, Store, StoreError, MAX_PAGE,
};
use fleetgate_registry::webhook::{EventType, WebhookEvent};
use futures_util::future::join_all;
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::{to_json, RedisStore};
use crate::conn::Conn;
use crate::keys::{lex_range, BUCKETS, ROLES_EPOCH_FIELD};
use crate::page;
use crate::record::{self, BadReply};

/// Read-change-set rounds of [`Store::update_user_access`] before giving
/// up (503): only a user rewritten that many times within one call gets
/// there.
const CAS_ATTEMPTS: usize = 16;

impl Store for RedisStore {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        self.bounded("register", self.register_inner(poll, now))
            .await
    }

    async fn lock_state(&self) -> Result<LockState, StoreError> {
        self.bounded("lock_state", self.read_lock_state()).await
    }

    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        self.bounded("set_lock_state", self.write_lock_state(state))
            .await
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        self.bounded("pending_count", async {
            let counts = (0..BUCKETS).map(|b| {
                let key = self.keys.bucket_keys(b).pending;
                let mut conn = self.conn();
                async move {
                    redis::cmd("ZCARD")
                        .arg(key)
                        .query_async::<usize>(&mut conn)
                        .await
                }
            });
            let mut total = 0;
            for n in join_all(counts).await {
                total += n.map_err(|e| redis_error("ZCARD", e))?;
            }
            Ok(total)
        })
        .await
    }

    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.bounded("get_request", async {
            let r = self.read_request(&mut self.conn(), username).await?;
            Ok(r.filter(|r| self.windows.is_live(r, now)))
        })
        .await
    }

    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (min, max) = lex_range(
            query.prefix.as_deref().unwrap_or(""),
            query.cursor.as_deref(),
        );
        self.bounded("list_requests", async {
            // Each bucket walks its index from the cursor and returns its
            // next live usernames; `page::merge` asks until the page is exact.
            let fetch = |b: usize, min: Vec<u8>, n: usize| {
                let bk = self.keys.bucket_keys(b);
                let max = &max;
                let mut conn = self.conn();
                async move {
                    let (index, expiry) = match query.state {
                        ListState::Pending => (&bk.pending, &bk.pending_expiry),
                        ListState::Granted => (&bk.granted, &bk.granted_expiry),
                        ListState::Denied => (&bk.denied, &bk.denied_expiry),
                    };
                    let mut cmd = self.scripts.list.evalsha(&[index, expiry]);
                    cmd.arg(min).arg(max).arg(n).arg(now.0);
                    let reply = conn
                        .eval(&self.scripts, &cmd)
                        .await
                        .map_err(|e| redis_error("list", e))?;
                    let Value::Array(names) = reply else {
                        return Err(corrupt("list", BadReply("not an array".into())));
                    };
                    names
                        .iter()
                        .map(|n| {
                            record::text(n)
                                .map(str::to_owned)
                                .ok_or_else(|| corrupt("list", BadReply(format!("username {n:?}"))))
                        })
                        .collect()
                }
            };
            let (keys, more) = page::merge(BUCKETS, &min, limit, fetch).await?;
            let next_cursor = if more { keys.last().cloned() } else { None };
            // Only the records of the page are read.
            let reads = keys.iter().map(|k| {
                let mut conn = self.conn();
                async move { self.read_request(&mut conn, k).await }
            });
            let mut items = Vec::with_capacity(keys.len());
            for r in join_all(reads).await {
                if let Some(r) =
                    r?.filter(|r| self.windows.is_live(r, now) && query.state.holds(&r.state))
                {
                    items.push(r);
                }
            }
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        self.bounded("commit_grant", async {
            let cmd = self.grant_cmd(&grant, now);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("grant", e))?;
            let (result, swept) = self.grant_outcome(&grant.username, reply)?;
            if matches!(result, GrantResult::Granted(_)) {
                self.release_slots(swept).await;
                self.check_wait("grant", acked)?;
            }
            Ok(result)
        })
        .await
    }

    async fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        self.commit_grants_inner(grants, now).await
    }

    async fn deny(
        &self,
        username: &str,
        by: Option<DecidedBy>,
        now: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        let rule = by.as_ref().and_then(DecidedBy::rule).unwrap_or("");
        self.bounded("deny", async {
            match self
                .end_request("deny", &self.scripts.deny, username, now, rule)
                .await?
                .as_str()
            {
                "denied" => Ok(DenyResult::Denied),
                "not_found" => Ok(DenyResult::NotFound),
                "already_granted" => Ok(DenyResult::AlreadyGranted),
                other => Err(corrupt("deny", BadReply(format!("outcome {other:?}")))),
            }
        })
        .await
    }

    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        self.bounded("forget_request", async {
            match self
                .end_request("forget", &self.scripts.forget, username, now, "")
                .await?
                .as_str()
            {
                "forgotten" => Ok(ForgetResult::Forgotten),
                "not_found" => Ok(ForgetResult::NotFound),
                "granted" => Ok(ForgetResult::Granted),
                other => Err(corrupt("forget", BadReply(format!("outcome {other:?}")))),
            }
        })
        .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.bounded("get_user", self.get_user_unbounded(username))
            .await
    }

    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (min, max) = lex_range(
            query.prefix.as_deref().unwrap_or(""),
            query.cursor.as_deref(),
        );
        self.bounded("list_users", async {
            let fetch = |b: usize, min: Vec<u8>, n: usize| {
                let key = self.keys.bucket_keys(b).users;
                let max = &max;
                let mut conn = self.conn();
                async move {
                    redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg(min)
                        .arg(max)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(n)
                        .query_async::<Vec<String>>(&mut conn)
                        .await
                        .map_err(|e| redis_error("ZRANGEBYLEX", e))
                }
            };
            let (keys, more) = page::merge(BUCKETS, &min, limit, fetch).await?;
            let next_cursor = if more { keys.last().cloned() } else { None };
            let reads = keys.iter().map(|k| self.get_user_unbounded(k));
            let mut items = Vec::with_capacity(keys.len());
            for u in join_all(reads).await {
                items.extend(u?);
            }
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.bounded("put_user", async {
            let uk = self.keys.user_keys(&user.username);
            let bk = self.keys.bucket_keys_of(&user.username);
            let mut cmd = self.scripts.put_user.evalsha(&[&uk.user, &bk.users]);
            cmd.arg(&user.username)
                .arg(to_json(&user))
                .arg(&self.channel);
            let (_, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("put_user", e))?;
            self.check_wait("put_user", acked)
        })
        .await
    }

    async fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.bounded("update_user_access", async {
            let uk = self.keys.user_keys(username);
            // Read, change, compare-and-set; a write that landed between
            // the read and the set sends us round again. Each round trip is
            // bounded by the call's deadline; this bounds the rounds.
            for _ in 0..CAS_ATTEMPTS {
                let read: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&uk.user)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| redis_error("GET user", e))?;
                let Some(read) = read else {
                    return Ok(None);
                };
                let mut user: UserRecord = serde_json::from_slice(&read)
                    .map_err(|e| corrupt("GET user", BadReply(format!("user {username}: {e}"))))?;
                change.apply(&mut user);
                let outbox = self.keys.bucket_keys_of(username).outbox;
                let mut cmd = self.scripts.cas_user.evalsha(&[&uk.user, &outbox]);
                let event = self.outbox_event_json(|| {
                    WebhookEvent::user(EventType::UserUpdated, &user, UnixMillis::now())
                });
                cmd.arg(username)
                    .arg(&read)
                    .arg(to_json(&user))
                    .arg(&self.channel)
                    .arg(self.outbox_cap())
                    .arg(event);
                let (reply, acked) = self
                    .durable_conn()
                    .eval_durable(&self.scripts, &cmd, self.wait)
                    .await
                    .map_err(|e| redis_error("update_user_access", e))?;
                match record::int(&reply) {
                    Some(1) => {
                        self.check_wait("update_user_access", acked)?;
                        return Ok(Some(user));
                    }
                    Some(-1) => return Ok(None),
                    Some(0) => continue,
                    _ => {
                        return Err(corrupt(
                            "update_user_access",
                            BadReply(format!("reply {reply:?}")),
                        ))
                    }
                }
            }
            Err(StoreError::Unavailable(format!(
                "user `{username}` kept changing during {CAS_ATTEMPTS} attempts to update it"
            )))
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        self.bounded("delete_user", async {
            let uk = self.keys.user_keys(username);
            let bk = self.keys.bucket_keys_of(username);
            let mut cmd = self.scripts.delete_user.evalsha(&[
                &uk.user,
                &bk.users,
                &uk.request,
                &bk.granted,
                &bk.granted_expiry,
                &bk.outbox,
            ]);
            cmd.arg(username)
                .arg(&self.channel)
                .arg(self.outbox_cap())
                .arg(self.outbox_event_id())
                .arg(UnixMillis::now().0);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("delete_user", e))?;
            self.check_wait("delete_user", acked)?;
            match record::int(&reply) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(corrupt("delete_user", BadReply(format!("reply {reply:?}")))),
            }
        })
        .await
    }

    async fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        if name == ROLES_EPOCH_FIELD {
            // The hash's change counter, not a role (a device may have
            // asked for a role of that name before roles were defined).
            return Ok(None);
        }
        self.bounded("get_role", async {
            let v: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(self.keys.roles())
                .arg(name)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("HGET role", e))?;
            v.map(|json| decode_role(name, &json)).transpose()
        })
        .await
    }

    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        self.bounded("list_roles", async {
            let all: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(self.keys.roles())
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("HGETALL roles", e))?;
            let mut roles = all
                .iter()
                .filter(|(name, _)| name.as_str() != ROLES_EPOCH_FIELD)
                .map(|(name, json)| decode_role(name, json))
                .collect::<Result<Vec<_>, _>>()?;
            // A hash has no order; the trait promises name order.
            roles.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(roles)
        })
        .await
    }

    async fn put_role(&self, role: Role) -> Result<(), StoreError> {
        self.bounded("put_role", async {
            let key = self.keys.roles();
            let mut cmd = self.scripts.put_role.evalsha(&[&key]);
            cmd.arg(&role.name).arg(to_json(&role)).arg(&self.channel);
            let (_, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("put_role", e))?;
            self.check_wait("put_role", acked)
        })
        .await
    }

    async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        self.bounded("delete_role", async {
            let key = self.keys.roles();
            let mut cmd = self.scripts.delete_role.evalsha(&[&key]);
            cmd.arg(name).arg(&self.channel);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("delete_role", e))?;
            self.check_wait("delete_role", acked)?;
            match record::int(&reply) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(corrupt("delete_role", BadReply(format!("reply {reply:?}")))),
            }
        })
        .await
    }

    async fn rules_version(&self) -> Result<u64, StoreError> {
        self.bounded("rules_version", async {
            let v: Option<u64> = redis::cmd("HGET")
                .arg(self.keys.rules())
                .arg("#version")
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("HGET rules version", e))?;
            Ok(v.unwrap_or(0))
        })
        .await
    }

    async fn list_rules(&self) -> Result<(u64, Vec<StoredRule>), StoreError> {
        self.bounded("list_rules", async {
            let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(self.keys.rules())
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("HGETALL rules", e))?;
            decode_rules(all)
        })
        .await
    }

    async fn put_rule(&self, rule: Rule, max: usize) -> Result<PutRuleResult, StoreError> {
        self.bounded("put_rule", async {
            let key = self.keys.rules();
            let mut cmd = self.scripts.put_rule.evalsha(&[&key]);
            cmd.arg(&rule.name)
                .arg(to_json(&rule))
                .arg(max)
                .arg(&self.channel);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("put_rule", e))?;
            self.check_wait("put_rule", acked)?;
            match record::bytes(&reply) {
                Some(b"created") => Ok(PutRuleResult::Created),
                Some(b"replaced") => Ok(PutRuleResult::Replaced),
                Some(b"full") => Ok(PutRuleResult::Full),
                _ => Err(corrupt("put_rule", BadReply(format!("reply {reply:?}")))),
            }
        })
        .await
    }

    async fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        self.bounded("delete_rule", async {
            let key = self.keys.rules();
            let mut cmd = self.scripts.delete_rule.evalsha(&[&key]);
            cmd.arg(name).arg(&self.channel);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("delete_rule", e))?;
            self.check_wait("delete_rule", acked)?;
            match record::int(&reply) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(corrupt("delete_rule", BadReply(format!("reply {reply:?}")))),
            }
        })
        .await
    }

    async fn set_rule_order(&self, names: &[String]) -> Result<RuleOrderResult, StoreError> {
        // Every name is [A-Za-z0-9._:-] (checked by the registry), so the
        // ',' join is unambiguous; a name that is not a rule's (with a ','
        // or empty) makes the script answer `mismatch`.
        if names.iter().any(|n| n.is_empty() || n.contains(',')) {
            return Ok(RuleOrderResult::Mismatch);
        }
        self.bounded("set_rule_order", async {
            let key = self.keys.rules();
            let mut cmd = self.scripts.rule_order.evalsha(&[&key]);
            cmd.arg(names.join(",")).arg(&self.channel);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("rule_order", e))?;
            self.check_wait("rule_order", acked)?;
            match record::bytes(&reply) {
                Some(b"applied") => Ok(RuleOrderResult::Applied),
                Some(b"mismatch") => Ok(RuleOrderResult::Mismatch),
                _ => Err(corrupt("rule_order", BadReply(format!("reply {reply:?}")))),
            }
        })
        .await
    }

    async fn claim_rule_use(&self, name: &str) -> Result<RuleClaim, StoreError> {
        self.bounded("claim_rule_use", async {
            let key = self.keys.rules();
            let mut cmd = self.scripts.claim_rule.evalsha(&[&key]);
            cmd.arg(name);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| redis_error("claim_rule", e))?;
            self.check_wait("claim_rule", acked)?;
            let bad = || corrupt("claim_rule", BadReply(format!("reply {reply:?}")));
            let Value::Array(parts) = &reply else {
                return Err(bad());
            };
            match (parts.first().and_then(record::bytes), parts.get(1)) {
                (Some(b"claimed"), Some(n)) => record::int(n)
                    .and_then(|n| u64::try_from(n).ok())
                    .map(RuleClaim::Claimed)
                    .ok_or_else(bad),
                (Some(b"exhausted"), None) => Ok(RuleClaim::Exhausted),
                (Some(b"gone"), None) => Ok(RuleClaim::Gone),
                _ => Err(bad()),
            }
        })
        .await
    }

    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        max: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.append_audit_records(entries, max).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>, StoreError> {
        self.list_audit_records(query).await
    }

    async fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        self.prune_audit_records(before).await
    }

    async fn outbox_take(&self, max: usize) -> Result<Vec<WebhookEvent>, StoreError> {
        // Up to 65 streams read at once, a second round for the busy ones,
        // and every `claim_idle / 4` a heartbeat and take-over round.
        self.bounded_within("outbox_take", self.op_timeout * 4, self.take_outbox(max))
            .await
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), StoreError> {
        self.bounded("outbox_ack", self.ack_outbox(ids)).await
    }

    async fn outbox_depth(&self) -> Result<usize, StoreError> {
        self.bounded("outbox_depth", self.outbox_len()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", async {
            redis::cmd("PING")
                .query_async::<Value>(&mut self.conn())
                .await
                .map_err(|e| redis_error("PING", e))?;
            Ok(())
        })
        .await
    }
}

/// The rules hash (`HGETALL`), fields as put_rule.lua describes them,
/// into the rules in order with their uses and the list's version.
fn decode_rules(all: Vec<(String, Vec<u8>)>) -> Result<(u64, Vec<StoredRule>), StoreError> {
    let bad = |m: String| corrupt("rules", BadReply(m));
    let mut version = 0;
    let mut order = String::new();
    let mut rules = std::collections::HashMap::new();
    let mut uses = std::collections::HashMap::new();
    for (field, value) in all {
        let text =
            || String::from_utf8(value.clone()).map_err(|_| bad(format!("{field} is not UTF-8")));
        if field == "#version" {
            version = text()?
                .parse()
                .map_err(|_| bad("#version is not a number".into()))?;
        } else if field == "#order" {
            order = text()?;
        } else if let Some(name) = field.strip_prefix("r:") {
            let rule: Rule =
                serde_json::from_slice(&value).map_err(|e| bad(format!("rule {name}: {e}")))?;
            if rule.name != name {
                return Err(bad(format!("rule stored as {name} is named {}", rule.name)));
            }
            rules.insert(name.to_owned(), rule);
        } else if let Some(name) = field.strip_prefix("u:") {
            let n: u64 = text()?
                .parse()
                .map_err(|_| bad(format!("uses of {name} is not a number")))?;
            uses.insert(name.to_owned(), n);
        } else {
            return Err(bad(format!("unknown field {field}")));
        }
    }
    let mut out = Vec::with_capacity(rules.len());
    for name in order.split(',').filter(|n| !n.is_empty()) {
        let rule = rules
            .remove(name)
            .ok_or_else(|| bad(format!("#order names {name}, which has no rule")))?;
        out.push(StoredRule {
            uses: uses.get(name).copied().unwrap_or(0),
            rule,
        });
    }
    if let Some(name) = rules.keys().next() {
        return Err(bad(format!("rule {name} is missing from #order")));
    }
    Ok((version, out))
}

/// One field of the roles hash: the role's JSON, which must name the field
/// it is stored under.
fn decode_role(field: &str, json: &[u8]) -> Result<Role, StoreError> {
    let role: Role = serde_json::from_slice(json)
        .map_err(|e| corrupt("roles", BadReply(format!("role {field}: {e}"))))?;
    if role.name != field {
        return Err(corrupt(
            "roles",
            BadReply(format!("role stored as {field} is named {}", role.name)),
        ));
    }
    Ok(role)
}

impl RedisStore {
    /// `get_user` without its own timeout, for use inside a bounded listing.
    async fn get_user_unbounded(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.user_keys(username).user)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("GET user", e))?;
        v.map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| corrupt("GET user", BadReply(format!("user {username}: {e}"))))
    }

    /// Reads one request hash.
    async fn read_request(
        &self,
        conn: &mut Conn,
        username: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let key = self.keys.user_keys(username).request;
        let v: Value = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(|e| redis_error("HGETALL", e))?;
        let items = record::hash_items(v).map_err(|e| corrupt("HGETALL", e))?;
        let f = record::fields(items).map_err(|e| corrupt("HGETALL", e))?;
        record::decode_request(username, &f).map_err(|e| corrupt("HGETALL", e))
    }

    /// Runs `deny.lua` or `forget.lua`, which take the same keys and
    /// arguments and reply `{outcome, swept}`: gives back the swept slot and
    /// returns the outcome.
    async fn end_request(
        &self,
        what: &'static str,
        script: &crate::scripts::Lua,
        username: &str,
        now: UnixMillis,
        rule: &str,
    ) -> Result<String, StoreError> {
        let uk = self.keys.user_keys(username);
        let bk = self.keys.bucket_keys_of(username);
        let mut cmd = script.evalsha(&[
            &uk.request,
            &bk.pending,
            &bk.pending_expiry,
            &bk.denied,
            &bk.denied_expiry,
            &bk.outbox,
        ]);
        let [ttl, collect, deny] = self.windows_ms;
        cmd.arg(username)
            .arg(now.0)
            .arg(ttl)
            .arg(collect)
            .arg(deny)
            .arg(&self.channel)
            .arg(rule)
            .arg(self.outbox_cap())
            .arg(self.outbox_event_id())
            .arg(self.outbox_event_id());
        let reply = self
            .conn()
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| redis_error(what, e))?;
        let (code, swept, _) = record::split_reply(reply).map_err(|e| corrupt(what, e))?;
        self.release_slots(swept).await;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::decode_rules;
    use fleetgate_registry::store::StoreError;

    fn field(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    const A: &str = r#"{"name":"a","action":"grant","roles":[],"permissions":[]}"#;
    const B: &str = r#"{"name":"b","action":"deny","roles":[],"permissions":[]}"#;

    #[test]
    fn the_rules_hash_decodes_in_order_with_uses() {
        let (version, rules) = decode_rules(vec![
            field("r:a", A),
            field("#version", "4"),
            field("r:b", B),
            field("u:a", "3"),
            field("#order", "b,a"),
        ])
        .unwrap();
        assert_eq!(version, 4);
        let got: Vec<(&str, u64)> = rules
            .iter()
            .map(|r| (r.rule.name.as_str(), r.uses))
            .collect();
        assert_eq!(got, [("b", 0), ("a", 3)]);
        assert_eq!(
            decode_rules(vec![]).unwrap(),
            (0, vec![]),
            "no hash, no rules"
        );
        // The order of a hash whose last rule was deleted is empty.
        assert_eq!(
            decode_rules(vec![field("#order", ""), field("#version", "2")]).unwrap(),
            (2, vec![])
        );
    }

    #[test]
    fn a_rules_hash_that_does_not_add_up_is_corrupt_not_an_outage() {
        let cases = [
            vec![field("r:a", A)],
            vec![field("#order", "a")],
            vec![field("r:a", B), field("#order", "a")],
            vec![field("r:a", "{"), field("#order", "a")],
            vec![field("r:a", A), field("#order", "a"), field("u:a", "many")],
            vec![field("#version", "x")],
            vec![field("stray", "1")],
        ];
        for case in cases {
            match decode_rules(case.clone()) {
                Err(StoreError::Corrupt(_)) => {}
                other => panic!("{case:?}: {other:?}"),
            }
        }
    }
}
