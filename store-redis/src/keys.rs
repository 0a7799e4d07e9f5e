//! The key schema: which Redis key holds what, and which bucket a username
//! belongs to.
//!
//! Everything one username's transitions touch lives in one **bucket**, and
//! every key of a bucket carries the bucket's hash tag `{<prefix>:bNN}`. Redis
//! Cluster maps a key to a slot by the hash tag alone, so all keys of a bucket
//! are in one slot, and a script that touches only them is valid on a
//! cluster. The 64 buckets spread over the cluster's masters; the few global
//! keys (lock state, `--max-pending` counter, secret, roles) are single-key
//! and need no tag. The full table is in `docs/ARCHITECTURE.md (section "State: the Redis store")`.

/// The field of the roles hash ([`KeySpace::roles`]) that counts role changes:
/// every role put and delete `HINCRBY`s it in the same script, and the
/// proxies read it with the bucket epochs, so a lost `role:` event is still
/// noticed. Role names are `[A-Za-z0-9._:-]`, so no role can have this name.
pub const ROLES_EPOCH_FIELD: &str = "#epoch";

/// Number of buckets. A username's bucket is FNV-1a(username) mod 64, the
/// same function the embedded store uses for its shards. 64 tags spread well
/// over a cluster of a few masters, and a listing fans out to 64 indexes,
/// which stays one round trip because the requests are pipelined.
pub const BUCKETS: usize = 64;

/// The bucket of `username`.
pub fn bucket_of(username: &str) -> usize {
    fleetgate_registry::shard::shard_of(username, BUCKETS)
}

/// Why a key prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key prefix {0:?} must be 1 to 64 characters from letters, digits and . _ : -")]
pub struct InvalidPrefix(pub String);

/// Builds every key name of one store namespace.
///
/// The prefix isolates namespaces on one server (tests use one per test; two
/// deployments can share a Redis). It may not contain `{` or `}`, which would
/// change the hash tag.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
    /// `{<prefix>:bNN}` for each bucket, built once.
    tags: Vec<String>,
}

/// The keys of one bucket that a username's transitions touch.
#[derive(Clone, Debug)]
pub struct UserKeys {
    /// The bucket's tag, `{<prefix>:bNN}`, from which scripts build the
    /// request keys of other usernames in the same bucket when they sweep.
    pub tag: String,
    /// `{t}:r:<username>`: the request hash (pending, granted or denied).
    pub request: String,
    /// `{t}:u:<username>`: the user, as JSON.
    pub user: String,
}

