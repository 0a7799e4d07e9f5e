//! The route table and its handlers: which method and path reach which code,
//! who may call it, and what each route does with the [`Registry`].
//!
//! [`Route::parse`] turns a path into a [`Route`] (an unknown path is 404),
//! [`Route::allow`] lists its methods (any other is 405 with an `Allow`
//! header), and [`Route::needs_admin`] says whether it needs an admin token.
//! [`AdminService::handle`] in [`super`] calls `dispatch`, which applies
//! those three checks in that order, authorizes, runs the route, and logs an
//! audit line for every change an admin asks for. The handlers read their
//! bodies and write their answers with the shapes in [`super::views`], and
//! fail with an [`ApiError`].
//!
//! [`Registry`]: fleetgate_registry::Registry

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use fleetgate_registry::audit::{AuditAction, AuditEntry};
use fleetgate_registry::metrics::LOGINS_TOTAL;
use fleetgate_registry::model::{Role, UserRecord};
use fleetgate_registry::password::Scheme;
use fleetgate_registry::registry::{
    AccessUpdate, BulkError, DenyError, GrantError, GrantOverrides, ADMIN_USERNAME,
};
use fleetgate_registry::rule::{RuleSpec, StoredRule};
use fleetgate_registry::store::{ForgetResult, ListState, Store};
use fleetgate_registry::UnixMillis;

use super::audit;
use super::error::ApiError;
use super::views::{
    json_response, list_query, no_content, parse_json, parse_optional_json, requests_query,
    BulkDenyBody, BulkGrantBody, BulkView, DecisionBody, GrantBody, Health, LoginBody, LoginView,
    PageView, RoleBody, RolesView, RuleOrderBody, RulesView, StatusView, UnlockBody,
    UserAccessBody,
};
use super::{max_body, AdminService};
use crate::query::{percent_decode, Plus, QueryParams};

/// Which way a bulk call decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Grant,
    Deny,
}

impl Decision {
    /// The username of a request whose path is the bulk route's.
    fn as_username(self) -> String {
        match self {
            Decision::Grant => "grant".into(),
            Decision::Deny => "deny".into(),
        }
    }
}

/// The routes, with `{username}` and `{name}` segments already
/// percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Healthz,
    Readyz,
    Metrics,
    CaCertificate,
    /// `GET /api/openapi.json`: the API's contract, [`OPENAPI_DOCUMENT`].
    OpenApi,
    Login,
    RegistryStatus,
    Unlock,
    Lock,
    Requests,
    Request(String),
    Grant(String),
    Deny(String),
    /// `POST .../requests/grant` or `.../requests/deny`. The path is also
    /// that of a request named `grant` or `deny`, so `GET` and `DELETE`
    /// here reach that request, as [`Route::Request`] would.
    Bulk(Decision),
    Users,
    User(String),
    Roles,
    Role(String),
    /// `GET .../rules`: every auto-approval rule, in evaluation order.
    Rules,
    /// `GET|PUT|DELETE .../rules/{name}`.
    Rule(String),
    /// `PUT .../rules/order`. `order` is never a rule's name
    /// (`rule::check_rule_name`), so this path is unambiguous.
    RuleOrder,
    /// `GET /api/audit`: a page of the audit log.
    Audit,
}

