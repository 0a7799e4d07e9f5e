//! The admin service's side of the audit log: which routes are recorded
//! and as what, the entry of each recorded request, and `GET /api/audit`.
//!
//! `routes::dispatch` calls [`audited`] for every authorized request; a
//! route it names is recorded after it ran, kept or refused, with the
//! admin's name (the JWT subject, as stored), the client address the login
//! throttle also uses (`AdminService::client_addr`: the peer, or a trusted
//! forwarder's `X-Forwarded-For`, so a request forwarded from a device
//! port's `/api/*` names the real client), the route's target, and the
//! result. Reads (`GET`) are not recorded. A bulk decision is recorded per
//! item (`bulk_entries`); logins in `routes::login`.
//!
//! Nothing from a request body goes into an entry, except what names the
//! target (the order of rules as names): the message of a refusal is the
//! one the client was sent.

use std::net::IpAddr;

use http::Method;

use fleetgate_registry::audit::{
    AuditAction, AuditEntry, AuditId, AuditOrder, AuditQuery, AUDIT_PAGE_MAX,
};
use fleetgate_registry::registry::{BulkOutcome, BulkResult};
use fleetgate_registry::UnixMillis;

use super::error::ApiError;
use super::routes::{Decision, Route};
use crate::query::QueryParams;

/// Default page size of `GET /api/audit`.
pub const DEFAULT_AUDIT_PAGE: usize = 100;

/// The action and target a request of `route` with `method` is recorded
/// as, or `None` for a route that is not recorded (reads; the bulk
/// decision routes, recorded per item).
pub(super) fn audited(route: &Route, method: &Method) -> Option<(AuditAction, Option<String>)> {
    let named = |action, target: &String| Some((action, Some(target.clone())));
    match (route, method.as_str()) {
        (Route::Unlock, _) => Some((AuditAction::Unlock, None)),
        (Route::Lock, _) => Some((AuditAction::Lock, None)),
        (Route::Grant(u), _) => named(AuditAction::Grant, u),
        (Route::Deny(u), _) => named(AuditAction::Deny, u),
        (Route::Request(u), "DELETE") => named(AuditAction::DeleteRequest, u),
        (Route::Bulk(Decision::Grant), "DELETE") => {
            Some((AuditAction::DeleteRequest, Some("grant".into())))
        }
        (Route::Bulk(Decision::Deny), "DELETE") => {
            Some((AuditAction::DeleteRequest, Some("deny".into())))
        }
        (Route::User(u), "PATCH") => named(AuditAction::UpdateUser, u),
        (Route::User(u), "DELETE") => named(AuditAction::DeleteUser, u),
        (Route::Role(n), "PUT") => named(AuditAction::PutRole, n),
        (Route::Role(n), "DELETE") => named(AuditAction::DeleteRole, n),
        (Route::Rule(n), "PUT") => named(AuditAction::PutRule, n),
        (Route::Rule(n), "DELETE") => named(AuditAction::DeleteRule, n),
        (Route::RuleOrder, _) => Some((AuditAction::OrderRules, None)),
        _ => None,
    }
}

/// The message a client was sent for `e` (an internal error's detail is
/// logged, never sent, and never recorded either).
pub(super) fn public_message(e: &ApiError) -> String {
    match e {
        ApiError::Internal(_) => "internal error".into(),
        other => other.to_string(),
    }
}

/// One entry per item of a bulk decision, with its own result and pairing
/// id, marked `bulk` in `detail`.
pub(super) fn bulk_entries(
    decision: Decision,
    outcome: &BulkOutcome,
    actor: &str,
    source: Option<IpAddr>,
    now: UnixMillis,
) -> Vec<AuditEntry> {
    let action = match decision {
        Decision::Grant => AuditAction::Grant,
        Decision::Deny => AuditAction::Deny,
    };
    outcome
        .items
        .iter()
        .map(|item| {
            let entry = AuditEntry::new(now, actor, source, action)
                .target(&item.username)
                .pairing_id(item.pairing_id.map(|p| p.to_string()))
                .detail("bulk");
            match item.result {
                BulkResult::Granted | BulkResult::Denied => entry,
                BulkResult::AlreadyGranted => entry.detail("bulk, already granted"),
                BulkResult::AlreadyDenied => entry.detail("bulk, already denied"),
                BulkResult::Conflict => entry.failed("conflict", "the request conflicts"),
                BulkResult::NotFound => entry.failed("not_found", "no pending request"),
            }
        })
        .collect()
}

/// The query of `GET /api/audit`: `since` (RFC 3339, UTC), `actor`,
/// `target`, `limit` (1 to [`AUDIT_PAGE_MAX`], default
/// [`DEFAULT_AUDIT_PAGE`]), `cursor` (a `nextCursor` or a record's `id`)
/// and `order` (`newest`, the default, or `oldest`). An empty `since`,
/// `actor`, `target` or `cursor` is the same as none (as in the other
/// listings); an empty `limit` or `order`, and anything else that does not
/// read, is 400.
pub(super) fn audit_query(query: &QueryParams) -> Result<AuditQuery, ApiError> {
    let non_empty = |name| query.get(name).filter(|v| !v.is_empty());
    let limit = match query.get("limit") {
        None => DEFAULT_AUDIT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=AUDIT_PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "limit must be an integer from 1 to {AUDIT_PAGE_MAX}"
                ))
            })?,
    };
    let cursor = match non_empty("cursor") {
        None => None,
        Some(raw) => Some(raw.parse::<AuditId>().map_err(|()| {
            ApiError::Invalid("cursor must be a `nextCursor` or a record's `id`".into())
        })?),
    };
    let since = match non_empty("since") {
        None => None,
        Some(raw) => Some(fleetgate_registry::audit::parse_utc(raw).ok_or_else(|| {
            ApiError::Invalid(
                "since must be an RFC 3339 time in UTC, such as 2026-12-01T10:00:00Z".into(),
            )
        })?),
    };
    let order = match query.get("order") {
        None | Some("newest") => AuditOrder::Newest,
        Some("oldest") => AuditOrder::Oldest,
        Some(_) => {
            return Err(ApiError::Invalid(
                "order must be `newest` or `oldest`".into(),
            ))
        }
    };
    Ok(AuditQuery {
        since,
        actor: non_empty("actor").map(str::to_owned),
        target: non_empty("target").map(str::to_owned),
        limit,
        cursor,
        order,
    })
}
