//! Values every instance on one Redis shares: the server secret and named
//! blobs such as the client CA.
//!
//! Each is `SET <key> <candidate> NX`, then `GET`: the first instance to
//! start creates the value, every later one reads the same bytes. So all
//! instances compute the same fingerprints, verify each other's tokens and
//! sign with the same CA.

use fleetgate_registry::store::StoreError;
use rand::RngCore;
use redis::Value;

use super::failure::{corrupt, redis_error};
use super::RedisStore;
use crate::record::BadReply;

impl RedisStore {
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
                .map_err(|e| redis_error("SET secret", e))?;
            let stored: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("GET secret", e))?;
            stored.as_slice().try_into().map_err(|_| {
                corrupt(
                    "GET secret",
                    BadReply(format!("{key} holds {} bytes, expected 32", stored.len())),
                )
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
                .map_err(|e| redis_error("SET shared", e))?;
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("GET shared", e))
        })
        .await
    }
}
