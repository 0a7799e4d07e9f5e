//! Time as the registry sees it: whole milliseconds since the Unix epoch.
//!
//! Every decision takes the current time as an argument instead of reading a
//! clock, so tests can move time without sleeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The wall clock now.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMillis(since.as_millis() as u64)
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        UnixMillis(self.0.saturating_add(d.as_millis() as u64))
    }

    /// The time left from `now` until `self`, zero when it has passed.
    pub fn remaining_after(self, now: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now.0))
    }

    /// RFC 3339 with millisecond precision, in UTC.
    pub fn to_rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// Whole seconds since the epoch (for JWT claims).
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            UnixMillis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn remaining_saturates() {
        assert_eq!(UnixMillis(5).remaining_after(UnixMillis(9)), Duration::ZERO);
        assert_eq!(
            UnixMillis(9).remaining_after(UnixMillis(5)),
            Duration::from_millis(4)
        );
    }
}
