//! `RedisStore`: the `Store` trait on Redis or Redis Cluster.
//!
//! Each transition is one Lua script on one bucket (see `src/lua/`),
//! so it is atomic and cluster-valid. What is not inside one script, and why:
//!
//! - **The `--max-pending` counter** is one global key. On a single Redis
//!   the register script takes the slot itself (`counted` mode), so every
//!   poll is one round trip. On a cluster the counter cannot share a slot
//!   with every bucket, so a poll that would create a pending request takes
//!   three round trips there (once in a device's life): the register script answers
//!   `need_slot` (having changed nothing but expired leftovers), the
//!   `reserve` script takes a slot on the counter, and the register script
//!   runs again in `create` mode, deciding afresh. If the decision changed in
//!   between (another poll created it, the registry was locked), the slot is
//!   given back. Every other poll is one script call, one round trip.
//! - **The lock state** has a global key (what [`Store::lock_state`] reads)
//!   and a copy in every bucket, which the register script reads in its own
//!   slot. `set_lock_state` takes a new version (`INCR`), writes
//!   `<version>:<ms>` to the global key and the 64 copies at once (each
//!   write only moves a key to a newer version, so concurrent calls converge
//!   on the later one), then publishes `lock:<ms>`. A call that fails
//!   half-way returns `Unavailable`; until it is retried, or the next
//!   `sweep` copies the global value to the copies that missed it, some
//!   buckets may follow the previous state.
//! - **Listings and `pending_count`** fan out to the 64 buckets as
//!   concurrent commands on the multiplexed connection(s): one round trip of
//!   latency, 64 commands (a listing sometimes needs a second, smaller
//!   round; see [`crate::page`]), then one read per record of the page.
//!
//! # Accuracy
//! - `--max-pending` is never exceeded: every pending request holds a slot
//!   taken atomically before it exists. Slots are given back by a separate
//!   call after the transition that frees them; if that call is lost (the
//!   caller dies or times out in between), the counter stays too high and
//!   the cap gets stricter by those slots, never looser.
//! - `pending_count` is the sum of the 64 buckets' pending indexes: pending
//!   requests including expired ones not yet swept, exact per bucket at the
//!   moment it is read, not one snapshot across buckets.
//!
//! # Failures
//! Every method is bounded by `op_timeout` and answers
//! `StoreError::Unavailable` past it (`RedisStore::bounded`). `Unavailable`
//! means the outcome is unknown: a command sent before the timeout may still
//! run.

use std::future::Future;
use std::time::Duration;

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::decision::{Decision, LockState, Windows};
use fleetgate_registry::model::{RequestRecord, RequestState, UserRecord};
use fleetgate_registry::store::{
    DenyResult, ForgetResult, GrantCommit, GrantResult, ListQuery, ListState, Page, Poll, Store,
    StoreError, MAX_PAGE,
};
use futures_util::future::join_all;
use rand::RngCore;
use redis::{RedisError, Value};
use tokio::sync::mpsc;

use crate::config::{ConfigError, RedisConfig, Topology, WaitReplicas};
use crate::conn::Conn;
use crate::events::{self, StoreEvent};
use crate::keys::{lex_range, BucketKeys, KeySpace, UserKeys, BUCKETS};
use crate::page;
use crate::record::{self, BadReply};
use crate::scripts::Scripts;

/// Why [`RedisStore::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL, prefix or timeouts are wrong: a usage error.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis could not be reached, or refused to load the scripts.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// The Redis backend of [`Store`]. Cheap to share: clone it, or put it in an
/// `Arc`; all clones use the same connection(s).
#[derive(Clone)]
pub struct RedisStore {
    /// The multiplexed connection (single) or per-node connections
    /// (cluster); cloned per call, which only clones a handle.
    conn: Conn,
    /// A second connection for writes followed by `WAIT`, present only when
    /// `WAIT` is configured. Redis blocks the connection a `WAIT` was sent
    /// on until the replicas answer (up to the WAIT timeout when one is
    /// down), and `WAIT` must follow its write on the same connection; on
    /// the shared connection that would stall every poll behind each grant.
    durable: Option<Conn>,
    /// Script sources and SHA1s; `NOSCRIPT` reloads them.
    scripts: std::sync::Arc<Scripts>,
    keys: KeySpace,
    topology: Topology,
    /// `events_channel`, built once.
    channel: String,
    windows: Windows,
    /// Window lengths in ms, as every script wants them.
    windows_ms: [u64; 3],
    max_pending: usize,
    op_timeout: Duration,
    connect_timeout: Duration,
    wait: Option<WaitReplicas>,
    /// The CA of a `rediss://` server (also for the event subscriber).
    tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.topology)
            .field("prefix", &self.keys.prefix())
            .field("max_pending", &self.max_pending)
            .field("op_timeout", &self.op_timeout)
            .field("wait", &self.wait)
            .finish()
    }
}