/// The per-bucket indexes.
#[derive(Clone, Debug)]
pub struct BucketKeys {
    pub tag: String,
    /// `{t}:pending`: ZSET of pending usernames, all with score 0, so
    /// `ZRANGEBYLEX` walks them in username order.
    pub pending: String,
    /// `{t}:pexp`: ZSET of pending usernames scored by expiry (ms).
    pub pending_expiry: String,
    /// `{t}:granted`: ZSET of granted usernames, score 0.
    pub granted: String,
    /// `{t}:gexp`: ZSET of granted usernames scored by the end of the
    /// collection window.
    pub granted_expiry: String,
    /// `{t}:denied`: ZSET of denied usernames, score 0, for the denied
    /// listing.
    pub denied: String,
    /// `{t}:dexp`: ZSET of denied usernames scored by the end of the deny
    /// window (when Redis drops the request hash by TTL); the sweep walks
    /// it, so no entry outlives its record for long.
    pub denied_expiry: String,
    /// `{t}:users`: ZSET of usernames, score 0.
    pub users: String,
    /// `{t}:lock`: this bucket's copy of the lock key
    /// (`<version>:<unlocked_until ms>`; missing means locked), so the
    /// register script reads the lock in its own slot.
    pub lock: String,
    /// `{t}:epoch`: counter bumped by every transition that publishes a
    /// per-user event (grant, deny, put user, delete user), in the same
    /// script. Proxies re-read the 64 epochs a few times a second, so a
    /// change whose event was lost still reaches their caches.
    pub epoch: String,
    /// `{t}:outbox`: this bucket's webhook outbox, a stream of the events
    /// of its decisions, XADDed by the decision's own script (see
    /// `store::outbox`). `{t}:outbox:dropped` counts the entries dropped at
    /// the cap.
    pub outbox: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            return Err(InvalidPrefix(prefix.to_owned()));
        }
        let tags = (0..BUCKETS)
            .map(|b| format!("{{{prefix}:b{b:02}}}"))
            .collect();
        Ok(KeySpace {
            prefix: prefix.to_owned(),
            tags,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn user_keys(&self, username: &str) -> UserKeys {
        let tag = &self.tags[bucket_of(username)];
        UserKeys {
            tag: tag.clone(),
            request: format!("{tag}:r:{username}"),
            user: format!("{tag}:u:{username}"),
        }
    }

    pub fn bucket_keys(&self, bucket: usize) -> BucketKeys {
        let tag = &self.tags[bucket];
        BucketKeys {
            tag: tag.clone(),
            pending: format!("{tag}:pending"),
            pending_expiry: format!("{tag}:pexp"),
            granted: format!("{tag}:granted"),
            granted_expiry: format!("{tag}:gexp"),
            denied: format!("{tag}:denied"),
            denied_expiry: format!("{tag}:dexp"),
            users: format!("{tag}:users"),
            lock: format!("{tag}:lock"),
            epoch: format!("{tag}:epoch"),
            outbox: format!("{tag}:outbox"),
        }
    }

    /// The bucket indexes of `username`'s bucket.
    pub fn bucket_keys_of(&self, username: &str) -> BucketKeys {
        self.bucket_keys(bucket_of(username))
    }

    /// `<prefix>:lock`: the lock state every reader sees, as
    /// `<version>:<unlocked_until ms>` (0 ms, or no key, means locked). The
    /// bucket copies follow it.
    pub fn lock(&self) -> String {
        format!("{}:lock", self.prefix)
    }

    /// `{<prefix>:lock}:outbox`: the outbox of lock events. Its hash tag is
    /// the lock key's whole name, so it is in the lock key's slot and the
    /// script that writes the lock can append the event.
    pub fn lock_outbox(&self) -> String {
        format!("{{{}:lock}}:outbox", self.prefix)
    }

    /// Every outbox stream: the 64 buckets', then the lock's.
    pub fn outboxes(&self) -> Vec<String> {
        (0..BUCKETS)
            .map(|b| self.bucket_keys(b).outbox)
            .chain(std::iter::once(self.lock_outbox()))
            .collect()
    }

    /// `<prefix>:lock-version`: incremented by every `set_lock_state`; the
    /// lock key and its copies hold `<version>:<unlocked_until ms>`.
    pub fn lock_version(&self) -> String {
        format!("{}:lock-version", self.prefix)
    }

    /// `<prefix>:pending-slots`: the `--max-pending` reservation counter.
    pub fn pending_slots(&self) -> String {
        format!("{}:pending-slots", self.prefix)
    }

    /// `<prefix>:secret`: the 32-byte server secret shared by all instances.
    pub fn secret(&self) -> String {
        format!("{}:secret", self.prefix)
    }

    /// `<prefix>:roles`: a hash of every defined role, field = role name,
    /// value = the `Role` as JSON, plus the change counter in field
    /// [`ROLES_EPOCH_FIELD`]. Roles are global, not per user, and the
    /// whole table is capped (`request::DEFINED_ROLES_MAX`), so one key
    /// holds it and `list_roles` is one `HGETALL`.
    pub fn roles(&self) -> String {
        format!("{}:roles", self.prefix)
    }

    /// `<prefix>:rules`: a hash of every auto-approval rule (`r:<name>`, its
    /// JSON), its use count (`u:<name>`), the order (`#order`) and the list's
    /// change counter (`#version`); global like the roles, one slot on a
    /// cluster, so every rule script is one atomic step.
    pub fn rules(&self) -> String {
        format!("{}:rules", self.prefix)
    }

    /// `<prefix>:audit`: the audit log, a stream whose ids order the
    /// records (`<ms>-<seq>`, ms from the caller's clock, never going
    /// back); capped with `MAXLEN` in every append, pruned with `XTRIM
    /// MINID`. One key, so one slot on a cluster.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    /// `<prefix>:events`: the pub/sub channel of state-change events.
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
}

/// The `ZRANGEBYLEX` bounds of a keyset page: after `cursor` (exclusive),
/// within `prefix`. Same rule as the embedded store: a cursor before the
/// prefix starts at the prefix.
pub fn lex_range(prefix: &str, cursor: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let min = match cursor {
        Some(c) if c >= prefix => [b"(", c.as_bytes()].concat(),
        _ if prefix.is_empty() => b"-".to_vec(),
        _ => [b"[", prefix.as_bytes()].concat(),
    };
    // Every string that starts with `prefix` sorts below `prefix` + 0xFF,
    // because UTF-8 never contains the byte 0xFF.
    let max = if prefix.is_empty() {
        b"+".to_vec()
    } else {
        [b"(", prefix.as_bytes(), b"\xff"].concat()
    };
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_username_share_the_bucket_tag() {
        let ks = KeySpace::new("fg").unwrap();
        let u = ks.user_keys("dev01");
        let b = ks.bucket_keys_of("dev01");
        let tag = format!("{{fg:b{:02}}}", bucket_of("dev01"));
        for k in [
            &u.request,
            &u.user,
            &b.pending,
            &b.granted,
            &b.denied,
            &b.denied_expiry,
            &b.users,
            &b.lock,
            &b.epoch,
            &b.outbox,
        ] {
            assert!(k.starts_with(&tag), "{k} lacks {tag}");
        }
        assert_eq!(u.request, format!("{tag}:r:dev01"));
        // The lock's outbox takes the lock key's whole name as its tag, so
        // Redis Cluster puts both in one slot.
        assert_eq!(ks.lock_outbox(), format!("{{{}}}:outbox", ks.lock()));
        assert_eq!(ks.outboxes().len(), BUCKETS + 1);
    }

    #[test]
    fn prefix_rules() {
        assert!(KeySpace::new("fleetgate").is_ok());
        assert!(KeySpace::new("t-1.a_b:c").is_ok());
        for bad in ["", "a{b", "a}b", "a b", &"x".repeat(65)] {
            assert!(KeySpace::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn buckets_match_the_embedded_shard_function() {
        // FNV-1a of "" is the offset basis; 0x25 & 63 = 37.
        assert_eq!(bucket_of(""), 0xcbf2_9ce4_8422_2325usize & 63);
        let spread: std::collections::HashSet<_> =
            (0..1000).map(|i| bucket_of(&format!("dev{i}"))).collect();
        assert_eq!(spread.len(), BUCKETS);
    }

    #[test]
    fn lex_range_follows_the_embedded_cursor_rule() {
        assert_eq!(lex_range("", None), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(lex_range("", Some("a")), (b"(a".to_vec(), b"+".to_vec()));
        assert_eq!(
            lex_range("dev", None),
            (b"[dev".to_vec(), b"(dev\xff".to_vec())
        );
        assert_eq!(lex_range("dev", Some("dev7")).0, b"(dev7".to_vec());
        // A cursor before the prefix starts at the prefix.
        assert_eq!(lex_range("dev", Some("abc")).0, b"[dev".to_vec());
    }
}