impl Route {
    /// The route of `path`, `None` for an unknown path. Trailing slashes
    /// and empty segments are not normalised: `/api/users/` is unknown.
    pub(super) fn parse(path: &str) -> Result<Option<Route>, ApiError> {
        match path {
            "/healthz" => return Ok(Some(Route::Healthz)),
            "/readyz" => return Ok(Some(Route::Readyz)),
            "/metrics" => return Ok(Some(Route::Metrics)),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/api/") else {
            return Ok(None);
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let segment =
            |s: &str| -> Result<String, ApiError> { Ok(percent_decode(s, Plus::IsLiteral)?) };
        let route = match segments.as_slice() {
            ["login"] => Route::Login,
            ["audit"] => Route::Audit,
            ["openapi.json"] => Route::OpenApi,
            ["certificates", "ca"] => Route::CaCertificate,
            ["client-registry"] => Route::RegistryStatus,
            ["client-registry", "unlock"] => Route::Unlock,
            ["client-registry", "lock"] => Route::Lock,
            ["client-registry", "rules"] => Route::Rules,
            ["client-registry", "rules", "order"] => Route::RuleOrder,
            ["client-registry", "rules", r] if !r.is_empty() => Route::Rule(segment(r)?),
            ["client-registry", "requests"] => Route::Requests,
            ["client-registry", "requests", "grant"] => Route::Bulk(Decision::Grant),
            ["client-registry", "requests", "deny"] => Route::Bulk(Decision::Deny),
            ["client-registry", "requests", u] if !u.is_empty() => Route::Request(segment(u)?),
            ["client-registry", "requests", u, "grant"] if !u.is_empty() => {
                Route::Grant(segment(u)?)
            }
            ["client-registry", "requests", u, "deny"] if !u.is_empty() => Route::Deny(segment(u)?),
            ["users"] => Route::Users,
            ["users", u] if !u.is_empty() => Route::User(segment(u)?),
            ["roles"] => Route::Roles,
            ["roles", r] if !r.is_empty() => Route::Role(segment(r)?),
            _ => return Ok(None),
        };
        Ok(Some(route))
    }

    /// The methods this route answers, as the `Allow` header lists them.
    pub(super) fn allow(&self) -> &'static str {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::CaCertificate
            | Route::OpenApi
            | Route::RegistryStatus
            | Route::Requests
            | Route::Users
            | Route::Roles
            | Route::Rules
            | Route::Audit => "GET",
            Route::RuleOrder => "PUT",
            Route::Rule(_) => "GET, PUT, DELETE",
            Route::Request(_) => "GET, DELETE",
            Route::Bulk(_) => "GET, POST, DELETE",
            Route::Login | Route::Unlock | Route::Lock | Route::Grant(_) | Route::Deny(_) => "POST",
            Route::User(_) => "GET, PATCH, DELETE",
            Route::Role(_) => "GET, PUT, DELETE",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    pub(super) fn needs_admin(&self) -> bool {
        !matches!(
            self,
            Route::Healthz
                | Route::Readyz
                | Route::Metrics
                | Route::CaCertificate
                | Route::OpenApi
                | Route::Login
        )
    }

    /// The route's path template in [`OPENAPI_DOCUMENT`]. The match has no
    /// wildcard, so a new route does not compile until it names its
    /// template, and the contract test then fails until the document has
    /// that template with every method of [`Route::allow`].
    #[cfg(test)]
    pub(super) fn template(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::CaCertificate => "/api/certificates/ca",
            Route::OpenApi => "/api/openapi.json",
            Route::Login => "/api/login",
            Route::RegistryStatus => "/api/client-registry",
            Route::Unlock => "/api/client-registry/unlock",
            Route::Lock => "/api/client-registry/lock",
            Route::Requests => "/api/client-registry/requests",
            Route::Request(_) => "/api/client-registry/requests/{username}",
            Route::Grant(_) => "/api/client-registry/requests/{username}/grant",
            Route::Deny(_) => "/api/client-registry/requests/{username}/deny",
            Route::Bulk(Decision::Grant) => "/api/client-registry/requests/grant",
            Route::Bulk(Decision::Deny) => "/api/client-registry/requests/deny",
            Route::Users => "/api/users",
            Route::User(_) => "/api/users/{username}",
            Route::Roles => "/api/roles",
            Route::Role(_) => "/api/roles/{name}",
            Route::Rules => "/api/client-registry/rules",
            Route::Rule(_) => "/api/client-registry/rules/{name}",
            Route::RuleOrder => "/api/client-registry/rules/order",
            Route::Audit => "/api/audit",
        }
    }

