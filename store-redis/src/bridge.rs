//! Thread-per-core meets redis-rs: [`TokioBridge`] lets monoio workers use a
//! store whose futures need a tokio runtime.
//!
//! redis-rs connections, and its timeouts, live on tokio; monoio worker
//! threads have no tokio context. The bridge wraps any [`Store`]. Called
//! from a tokio thread (the admin service), it awaits the inner store
//! directly. Called from anywhere else (a proxy worker), it copies the
//! arguments into owned values, spawns the operation onto the shared tokio
//! runtime, and awaits the answer on a `tokio::sync::oneshot`, which any
//! executor can await. All workers therefore share the runtime's
//! multiplexed (or cluster) connections, and pipelining happens there.
//! `docs/ARCHITECTURE.md` records why we chose this over a connection per
//! worker.

use fleetgate_registry::audit::{AuditEntry, AuditQuery, AuditRecord};
use fleetgate_registry::rule::{
    DecidedBy, PutRuleResult, Rule, RuleClaim, RuleOrderResult, StoredRule,
};
use std::future::Future;
use std::sync::Arc;

use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::{Permission, RequestRecord, Role, Transport, UserRecord};
use fleetgate_registry::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, Page, Poll,
    SealOnCreate, Store, StoreError,
};
use fleetgate_registry::webhook::WebhookEvent;
use fleetgate_registry::UnixMillis;
use std::net::SocketAddr;

/// A [`Store`] usable from any thread, running `S` on a tokio runtime.
pub struct TokioBridge<S> {
    inner: Arc<S>,
    runtime: tokio::runtime::Handle,
}

impl<S> TokioBridge<S> {
    pub fn new(inner: Arc<S>, runtime: tokio::runtime::Handle) -> Self {
        TokioBridge { inner, runtime }
    }

    /// The wrapped store (for backend-specific calls such as a sweep).
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

impl<S: Store> TokioBridge<S> {
    /// Runs `f` on tokio: inline when already there, else spawned.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return f.await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.await
            .map_err(|_| StoreError::Unavailable("the store runtime is shutting down".into()))?
    }
}

/// A [`Poll`] with owned fields, so it can cross to another thread.
struct OwnedPoll {
    username: String,
    fingerprint: Fingerprint,
    transport: Transport,
    source_addr: Option<SocketAddr>,
    client_id: Option<String>,
    roles: Vec<String>,
    permissions: Vec<Permission>,
    context: Option<String>,
    sealed: Vec<u8>,
    preauthorized: bool,
}

impl OwnedPoll {
    fn from(poll: Poll<'_>) -> Self {
        OwnedPoll {
            username: poll.username.to_owned(),
            fingerprint: poll.fingerprint,
            transport: poll.transport,
            source_addr: poll.source_addr,
            client_id: poll.client_id.map(str::to_owned),
            roles: poll.roles.to_vec(),
            permissions: poll.permissions.to_vec(),
            context: poll.context.map(str::to_owned),
            preauthorized: poll.preauthorized,
            // Sealing eagerly costs about 1.4 µs; a Redis round trip is far more.
            sealed: poll.secret.into_sealed(),
        }
    }

    /// The poll, handing over the sealed bytes (taken, not copied).
    fn as_poll(&mut self) -> Poll<'_> {
        let sealed = std::mem::take(&mut self.sealed);
        Poll {
            username: &self.username,
            fingerprint: self.fingerprint,
            transport: self.transport,
            source_addr: self.source_addr,
            client_id: self.client_id.as_deref(),
            roles: &self.roles,
            permissions: &self.permissions,
            context: self.context.as_deref(),
            secret: SealOnCreate::Sealed(sealed),
            preauthorized: self.preauthorized,
        }
    }
}

impl<S: Store> Store for TokioBridge<S> {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let mut owned = OwnedPoll::from(poll);
        let inner = self.inner.clone();
        self.run(async move { inner.register(owned.as_poll(), now).await })
            .await
    }

    async fn lock_state(&self) -> Result<LockState, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.lock_state().await }).await
    }

    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.set_lock_state(state).await })
            .await
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.pending_count().await }).await
    }

    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let (inner, username) = (self.inner.clone(), username.to_owned());
        self.run(async move { inner.get_request(&username, now).await })
            .await
    }

    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        let (inner, query) = (self.inner.clone(), query.clone());
        self.run(async move { inner.list_requests(&query, now).await })
            .await
    }

    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.commit_grant(grant, now).await })
            .await
    }

    async fn commit_grants(
        &self,
        grants: Vec<GrantCommit>,
        now: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.commit_grants(grants, now).await })
            .await
    }

    async fn deny(
        &self,
        username: &str,
        by: Option<DecidedBy>,
        now: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        let (inner, username) = (self.inner.clone(), username.to_owned());
        self.run(async move { inner.deny(&username, by, now).await })
            .await
    }

    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        let (inner, username) = (self.inner.clone(), username.to_owned());
        self.run(async move { inner.forget_request(&username, now).await })
            .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let (inner, username) = (self.inner.clone(), username.to_owned());
        self.run(async move { inner.get_user(&username).await })
            .await
    }

    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let (inner, query) = (self.inner.clone(), query.clone());
        self.run(async move { inner.list_users(&query).await })
            .await
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.put_user(user).await }).await
    }

    async fn update_user_access(
        &self,
        username: &str,
        change: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let (inner, username, change) = (self.inner.clone(), username.to_owned(), change.clone());
        self.run(async move { inner.update_user_access(&username, &change).await })
            .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let (inner, username) = (self.inner.clone(), username.to_owned());
        self.run(async move { inner.delete_user(&username).await })
            .await
    }

    async fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.run(async move { inner.get_role(&name).await }).await
    }

    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.list_roles().await }).await
    }

    async fn put_role(&self, role: Role) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.put_role(role).await }).await
    }

    async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.run(async move { inner.delete_role(&name).await })
            .await
    }

    async fn rules_version(&self) -> Result<u64, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.rules_version().await }).await
    }

    async fn list_rules(&self) -> Result<(u64, Vec<StoredRule>), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.list_rules().await }).await
    }

    async fn put_rule(&self, rule: Rule, max: usize) -> Result<PutRuleResult, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.put_rule(rule, max).await })
            .await
    }

    async fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.run(async move { inner.delete_rule(&name).await })
            .await
    }

    async fn set_rule_order(&self, names: &[String]) -> Result<RuleOrderResult, StoreError> {
        let (inner, names) = (self.inner.clone(), names.to_vec());
        self.run(async move { inner.set_rule_order(&names).await })
            .await
    }

    async fn claim_rule_use(&self, name: &str) -> Result<RuleClaim, StoreError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.run(async move { inner.claim_rule_use(&name).await })
            .await
    }

    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        max: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.append_audit(entries, max).await })
            .await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>, StoreError> {
        let (inner, query) = (self.inner.clone(), query.clone());
        self.run(async move { inner.list_audit(&query).await })
            .await
    }

    async fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.prune_audit(before).await })
            .await
    }

    async fn outbox_take(&self, max: usize) -> Result<Vec<WebhookEvent>, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.outbox_take(max).await }).await
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), StoreError> {
        let (inner, ids) = (self.inner.clone(), ids.to_vec());
        self.run(async move { inner.outbox_ack(&ids).await }).await
    }

    async fn outbox_depth(&self) -> Result<usize, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.outbox_depth().await }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { inner.ping().await }).await
    }

    // A local read of the inner store's state: no need to cross runtimes.
    fn access_generation(&self, username: &str) -> Option<u64> {
        self.inner.access_generation(username)
    }
}