fn unavailable(what: &str, e: RedisError) -> StoreError {
    tracing::warn!(operation = what, error = %e, "redis call failed");
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

fn bad_reply(what: &str, e: BadReply) -> StoreError {
    // A reply we cannot read is a bug (or a foreign writer in our
    // namespace). The trait has no error for that; the caller answers 503
    // and the log says why.
    tracing::error!(operation = what, error = %e, "unexpected redis reply");
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// `<version>:<unlocked_until ms>` as (version, ms); (0, 0) when absent.
fn parse_lock(v: Option<&str>) -> (u64, u64) {
    v.and_then(|v| v.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0))
}

fn decision_of(code: &str) -> Option<Decision> {
    Some(match code {
        "collect" => Decision::Collect,
        "pending" => Decision::StillPending,
        "pending_locked" => Decision::PendingWhileLocked,
        "conflict" => Decision::Conflict,
        "denied" => Decision::Denied,
        "locked" => Decision::Locked,
        "create" => Decision::Create,
        _ => return None,
    })
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port` or
    /// `redis+cluster://host:port,host:port`) with every other setting at
    /// its default (1 s operation timeout, no `WAIT`).
    pub async fn connect(
        url: &str,
        windows: Windows,
        max_pending: usize,
        prefix: &str,
    ) -> Result<RedisStore, ConnectError> {
        Self::connect_with(RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            windows,
            max_pending,
            ..RedisConfig::default()
        })
        .await
    }

    /// Connects and loads the scripts, within `config.connect_timeout`.
    pub async fn connect_with(config: RedisConfig) -> Result<RedisStore, ConnectError> {
        let (topology, keys) = config.validate()?;
        let scripts = std::sync::Arc::new(Scripts::new());
        let connect = async {
            let mut conn = Conn::connect(
                &topology,
                config.op_timeout,
                config.connect_timeout,
                config.tls_ca.as_deref(),
            )
            .await
            .map_err(|e| unavailable("connect", e))?;
            conn.load_scripts(&scripts)
                .await
                .map_err(|e| unavailable("SCRIPT LOAD", e))?;
            let durable = match config.wait_replicas {
                Some(_) => Some(
                    Conn::connect(
                        &topology,
                        config.op_timeout,
                        config.connect_timeout,
                        config.tls_ca.as_deref(),
                    )
                    .await
                    .map_err(|e| unavailable("connect", e))?,
                ),
                None => None,
            };
            Ok::<_, StoreError>((conn, durable))
        };
        let (conn, durable) = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "redis at {} did not answer within {:?}",
                    crate::config::redact_url(&config.url),
                    config.connect_timeout
                ))
            })??;
        let w = config.windows;
        Ok(RedisStore {
            conn,
            durable,
            scripts,
            channel: keys.events_channel(),
            keys,
            topology,
            windows: w,
            windows_ms: [ms(w.pending_ttl), ms(w.collect_window), ms(w.deny_window)],
            max_pending: config.max_pending,
            op_timeout: config.op_timeout,
            connect_timeout: config.connect_timeout,
            wait: config.wait_replicas,
            tls_ca: config.tls_ca,
        })
    }

    /// The key names of this store's namespace.
    pub fn key_space(&self) -> &KeySpace {
        &self.keys
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The pub/sub channel every transition publishes on
    /// (`<prefix>:events`).
    pub fn events_channel(&self) -> &str {
        &self.channel
    }

    /// Runs `fut`, or answers `Unavailable` once `op_timeout` has passed.
    /// The connection layer has its own response timeout, but a method can
    /// make several calls, and a reconnect in progress is awaited, not
    /// failed; this is the bound the caller can rely on.
    async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(operation = what, timeout = ?self.op_timeout, "redis call timed out");
                Err(StoreError::Unavailable(format!(
                    "redis did not answer {what} within {:?}",
                    self.op_timeout
                )))
            }
        }
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The connection for writes that are followed by `WAIT`.
    fn durable_conn(&self) -> Conn {
        self.durable.as_ref().unwrap_or(&self.conn).clone()
    }

    /// Publishes `event` on [`Self::events_channel`]. Transitions publish
    /// their own events; this is for callers with events of their own.
    pub async fn publish_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
        self.bounded("PUBLISH", async {
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(event.encode())
                .query_async::<i64>(&mut self.conn())
                .await
                .map_err(|e| unavailable("PUBLISH", e))?;
            Ok(())
        })
        .await
    }

    /// The 64 buckets' change epochs (`{t}:epoch`; a missing key reads 0),
    /// read concurrently. Every grant, deny and user change bumps its
    /// bucket's epoch in the same script that publishes its event, so a
    /// cache that compares two readings finds every bucket that changed in
    /// between, whether or not the event arrived.
    pub async fn bucket_epochs(&self) -> Result<Vec<u64>, StoreError> {
        self.bounded("bucket_epochs", async {
            let reads = (0..BUCKETS).map(|b| {
                let key = self.keys.bucket_keys(b).epoch;
                let mut conn = self.conn();
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<u64>>(&mut conn)
                        .await
                }
            });
            join_all(reads)
                .await
                .into_iter()
                .map(|r| r.map(Option::unwrap_or_default))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|e| unavailable("GET epoch", e))
        })
        .await
    }

    /// Subscribes to the events channel. The receiver first gets
    /// [`StoreEvent::Resync`], then every event; after a reconnection,
    /// `Resync` again. The background task ends when the receiver is
    /// dropped. Must be called inside a tokio runtime.
    pub fn subscribe_events(&self) -> mpsc::Receiver<StoreEvent> {
        events::subscribe(
            self.topology.nodes(),
            self.channel.clone(),
            self.connect_timeout,
            self.tls_ca.clone(),
        )
    }

    /// The 32-byte server secret shared by every instance on this Redis:
    /// `SET <prefix>:secret <random> NX`, then `GET`. The first instance to
    /// start creates it; every other one reads the same bytes, so all
    /// compute the same fingerprints and verify each other's tokens.
    pub async fn load_or_create_secret(&self) -> Result<[u8; 32], StoreError> {
        self.bounded("secret", async {
            let key = self.keys.secret();
            let mut fresh = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut fresh);
            let mut conn = self.conn();
            redis::cmd("SET")
                .arg(&key)
                .arg(&fresh[..])
                .arg("NX")
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| unavailable("SET secret", e))?;
            let stored: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("GET secret", e))?;
            stored.as_slice().try_into().map_err(|_| {
                StoreError::Unavailable(format!("{key} holds {} bytes, expected 32", stored.len()))
            })
        })
        .await
    }

    /// A value shared by every instance on this Redis under `<prefix>:<name>`:
    /// `SET NX` of `candidate`, then `GET`. The first instance's candidate
    /// wins; used for the client CA, so that every admin signs with the
    /// same one.
    pub async fn load_or_create_shared(
        &self,
        name: &str,
        candidate: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.bounded("shared value", async {
            let key = format!("{}:{name}", self.keys.prefix());
            let mut conn = self.conn();
            redis::cmd("SET")
                .arg(&key)
                .arg(candidate)
                .arg("NX")
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| unavailable("SET shared", e))?;
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("GET shared", e))
        })
        .await
    }

    /// Drops expired pending and granted requests (at most `per_bucket` of
    /// each kind per bucket) and gives their `--max-pending` slots back.
    /// Returns how many records were dropped. Correctness never depends on
    /// it (every read checks expiry against the clock, and Redis drops the
    /// request hashes by TTL); it keeps the indexes and `pending_count`
    /// close to the truth. It also repairs bucket copies of the lock state
    /// that a failed `set_lock_state` missed. The binaries' sweeper calls it
    /// every few seconds.
    pub async fn sweep(&self, now: UnixMillis, per_bucket: usize) -> Result<usize, StoreError> {
        self.bounded("sweep", async {
            let calls = (0..BUCKETS).map(|b| {
                let bk = self.keys.bucket_keys(b);
                let mut conn = self.conn();
                async move {
                    let mut cmd = self.scripts.sweep.evalsha(&[
                        &bk.pending,
                        &bk.pending_expiry,
                        &bk.granted,
                        &bk.granted_expiry,
                    ]);
                    cmd.arg(&bk.tag).arg(now.0).arg(per_bucket);
                    conn.eval(&self.scripts, &cmd).await
                }
            });
            let mut pending = 0;
            let mut total = 0;
            for reply in join_all(calls).await {
                let reply = reply.map_err(|e| unavailable("sweep", e))?;
                let Value::Array(items) = reply else {
                    return Err(bad_reply("sweep", BadReply("not an array".into())));
                };
                let p = items.first().and_then(record::int).unwrap_or(0);
                let g = items.get(1).and_then(record::int).unwrap_or(0);
                pending += p;
                total += p + g;
            }
            self.release_slots(pending).await;
            self.repair_lock_copies().await?;
            Ok(total as usize)
        })
        .await
    }

    /// Writes `<version>:<until>` to every bucket's copy of the lock state
    /// (and to the global key when `global`), unless a copy is newer.
    async fn write_lock_copies(
        &self,
        version: u64,
        until: u64,
        global: bool,
    ) -> Result<(), StoreError> {
        let mut keys: Vec<String> = (0..BUCKETS)
            .map(|b| self.keys.bucket_keys(b).lock)
            .collect();
        if global {
            keys.push(self.keys.lock());
        }
        let writes = keys.iter().map(|key| {
            let mut conn = self.conn();
            async move {
                let mut cmd = self.scripts.set_lock.evalsha(&[key]);
                cmd.arg(version).arg(until);
                conn.eval(&self.scripts, &cmd).await
            }
        });
        for r in join_all(writes).await {
            r.map_err(|e| unavailable("set lock copy", e))?;
        }
        Ok(())
    }

    /// Copies the global lock state to any bucket copy that missed it (a
    /// `set_lock_state` that failed half-way).
    async fn repair_lock_copies(&self) -> Result<(), StoreError> {
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys.lock())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| unavailable("GET lock", e))?;
        match parse_lock(v.as_deref()) {
            (0, _) => Ok(()),
            (version, until) => self.write_lock_copies(version, until, false).await,
        }
    }

    /// Gives `n` slots back to the `--max-pending` counter. A failure is
    /// logged, not returned: the transition it follows has happened, and a
    /// counter that stays too high only makes the cap stricter.
    async fn release_slots(&self, n: i64) {
        if n <= 0 {
            return;
        }
        let mut cmd = self.scripts.release.evalsha(&[&self.keys.pending_slots()]);
        cmd.arg(n);
        if let Err(e) = self.conn().eval(&self.scripts, &cmd).await {
            tracing::warn!(error = %e, slots = n, "could not give pending slots back; the --max-pending cap stays stricter by that many");
        }
    }

    /// `EVALSHA register` for `call` in `mode` (`decide`, `create`, or
    /// `counted`, which also names the global slot counter).
    fn register_cmd(&self, call: &RegisterCall<'_>, now: UnixMillis, mode: &str) -> redis::Cmd {
        let (uk, bk) = (&call.user, &call.bucket);
        let slots = self.keys.pending_slots();
        let mut keys: Vec<&str> = vec![
            &uk.request,
            &uk.user,
            &bk.pending,
            &bk.pending_expiry,
            &bk.granted,
            &bk.granted_expiry,
            &bk.lock,
        ];
        if mode == "counted" {
            keys.push(&slots);
        }
        let mut cmd = self.scripts.register.evalsha(&keys);
        let [ttl, collect, deny] = self.windows_ms;
        cmd.arg(call.username)
            .arg(&call.fingerprint)
            .arg(now.0)
            .arg(ttl)
            .arg(collect)
            .arg(deny)
            .arg(mode)
            .arg(&uk.tag)
            .arg(&call.source);
        cmd
    }

    async fn register_inner(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let call = RegisterCall {
            username: poll.username,
            user: self.keys.user_keys(poll.username),
            bucket: self.keys.bucket_keys_of(poll.username),
            fingerprint: hex::encode(poll.fingerprint.0),
            source: poll.source_addr.map(|a| a.to_string()).unwrap_or_default(),
        };
        let mut conn = self.conn();

        // On a single Redis a script may touch the global slot counter too,
        // so every poll, creating or not, is one round trip.
        if !self.is_cluster() {
            let mut cmd = self.register_cmd(&call, now, "counted");
            cmd.arg(self.max_pending).arg(record::create_fields(poll));
            let reply = conn
                .eval(&self.scripts, &cmd)
                .await
                .map_err(|e| unavailable("register", e))?;
            let (code, swept, rest) =
                record::split_reply(reply).map_err(|e| bad_reply("register", e))?;
            if code == "full" {
                return Err(StoreError::PendingLimit {
                    max: self.max_pending,
                });
            }
            self.release_slots(swept).await;
            return self.register_outcome(call.username, &code, rest);
        }

        // On a cluster the counter cannot share a slot with every bucket.
        // Round trip 1: decide, and apply anything but a creation.
        let cmd = self.register_cmd(&call, now, "decide");
        let reply = conn
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| unavailable("register", e))?;
        let (code, swept, rest) =
            record::split_reply(reply).map_err(|e| bad_reply("register", e))?;
        if code != "need_slot" {
            return self.register_outcome(poll.username, &code, rest);
        }

        // Round trip 2: a slot under --max-pending, after giving back the
        // slots of the expired requests the script just dropped.
        let mut reserve = self.scripts.reserve.evalsha(&[&self.keys.pending_slots()]);
        reserve.arg(self.max_pending).arg(swept);
        let count = conn
            .eval(&self.scripts, &reserve)
            .await
            .map_err(|e| unavailable("reserve", e))?;
        if record::int(&count).unwrap_or(-1) < 0 {
            return Err(StoreError::PendingLimit {
                max: self.max_pending,
            });
        }

        // Round trip 3: decide again and create. Only now is the credential
        // sealed (the one poll in a device's life that needs it).
        let mut cmd = self.register_cmd(&call, now, "create");
        cmd.arg(record::create_fields(poll));
        let reply = conn
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| unavailable("register", e))?;
        let (code, swept, rest) =
            record::split_reply(reply).map_err(|e| bad_reply("register", e))?;
        let unused_slot = i64::from(code != "create");
        self.release_slots(swept + unused_slot).await;
        self.register_outcome(call.username, &code, rest)
    }

    fn register_outcome(
        &self,
        username: &str,
        code: &str,
        rest: Vec<Value>,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        let decision = decision_of(code)
            .ok_or_else(|| bad_reply("register", BadReply(format!("decision {code:?}"))))?;
        let record = if decision == Decision::Collect {
            let f = record::fields(rest).map_err(|e| bad_reply("register", e))?;
            record::decode_request(username, &f).map_err(|e| bad_reply("register", e))?
        } else {
            None
        };
        Ok((decision, record))
    }

    /// Reads one request hash.
    async fn read_request(
        &self,
        conn: &mut Conn,
        username: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let key = self.keys.user_keys(username).request;
        let v: Value = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(|e| unavailable("HGETALL", e))?;
        let items = record::hash_items(v).map_err(|e| bad_reply("HGETALL", e))?;
        let f = record::fields(items).map_err(|e| bad_reply("HGETALL", e))?;
        record::decode_request(username, &f).map_err(|e| bad_reply("HGETALL", e))
    }

    /// Fails on a `WAIT` that came back with fewer replicas than required:
    /// the write is applied on the master but not acknowledged as durable.
    fn check_wait(&self, what: &str, acked: Option<i64>) -> Result<(), StoreError> {
        match (self.wait, acked) {
            (Some(w), Some(n)) if n < w.replicas as i64 => {
                tracing::warn!(
                    operation = what,
                    acked = n,
                    wanted = w.replicas,
                    "WAIT timed out"
                );
                Err(StoreError::Unavailable(format!(
                    "{what} reached {n} of {} replicas within {:?}",
                    w.replicas, w.timeout
                )))
            }
            _ => Ok(()),
        }
    }
}

