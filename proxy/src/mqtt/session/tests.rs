//! `decide` against a store that is down. The embedded store cannot fail on
//! this path, so this one fault-injecting store stands in for an unreachable
//! backend; the end-to-end tests cover every other CONNACK row with the real
//! store.

use std::cell::RefCell;
use std::time::Duration;

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::decision::{Decision, LockState};
use fleetgate_registry::model::{RequestRecord, Role, UserRecord};
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::{
    AccessChange, DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, Page, Poll, Store,
    StoreError,
};
use fleetgate_registry::{Registry, RegistryConfig};

use super::*;
use crate::mqtt::codec::Level;

/// Every operation fails as an unreachable backend would.
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("connection refused".into()))
}

impl Store for DownStore {
    async fn register(
        &self,
        _: Poll<'_>,
        _: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        down()
    }
    async fn lock_state(&self) -> Result<LockState, StoreError> {
        down()
    }
    async fn set_lock_state(&self, _: LockState) -> Result<(), StoreError> {
        down()
    }
    async fn pending_count(&self) -> Result<usize, StoreError> {
        down()
    }
    async fn get_request(
        &self,
        _: &str,
        _: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        down()
    }
    async fn list_requests(
        &self,
        _: &ListQuery,
        _: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        down()
    }
    async fn commit_grant(&self, _: GrantCommit, _: UnixMillis) -> Result<GrantResult, StoreError> {
        down()
    }
    async fn commit_grants(
        &self,
        _: Vec<GrantCommit>,
        _: UnixMillis,
    ) -> Result<Vec<GrantResult>, StoreError> {
        down()
    }
    async fn deny(
        &self,
        _: &str,
        _: Option<fleetgate_registry::rule::DecidedBy>,
        _: UnixMillis,
    ) -> Result<DenyResult, StoreError> {
        down()
    }
    async fn forget_request(&self, _: &str, _: UnixMillis) -> Result<ForgetResult, StoreError> {
        down()
    }
    async fn get_user(&self, _: &str) -> Result<Option<UserRecord>, StoreError> {
        down()
    }
    async fn list_users(&self, _: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        down()
    }
    async fn put_user(&self, _: UserRecord) -> Result<(), StoreError> {
        down()
    }
    async fn update_user_access(
        &self,
        _: &str,
        _: &AccessChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        down()
    }
    async fn delete_user(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn get_role(&self, _: &str) -> Result<Option<Role>, StoreError> {
        down()
    }
    async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        down()
    }
    async fn put_role(&self, _: Role) -> Result<(), StoreError> {
        down()
    }
    async fn delete_role(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn rules_version(&self) -> Result<u64, StoreError> {
        down()
    }
    async fn list_rules(
        &self,
    ) -> Result<(u64, Vec<fleetgate_registry::rule::StoredRule>), StoreError> {
        down()
    }
    async fn put_rule(
        &self,
        _: fleetgate_registry::rule::Rule,
        _: usize,
    ) -> Result<fleetgate_registry::rule::PutRuleResult, StoreError> {
        down()
    }
    async fn delete_rule(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn set_rule_order(
        &self,
        _: &[String],
    ) -> Result<fleetgate_registry::rule::RuleOrderResult, StoreError> {
        down()
    }
    async fn claim_rule_use(
        &self,
        _: &str,
    ) -> Result<fleetgate_registry::rule::RuleClaim, StoreError> {
        down()
    }
    async fn append_audit(
        &self,
        _: Vec<fleetgate_registry::audit::AuditEntry>,
        _: usize,
    ) -> Result<Vec<fleetgate_registry::audit::AuditRecord>, StoreError> {
        down()
    }
    async fn list_audit(
        &self,
        _: &fleetgate_registry::audit::AuditQuery,
    ) -> Result<fleetgate_registry::store::Page<fleetgate_registry::audit::AuditRecord>, StoreError>
    {
        down()
    }
    async fn prune_audit(&self, _: UnixMillis) -> Result<usize, StoreError> {
        down()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        down()
    }
}

fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("DownStore never suspends"),
    }
}

#[test]
fn store_unavailable_is_connack_3_or_0x88() {
    let registry = Registry::new(DownStore, Secrets::random(), RegistryConfig::default());
    let cache = RefCell::new(CredentialCache::new(
        [1; 32],
        Duration::from_secs(60),
        Duration::from_secs(60),
        16,
    ));
    let connect = Connect {
        level: Level::V311,
        client_id: "c1",
        username: Some("dev-01"),
        password: Some(b"secret-1"),
        keep_alive: 30,
        clean_start: true,
        will: false,
        len: 0,
    };
    let peer = "127.0.0.1:5000".parse().unwrap();
    let verdict = now_or_never(decide(&registry, &connect, peer, &cache));
    assert_eq!(verdict.verdict, Verdict::Refuse(Refusal::Unavailable));
    assert_eq!(verdict.outcome, crate::telemetry::Outcome::Unavailable);
    assert_eq!(
        connack(Level::V311, Refusal::Unavailable),
        [0x20, 0x02, 0x00, 0x03]
    );
    assert_eq!(
        connack(Level::V5, Refusal::Unavailable),
        [0x20, 0x03, 0x00, 0x88, 0x00]
    );
}
