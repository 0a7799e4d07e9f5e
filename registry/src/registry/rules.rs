//! Auto-approval rules in the registry: defining them (the admin routes
//! call these), and deciding a newly created request by them.
//!
//! **When rules run.** `Registry::register_parsed` calls
//! [`Registry::decide_by_rules`] only when the store has just created a
//! pending request (`Decision::Create`), and [`Registry::preauthorize`]
//! when the registry is locked and nothing is known of the device
//! (`Decision::Locked`). A re-poll never evaluates a rule.
//!
//! **A granting rule grants as an admin would**: the same
//! `prepare_grant` (unseal, argon2id or the CA's signature) and the same
//! `commit_grant`, with the rule's roles and permissions and the rule's
//! name as `decided_by`. The commit is durable before the poll that
//! created the request is answered, so that very poll answers 201.
//!
//! **Uses.** A matching rule decides only once the store has counted a use
//! (`Store::claim_rule_use`, atomic across instances). A rule whose uses
//! are spent, or that was deleted meanwhile, is skipped and the next one is
//! tried. A use is spent when it is claimed: if the grant then fails (the
//! store went away), the device stays pending for an admin, and the use is
//! not given back (the budget is stricter, never looser).
//!
//! **The compiled list** is kept per registry and rebuilt only when the
//! store's `rules_version` moves, so a creation costs a version read, not a
//! regex compilation.

use std::sync::Arc;

use crate::audit::{AuditAction, AuditEntry};
use crate::clock::UnixMillis;
use crate::decision::Decision;
use crate::fingerprint::{Fingerprint, PairingId};
use crate::model::{RequestState, Transport};
use crate::request::{Credential, RegisterRequest};
use crate::rule::{
    CompiledRule, DecidedBy, PutRuleResult, Rule, RuleAction, RuleClaim, RuleInput,
    RuleOrderResult, StoredRule, RULES_MAX,
};
use crate::store::{GrantResult, Store, StoreError};

use super::{policy_parts, PollContext, RegisterOutcome, Registry, RoleCheckError, StoreOp};

/// Why a rule could not be defined, reordered or deleted.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// 404: no rule of that name.
    #[error("no rule `{0}`")]
    NotFound(String),
    /// 422: the rule breaks a rule of its own (`rule_name`,
    /// `username_pattern`, `source_cidrs_count`, `rules_count`,
    /// `unknown_roles`, `rule_order`, …); `rule` names it.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::request::RequestError> for RuleError {
    fn from(e: crate::request::RequestError) -> Self {
        let (rule, message) = policy_parts(e);
        RuleError::Policy { rule, message }
    }
}

/// Makes the rule's `fleetgate_rule_decisions_total` series exist (at 0
/// until its first decision), so Prometheus sees the step from 0 to 1: a
/// series born at its first increment has no rate. `increment(0)` leaves
/// an existing count as it is. Called when a rule is put and whenever an
/// instance compiles the list, so every instance exports it.
fn export_series(rule: &Rule) {
    metrics::counter!(
        crate::metrics::RULE_DECISIONS_TOTAL,
        "rule" => rule.name.clone(),
        "action" => rule.action.name()
    )
    .increment(0);
}

/// The compiled rules at one `rules_version`. A read-write lock: every
/// creation (and every locked poll of an unknown device) reads it from
/// whichever worker served the poll; only a changed version writes.
#[derive(Debug, Default)]
pub(super) struct RulesCache {
    compiled: std::sync::RwLock<Option<(u64, Arc<Vec<CompiledRule>>)>>,
}