impl RedisStore {
    /// Runs `deny.lua` or `forget.lua`, which take the same keys and
    /// arguments and reply `{outcome, swept}`: gives back the swept slot and
    /// returns the outcome.
    async fn end_request(
        &self,
        what: &'static str,
        script: &crate::scripts::Lua,
        username: &str,
        now: UnixMillis,
    ) -> Result<String, StoreError> {
        let uk = self.keys.user_keys(username);
        let bk = self.keys.bucket_keys_of(username);
        let mut cmd = script.evalsha(&[&uk.request, &bk.pending, &bk.pending_expiry]);
        let [ttl, collect, deny] = self.windows_ms;
        cmd.arg(username)
            .arg(now.0)
            .arg(ttl)
            .arg(collect)
            .arg(deny)
            .arg(&self.channel);
        let reply = self
            .conn()
            .eval(&self.scripts, &cmd)
            .await
            .map_err(|e| unavailable(what, e))?;
        let (code, swept, _) = record::split_reply(reply).map_err(|e| bad_reply(what, e))?;
        self.release_slots(swept).await;
        Ok(code)
    }
}

impl Store for RedisStore {
    async fn register(
        &self,
        poll: Poll<'_>,
        now: UnixMillis,
    ) -> Result<(Decision, Option<RequestRecord>), StoreError> {
        self.bounded("register", self.register_inner(poll, now))
            .await
    }

