//! What a relayed MQTT user may do, compiled once per user per worker and
//! re-read only when the store says it may have changed.
//!
//! A live relayed session must follow its user: a deletion ends it, a
//! permission change applies to its next packet, both within a second
//! (issue 13). Re-reading the user and every one of its roles for every
//! session twice a second costs 2 + roles store reads per session per
//! second: on Redis, 10,000 sessions would send tens of thousands of reads
//! a second for nothing. Instead each session compares the store's
//! [`Store::access_generation`] for its user, a local atomic read, and
//! re-reads only when it moved. Sessions of the same user on the same
//! worker (reconnects, several client ids) share one compiled
//! [`PermissionSet`] through [`AccessCache`].
//!
//! **Invalidation** is the poll cache's: the embedded store bumps the
//! generation as it applies a change; the Redis store's `CachedStore` bumps
//! it on every event and every moved bucket or roles epoch, and answers
//! `None` (re-read every time) while its epoch readings are too old to
//! trust. The generation is read *before* the store, so a change that lands
//! during a read moves it again and is picked up on the next check.
//!
//! **Bounds.** At most [`CAPACITY`] users per worker, in a
//! [`GenerationalMap`]: a full map forgets the users untouched for
//! longest, which costs their sessions one re-read, never a wrong answer.

use std::sync::Arc;

use fleetgate_registry::bounded::GenerationalMap;
use fleetgate_registry::metrics as names;
use fleetgate_registry::store::Store;
use fleetgate_registry::topic::PermissionSet;
use fleetgate_registry::{Registry, UnixMillis};

/// Users whose compiled permissions one worker keeps. A compiled set is at
/// most a few KiB (64 direct permissions plus those of at most 32 roles).
pub const CAPACITY: usize = 16_384;

/// What a user may do, with the identity of the user record it came from.
#[derive(Clone, Debug)]
pub struct Access {
    pub permissions: Arc<PermissionSet>,
    /// The user's `created_at`: a user deleted and created again under the
    /// same name is another user, whose sessions must not carry on.
    pub created_at: UnixMillis,
}

/// Why [`load`] has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The store did not answer; keep what was known and try again.
    Unavailable,
}

/// One worker's compiled permission sets by username, each with the access
/// generation it was read at.
pub struct AccessCache {
    entries: GenerationalMap<String, (u64, Access)>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl AccessCache {
    pub fn new(capacity: usize) -> Self {
        AccessCache {
            entries: GenerationalMap::new(capacity),
            hits: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "access", "result" => "hit"),
            misses: metrics::counter!(names::CACHE_LOOKUPS_TOTAL, "cache" => "access", "result" => "miss"),
        }
    }