    /// One value of every variant, for the contract test. Keep it next to
    /// [`Route::template`]: a variant missing here is a route the test
    /// cannot check.
    #[cfg(test)]
    pub(super) fn every() -> Vec<Route> {
        let every = vec![
            Route::Healthz,
            Route::Readyz,
            Route::Metrics,
            Route::CaCertificate,
            Route::OpenApi,
            Route::Login,
            Route::RegistryStatus,
            Route::Unlock,
            Route::Lock,
            Route::Requests,
            Route::Request("x".into()),
            Route::Grant("x".into()),
            Route::Deny("x".into()),
            Route::Bulk(Decision::Grant),
            Route::Bulk(Decision::Deny),
            Route::Users,
            Route::User("x".into()),
            Route::Roles,
            Route::Role("x".into()),
            Route::Rules,
            Route::Rule("x".into()),
            Route::RuleOrder,
            Route::Audit,
        ];
        // Adding a variant breaks this exhaustive match until it is listed
        // here, so it cannot be forgotten above either.
        for route in &every {
            match route {
                Route::Healthz
                | Route::Readyz
                | Route::Metrics
                | Route::CaCertificate
                | Route::OpenApi
                | Route::Login
                | Route::RegistryStatus
                | Route::Unlock
                | Route::Lock
                | Route::Requests
                | Route::Request(_)
                | Route::Grant(_)
                | Route::Deny(_)
                | Route::Bulk(_)
                | Route::Users
                | Route::User(_)
                | Route::Roles
                | Route::Role(_)
                | Route::Rules
                | Route::Rule(_)
                | Route::RuleOrder
                | Route::Audit => {}
            }
        }
        every
    }
}

/// The OpenAPI 3.1 document of the device and admin APIs, checked in as
/// `openapi.json` next to this file and embedded in the binary. Written by
/// hand (see docs/DECISIONS.md); `tests::openapi` fails when it and
/// [`Route`] disagree on a path or method.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

