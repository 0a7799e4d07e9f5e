//! The admin API's JSON shapes, in and out, and the helpers that read and
//! write them: request bodies ([`LoginBody`], [`UnlockBody`], [`GrantBody`],
//! [`DecisionBody`], [`RoleBody`], [`UserAccessBody`]), the listing
//! parameters ([`requests_query`], [`list_query`]) and answers ([`Health`],
//! [`LoginView`], [`StatusView`], [`PageView`], [`RolesView`],
//! [`ErrorBody`]). A role is shown as the registry's own
//! [`Role`](fleetgate_registry::model::Role), `{"name", "permissions"}`.
//!
//! The handlers in [`super::routes`] parse with [`parse_json`] or
//! [`parse_optional_json`] and answer with [`json_response`] or
//! [`no_content`]; [`super::error`] renders its body as an [`ErrorBody`].
//! Requests and users are shown as the registry's own
//! [`RequestView`](fleetgate_registry::model::RequestView) and
//! [`UserView`](fleetgate_registry::model::UserView), which never carry
//! secrets, so they are not redefined here.
//!
//! Every field and variant name below is part of the API: the tests in
//! [`super::tests`] pin the JSON a client sees.

use bytes::Bytes;
use fleetgate_registry::rule::RuleView;
use http::{header, HeaderValue, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use fleetgate_registry::model::{Permission, Role, Transport};
use fleetgate_registry::registry::{
    BulkItem, BulkOutcome, BulkResult, BulkTargets, RegistryStatus, Selector, BULK_MAX,
};
use fleetgate_registry::store::{ListQuery, ListState, Page, MAX_PAGE};
use fleetgate_registry::UnixMillis;

use super::error::ApiError;
use crate::query::QueryParams;

/// Page size of a listing when the request gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;

// ---- reading requests ----

/// Reads a body that must be one JSON object. serde's derived structs also
/// accept an array of the fields' values in order (`[null, null]` was a
/// valid grant: found by schemathesis), so anything but an object is
/// refused before serde sees it.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::Invalid(
            "invalid JSON body: expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// Like [`parse_json`], but an empty body means "all defaults", for routes
/// whose body is optional. A body of only whitespace is not empty: it is
/// malformed JSON (no value) and gets the same 400 as any other.
pub(super) fn parse_optional_json<T: DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// The listing `GET /api/client-registry/requests` asks for: its `state`
/// (`pending`, the default, `granted` (granted and not yet out of the
/// collection window, so also the recently collected) or `denied` (inside
/// the deny window)), then [`list_query`]'s
/// parameters. A bad `state` is reported before a bad `limit`.
pub(super) fn requests_query(query: &QueryParams) -> Result<ListQuery, ApiError> {
    let state = match query.get("state").unwrap_or("pending") {
        "pending" => ListState::Pending,
        "granted" => ListState::Granted,
        "denied" => ListState::Denied,
        other => {
            return Err(ApiError::Invalid(format!(
                "state must be `pending`, `granted` or `denied`, not `{other}`"
            )))
        }
    };
    list_query(query, state)
}

/// The `limit`, `cursor` and `prefix` of a listing. An empty `cursor` or
/// `prefix` is the same as none.
pub(super) fn list_query(query: &QueryParams, state: ListState) -> Result<ListQuery, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(format!("limit must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let non_empty = |name| query.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
    Ok(ListQuery {
        state,
        limit,
        cursor: non_empty("cursor"),
        prefix: non_empty("prefix"),
    })
}

/// `POST /api/login`. Unknown fields are ignored, as clients of the older
/// API send extra ones.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LoginBody {
    pub(super) username: String,
    pub(super) password: String,
    /// Signed, so that `-1` gets the range message rather than a type error.
    #[serde(default)]
    pub(super) expire_time_in_hours: Option<i64>,
}

/// `POST /api/client-registry/unlock`. Unknown fields are refused: a typo
/// must not silently unlock for the default duration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct UnlockBody {
    #[serde(default)]
    pub(super) duration_ms: Option<u64>,
}