    async fn lock_state(&self) -> Result<LockState, StoreError> {
        self.bounded("lock_state", async {
            let v: Option<String> = redis::cmd("GET")
                .arg(self.keys.lock())
                .query_async(&mut self.conn())
                .await
                .map_err(|e| unavailable("GET lock", e))?;
            let (_, until) = parse_lock(v.as_deref());
            Ok(LockState {
                unlocked_until: (until > 0).then_some(UnixMillis(until)),
            })
        })
        .await
    }

    async fn set_lock_state(&self, state: LockState) -> Result<(), StoreError> {
        let until = state.unlocked_until.map_or(0, |u| u.0.max(1));
        self.bounded("set_lock_state", async {
            let version: u64 = redis::cmd("INCR")
                .arg(self.keys.lock_version())
                .query_async(&mut self.conn())
                .await
                .map_err(|e| unavailable("INCR lock-version", e))?;
            // The global key and the 64 bucket copies at once. A copy only
            // moves to a newer version, so concurrent calls converge on the
            // later one everywhere; a call that fails half-way is repaired
            // by the caller's retry or by the next `sweep`.
            self.write_lock_copies(version, until, true).await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(StoreEvent::Lock(state).encode())
                .query_async::<i64>(&mut self.conn())
                .await
                .map_err(|e| unavailable("PUBLISH", e))?;
            Ok(())
        })
        .await
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        self.bounded("pending_count", async {
            let counts = (0..BUCKETS).map(|b| {
                let key = self.keys.bucket_keys(b).pending;
                let mut conn = self.conn();
                async move {
                    redis::cmd("ZCARD")
                        .arg(key)
                        .query_async::<usize>(&mut conn)
                        .await
                }
            });
            let mut total = 0;
            for n in join_all(counts).await {
                total += n.map_err(|e| unavailable("ZCARD", e))?;
            }
            Ok(total)
        })
        .await
    }

