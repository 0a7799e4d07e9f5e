//! The admin side of a scenario: a small client of the admin API (login,
//! lock state, unlock, list pending requests, grant), and the setup that
//! turns N usernames into granted users before a storm.
//!
//! It is a plain reqwest client, not a goose user: the admin is one actor
//! whose timings are not what a storm measures, and its requests should not
//! be mixed into the devices' metrics. Every status it sees is counted in an
//! [`AdminReport`], so a refused grant shows up in the summary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::device::{credentials_body, LOGIN_PATH, REGISTER_PATH};
use crate::summary::AdminReport;

/// Why an admin step failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no admin password: pass --admin-password with --url")]
    NoPassword,
    #[error("{route}: {source}")]
    Transport {
        route: &'static str,
        source: reqwest::Error,
    },
    #[error("{route}: unexpected status {status}: {body}")]
    Status {
        route: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{route}: unreadable answer: {source}")]
    Body {
        route: &'static str,
        source: reqwest::Error,
    },
}

/// The registry's lock state, as `GET /api/client-registry` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryState {
    pub locked: bool,
    pub pending: u64,
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    username: String,
}

/// A logged-in admin.
#[derive(Debug)]
pub struct Admin {
    client: reqwest::Client,
    /// The admin API base (`http://127.0.0.1:8081`), no trailing slash.
    base: String,
    token: String,
    /// Every status seen, by route, for the summary.
    report: Mutex<AdminReport>,
}

impl Admin {
    /// Logs in as `admin` through `base`.
    pub async fn login(
        client: reqwest::Client,
        base: &str,
        password: Option<&str>,
    ) -> Result<Admin, AdminError> {
        let password = password.ok_or(AdminError::NoPassword)?;
        let mut admin = Admin {
            client,
            base: base.to_owned(),
            token: String::new(),
            report: Mutex::new(AdminReport::default()),
        };
        let resp = admin
            .send(
                "login",
                admin
                    .client
                    .post(format!("{base}{LOGIN_PATH}"))
                    .header("content-type", "application/json")
                    .body(credentials_body("admin", password)),
            )
            .await?;
        let resp = expect(resp, "login", StatusCode::OK).await?;
        let token: Token = resp.json().await.map_err(|source| AdminError::Body {
            route: "login",
            source,
        })?;
        admin.token = token.token;
        Ok(admin)
    }

    /// Sends one request, counting its status (or its failure) under `route`.
    async fn send(
        &self,
        route: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AdminError> {
        match req.send().await {
            Ok(resp) => {
                let key = format!("{route}:{}", resp.status().as_u16());
                *self.lock_report().statuses.entry(key).or_default() += 1;
                Ok(resp)
            }
            Err(source) => {
                self.lock_report().transport_errors += 1;
                Err(AdminError::Transport { route, source })
            }
        }
    }

    fn lock_report(&self) -> std::sync::MutexGuard<'_, AdminReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// What the admin did so far.
    pub fn report(&self) -> AdminReport {
        self.lock_report().clone()
    }

    /// Adds to the report (setup figures the caller measured).
    pub fn update_report(&self, f: impl FnOnce(&mut AdminReport)) {
        f(&mut self.lock_report());
    }

    /// `GET /api/client-registry`.
    pub async fn state(&self) -> Result<RegistryState, AdminError> {
        let req = self.authed(reqwest::Method::GET, "/api/client-registry");
        let resp = expect(self.send("state", req).await?, "state", StatusCode::OK).await?;
        resp.json().await.map_err(|source| AdminError::Body {
            route: "state",
            source,
        })
    }

    /// `POST /api/client-registry/unlock` for `duration` (clamped to the
    /// API's 1 ms to 24 h).
    pub async fn unlock(&self, duration: Duration) -> Result<(), AdminError> {
        let ms = duration.as_millis().clamp(1, 24 * 3600 * 1000) as u64;
        let req = self
            .authed(reqwest::Method::POST, "/api/client-registry/unlock")
            .json(&json!({ "durationMs": ms }));
        expect(self.send("unlock", req).await?, "unlock", StatusCode::OK).await?;
        Ok(())
    }

    /// `POST /api/client-registry/lock`.
    pub async fn lock(&self) -> Result<(), AdminError> {
        let req = self.authed(reqwest::Method::POST, "/api/client-registry/lock");
        expect(self.send("lock", req).await?, "lock", StatusCode::OK).await?;
        Ok(())
    }

    /// The first `limit` pending usernames starting with `prefix`.
    pub async fn pending(&self, prefix: &str, limit: u64) -> Result<Vec<String>, AdminError> {
        let path = format!(
            "/api/client-registry/requests?state=pending&prefix={}&limit={limit}",
            percent_encode(prefix)
        );
        let req = self.authed(reqwest::Method::GET, &path);
        let resp = expect(self.send("list", req).await?, "list", StatusCode::OK).await?;
        let page: Page = resp.json().await.map_err(|source| AdminError::Body {
            route: "list",
            source,
        })?;
        Ok(page.items.into_iter().map(|i| i.username).collect())
    }

    /// `POST /api/client-registry/requests/{username}/grant`; true on 200.
    /// Usernames here are the loadtest's own (`[A-Za-z0-9-]`), so they need
    /// no escaping in the path.
    pub async fn grant(&self, username: &str) -> bool {
        let path = format!("/api/client-registry/requests/{username}/grant");
        let req = self.authed(reqwest::Method::POST, &path);
        match self.send("grant", req).await {
            Ok(resp) => {
                let ok = resp.status() == StatusCode::OK;
                let _ = resp.bytes().await;
                if ok {
                    self.lock_report().granted += 1;
                }
                ok
            }
            Err(_) => false,
        }
    }

    /// `POST /api/client-registry/requests/grant` with the selector
    /// `{"prefix": prefix}` and `limit`: how many it granted, and whether
    /// the selector matched more (`nextCursor`). Counted under `bulk`.
    pub async fn bulk_grant(&self, prefix: &str, limit: u64) -> Result<(u64, bool), AdminError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Bulk {
            granted: u64,
            #[serde(default)]
            next_cursor: Option<String>,
        }
        let req = self
            .authed(reqwest::Method::POST, "/api/client-registry/requests/grant")
            .json(&json!({ "selector": { "prefix": prefix }, "limit": limit }));
        let started = Instant::now();
        let resp = expect(self.send("bulk", req).await?, "bulk", StatusCode::OK).await?;
        let answer: Bulk = resp.json().await.map_err(|source| AdminError::Body {
            route: "bulk",
            source,
        })?;
        self.update_report(|r| {
            r.granted += answer.granted;
            r.bulk_calls += 1;
            if answer.granted > 0 {
                r.slowest_bulk_secs = r.slowest_bulk_secs.max(started.elapsed().as_secs_f64());
                let first = *r.first_bulk_grant.get_or_insert(started);
                r.granting_secs = first.elapsed().as_secs_f64();
            }
        });
        Ok((answer.granted, answer.next_cursor.is_some()))
    }