/// `POST .../grant`. Unknown fields are refused: a typo (`role`) must not
/// silently grant the requested roles instead.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    #[serde(default)]
    pub(super) roles: Option<Vec<String>>,
    #[serde(default)]
    pub(super) permissions: Option<Vec<Permission>>,
    /// The pairing id the admin compared with the device (409 if the
    /// request now has another).
    #[serde(default, rename = "pairingId")]
    pub(super) pairing_id: Option<String>,
}

/// `POST .../deny`: optionally the pairing id the admin saw.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionBody {
    #[serde(default, rename = "pairingId")]
    pub(super) pairing_id: Option<String>,
}

/// What a bulk call decides: `usernames`, or a `selector` with its
/// `limit` and `cursor`; exactly one of the two forms. Read from the
/// fields of [`BulkGrantBody`] or [`BulkDenyBody`] (not deserialised on its
/// own: serde cannot refuse unknown fields through `flatten`).
pub(super) struct BulkTargetsBody {
    pub(super) usernames: Option<Vec<String>>,
    pub(super) selector: Option<SelectorBody>,
    pub(super) limit: Option<i64>,
    pub(super) cursor: Option<String>,
}

/// `selector` of a bulk call: every field narrows; `{}` is every pending
/// request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SelectorBody {
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) transport: Option<Transport>,
    #[serde(default)]
    pub(super) pairing_ids: Option<Vec<String>>,
}

impl BulkTargetsBody {
    pub(super) fn into_targets(self) -> Result<BulkTargets, ApiError> {
        match (self.usernames, self.selector) {
            (Some(_), Some(_)) => Err(ApiError::Invalid(
                "give `usernames` or `selector`, not both".into(),
            )),
            (None, None) => Err(ApiError::Invalid(
                "give `usernames` (a list) or `selector` (an object)".into(),
            )),
            (Some(usernames), None) => {
                if self.limit.is_some() || self.cursor.is_some() {
                    return Err(ApiError::Invalid(
                        "`limit` and `cursor` go with `selector`, not with `usernames`".into(),
                    ));
                }
                if usernames.len() > BULK_MAX {
                    return Err(ApiError::Invalid(format!(
                        "at most {BULK_MAX} usernames per call, not {}; split the list",
                        usernames.len()
                    )));
                }
                Ok(BulkTargets::Usernames(usernames))
            }
            (None, Some(selector)) => {
                let limit = match self.limit {
                    None => None,
                    Some(n) if (1..=BULK_MAX as i64).contains(&n) => Some(n as usize),
                    Some(_) => {
                        return Err(ApiError::Invalid(format!(
                            "limit must be an integer from 1 to {BULK_MAX}"
                        )))
                    }
                };
                let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
                Ok(BulkTargets::Selector(Selector {
                    prefix: non_empty(selector.prefix),
                    transport: selector.transport,
                    pairing_ids: selector.pairing_ids,
                    limit,
                    cursor: non_empty(self.cursor),
                }))
            }
        }
    }
}

/// `POST /api/client-registry/requests/grant`: the targets (see
/// [`BulkTargetsBody`]), and the roles and permissions every granted user
/// gets (none without them). Unknown fields are refused, as on the single
/// grant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkGrantBody {
    #[serde(default)]
    usernames: Option<Vec<String>>,
    #[serde(default)]
    selector: Option<SelectorBody>,
    /// Signed, so that `-1` gets the range message rather than a type error.
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    pub(super) roles: Option<Vec<String>>,
    #[serde(default)]
    pub(super) permissions: Option<Vec<Permission>>,
}

impl BulkGrantBody {
    pub(super) fn targets(&mut self) -> BulkTargetsBody {
        BulkTargetsBody {
            usernames: self.usernames.take(),
            selector: self.selector.take(),
            limit: self.limit.take(),
            cursor: self.cursor.take(),
        }
    }
}

/// `POST /api/client-registry/requests/deny`: the targets only (a deny
/// has no overrides; `roles` here is refused as unknown).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkDenyBody {
    #[serde(default)]
    usernames: Option<Vec<String>>,
    #[serde(default)]
    selector: Option<SelectorBody>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

