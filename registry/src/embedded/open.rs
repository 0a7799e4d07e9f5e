//! The embedded store's in-memory layout for pending and denied requests.
//!
//! A registry with a million devices waiting holds a million of these, so
//! the layout is chosen for bytes per request (measured in
//! docs/BENCHMARKS.md):
//! - the map key is a [`CompactString`]: usernames up to 24 bytes sit
//!   inline in the B-tree node, with no heap copy, and a search compares
//!   them without following a pointer;
//! - the username is not stored again in the value (the key is it);
//! - a short sealed secret (a password of up to 21 bytes) is stored inline;
//! - the transport and source address take 20 bytes together ([`Origin`]),
//!   where `Option<SocketAddr>` alone takes 32;
//! - what only some devices send (roles, permissions, context, an MQTT
//!   client id) is boxed, and absent when empty.
//!
//! [`OpenRequest::to_record`] rebuilds the public [`RequestRecord`] for
//! reads; the hot path (a re-poll) never does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use compact_str::CompactString;

use crate::clock::UnixMillis;
use crate::decision::{RequestSummary, Windows};
use crate::fingerprint::Fingerprint;
use crate::model::{DecidedBy, Permission, RequestRecord, RequestState, Transport};
use crate::store::Poll;

/// A pending or denied request, without its username (the map key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRequest {
    pub fingerprint: Fingerprint,
    /// `Pending` or `Denied` (granted requests move to the granted map).
    pub state: RequestState,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub sealed: Sealed,
    pub origin: Origin,
    pub extras: Option<Box<Extras>>,
    /// Saturates at `u32::MAX`.
    pub polls: u32,
}

/// The fields only some requests carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub context: Option<String>,
    pub client_id: Option<String>,
    /// The rule that denied the request, if one did.
    pub decided_by: Option<DecidedBy>,
}

impl Extras {
    /// `None` when there is nothing to keep.
    fn boxed(self) -> Option<Box<Extras>> {
        (self != Extras::default()).then(|| Box::new(self))
    }
}

impl OpenRequest {
    /// What the decision reads.
    pub fn summary(&self) -> RequestSummary<'_> {
        RequestSummary {
            fingerprint: &self.fingerprint,
            state: self.state,
            last_seen: self.last_seen,
        }
    }

    pub fn is_live(&self, windows: &Windows, now: UnixMillis) -> bool {
        self.summary().is_live(windows, now)
    }

    pub fn is_pending(&self) -> bool {
        self.state == RequestState::Pending
    }

    /// The pending request `poll` creates at `now`.
    pub fn created(poll: Poll<'_>, now: UnixMillis) -> Self {
        OpenRequest {
            fingerprint: poll.fingerprint,
            state: RequestState::Pending,
            first_seen: now,
            last_seen: now,
            origin: Origin::new(poll.transport, poll.source_addr),
            extras: Extras {
                roles: poll.roles.to_vec(),
                permissions: poll.permissions.to_vec(),
                context: poll.context.map(str::to_owned),
                client_id: poll.client_id.map(str::to_owned),
                decided_by: None,
            }
            .boxed(),
            polls: 1,
            sealed: Sealed::from(poll.secret.into_sealed()),
        }
    }

    /// The compact form of `record` (its username becomes the map key):
    /// the inverse of [`to_record`](Self::to_record), which the tests check.
    #[cfg(test)]
    fn from_record(record: RequestRecord) -> Self {
        let RequestRecord {
            username: _,
            fingerprint,
            state,
            transport,
            sealed,
            roles,
            permissions,
            context,
            source_addr,
            client_id,
            first_seen,
            last_seen,
            polls,
            certificate: _,
            decided_by,
        } = record;
        OpenRequest {
            fingerprint,
            state,
            first_seen,
            last_seen,
            sealed: Sealed::from(sealed),
            origin: Origin::new(transport, source_addr),
            extras: Extras {
                roles,
                permissions,
                context,
                client_id,
                decided_by,
            }
            .boxed(),
            polls: u32::try_from(polls).unwrap_or(u32::MAX),
        }
    }

    /// The public record, for reads (admin listings, a grant).
    pub fn to_record(&self, username: &str) -> RequestRecord {
        let extras = self.extras.as_deref().cloned().unwrap_or_default();
        RequestRecord {
            username: username.to_owned(),
            fingerprint: self.fingerprint,
            state: self.state,
            transport: self.origin.transport,
            sealed: self.sealed.as_slice().to_vec(),
            roles: extras.roles,
            permissions: extras.permissions,
            context: extras.context,
            source_addr: self.origin.addr(),
            client_id: extras.client_id,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            polls: u64::from(self.polls),
            certificate: None,
            decided_by: extras.decided_by,
        }
    }

    /// A re-poll: when, and from where.
    pub fn refresh(&mut self, now: UnixMillis, source: Option<SocketAddr>) {
        self.last_seen = now;
        self.polls = self.polls.saturating_add(1);
        if source.is_some() {
            self.origin = Origin::new(self.origin.transport, source);
        }
    }

    /// Denies the request: the sealed secret is dropped; `by` names the
    /// rule that denied it, if one did.
    pub fn deny(&mut self, now: UnixMillis, by: Option<DecidedBy>) {
        self.state = RequestState::Denied { denied_at: now };
        self.sealed = Sealed::default();
        if let Some(by) = by {
            let mut extras = self.extras.take().map(|b| *b).unwrap_or_default();
            extras.decided_by = Some(by);
            self.extras = extras.boxed();
        }
    }
}