    async fn get_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.bounded("get_request", async {
            let r = self.read_request(&mut self.conn(), username).await?;
            Ok(r.filter(|r| self.windows.is_live(r, now)))
        })
        .await
    }

    async fn list_requests(
        &self,
        query: &ListQuery,
        now: UnixMillis,
    ) -> Result<Page<RequestRecord>, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (min, max) = lex_range(
            query.prefix.as_deref().unwrap_or(""),
            query.cursor.as_deref(),
        );
        self.bounded("list_requests", async {
            // Each bucket walks its index from the cursor and returns its
            // next live usernames; `page::merge` asks until the page is exact.
            let fetch = |b: usize, min: Vec<u8>, n: usize| {
                let bk = self.keys.bucket_keys(b);
                let max = &max;
                let mut conn = self.conn();
                async move {
                    let (index, expiry) = match query.state {
                        ListState::Pending => (&bk.pending, &bk.pending_expiry),
                        ListState::Granted => (&bk.granted, &bk.granted_expiry),
                    };
                    let mut cmd = self.scripts.list.evalsha(&[index, expiry]);
                    cmd.arg(min).arg(max).arg(n).arg(now.0);
                    let reply = conn
                        .eval(&self.scripts, &cmd)
                        .await
                        .map_err(|e| unavailable("list", e))?;
                    let Value::Array(names) = reply else {
                        return Err(bad_reply("list", BadReply("not an array".into())));
                    };
                    Ok(names
                        .iter()
                        .filter_map(record::text)
                        .map(str::to_owned)
                        .collect())
                }
            };
            let (keys, more) = page::merge(BUCKETS, &min, limit, fetch).await?;
            let next_cursor = if more { keys.last().cloned() } else { None };
            // Only the records of the page are read.
            let reads = keys.iter().map(|k| {
                let mut conn = self.conn();
                async move { self.read_request(&mut conn, k).await }
            });
            let mut items = Vec::with_capacity(keys.len());
            for r in join_all(reads).await {
                let wanted = |r: &RequestRecord| match query.state {
                    ListState::Pending => r.state == RequestState::Pending,
                    ListState::Granted => matches!(r.state, RequestState::Granted { .. }),
                };
                if let Some(r) = r?.filter(|r| self.windows.is_live(r, now) && wanted(r)) {
                    items.push(r);
                }
            }
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn commit_grant(
        &self,
        grant: GrantCommit,
        now: UnixMillis,
    ) -> Result<GrantResult, StoreError> {
        self.bounded("commit_grant", async {
            let username = grant.username.as_str();
            let uk = self.keys.user_keys(username);
            let bk = self.keys.bucket_keys_of(username);
            let mut cmd = self.scripts.grant.evalsha(&[
                &uk.request,
                &uk.user,
                &bk.pending,
                &bk.pending_expiry,
                &bk.granted,
                &bk.granted_expiry,
                &bk.users,
            ]);
            let [ttl, collect, deny] = self.windows_ms;
            cmd.arg(username)
                .arg(hex::encode(grant.fingerprint.0))
                .arg(now.0)
                .arg(ttl)
                .arg(collect)
                .arg(deny)
                .arg(grant.granted_at.0)
                .arg(to_json(&grant.user))
                .arg(to_json(&grant.user.roles))
                .arg(to_json(&grant.user.permissions))
                .arg(&self.channel)
                .arg(grant.certificate.as_deref().unwrap_or(""));
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| unavailable("grant", e))?;
            let (code, swept, rest) =
                record::split_reply(reply).map_err(|e| bad_reply("grant", e))?;
            let read = |rest| -> Result<RequestRecord, StoreError> {
                let f = record::fields(rest).map_err(|e| bad_reply("grant", e))?;
                record::decode_request(username, &f)
                    .map_err(|e| bad_reply("grant", e))?
                    .ok_or_else(|| bad_reply("grant", BadReply("granted record missing".into())))
            };
            let result = match code.as_str() {
                "granted" => {
                    self.release_slots(swept).await;
                    self.check_wait("grant", acked)?;
                    GrantResult::Granted(read(rest)?)
                }
                "already" => GrantResult::AlreadyGranted(read(rest)?),
                "not_found" => GrantResult::NotFound,
                "other_granted" => {
                    GrantResult::Conflict("a different request for this username was granted")
                }
                "user_exists" => GrantResult::Conflict("a user with this username already exists"),
                "changed" => GrantResult::Conflict(
                    "the pending request changed since it was read; read it again",
                ),
                "denied" => GrantResult::Conflict("the request was denied"),
                other => {
                    return Err(bad_reply("grant", BadReply(format!("outcome {other:?}"))));
                }
            };
            Ok(result)
        })
        .await
    }

    async fn deny(&self, username: &str, now: UnixMillis) -> Result<DenyResult, StoreError> {
        self.bounded("deny", async {
            match self
                .end_request("deny", &self.scripts.deny, username, now)
                .await?
                .as_str()
            {
                "denied" => Ok(DenyResult::Denied),
                "not_found" => Ok(DenyResult::NotFound),
                "already_granted" => Ok(DenyResult::AlreadyGranted),
                other => Err(bad_reply("deny", BadReply(format!("outcome {other:?}")))),
            }
        })
        .await
    }

    async fn forget_request(
        &self,
        username: &str,
        now: UnixMillis,
    ) -> Result<ForgetResult, StoreError> {
        self.bounded("forget_request", async {
            match self
                .end_request("forget", &self.scripts.forget, username, now)
                .await?
                .as_str()
            {
                "forgotten" => Ok(ForgetResult::Forgotten),
                "not_found" => Ok(ForgetResult::NotFound),
                "granted" => Ok(ForgetResult::Granted),
                other => Err(bad_reply("forget", BadReply(format!("outcome {other:?}")))),
            }
        })
        .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.bounded("get_user", self.get_user_unbounded(username))
            .await
    }

    async fn list_users(&self, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (min, max) = lex_range(
            query.prefix.as_deref().unwrap_or(""),
            query.cursor.as_deref(),
        );
        self.bounded("list_users", async {
            let fetch = |b: usize, min: Vec<u8>, n: usize| {
                let key = self.keys.bucket_keys(b).users;
                let max = &max;
                let mut conn = self.conn();
                async move {
                    redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg(min)
                        .arg(max)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(n)
                        .query_async::<Vec<String>>(&mut conn)
                        .await
                        .map_err(|e| unavailable("ZRANGEBYLEX", e))
                }
            };
            let (keys, more) = page::merge(BUCKETS, &min, limit, fetch).await?;
            let next_cursor = if more { keys.last().cloned() } else { None };
            let reads = keys.iter().map(|k| self.get_user_unbounded(k));
            let mut items = Vec::with_capacity(keys.len());
            for u in join_all(reads).await {
                items.extend(u?);
            }
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.bounded("put_user", async {
            let uk = self.keys.user_keys(&user.username);
            let bk = self.keys.bucket_keys_of(&user.username);
            let mut cmd = self.scripts.put_user.evalsha(&[&uk.user, &bk.users]);
            cmd.arg(&user.username)
                .arg(to_json(&user))
                .arg(&self.channel);
            let (_, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| unavailable("put_user", e))?;
            self.check_wait("put_user", acked)
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        self.bounded("delete_user", async {
            let uk = self.keys.user_keys(username);
            let bk = self.keys.bucket_keys_of(username);
            let mut cmd = self.scripts.delete_user.evalsha(&[
                &uk.user,
                &bk.users,
                &uk.request,
                &bk.granted,
                &bk.granted_expiry,
            ]);
            cmd.arg(username).arg(&self.channel);
            let (reply, acked) = self
                .durable_conn()
                .eval_durable(&self.scripts, &cmd, self.wait)
                .await
                .map_err(|e| unavailable("delete_user", e))?;
            self.check_wait("delete_user", acked)?;
            Ok(record::int(&reply) == Some(1))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", async {
            redis::cmd("PING")
                .query_async::<Value>(&mut self.conn())
                .await
                .map_err(|e| unavailable("PING", e))?;
            Ok(())
        })
        .await
    }
}

impl RedisStore {
    /// `get_user` without its own timeout, for use inside a bounded listing.
    async fn get_user_unbounded(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.user_keys(username).user)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| unavailable("GET user", e))?;
        v.map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| bad_reply("GET user", BadReply(e.to_string())))
    }
}

/// What every `register` script call of one poll passes.
struct RegisterCall<'a> {
    username: &'a str,
    user: UserKeys,
    bucket: BucketKeys,
    fingerprint: String,
    /// The source address, or empty.
    source: String,
}

/// JSON of a value the scripts store verbatim. The registry's records
/// serialise infallibly (plain structs, string-keyed maps only).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