impl BulkDenyBody {
    pub(super) fn targets(self) -> BulkTargetsBody {
        BulkTargetsBody {
            usernames: self.usernames,
            selector: self.selector,
            limit: self.limit,
            cursor: self.cursor,
        }
    }
}

/// `PUT /api/roles/{name}`: the role's whole permission list (required:
/// a PUT replaces). `name` may be sent too, as `GET` shows it, so a role
/// read can be written back; it must then equal the path's. Unknown fields
/// are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleBody {
    #[serde(default)]
    pub(super) name: Option<String>,
    pub(super) permissions: Vec<Permission>,
}

/// `PATCH /api/users/{username}`: each field given replaces the user's.
/// Unknown fields are refused: a typo (`role`) must not silently change
/// nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserAccessBody {
    #[serde(default)]
    pub(super) roles: Option<Vec<String>>,
    #[serde(default)]
    pub(super) permissions: Option<Vec<Permission>>,
}

// ---- writing responses ----

pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"status":"internal","error":"internal error"}"#),
            )
        }
    };
    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn no_content() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The body of every error: `status` is [`ApiError::short`], `error` the
/// message, and on a 422 `rule` the name of the rule that was broken.
#[derive(Serialize)]
pub(super) struct ErrorBody {
    pub(super) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rule: Option<&'static str>,
    pub(super) error: String,
}

/// What the health routes answer, as `{"status": "<variant>"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub(super) enum Health {
    /// `GET /healthz`: the process is serving requests.
    Ok,
    /// `GET /readyz`: the store answered a ping as well.
    Ready,
}

#[derive(Serialize)]
pub(super) struct LoginView {
    pub(super) token: String,
}

/// The registry's lock state and pending count.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusView {
    locked: bool,
    unlocked_until: Option<String>,
    pending: usize,
}

impl From<RegistryStatus> for StatusView {
    fn from(status: RegistryStatus) -> Self {
        StatusView {
            locked: status.unlocked_until.is_none(),
            unlocked_until: status.unlocked_until.map(UnixMillis::to_rfc3339),
            pending: status.pending,
        }
    }
}

/// One page of a listing: pass `nextCursor` back as `cursor` for the next.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageView<V> {
    items: Vec<V>,
    next_cursor: Option<String>,
}

impl<V> PageView<V> {
    pub(super) fn from_page<T>(page: Page<T>, view: impl Fn(&T) -> V) -> Self {
        PageView {
            items: page.items.iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// `GET /api/roles`: every role, in name order, in one answer (the number
/// of roles is capped, so there is no cursor).
#[derive(Serialize)]
pub(super) struct RolesView {
    pub(super) items: Vec<Role>,
}

/// `GET .../rules` (and the answer of `PUT .../rules/order`): every rule
/// in evaluation order, each with its `uses`.
#[derive(Serialize)]
pub(super) struct RulesView {
    pub(super) items: Vec<RuleView>,
}

/// `PUT .../rules/order`: every rule's name, in the new order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleOrderBody {
    pub(super) names: Vec<String>,
}

/// The answer of a bulk call: `{"granted": n, ...}` (or `"denied"`), the
/// items, and `nextCursor` only when a selector matched more.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BulkView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    granted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied: Option<usize>,
    items: Vec<BulkItemView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<&'a str>,
}

/// One item: `{"username", "result", "pairingId"?}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BulkItemView<'a> {
    username: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pairing_id: Option<String>,
}

impl<'a> BulkView<'a> {
    pub(super) fn new(grant: bool, outcome: &'a BulkOutcome) -> Self {
        let (granted, denied) = if grant {
            (Some(outcome.count(BulkResult::Granted)), None)
        } else {
            (None, Some(outcome.count(BulkResult::Denied)))
        };
        BulkView {
            granted,
            denied,
            items: outcome
                .items
                .iter()
                .map(|i: &BulkItem| BulkItemView {
                    username: &i.username,
                    result: i.result.name(),
                    pairing_id: i.pairing_id.map(|p| p.to_string()),
                })
                .collect(),
            next_cursor: outcome.next_cursor.as_deref(),
        }
    }
}
