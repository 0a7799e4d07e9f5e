//! The registration decision: a pure function of (request, known state, clock).
//!
//! Steps 1 and 2 of the decision order (400 `invalid`, 422 `policy`) are
//! decided by [`crate::request`] before any state is read. This module decides
//! steps 3 to 5 from what the store knows about the username. It performs no
//! I/O; a store calls it while it holds whatever makes its read-decide-write
//! atomic, then applies the returned [`Decision`].

use std::time::Duration;

use crate::clock::UnixMillis;
use crate::fingerprint::Fingerprint;
use crate::model::{RequestRecord, RequestState};

/// How long each kind of record stays meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// A pending request that stops polling is forgotten after this long.
    pub pending_ttl: Duration,
    /// A granted request can be collected (201 again) for this long.
    pub collect_window: Duration,
    /// A denied request is answered 403 for this long, then forgotten.
    pub deny_window: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            pending_ttl: Duration::from_secs(15 * 60),
            collect_window: Duration::from_secs(10 * 60),
            deny_window: Duration::from_secs(10 * 60),
        }
    }
}

impl Windows {
    /// When a request in `state`, last polled at `last_seen`, stops counting.
    pub fn expiry(&self, state: RequestState, last_seen: UnixMillis) -> UnixMillis {
        match state {
            RequestState::Pending => last_seen.plus(self.pending_ttl),
            RequestState::Granted { granted_at } => granted_at.plus(self.collect_window),
            RequestState::Denied { denied_at } => denied_at.plus(self.deny_window),
        }
    }

    /// When `record` stops counting, given its state.
    pub fn expires_at(&self, record: &RequestRecord) -> UnixMillis {
        self.expiry(record.state, record.last_seen)
    }

    /// Whether `record` still counts at `now`.
    pub fn is_live(&self, record: &RequestRecord, now: UnixMillis) -> bool {
        now < self.expires_at(record)
    }
}

/// The parts of a stored request the decision reads. Stores that keep
/// requests in their own layout (the embedded store's compact pending
/// entries) hand this over instead of a whole [`RequestRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSummary<'a> {
    pub fingerprint: &'a Fingerprint,
    pub state: RequestState,
    pub last_seen: UnixMillis,
}

impl RequestSummary<'_> {
    /// Whether the request still counts at `now`.
    pub fn is_live(&self, windows: &Windows, now: UnixMillis) -> bool {
        now < windows.expiry(self.state, self.last_seen)
    }
}

impl<'a> From<&'a RequestRecord> for RequestSummary<'a> {
    fn from(r: &'a RequestRecord) -> Self {
        RequestSummary {
            fingerprint: &r.fingerprint,
            state: r.state,
            last_seen: r.last_seen,
        }
    }
}

/// The registry's lock: unlocked until a point in time, otherwise locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockState {
    pub unlocked_until: Option<UnixMillis>,
}

impl LockState {
    pub fn is_unlocked(&self, now: UnixMillis) -> bool {
        self.unlocked_until.is_some_and(|until| now < until)
    }

    /// The unlock deadline if it is still in the future.
    pub fn active_until(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.unlocked_until.filter(|until| now < *until)
    }
}

/// What the store knows about the username of an incoming request.
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    /// A user with this username exists.
    pub user_exists: bool,
    /// The request for this username, if any (possibly expired; the
    /// decision checks that against the clock).
    pub request: Option<RequestSummary<'a>>,
}

/// The outcome of steps 3 to 5, and the state change it implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 201 `granted`: the same request was granted and is still collectable.
    Collect,
    /// 202 `pending`: the same request is pending; refresh its `last_seen`.
    StillPending,
    /// 423 `locked`: the same request is pending but the registry is locked;
    /// it stays pending (refreshed) and can still be granted.
    PendingWhileLocked,
    /// 409 `conflict`: the username is taken by a user or by a different
    /// request. Nothing changes.
    Conflict,
    /// 403 `denied`: this request was denied recently. Nothing changes.
    Denied,
    /// 423 `locked`: no request is known and the registry is locked. Nothing
    /// is stored.
    Locked,
    /// 202 `pending`: no request is known and the registry is unlocked;
    /// create the pending request.
    Create,
}

impl Decision {
    /// Whether applying this decision refreshes the stored pending request.
    pub fn refreshes(self) -> bool {
        matches!(self, Decision::StillPending | Decision::PendingWhileLocked)
    }
}