    /// Grants every listed pending request of `prefix`, `concurrency` at a
    /// time; returns how many were granted.
    pub async fn grant_batch(&self, prefix: &str, batch: u64, concurrency: usize) -> u64 {
        let Ok(names) = self.pending(prefix, batch.min(1000)).await else {
            return 0;
        };
        stream::iter(names)
            .map(|u| async move { self.grant(&u).await })
            .buffer_unordered(concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await as u64
    }

    /// Turns `usernames` into granted users with `password`: unlocks the
    /// registry, registers each (expecting 202, or 201/409 when it already
    /// exists from an earlier run), grants each, and locks again if it was
    /// locked. Returns how many are usable (granted now or before).
    pub async fn provision(
        &self,
        device_base: &str,
        usernames: &[String],
        password: &str,
        concurrency: usize,
    ) -> Result<u64, AdminError> {
        let started = Instant::now();
        let before = self.state().await?;
        // Long enough for the registrations, bounded by the API's maximum.
        self.unlock(Duration::from_secs(3600)).await?;
        let register = |u: String| {
            let req = self
                .client
                .post(format!("{device_base}{REGISTER_PATH}"))
                .header("content-type", "application/json")
                .body(credentials_body(&u, password));
            async move {
                let status = match self.send("register", req).await {
                    Ok(resp) => {
                        let s = resp.status();
                        let _ = resp.bytes().await;
                        Some(s)
                    }
                    Err(_) => None,
                };
                (u, status)
            }
        };
        let registered: Vec<(String, Option<StatusCode>)> = stream::iter(usernames.iter().cloned())
            .map(register)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut to_grant = Vec::new();
        let mut usable = 0u64;
        for (u, status) in registered {
            match status.map(|s| s.as_u16()) {
                Some(202) => to_grant.push(u),
                // Already granted (201) or already a user (409, from an
                // earlier run with the same --run-id): it can log in.
                Some(201) | Some(409) => usable += 1,
                _ => {}
            }
        }
        self.update_report(|r| r.registered = to_grant.len() as u64);
        usable += stream::iter(&to_grant)
            .map(|u| self.grant(u))
            .buffer_unordered(concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await as u64;
        if before.locked {
            self.lock().await?;
        }
        self.update_report(|r| {
            r.was_locked = before.locked;
            r.setup_secs = started.elapsed().as_secs_f64();
        });
        Ok(usable)
    }
}

/// `resp` if it has `want`, otherwise an error carrying its body.
async fn expect(
    resp: reqwest::Response,
    route: &'static str,
    want: StatusCode,
) -> Result<reqwest::Response, AdminError> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(AdminError::Status {
        route,
        status,
        body: body.chars().take(300).collect(),
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a
/// query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counts by route, for printing: `grant:200=120 list:200=12`.
pub fn format_statuses(statuses: &BTreeMap<String, u64>) -> String {
    statuses
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("lt-ab12-"), "lt-ab12-");
        assert_eq!(percent_encode("a b&c=d@e"), "a%20b%26c%3Dd%40e");
    }
}