impl<S: Store> AdminService<S> {
    /// Routes, authorizes and runs one request whose body is already read.
    pub(super) async fn dispatch(
        &self,
        req: &Request<Bytes>,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Bytes>, ApiError> {
        let path = req.uri().path();
        let cap = max_body(path);
        if req.body().len() > cap {
            return Err(ApiError::TooLarge(cap));
        }
        let route = Route::parse(path)?
            .ok_or_else(|| ApiError::NotFound(format!("no route for {path}")))?;
        if !route.allows(req.method()) {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().clone(),
                allow: route.allow(),
            });
        }
        let query = QueryParams::parse(req.uri().query().unwrap_or(""))?;
        if !route.needs_admin() {
            return self.run(route, req, &query, peer).await;
        }
        let admin = self.authorize(req.headers(), &query).await?;
        let source = peer.map(|p| p.ip());
        let result = match (&route, req.method()) {
            // Recorded per item, inside.
            (Route::Bulk(decision), &Method::POST) => {
                self.bulk_audited(*decision, req.body(), &admin.username, source)
                    .await
            }
            // Recorded with the grant itself where the store can.
            (Route::Grant(username), &Method::POST) => {
                let entry = AuditEntry::new(
                    UnixMillis::now(),
                    &admin.username,
                    source,
                    AuditAction::Grant,
                )
                .pairing_id(self.pairing_id_of(username).await)
                .target(username);
                let (result, recorded) = self
                    .grant(
                        username.clone(),
                        req.body(),
                        UnixMillis::now(),
                        Some(entry.clone()),
                    )
                    .await;
                if !recorded {
                    let entry = match &result {
                        Ok(_) => entry,
                        Err(e) => entry.failed(e.short(), &audit::public_message(e)),
                    };
                    self.registry.audit(vec![entry]).await;
                }
                result
            }
            _ => {
                let recorded = audit::audited(&route, req.method());
                let pairing_id = match (&route, &recorded) {
                    (
                        Route::Grant(_) | Route::Deny(_) | Route::Request(_) | Route::Bulk(_),
                        Some((_, Some(username))),
                    ) => self.pairing_id_of(username).await,
                    _ => None,
                };
                let result = self.run(route, req, &query, peer).await;
                if let Some((action, target)) = recorded {
                    let mut entry =
                        AuditEntry::new(UnixMillis::now(), &admin.username, source, action)
                            .pairing_id(pairing_id);
                    if let Some(target) = &target {
                        entry = entry.target(target);
                    }
                    entry = match &result {
                        Ok(response) => match detail_of(action, req.body(), response.body()) {
                            Some(detail) => entry.detail(&detail),
                            None => entry,
                        },
                        Err(e) => entry.failed(e.short(), &audit::public_message(e)),
                    };
                    self.registry.audit(vec![entry]).await;
                }
                result
            }
        };
        // An audit line for every change an admin asks for, kept or refused.
        if req.method() != Method::GET {
            let status = match &result {
                Ok(response) => response.status(),
                Err(e) => e.status(),
            };
            tracing::info!(
                by = %admin.username,
                method = %req.method(),
                path,
                status = status.as_u16(),
                "admin action"
            );
        }
        result
    }

    /// Runs an authorized route.
    async fn run(
        &self,
        route: Route,
        req: &Request<Bytes>,
        query: &QueryParams,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Bytes>, ApiError> {
        let now = UnixMillis::now();
        let body = req.body();
        let registry = &self.registry;
        match route {
            Route::Healthz => Ok(json_response(StatusCode::OK, &Health::Ok)),
            // The CA certificate is public: devices fetch it to verify
            // what they are issued.
            Route::CaCertificate => match self.registry.ca() {
                Some(ca) => {
                    let mut response = Response::new(Bytes::from(ca.cert_pem().to_owned()));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-pem-file"),
                    );
                    Ok(response)
                }
                None => Err(ApiError::NotFound("no client CA is configured".into())),
            },
            Route::OpenApi => {
                let mut response = Response::new(Bytes::from_static(OPENAPI_DOCUMENT.as_bytes()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(response)
            }
            Route::Metrics => match &self.metrics {
                Some(render) => {
                    let mut response = Response::new(Bytes::from(render()));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok(response)
                }
                None => Err(ApiError::NotFound("metrics are not enabled".into())),
            },
            Route::Readyz => {
                registry.store().ping().await?;
                Ok(json_response(StatusCode::OK, &Health::Ready))
            }
            Route::Login => self.login(body, peer, now).await,
            Route::RegistryStatus => {
                let status = registry.status(now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Unlock => {
                let unlock: UnlockBody = parse_optional_json(body)?;
                let duration = unlock.duration_ms.map(Duration::from_millis);
                let status = registry.unlock(duration, now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Lock => {
                let status = registry.lock(now).await?;
                Ok(json_response(StatusCode::OK, &StatusView::from(status)))
            }
            Route::Requests => {
                let page = registry
                    .store()
                    .list_requests(&requests_query(query)?, now)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PageView::from_page(page, |r| r.view()),
                ))
            }
            Route::Bulk(decision) if req.method() == Method::POST => {
                self.bulk(decision, body, now).await
            }
            Route::Bulk(decision) if req.method() == Method::DELETE => {
                self.forget(decision.as_username(), now).await
            }
            Route::Bulk(decision) => self.show_request(decision.as_username(), now).await,
            Route::Request(username) if req.method() == Method::DELETE => {
                self.forget(username, now).await
            }
            Route::Request(username) => self.show_request(username, now).await,
            Route::Grant(username) => self.grant(username, body, now, None).await.0,
            Route::Deny(username) => {
                let decision: DecisionBody = parse_optional_json(body)?;
                match registry
                    .deny(&username, decision.pairing_id.as_deref(), now)
                    .await
                {
                    Ok(()) => Ok(no_content()),
                    Err(DenyError::NotFound) => Err(no_request(&username)),
                    Err(e @ (DenyError::AlreadyGranted | DenyError::PairingMismatch)) => {
                        Err(ApiError::Conflict(e.to_string()))
                    }
                    Err(DenyError::Store(e)) => Err(e.into()),
                }
            }
            Route::Users => {
                // `state` is ignored by `list_users`.
                let page = registry
                    .store()
                    .list_users(&list_query(query, ListState::Pending)?)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PageView::from_page(page, UserRecord::view),
                ))
            }
            Route::User(username) if req.method() == Method::DELETE => {
                // Keep it simple and never lock everyone out: the built-in
                // admin cannot be deleted. (Other admin-role users can,
                // and `ensure_admin` recreates `admin` at every start.)
                if username == ADMIN_USERNAME {
                    return Err(ApiError::Conflict(format!(
                        "the built-in `{ADMIN_USERNAME}` user cannot be deleted"
                    )));
                }
                if registry.store().delete_user(&username).await? {
                    Ok(no_content())
                } else {
                    Err(no_user(&username))
                }
            }
            Route::User(username) if req.method() == Method::PATCH => {
                let patch: UserAccessBody = parse_json(body)?;
                let update = AccessUpdate {
                    roles: patch.roles,
                    permissions: patch.permissions,
                };
                let user = registry.update_user_access(&username, update).await?;
                Ok(json_response(StatusCode::OK, &user.view()))
            }
            Route::User(username) => {
                let user = registry
                    .store()
                    .get_user(&username)
                    .await?
                    .ok_or_else(|| no_user(&username))?;
                Ok(json_response(StatusCode::OK, &user.view()))
            }
            Route::Roles => {
                let items = registry.store().list_roles().await?;
                Ok(json_response(StatusCode::OK, &RolesView { items }))
            }
            Route::Role(name) if req.method() == Method::PUT => {
                let put: RoleBody = parse_json(body)?;
                if put.name.as_ref().is_some_and(|n| *n != name) {
                    return Err(ApiError::Invalid(format!(
                        "the body's `name` must be the path's (`{name}`), or left out"
                    )));
                }
                let role = registry
                    .put_role(Role {
                        name,
                        permissions: put.permissions,
                    })
                    .await?;
                Ok(json_response(StatusCode::OK, &role))
            }
            Route::Role(name) if req.method() == Method::DELETE => {
                registry.delete_role(&name).await?;
                Ok(no_content())
            }
            Route::Role(name) => {
                let role = registry
                    .store()
                    .get_role(&name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no role `{name}`")))?;
                Ok(json_response(StatusCode::OK, &role))
            }
            Route::Rules => {
                let items = registry.list_rules().await?;
                Ok(json_response(
                    StatusCode::OK,
                    &RulesView {
                        items: items.iter().map(StoredRule::view).collect(),
                    },
                ))
            }
            Route::RuleOrder => {
                let order: RuleOrderBody = parse_json(body)?;
                let items = registry.set_rule_order(&order.names).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &RulesView {
                        items: items.iter().map(StoredRule::view).collect(),
                    },
                ))
            }
            Route::Rule(name) if req.method() == Method::PUT => {
                let spec: RuleSpec = parse_json(body)?;
                let rule = spec.into_rule(&name).map_err(ApiError::from_policy)?;
                let (stored, created) = registry.put_rule(rule).await?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(status, &stored.view()))
            }
            Route::Rule(name) if req.method() == Method::DELETE => {
                registry.delete_rule(&name).await?;
                Ok(no_content())
            }
            Route::Rule(name) => {
                let rule = registry.get_rule(&name).await?;
                Ok(json_response(StatusCode::OK, &rule.view()))
            }
            Route::Audit => {
                let page = registry.list_audit(&audit::audit_query(query)?).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PageView::from_page(page, |r| {
                        serde_json::to_value(r.view()).unwrap_or_default()
                    }),
                ))
            }
        }
    }

    /// The pairing id of `username`'s live request, for the audit record
    /// of a decision about it (read before the decision: a delete drops
    /// it). `None` when there is none or the store does not answer.
    async fn pairing_id_of(&self, username: &str) -> Option<String> {
        match self
            .registry
            .store()
            .get_request(username, UnixMillis::now())
            .await
        {
            Ok(Some(r)) => Some(r.pairing_id().to_string()),
            _ => None,
        }
    }

    /// Checks that the request carries the token of a current admin and
    /// returns that admin.
    ///
    /// The roles are read from the stored user, not from the token's claims,
    /// so removing a role or deleting a user takes effect at once. A token
    /// issued before its user was (re)created is refused too, so a deleted
    /// user's token does not come back to life if the name is registered
    /// again.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        query: &QueryParams,
    ) -> Result<UserRecord, ApiError> {
        let token = match bearer_token(headers)? {
            Some(token) => token,
            // For compatibility with clients that cannot set headers.
            None => {
                query
                    .get("apiToken")
                    .filter(|t| !t.is_empty())
                    .ok_or(ApiError::Unauthorized(
                        "missing token: send `Authorization: Bearer <token>` from POST /api/login",
                    ))?
            }
        };
        let claims = self
            .registry
            .tokens()
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        let user = self
            .registry
            .store()
            .get_user(&claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized("the token's user no longer exists"))?;
        if claims.gen != user.created_at.0 {
            return Err(ApiError::Unauthorized(
                "the token was issued to an earlier user of this name",
            ));
        }
        if !user.is_admin() {
            return Err(ApiError::Forbidden);
        }
        Ok(user)
    }

    /// `POST /api/login`: any user with a password can log in.
    async fn login(
        &self,
        body: &Bytes,
        peer: Option<SocketAddr>,
        now: UnixMillis,
    ) -> Result<Response<Bytes>, ApiError> {
        let login: LoginBody = parse_json(body)?;
        // Range-checked before any hashing, so a bad request costs nothing.
        let hours = fleetgate_registry::token::lifetime_hours(login.expire_time_in_hours)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let source = peer.map(|p| p.ip());
        if let Some(wait) = self
            .throttle
            .check(&login.username, source, std::time::Instant::now())
        {
            metrics::counter!(LOGINS_TOTAL, "result" => "throttled").increment(1);
            return Err(ApiError::TooManyLogins(wait));
        }
        let user = self.registry.store().get_user(&login.username).await?;
        let stored_hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let verified = self.verify_password(login.password, stored_hash).await?;
        if verified {
            self.throttle.succeeded(&login.username, source);
        } else {
            self.throttle
                .failed(&login.username, source, std::time::Instant::now());
        }
        let entry = AuditEntry::new(now, &login.username, source, AuditAction::Login);
        match user {
            Some(user) if verified => {
                self.registry.audit(vec![entry]).await;
                let token = self.registry.tokens().issue_for(&user, now, hours);
                tracing::info!(username = %user.username, peer = ?peer, hours, "login");
                metrics::counter!(LOGINS_TOTAL, "result" => "success").increment(1);
                let mut response = json_response(StatusCode::OK, &LoginView { token });
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(response)
            }
            // The username is not logged: people type passwords into it.
            _ => {
                let refused = ApiError::Unauthorized("unknown user or wrong password");
                self.registry
                    .audit(vec![entry.failed(refused.short(), &refused.to_string())])
                    .await;
                tracing::info!(peer = ?peer, "login refused");
                metrics::counter!(LOGINS_TOTAL, "result" => "failure").increment(1);
                Err(ApiError::Unauthorized("unknown user or wrong password"))
            }
        }
    }

    /// Checks `password` against `stored` on the blocking pool. Without a
    /// stored hash (unknown user, or a certificate-only user) it spends the
    /// same argon2 work on a throwaway hash, so the answer's timing does not
    /// tell which usernames exist.
    async fn verify_password(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, ApiError> {
        let permit = self.login_permit().await?;
        let registry = Arc::clone(&self.registry);
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hashing = registry.hashing();
            match stored {
                Some(phc) => hashing.verify(password.as_bytes(), &phc),
                None => hashing
                    .hash(password.as_bytes(), Scheme::Admin)
                    .map(|_| false),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check task failed: {e}")))?;
        outcome.or_else(|e| {
            // A corrupt stored credential must not let anyone in, nor tell
            // the client more than "no".
            tracing::error!(error = %e, "stored credential cannot be checked");
            Ok(false)
        })
    }

    /// `POST /api/client-registry/requests/{username}/grant`.
    /// `POST .../requests/{username}/grant`. With `audit`, the decision's
    /// record is stored with the grant where the store can
    /// (`Registry::grant_audited`); the flag says whether it was.
    async fn grant(
        &self,
        username: String,
        body: &Bytes,
        now: UnixMillis,
        audit: Option<AuditEntry>,
    ) -> (Result<Response<Bytes>, ApiError>, bool) {
        let grant: GrantBody = match parse_optional_json(body) {
            Ok(grant) => grant,
            Err(e) => return (Err(e), false),
        };
        let overrides = GrantOverrides {
            roles: grant.roles,
            permissions: grant.permissions,
            pairing_id: grant.pairing_id,
        };
        // `Registry::grant` hashes the device secret (0.35 ms of CPU), so it
        // runs on the blocking pool. `Handle::block_on` from a blocking-pool
        // thread is sound on both runtime flavours (it is not inside an
        // async context, so it cannot panic or stall a worker). The embedded
        // store never needs the IO or timer drivers; a network store's
        // would be driven by the runtime's own thread(s), which this request
        // leaves free while it awaits the blocking task.
        let permit = match self.hashing_permit().await {
            Ok(permit) => permit,
            Err(e) => return (Err(e), false),
        };
        let registry = Arc::clone(&self.registry);
        let runtime = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            runtime.block_on(registry.grant_audited(&username, overrides, audit, now))
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                return (
                    Err(ApiError::Internal(format!("grant task failed: {e}"))),
                    false,
                )
            }
        };
        match outcome {
            Ok((record, recorded)) => (Ok(json_response(StatusCode::OK, &record.view())), recorded),
            Err(e) => (
                Err(match e {
                    GrantError::NotFound => ApiError::NotFound(GrantError::NotFound.to_string()),
                    GrantError::Conflict(why) => ApiError::Conflict(why.to_owned()),
                    GrantError::Invalid(why) => ApiError::Invalid(why),
                    GrantError::Policy { rule, message } => ApiError::Policy { rule, message },
                    GrantError::Store(e) => e.into(),
                    GrantError::Internal(why) => ApiError::Internal(why),
                }),
                false,
            ),
        }
    }
}