impl<S: Store> Registry<S> {
    /// Every rule, in evaluation order, with its use count.
    pub async fn list_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        Ok(self.store.list_rules().await?.1)
    }

    /// The rule `name`.
    pub async fn get_rule(&self, name: &str) -> Result<StoredRule, RuleError> {
        self.list_rules()
            .await?
            .into_iter()
            .find(|r| r.rule.name == name)
            .ok_or_else(|| RuleError::NotFound(name.to_owned()))
    }

    /// Creates (placed last) or replaces (in place, uses kept) a rule,
    /// durably. The rule must validate ([`CompiledRule::new`]), its roles
    /// must be defined (422 `unknown_roles`, as for a grant), and a new
    /// rule may not pass [`RULES_MAX`] (422 `rules_count`, checked in the
    /// store's transition). Returns the rule as stored and whether it is new.
    pub async fn put_rule(&self, mut rule: Rule) -> Result<(StoredRule, bool), RuleError> {
        rule.roles = super::dedup_roles(std::mem::take(&mut rule.roles));
        rule.permissions.sort();
        rule.permissions.dedup();
        let rule = CompiledRule::new(rule)?.rule;
        self.check_roles_defined(&rule.roles)
            .await
            .map_err(|e| match e {
                RoleCheckError::Unknown(names) => RuleError::Policy {
                    rule: "unknown_roles",
                    message: format!("no such role: {names}"),
                },
                RoleCheckError::Store(e) => RuleError::Store(e),
            })?;
        let created = match self.store.put_rule(rule.clone(), RULES_MAX).await? {
            PutRuleResult::Full => {
                return Err(RuleError::Policy {
                    rule: "rules_count",
                    message: format!("at most {RULES_MAX} rules may be defined; delete one first"),
                })
            }
            PutRuleResult::Created => true,
            PutRuleResult::Replaced => false,
        };
        export_series(&rule);
        tracing::info!(rule = %rule.name, action = rule.action.name(), created, "rule put");
        self.get_rule(&rule.name).await.map(|r| (r, created))
    }

    /// Deletes a rule and its use count.
    pub async fn delete_rule(&self, name: &str) -> Result<(), RuleError> {
        if self.store.delete_rule(name).await? {
            tracing::info!(rule = %name, "rule deleted");
            Ok(())
        } else {
            Err(RuleError::NotFound(name.to_owned()))
        }
    }

    /// Sets the evaluation order: `names` must be every defined rule, each
    /// once (422 `rule_order` otherwise). Returns the rules in the new order.
    pub async fn set_rule_order(&self, names: &[String]) -> Result<Vec<StoredRule>, RuleError> {
        match self.store.set_rule_order(names).await? {
            RuleOrderResult::Applied => {
                tracing::info!(rules = names.len(), "rule order set");
                Ok(self.list_rules().await?)
            }
            RuleOrderResult::Mismatch => Err(RuleError::Policy {
                rule: "rule_order",
                message: "`names` must list every defined rule exactly once".into(),
            }),
        }
    }

    /// The compiled rules, rebuilt only when the store's list changed.
    async fn compiled_rules(&self) -> Result<Arc<Vec<CompiledRule>>, StoreError> {
        let version = self.store.rules_version().await?;
        let cache = &self.rules_cache.compiled;
        if let Some((v, rules)) = &*cache.read().unwrap_or_else(|p| p.into_inner()) {
            if *v == version {
                return Ok(Arc::clone(rules));
            }
        }
        let (version, stored) = self.store.list_rules().await?;
        let compiled: Vec<CompiledRule> = stored
            .into_iter()
            .filter_map(|s| {
                let name = s.rule.name.clone();
                CompiledRule::new(s.rule)
                    .map_err(|e| {
                        // Only a direct store write can put an invalid rule
                        // there; it is skipped, not half-applied.
                        tracing::error!(rule = %name, error = %e, "stored rule does not validate; skipped");
                    })
                    .ok()
            })
            .collect();
        compiled.iter().for_each(|c| export_series(&c.rule));
        let compiled = Arc::new(compiled);
        *cache.write().unwrap_or_else(|p| p.into_inner()) = Some((version, Arc::clone(&compiled)));
        Ok(compiled)
    }

    /// The first rule, in order, that matches `input` and whose use the
    /// store counted.
    async fn claim_first_match(&self, input: &RuleInput<'_>) -> Result<Option<Rule>, StoreError> {
        let rules = self.compiled_rules().await?;
        for r in rules.iter().filter(|r| r.matches(input)) {
            match self.store.claim_rule_use(&r.rule.name).await? {
                RuleClaim::Claimed(_) => return Ok(Some(r.rule.clone())),
                RuleClaim::Exhausted | RuleClaim::Gone => continue,
            }
        }
        Ok(None)
    }

    fn rule_input<'a>(
        req: &'a RegisterRequest<'_>,
        ctx: &PollContext<'_>,
        locked: bool,
        now: UnixMillis,
    ) -> RuleInput<'a> {
        RuleInput {
            username: &req.username,
            source: ctx.source_addr.map(|a| a.ip()),
            transport: ctx.transport.unwrap_or(Transport::Http),
            has_csr: matches!(req.credential, Credential::Csr(_)),
            locked,
            now,
        }
    }

    /// The poll just created `req`'s pending request: the first matching
    /// rule decides it. Without one (or when the store fails here) the
    /// answer is the plain 202 of a new request.
    pub(super) async fn decide_by_rules(
        &self,
        req: &RegisterRequest<'_>,
        ctx: &PollContext<'_>,
        fp: Fingerprint,
        now: UnixMillis,
    ) -> RegisterOutcome {
        let pairing_id = fp.pairing_id();
        let pending = RegisterOutcome::Pending {
            pairing_id,
            created: true,
        };
        match self
            .claim_first_match(&Self::rule_input(req, ctx, false, now))
            .await
        {
            Ok(Some(rule)) => {
                self.apply_rule(rule, &req.username, ctx.source_addr, fp, now)
                    .await
            }
            Ok(None) => pending,
            Err(e) => {
                tracing::warn!(username = %req.username, error = %e, "rules not evaluated; the request stays pending");
                pending
            }
        }
    }

    /// The registry is locked and nothing is known of the device: a
    /// `whileLocked` rule that matches (and has a use left) creates its
    /// request anyway and decides it. Otherwise the plain 423.
    pub(super) async fn preauthorize(
        &self,
        req: &RegisterRequest<'_>,
        ctx: &PollContext<'_>,
        fp: Fingerprint,
        now: UnixMillis,
    ) -> RegisterOutcome {
        let locked = RegisterOutcome::Locked { pairing_id: None };
        let rule = match self
            .claim_first_match(&Self::rule_input(req, ctx, true, now))
            .await
        {
            Ok(Some(rule)) => rule,
            Ok(None) => return locked,
            Err(e) => {
                tracing::warn!(username = %req.username, error = %e, "whileLocked rules not evaluated");
                return locked;
            }
        };
        let poll = self.poll(req, ctx, fp, true);
        match self
            .timed(StoreOp::Register, self.store.register(poll, now))
            .await
        {
            Ok((Decision::Create, _)) => {
                self.apply_rule(rule, &req.username, ctx.source_addr, fp, now)
                    .await
            }
            // Another poll of the device got there first: answer what the
            // store decided (the claimed use is spent).
            Ok((decision, record)) => super::outcome_of(decision, record, fp.pairing_id()),
            Err(e) => RegisterOutcome::Unavailable(e),
        }
    }

    /// Applies a claimed rule to the pending request `username` just
    /// created with fingerprint `fp`, and records the decision in the audit
    /// log (actor `rule:<name>`, source the device's address).
    async fn apply_rule(
        &self,
        rule: Rule,
        username: &str,
        source: Option<std::net::SocketAddr>,
        fp: Fingerprint,
        now: UnixMillis,
    ) -> RegisterOutcome {
        let action = match rule.action {
            RuleAction::Grant => AuditAction::Grant,
            RuleAction::Deny => AuditAction::Deny,
        };
        let entry = AuditEntry::new(
            now,
            &format!("rule:{}", rule.name),
            source.map(|a| a.ip()),
            action,
        )
        .target(username)
        .pairing_id(Some(fp.pairing_id().to_string()));
        let outcome = self.apply_claimed_rule(rule, username, fp, now).await;
        let entry = match &outcome {
            RegisterOutcome::Granted { .. } | RegisterOutcome::Denied => entry,
            _ => entry.failed(
                "not_applied",
                "the rule's decision did not apply; the request stays pending",
            ),
        };
        self.audit(vec![entry]).await;
        outcome
    }

    async fn apply_claimed_rule(
        &self,
        rule: Rule,
        username: &str,
        fp: Fingerprint,
        now: UnixMillis,
    ) -> RegisterOutcome {
        let pairing_id: PairingId = fp.pairing_id();
        let pending = RegisterOutcome::Pending {
            pairing_id,
            created: true,
        };
        let by = DecidedBy::Rule(rule.name.clone());
        let decided = |action: RuleAction| {
            metrics::counter!(
                crate::metrics::RULE_DECISIONS_TOTAL,
                "rule" => rule.name.clone(),
                "action" => action.name()
            )
            .increment(1);
            tracing::info!(username, rule = %rule.name, action = action.name(), "request decided by rule");
        };
        match rule.action {
            RuleAction::Deny => {
                match self
                    .timed(StoreOp::Deny, self.store.deny(username, Some(by), now))
                    .await
                {
                    Ok(crate::store::DenyResult::Denied) => {
                        self.metrics.denials.increment(1);
                        decided(RuleAction::Deny);
                        RegisterOutcome::Denied
                    }
                    Ok(other) => {
                        tracing::warn!(username, rule = %rule.name, result = ?other, "rule deny did not apply");
                        pending
                    }
                    Err(e) => {
                        tracing::warn!(username, rule = %rule.name, error = %e, "rule deny failed; the request stays pending");
                        pending
                    }
                }
            }
            RuleAction::Grant => {
                let record = match self
                    .timed(StoreOp::GetRequest, self.store.get_request(username, now))
                    .await
                {
                    Ok(Some(r)) if r.fingerprint == fp && r.state == RequestState::Pending => r,
                    other => {
                        tracing::warn!(username, rule = %rule.name, read = ?other.map(|r| r.map(|r| r.state)), "rule grant: the new request is gone");
                        return pending;
                    }
                };
                // The CPU work of a grant (0.35 ms of argon2id, or a
                // signature) runs here, once in a device's life.
                let commit = match self.prepare_grant(
                    &record,
                    rule.roles.clone(),
                    rule.permissions.clone(),
                    Some(by),
                    now,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(username, rule = %rule.name, error = %e, "rule grant could not be prepared");
                        return pending;
                    }
                };
                match self
                    .timed(StoreOp::CommitGrant, self.store.commit_grant(commit, now))
                    .await
                {
                    Ok(GrantResult::Granted(r)) => {
                        self.metrics.grants.increment(1);
                        decided(RuleAction::Grant);
                        RegisterOutcome::Granted {
                            pairing_id,
                            certificate: r.certificate,
                        }
                    }
                    Ok(GrantResult::AlreadyGranted(r)) => RegisterOutcome::Granted {
                        pairing_id,
                        certificate: r.certificate,
                    },
                    Ok(other) => {
                        tracing::warn!(username, rule = %rule.name, result = ?other, "rule grant did not apply");
                        pending
                    }
                    Err(e) => {
                        tracing::warn!(username, rule = %rule.name, error = %e, "rule grant failed; the request stays pending");
                        pending
                    }
                }
            }
        }
    }
}
