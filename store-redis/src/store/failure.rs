//! How a failed Redis call or an unreadable reply becomes a `StoreError`
//! that says who caused it.
//!
//! Every part of the store maps its errors through [`redis_error`] (a call
//! that failed) or [`corrupt`] (a reply or record this version cannot
//! read), so the choice between an outage and a bug is made here, once:
//!
//! | what happened | variant | status |
//! |---|---|---|
//! | no connection, I/O error, timeout | `Unavailable` | 503 |
//! | Redis refuses for now: `OOM`, `READONLY`, `LOADING`, `BUSY`, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `MISCONF`, `NOREPLICAS`, … | `Unavailable` | 503 |
//! | `WAIT` fell short (`RedisStore::check_wait`) | `Unavailable` | 503 |
//! | a reply of the wrong type or shape, a record that does not decode | `Corrupt` | 500 |
//! | `WRONGTYPE` (one of our keys holds another type) | `Corrupt` | 500 |
//! | a script failed on what it found (`ERR … user_script …`), `CROSSSLOT` | `Corrupt` | 500 |
//!
//! An error Redis may send that is not in the table is `Unavailable`:
//! retrying is harmless, and a bug would show up as `Corrupt` elsewhere.
//! A `Corrupt` answer is logged at error level where it is made.

use fleetgate_registry::store::StoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::record::BadReply;

/// Who caused a failed Redis call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// Redis is down, slow or refusing for now: retrying later may work.
    Outage,
    /// Redis holds or answered something this version cannot read.
    Corrupt,
}

fn cause_of(e: &RedisError) -> Cause {
    match e.kind() {
        // A reply redis-rs could not convert to the type asked for.
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Cause::Corrupt,
        // Keys of one script in different slots: a bug in the key schema.
        ErrorKind::Server(ServerErrorKind::CrossSlot) => Cause::Corrupt,
        // A Lua runtime error: the script failed on the data it read (or
        // has a bug). An `OOM` or `BUSY` inside a script keeps its own code.
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if e.detail().is_some_and(|d| d.contains("user_script")) =>
        {
            Cause::Corrupt
        }
        // One of our keys holds another type than the schema says.
        ErrorKind::Extension if e.code() == Some("WRONGTYPE") => Cause::Corrupt,
        _ => Cause::Outage,
    }
}

/// A Redis call that failed, as the error its cause calls for.
pub(super) fn redis_error(what: &str, e: RedisError) -> StoreError {
    match cause_of(&e) {
        Cause::Outage => {
            tracing::warn!(operation = what, error = %e, "redis call failed");
            StoreError::Unavailable(format!("redis {what}: {e}"))
        }
        Cause::Corrupt => {
            tracing::error!(operation = what, error = %e, "redis refused what it found in our keys");
            StoreError::Corrupt(format!("redis {what}: {e}"))
        }
    }
}

/// A reply or stored record that is not what the command, script or
/// schema promises: a bug, a version mismatch or a foreign writer.
pub(super) fn corrupt(what: &str, e: BadReply) -> StoreError {
    tracing::error!(operation = what, error = %e, "unreadable redis reply");
    StoreError::Corrupt(format!("redis {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kind: ServerErrorKind, detail: &str) -> RedisError {
        RedisError::from((ErrorKind::Server(kind), "server error", detail.to_owned()))
    }

    #[test]
    fn outages_are_unavailable() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let timeout = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ));
        for e in [
            io,
            timeout,
            server(ServerErrorKind::ReadOnly, "You can't write against a read only replica."),
            server(ServerErrorKind::BusyLoading, "Redis is loading the dataset in memory"),
            server(ServerErrorKind::ClusterDown, "The cluster is down"),
            server(ServerErrorKind::TryAgain, "Multiple keys request during rehashing of slot"),
            server(ServerErrorKind::MasterDown, "Link with MASTER is down"),
            server(ServerErrorKind::NoScript, "No matching script."),
            server(ServerErrorKind::ResponseError, "max number of clients reached"),
            redis::make_extension_error("OOM".into(), Some("command not allowed when used memory > 'maxmemory'. script: 1f2e, on @user_script:9.".into())),
            redis::make_extension_error("BUSY".into(), Some("Redis is busy running a script.".into())),
            redis::make_extension_error("NOREPLICAS".into(), Some("Not enough good replicas to write.".into())),
            redis::make_extension_error("MISCONF".into(), Some("Errors writing to the AOF file".into())),
        ] {
            assert_eq!(cause_of(&e), Cause::Outage, "{e}");
            assert!(matches!(redis_error("t", e), StoreError::Unavailable(_)));
        }
    }

    #[test]
    fn unreadable_replies_and_keys_are_corrupt() {
        for e in [
            RedisError::from((ErrorKind::Parse, "Response was of incompatible type")),
            RedisError::from((ErrorKind::UnexpectedReturnType, "not an integer")),
            redis::make_extension_error(
                "WRONGTYPE".into(),
                Some("Operation against a key holding the wrong kind of value".into()),
            ),
            server(
                ServerErrorKind::ResponseError,
                "user_script:31: attempt to perform arithmetic on a nil value script: 1f2e, on @user_script:31.",
            ),
            server(ServerErrorKind::CrossSlot, "Keys in request don't hash to the same slot"),
        ] {
            assert_eq!(cause_of(&e), Cause::Corrupt, "{e}");
            let mapped = redis_error("t", e);
            assert!(mapped.is_internal(), "{mapped:?}");
        }
        assert!(corrupt("t", BadReply("x".into())).is_internal());
    }
}