impl<S: Store> AdminService<S> {
    /// `GET .../requests/{username}`.
    async fn show_request(
        &self,
        username: String,
        now: UnixMillis,
    ) -> Result<Response<Bytes>, ApiError> {
        let record = self
            .registry
            .store()
            .get_request(&username, now)
            .await?
            .ok_or_else(|| no_request(&username))?;
        Ok(json_response(StatusCode::OK, &record.view()))
    }

    /// `DELETE .../requests/{username}`.
    async fn forget(&self, username: String, now: UnixMillis) -> Result<Response<Bytes>, ApiError> {
        match self.registry.store().forget_request(&username, now).await? {
            ForgetResult::Forgotten => {
                tracing::info!(username = %username, "request forgotten");
                Ok(no_content())
            }
            ForgetResult::NotFound => Err(no_request(&username)),
            ForgetResult::Granted => Err(ApiError::Conflict(
                "the request was granted; delete the user instead".into(),
            )),
        }
    }

    /// `POST /api/client-registry/requests/grant` and `.../deny`: decide
    /// many requests at once (see `Registry::grant_many`).
    async fn bulk(
        &self,
        decision: Decision,
        body: &Bytes,
        now: UnixMillis,
    ) -> Result<Response<Bytes>, ApiError> {
        let outcome = self.bulk_outcome(decision, body, now).await?;
        Ok(json_response(
            StatusCode::OK,
            &BulkView::new(decision == Decision::Grant, &outcome),
        ))
    }