    /// The access of `username` read at `generation`, if held.
    fn get(&mut self, username: &str, generation: u64) -> Option<Access> {
        let found = self
            .entries
            .get_mut(username)
            .filter(|(at, _)| *at == generation)
            .map(|(_, access)| access.clone());
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    fn insert(&mut self, username: &str, generation: u64, access: Access) {
        self.entries
            .insert(username.to_owned(), (generation, access));
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What `username` may do now, and the generation it is valid for (`None`
/// when the store cannot tell; then every check re-reads). `Ok(None)` when
/// the user does not exist.
pub async fn load<S: Store>(
    registry: &Registry<S>,
    cache: &std::cell::RefCell<AccessCache>,
    username: &str,
) -> Result<Option<(Access, Option<u64>)>, LoadError> {
    // Before the store: a change landing during the read moves it again.
    let generation = registry.store().access_generation(username);
    if let Some(g) = generation {
        if let Some(access) = cache.borrow_mut().get(username, g) {
            return Ok(Some((access, generation)));
        }
    }
    let Some(user) = registry
        .user(username)
        .await
        .map_err(|_| LoadError::Unavailable)?
    else {
        return Ok(None);
    };
    // The user's own permissions and those of its roles.
    let permissions = registry
        .effective_permissions(&user)
        .await
        .map_err(|_| LoadError::Unavailable)?;
    let access = Access {
        permissions: Arc::new(PermissionSet::compile(username, &permissions)),
        created_at: user.created_at,
    };
    if let Some(g) = generation {
        cache.borrow_mut().insert(username, g, access.clone());
    }
    Ok(Some((access, generation)))
}

/// Whether a session that read its access at `known` must read it again:
/// always when either side cannot tell.
pub fn changed_since<S: Store>(registry: &Registry<S>, username: &str, known: Option<u64>) -> bool {
    match (known, registry.store().access_generation(username)) {
        (Some(known), Some(now)) => known != now,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::decision::Windows;
    use fleetgate_registry::embedded::EmbeddedStore;
    use fleetgate_registry::model::{Operation, Permission, PermissionContext, Role, UserRecord};
    use fleetgate_registry::registry::RegistryConfig;
    use std::cell::RefCell;

    /// The embedded store never suspends, so its futures finish in one poll.
    fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the embedded store suspended"),
        }
    }

    fn registry() -> Registry<EmbeddedStore> {
        Registry::new(
            EmbeddedStore::in_memory(Windows::default(), 100),
            fleetgate_registry::secrets::Secrets::random(),
            RegistryConfig::default(),
        )
    }

    fn rw(resource: &str) -> Permission {
        Permission {
            resource: resource.into(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Mqtt,
        }
    }

    fn put_user(r: &Registry<EmbeddedStore>, name: &str, roles: &[&str], perms: Vec<Permission>) {
        now_or_never(r.store().put_user(UserRecord {
            username: name.into(),
            password_hash: None,
            certificate: None,
            roles: roles.iter().map(|r| (*r).into()).collect(),
            permissions: perms,
            created_at: UnixMillis(1),
            origin: fleetgate_registry::model::UserOrigin::Mqtt,
            decided_by: None,
        }))
        .unwrap();
    }

    fn may_write(access: &Access, topic: &str) -> bool {
        access.permissions.can_publish(topic)
    }

    #[test]
    fn a_steady_user_is_read_once_and_every_change_is_seen() {
        let r = registry();
        let cache = RefCell::new(AccessCache::new(CAPACITY));
        put_user(&r, "dev1", &["fleet"], vec![rw("own/#")]);
        let (a, known) = now_or_never(load(&r, &cache, "dev1")).unwrap().unwrap();
        assert!(may_write(&a, "own/x") && !may_write(&a, "fleet/x"));
        assert!(!changed_since(&r, "dev1", known), "nothing changed");
        // A second session of the same user is answered from the cache.
        let (b, _) = now_or_never(load(&r, &cache, "dev1")).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.permissions, &b.permissions));

        // Defining the user's role is a change, seen at the next check.
        now_or_never(r.store().put_role(Role {
            name: "fleet".into(),
            permissions: vec![rw("fleet/#")],
        }))
        .unwrap();
        assert!(changed_since(&r, "dev1", known));
        let (c, known) = now_or_never(load(&r, &cache, "dev1")).unwrap().unwrap();
        assert!(may_write(&c, "fleet/x"), "the role now applies");
        // So is a change of the user's own permissions.
        put_user(&r, "dev1", &[], vec![]);
        assert!(changed_since(&r, "dev1", known));
        let (d, known) = now_or_never(load(&r, &cache, "dev1")).unwrap().unwrap();
        assert!(!may_write(&d, "own/x") && !may_write(&d, "fleet/x"));
        // And a deletion.
        assert!(now_or_never(r.store().delete_user("dev1")).unwrap());
        assert!(changed_since(&r, "dev1", known));
        assert!(now_or_never(load(&r, &cache, "dev1")).unwrap().is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let r = registry();
        let cache = RefCell::new(AccessCache::new(4));
        for i in 0..10 {
            put_user(&r, &format!("dev{i}"), &[], vec![]);
            now_or_never(load(&r, &cache, &format!("dev{i}"))).unwrap();
            assert!(cache.borrow().len() <= 4);
        }
    }
}
