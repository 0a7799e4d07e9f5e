//! [`ApiError`]: why an admin request failed, classified where it happens by
//! who caused it (client mistake, missing credentials, store outage, bug).
//!
//! The variant alone fixes the status code ([`ApiError::status`]), the
//! `status` short name of the `{"status": "<short>", "error": "<message>"}`
//! body ([`ApiError::short`]) and the extra headers (`Allow` on 405,
//! `Retry-After` on 429 and 503), all rendered by
//! [`ApiError::into_response`]. The `From` impls below turn the registry's
//! and the query decoder's errors into the right variant, so the handlers in
//! [`super::routes`] and the socket shell in [`crate::server`] can use `?`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use fleetgate_registry::registry::{AccessError, RoleError, RuleError, UnlockError};
use fleetgate_registry::store::StoreError;

use super::views::{json_response, ErrorBody};
#[cfg(doc)]
use super::MAX_BODY;
use crate::query::DecodeError;

/// Seconds a client is asked to wait (`Retry-After`) after a store outage.
const RETRY_AFTER_SECS: &str = "5";

/// Why a request failed, classified by who caused it. Each variant fixes
/// the status code and the `status` short name of the JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// 401: no credentials, bad credentials, or a token that no longer
    /// stands for a user.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid token of a user without the `admin` role.
    #[error("this API needs a user with the `admin` role")]
    Forbidden,
    /// 404: no such route or no such record.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method; `allow` lists the
    /// methods it has (the `Allow` header).
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: Method, allow: &'static str },
    /// 408: the client did not send its whole body in time.
    #[error("the request body was not received in time")]
    BodyTimeout,
    /// 409: the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 422: the request is well-formed but breaks the named rule (the
    /// `rule` field of the error body, as on the device API's 422).
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    /// 429 with `Retry-After`: too many failed logins from this source
    /// (see [`crate::throttle`]).
    #[error("too many failed logins; try again in {} s", retry_secs(.0))]
    TooManyLogins(Duration),
    /// 503 with `Retry-After`: the login queue is full (a login flood);
    /// grants have their own hashing slots and are not delayed.
    #[error("too many logins at once; retry shortly")]
    LoginsBusy,
    /// 413: the body is larger than the route's cap ([`MAX_BODY`], or
    /// [`super::MAX_BULK_BODY`] on the bulk decision routes), named here.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 503 with `Retry-After`: the store failed; retrying later may work.
    /// (A corrupt store reply is [`ApiError::Internal`] instead: see the
    /// `From<StoreError>` below.)
    #[error(transparent)]
    Unavailable(StoreError),
    /// 500: a bug or a broken invariant. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Policy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyLogins(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::LoginsBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `status` field of the error body. 405 and 408 are client
    /// mistakes with no short name of their own, so they say `invalid`.
    pub fn short(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) | ApiError::MethodNotAllowed { .. } | ApiError::BodyTimeout => {
                "invalid"
            }
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Policy { .. } => "policy",
            ApiError::TooManyLogins(_) => "rate_limited",
            ApiError::LoginsBusy => "unavailable",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON error response, with `Allow` on a 405, `Retry-After` on
    /// a 503, and `rule` on a 422.
    pub fn into_response(self) -> Response<Bytes> {
        let message = match &self {
            // The detail may name internals; it is logged by the caller.
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let rule = match &self {
            ApiError::Policy { rule, .. } => Some(*rule),
            _ => None,
        };
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                status: self.short(),
                rule,
                error: message,
            },
        );
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            ApiError::TooManyLogins(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(&wait)));
            }
            ApiError::LoginsBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A wait in whole seconds, rounded up, at least 1 (for `Retry-After`).
fn retry_secs(wait: &Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<StoreError> for ApiError {
    /// An outage or a full store is 503; a corrupt reply is a bug or
    /// tampering, 500, never retried into success.
    fn from(e: StoreError) -> Self {
        if e.is_internal() {
            ApiError::Internal(e.to_string())
        } else {
            ApiError::Unavailable(e)
        }
    }
}

impl From<UnlockError> for ApiError {
    fn from(e: UnlockError) -> Self {
        match e {
            UnlockError::OutOfRange { .. } => ApiError::Invalid(e.to_string()),
            UnlockError::Store(e) => e.into(),
        }
    }
}

impl From<RoleError> for ApiError {
    fn from(e: RoleError) -> Self {
        match e {
            RoleError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RoleError::Policy { rule, message } => ApiError::Policy { rule, message },
            RoleError::Builtin => ApiError::Conflict(e.to_string()),
            RoleError::Store(e) => e.into(),
        }
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RuleError::Policy { rule, message } => ApiError::Policy { rule, message },
            RuleError::Store(e) => e.into(),
        }
    }
}

impl ApiError {
    /// A validation error of the registry's checks as the API answers it
    /// (422 with its rule; 400 for the rare `invalid`).
    pub(super) fn from_policy(e: fleetgate_registry::request::RequestError) -> Self {
        match e {
            fleetgate_registry::request::RequestError::Policy { rule, message } => {
                ApiError::Policy { rule, message }
            }
            fleetgate_registry::request::RequestError::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Empty => ApiError::Invalid(e.to_string()),
            AccessError::NotFound(_) => ApiError::NotFound(e.to_string()),
            AccessError::Policy { rule, message } => ApiError::Policy { rule, message },
            AccessError::Store(e) => e.into(),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::Invalid(format!("malformed URL: {e}"))
    }
}