    /// [`Self::bulk`], recorded: one audit record per item, or one for a
    /// call refused as a whole.
    async fn bulk_audited(
        &self,
        decision: Decision,
        body: &Bytes,
        actor: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Response<Bytes>, ApiError> {
        let now = UnixMillis::now();
        match self.bulk_outcome(decision, body, now).await {
            Ok(outcome) => {
                self.registry
                    .audit(audit::bulk_entries(decision, &outcome, actor, source, now))
                    .await;
                Ok(json_response(
                    StatusCode::OK,
                    &BulkView::new(decision == Decision::Grant, &outcome),
                ))
            }
            Err(e) => {
                let action = match decision {
                    Decision::Grant => AuditAction::Grant,
                    Decision::Deny => AuditAction::Deny,
                };
                let entry = AuditEntry::new(now, actor, source, action)
                    .detail("bulk")
                    .failed(e.short(), &audit::public_message(&e));
                self.registry.audit(vec![entry]).await;
                Err(e)
            }
        }
    }

    async fn bulk_outcome(
        &self,
        decision: Decision,
        body: &Bytes,
        now: UnixMillis,
    ) -> Result<fleetgate_registry::registry::BulkOutcome, ApiError> {
        let outcome = match decision {
            Decision::Grant => {
                let mut bulk: BulkGrantBody = parse_json(body)?;
                let targets = bulk.targets().into_targets()?;
                let overrides = GrantOverrides {
                    roles: bulk.roles,
                    permissions: bulk.permissions,
                    pairing_id: None,
                };
                // Hashing blocks, so the call runs on the blocking pool, as
                // a single grant does (see `grant`); the registry bounds its
                // hashing threads to the cores and hashes one bulk chunk at
                // a time per process. Unconstrained by tokio's cooperative
                // budget: the registry drives each chunk's commit from
                // inside this future while it hashes the next
                // (`registry::bulk::drive`), and once the budget ran out a
                // Redis commit answered `Pending` and woke itself at once,
                // forever (a busy loop seen with gdb on a 5,000-device bulk
                // grant). This task is on the blocking pool and starves no
                // other one.
                let permit = self.hashing_permit().await?;
                let registry = Arc::clone(&self.registry);
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    runtime.block_on(tokio::task::unconstrained(
                        registry.grant_many(targets, overrides, now),
                    ))
                })
                .await
                .map_err(|e| ApiError::Internal(format!("bulk grant task failed: {e}")))?
            }
            Decision::Deny => {
                let bulk: BulkDenyBody = parse_json(body)?;
                let targets = bulk.targets().into_targets()?;
                self.registry.deny_many(targets, now).await
            }
        };
        let outcome = outcome.map_err(|e| match e {
            BulkError::Invalid(m) => ApiError::Invalid(m),
            BulkError::Policy { rule, message } => ApiError::Policy { rule, message },
            BulkError::Store(e) => e.into(),
            BulkError::Internal(m) => ApiError::Internal(m),
        })?;
        Ok(outcome)
    }
}

/// The bearer token of an `Authorization` header, `None` without the header.
/// A header with another scheme is refused rather than ignored, so a client
/// sending Basic credentials learns why it is not let in.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    match token {
        Some(token) => Ok(Some(token)),
        None => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

fn no_request(username: &str) -> ApiError {
    ApiError::NotFound(format!("no request for `{username}`"))
}

fn no_user(username: &str) -> ApiError {
    ApiError::NotFound(format!("no user `{username}`"))
}

/// A short note for the audit record of a request that succeeded: the end
/// of an unlock (from the answer), the new order of the rules (names only).
fn detail_of(action: AuditAction, request: &Bytes, response: &Bytes) -> Option<String> {
    let json = |b: &Bytes| serde_json::from_slice::<serde_json::Value>(b).ok();
    match action {
        AuditAction::Unlock => json(response)?
            .get("unlockedUntil")?
            .as_str()
            .map(|t| format!("until {t}")),
        AuditAction::OrderRules => {
            let names = json(request)?.get("names")?.as_array()?.clone();
            let names: Vec<&str> = names.iter().filter_map(|n| n.as_str()).collect();
            Some(names.join(", "))
        }
        _ => None,
    }
}
