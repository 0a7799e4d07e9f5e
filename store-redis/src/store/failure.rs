//! How a failed Redis call or an unreadable reply becomes a `StoreError`.
//!
//! Every part of the store maps its errors through these two functions, so
//! the choice between an outage and a bug is made in one place.

use fleetgate_registry::store::StoreError;
use redis::RedisError;

use crate::record::BadReply;

/// A Redis call that failed.
pub(super) fn unavailable(what: &str, e: RedisError) -> StoreError {
    tracing::warn!(operation = what, error = %e, "redis call failed");
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

/// A reply that is not what the command or script promises.
pub(super) fn bad_reply(what: &str, e: BadReply) -> StoreError {
    // A reply we cannot read is a bug (or a foreign writer in our
    // namespace). The trait has no error for that; the caller answers 503
    // and the log says why.
    tracing::error!(operation = what, error = %e, "unexpected redis reply");
    StoreError::Unavailable(format!("redis {what}: {e}"))
}
