//! One connection handle over a single Redis or a Redis Cluster, with the
//! reconnection, timeout and script-reload behaviour the store relies on.
//!
//! - **Single**: a redis-rs `ConnectionManager`, one multiplexed TCP
//!   connection that every caller shares (concurrent commands are pipelined
//!   on it). When the connection drops it reconnects in the background, with
//!   a short capped backoff so that a restarted server is found again within
//!   a fraction of a second.
//! - **Cluster**: a redis-rs async `ClusterConnection`, one multiplexed
//!   connection per node, routing each command by the slot of its first key
//!   and following `MOVED`/`ASK` after a failover or resharding.
//!
//! Both are cheap to clone (a handle to shared state). Every command also has
//! a response timeout; the store additionally bounds each whole method (see
//! `RedisStore::bounded`), so nothing waits longer than `op_timeout`.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::config::{Topology, WaitReplicas};
use crate::scripts::Scripts;

/// A connection to wherever the data lives.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl Conn {
    /// Connects (the first connection is made before this returns) with
    /// `op_timeout` as the response timeout of every command.
    pub async fn connect(
        topology: &Topology,
        op_timeout: Duration,
        connect_timeout: Duration,
        tls_ca: Option<&[u8]>,
    ) -> RedisResult<Conn> {
        // A single connect attempt may use at most the time of one operation.
        let attempt = connect_timeout.min(op_timeout);
        match topology {
            Topology::Single(url) => {
                let client = crate::config::client(url, tls_ca)?;
                // Reconnect quickly: a 50 ms first delay, doubling, capped at
                // 250 ms, so a restarted server is found within 250 ms of
                // coming back. After the retries run out, the next command
                // starts a new round.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(attempt))
                    .set_response_timeout(Some(op_timeout))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(250))
                    .set_number_of_retries(8);
                let manager = ConnectionManager::new_with_config(client, config).await?;
                Ok(Conn::Single(manager))
            }
            Topology::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(attempt)
                    .response_timeout(op_timeout)
                    .overall_response_timeout(Some(op_timeout))
                    // The defaults wait seconds between retries; a failover
                    // takes about a second, and the whole call must fit in
                    // `op_timeout`.
                    .retries(4)
                    .min_retry_wait(20)
                    .max_retry_wait(250)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Loads every script (on a cluster, `SCRIPT LOAD` goes to every master).
    pub async fn load_scripts(&mut self, scripts: &Scripts) -> RedisResult<()> {
        for lua in scripts.all() {
            if let Err(e) = lua.load_cmd().query_async::<Value>(self).await {
                tracing::warn!(script = lua.name, error = %e, "SCRIPT LOAD failed");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs one `EVALSHA`; after a `NOSCRIPT` (the server lost its script
    /// cache: restart, failover, `SCRIPT FLUSH`) loads the scripts and
    /// retries once. A script that failed with `NOSCRIPT` never ran, so the
    /// retry cannot apply a transition twice.
    pub async fn eval(&mut self, scripts: &Scripts, cmd: &Cmd) -> RedisResult<Value> {
        match cmd.query_async::<Value>(self).await {
            Err(e) if is_noscript(&e) => {
                self.load_scripts(scripts).await?;
                cmd.query_async(self).await
            }
            other => other,
        }
    }

    /// Runs one `EVALSHA`, followed in the same pipeline by `WAIT` when
    /// configured. Returns the script's reply and, with `WAIT`, how many
    /// replicas acknowledged. On a cluster the pipeline goes to the master of
    /// the script's slot (`WAIT` has no key), which is the node that took the
    /// write, on the same connection, as `WAIT` requires.
    pub async fn eval_durable(
        &mut self,
        scripts: &Scripts,
        cmd: &Cmd,
        wait: Option<WaitReplicas>,
    ) -> RedisResult<(Value, Option<i64>)> {
        let Some(wait) = wait else {
            return Ok((self.eval(scripts, cmd).await?, None));
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone())
            .cmd("WAIT")
            .arg(wait.replicas)
            .arg(wait.timeout.as_millis() as u64);
        let result = match pipe.query_async::<(Value, i64)>(self).await {
            Err(e) if is_noscript(&e) => {
                self.load_scripts(scripts).await?;
                pipe.query_async::<(Value, i64)>(self).await
            }
            other => other,
        };
        let (value, acked) = result?;
        Ok((value, Some(acked)))
    }

    /// Runs several `EVALSHA`s as one pipeline, followed by one `WAIT` when
    /// configured. On a cluster a pipeline goes to one node, and redis-rs
    /// refuses one whose keys span slots: there the scripts must all be in
    /// one bucket (one hash tag), and `WAIT` runs on that bucket's master,
    /// the node that took the writes. Returns
    /// every script's reply, in order, and with `WAIT` how many replicas
    /// acknowledged them all. After a `NOSCRIPT` the scripts are loaded and
    /// the pipeline sent again: the server lost its script cache before the
    /// pipeline ran, so none of it ran (a grant that did run answers
    /// `already` the second time).
    pub async fn eval_pipeline(
        &mut self,
        scripts: &Scripts,
        cmds: &[Cmd],
        wait: Option<WaitReplicas>,
    ) -> RedisResult<(Vec<Value>, Option<i64>)> {
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        if let Some(wait) = wait {
            pipe.cmd("WAIT")
                .arg(wait.replicas)
                .arg(wait.timeout.as_millis() as u64);
        }
        let mut replies = match pipe.query_async::<Vec<Value>>(self).await {
            Err(e) if is_noscript(&e) => {
                self.load_scripts(scripts).await?;
                pipe.query_async::<Vec<Value>>(self).await?
            }
            other => other?,
        };
        let acked = match wait {
            Some(_) => match replies.pop() {
                Some(Value::Int(n)) => Some(n),
                other => {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "WAIT did not answer an integer",
                        format!("{other:?}"),
                    )))
                }
            },
            None => None,
        };
        Ok((replies, acked))
    }
}