/// Longest sealed secret kept inline.
pub const SEALED_INLINE: usize = 38;

/// A sealed secret: inline when short, else on the heap.
#[derive(Clone, PartialEq, Eq)]
pub enum Sealed {
    Inline { len: u8, bytes: [u8; SEALED_INLINE] },
    Heap(Box<[u8]>),
}

impl Default for Sealed {
    fn default() -> Self {
        Sealed::Inline {
            len: 0,
            bytes: [0; SEALED_INLINE],
        }
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.as_slice().len())
    }
}

impl Sealed {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Sealed::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Sealed::Heap(b) => b,
        }
    }
}

impl From<Vec<u8>> for Sealed {
    fn from(v: Vec<u8>) -> Self {
        if v.len() <= SEALED_INLINE {
            let mut bytes = [0; SEALED_INLINE];
            bytes[..v.len()].copy_from_slice(&v);
            Sealed::Inline {
                len: v.len() as u8,
                bytes,
            }
        } else {
            Sealed::Heap(v.into_boxed_slice())
        }
    }
}

/// How a request arrived: its transport and `Option<SocketAddr>`, in 20
/// bytes (IPv6 flow info and scope id, which device peers do not carry, are
/// dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    ip: [u8; 16],
    port: u16,
    /// 0: no address, 4: IPv4 (in the first 4 bytes), 6: IPv6.
    family: u8,
    pub transport: Transport,
}

impl Origin {
    pub fn new(transport: Transport, addr: Option<SocketAddr>) -> Self {
        let mut out = Origin {
            ip: [0; 16],
            port: 0,
            family: 0,
            transport,
        };
        if let Some(a) = addr {
            out.port = a.port();
            match a.ip() {
                IpAddr::V4(v4) => {
                    out.ip[..4].copy_from_slice(&v4.octets());
                    out.family = 4;
                }
                IpAddr::V6(v6) => {
                    out.ip = v6.octets();
                    out.family = 6;
                }
            }
        }
        out
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        let ip = match self.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sealed: usize, extras: bool, addr: Option<SocketAddr>) -> RequestRecord {
        RequestRecord {
            username: "device-000001".into(),
            fingerprint: Fingerprint([7; 32]),
            state: RequestState::Pending,
            transport: Transport::Mqtt,
            sealed: (0..sealed).map(|i| i as u8).collect(),
            roles: if extras {
                vec!["sensor".into()]
            } else {
                vec![]
            },
            permissions: vec![],
            context: extras.then(|| "line 4".into()),
            source_addr: addr,
            client_id: extras.then(|| "c-1".into()),
            first_seen: UnixMillis(1_000),
            last_seen: UnixMillis(2_000),
            polls: 3,
            certificate: None,
            decided_by: None,
        }
    }

    #[test]
    fn a_record_survives_the_round_trip() {
        let v4: SocketAddr = "10.1.2.3:51234".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        for (sealed, extras, addr) in [
            (0, false, None),
            (28, false, Some(v4)),
            (SEALED_INLINE, true, Some(v6)),
            (SEALED_INLINE + 1, true, Some(v4)),
            (1040, false, None),
        ] {
            let r = record(sealed, extras, addr);
            let open = OpenRequest::from_record(r.clone());
            assert_eq!(open.to_record("device-000001"), r, "{sealed} {extras}");
            assert_eq!(open.extras.is_some(), extras);
            assert_eq!(
                matches!(open.sealed, Sealed::Heap(_)),
                sealed > SEALED_INLINE
            );
        }
    }

    #[test]
    fn polls_saturate_and_a_refresh_without_an_address_keeps_the_old_one() {
        let v4: SocketAddr = "10.1.2.3:51234".parse().unwrap();
        let mut r = record(0, false, Some(v4));
        r.polls = u64::MAX;
        let mut open = OpenRequest::from_record(r);
        assert_eq!(open.polls, u32::MAX);
        open.refresh(UnixMillis(5_000), None);
        assert_eq!(open.polls, u32::MAX);
        assert_eq!(open.last_seen, UnixMillis(5_000));
        assert_eq!(open.origin.addr(), Some(v4));
    }

    #[test]
    fn the_layout_stays_small() {
        // 24 bytes of key beside each value in the B-tree node.
        assert!(std::mem::size_of::<OpenRequest>() <= 136);
        assert_eq!(std::mem::size_of::<CompactString>(), 24);
        assert_eq!(std::mem::size_of::<Origin>(), 20);
        assert!(std::mem::size_of::<Sealed>() <= 40);
    }
}