/// Decides steps 3 to 5 of the decision order for a request with fingerprint
/// `fp`.
///
/// With `preauthorized` (a `whileLocked` rule claimed the device), step 5
/// creates even while locked; nothing else changes.
pub fn decide(
    fp: &Fingerprint,
    known: Known<'_>,
    lock: LockState,
    now: UnixMillis,
    windows: &Windows,
    preauthorized: bool,
) -> Decision {
    let request = known.request.filter(|r| r.is_live(windows, now));
    let same = request.is_some_and(|r| r.fingerprint == fp);

    // 3. The username belongs to an existing user: only the collection of
    // the very request that was granted succeeds.
    if known.user_exists {
        return match request {
            Some(r) if same && matches!(r.state, RequestState::Granted { .. }) => Decision::Collect,
            _ => Decision::Conflict,
        };
    }

    // 4. A request for this username is already known.
    if let Some(r) = request {
        if !same {
            return Decision::Conflict;
        }
        return match r.state {
            RequestState::Granted { .. } => Decision::Collect,
            RequestState::Denied { .. } => Decision::Denied,
            RequestState::Pending if lock.is_unlocked(now) => Decision::StillPending,
            RequestState::Pending => Decision::PendingWhileLocked,
        };
    }

    // 5. Nothing known.
    if lock.is_unlocked(now) || preauthorized {
        Decision::Create
    } else {
        Decision::Locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Transport;

    const T0: UnixMillis = UnixMillis(1_000_000);

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn record(state: RequestState, fpb: u8, last_seen: UnixMillis) -> RequestRecord {
        RequestRecord {
            certificate: None,
            username: "dev01".into(),
            fingerprint: fp(fpb),
            state,
            transport: Transport::Http,
            sealed: vec![],
            roles: vec![],
            permissions: vec![],
            context: None,
            source_addr: None,
            client_id: None,
            first_seen: last_seen,
            last_seen,
            polls: 1,
            decided_by: None,
        }
    }

    fn unlocked() -> LockState {
        LockState {
            unlocked_until: Some(T0.plus(Duration::from_secs(60))),
        }
    }

    fn locked() -> LockState {
        LockState::default()
    }

    fn run(
        user: bool,
        req: Option<&RequestRecord>,
        lock: LockState,
        now: UnixMillis,
        f: u8,
    ) -> Decision {
        decide(
            &fp(f),
            Known {
                user_exists: user,
                request: req.map(Into::into),
            },
            lock,
            now,
            &Windows::default(),
            false,
        )
    }

    #[test]
    fn nothing_known() {
        assert_eq!(run(false, None, locked(), T0, 1), Decision::Locked);
        assert_eq!(run(false, None, unlocked(), T0, 1), Decision::Create);
    }

    #[test]
    fn preauthorized_creates_while_locked_and_changes_nothing_else() {
        let decide_pre = |user, req: Option<&RequestRecord>, lock| {
            decide(
                &fp(1),
                Known {
                    user_exists: user,
                    request: req.map(Into::into),
                },
                lock,
                T0,
                &Windows::default(),
                true,
            )
        };
        assert_eq!(decide_pre(false, None, locked()), Decision::Create);
        assert_eq!(decide_pre(true, None, locked()), Decision::Conflict);
        let d = record(RequestState::Denied { denied_at: T0 }, 1, T0);
        assert_eq!(decide_pre(false, Some(&d), locked()), Decision::Denied);
        let p = record(RequestState::Pending, 1, T0);
        assert_eq!(
            decide_pre(false, Some(&p), locked()),
            Decision::PendingWhileLocked
        );
    }

    #[test]
    fn unlock_expires_by_the_clock() {
        let lock = LockState {
            unlocked_until: Some(T0),
        };
        assert_eq!(
            run(false, None, lock, UnixMillis(T0.0 - 1), 1),
            Decision::Create
        );
        assert_eq!(run(false, None, lock, T0, 1), Decision::Locked);
    }

    #[test]
    fn pending_same_and_different() {
        let p = record(RequestState::Pending, 1, T0);
        assert_eq!(
            run(false, Some(&p), unlocked(), T0, 1),
            Decision::StillPending
        );
        assert_eq!(
            run(false, Some(&p), locked(), T0, 1),
            Decision::PendingWhileLocked
        );
        assert_eq!(run(false, Some(&p), unlocked(), T0, 2), Decision::Conflict);
        assert_eq!(run(false, Some(&p), locked(), T0, 2), Decision::Conflict);
    }

    #[test]
    fn expired_pending_is_forgotten() {
        let p = record(RequestState::Pending, 1, T0);
        let later = T0.plus(Windows::default().pending_ttl);
        let lock = LockState {
            unlocked_until: Some(later.plus(Duration::from_secs(1))),
        };
        // Another device may now take the username.
        assert_eq!(run(false, Some(&p), lock, later, 2), Decision::Create);
    }

    #[test]
    fn granted_is_collectable_even_while_locked_then_conflicts() {
        let g = record(RequestState::Granted { granted_at: T0 }, 1, T0);
        assert_eq!(run(true, Some(&g), locked(), T0, 1), Decision::Collect);
        assert_eq!(run(false, Some(&g), locked(), T0, 1), Decision::Collect);
        assert_eq!(run(true, Some(&g), unlocked(), T0, 2), Decision::Conflict);
        let after = T0.plus(Windows::default().collect_window);
        assert_eq!(run(true, Some(&g), locked(), after, 1), Decision::Conflict);
    }

    #[test]
    fn existing_user_without_request_conflicts() {
        assert_eq!(run(true, None, unlocked(), T0, 1), Decision::Conflict);
        let p = record(RequestState::Pending, 1, T0);
        assert_eq!(run(true, Some(&p), unlocked(), T0, 1), Decision::Conflict);
    }

    #[test]
    fn denied_for_a_while() {
        let d = record(RequestState::Denied { denied_at: T0 }, 1, T0);
        assert_eq!(run(false, Some(&d), unlocked(), T0, 1), Decision::Denied);
        assert_eq!(run(false, Some(&d), locked(), T0, 1), Decision::Denied);
        assert_eq!(run(false, Some(&d), unlocked(), T0, 2), Decision::Conflict);
        let after = T0.plus(Windows::default().deny_window);
        let lock = LockState {
            unlocked_until: Some(after.plus(Duration::from_secs(1))),
        };
        assert_eq!(run(false, Some(&d), lock, after, 1), Decision::Create);
    }
}
