//! The records the registry keeps, and their JSON shapes.
//!
//! A [`RequestRecord`] is what the registry knows about one username's
//! registration attempt: pending until an administrator decides it, then
//! granted (collectable for a grace window) or denied (answered 403 for a
//! while). A [`UserRecord`] is an account that can log in. The admin API shows
//! both through [`RequestView`] and [`UserView`], which never carry secrets.
//! A [`Role`] is a named set of permissions; what a user may do is the union
//! of its direct permissions and those of its roles
//! (`Registry::effective_permissions`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::fingerprint::{Fingerprint, PairingId};
pub use crate::rule::DecidedBy;

/// What a permission allows.
///
/// The discriminants are part of every stored request fingerprint (the byte
/// hashed, and the sort order of a canonical permission list): they are
/// explicit so that reordering the variants cannot change a fingerprint, and
/// `fingerprint::tests::encoded_discriminants_are_pinned` holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[repr(u8)]
pub enum Operation {
    Read = 0,
    Write = 1,
    ReadWrite = 2,
}

/// Which protocol a permission applies to. Explicit discriminants, for the
/// same reason as [`Operation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum PermissionContext {
    Mqtt = 0,
    Http = 1,
}

/// One permission, as requested by a device or granted by an admin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub resource: String,
    pub operation: Operation,
    pub context: PermissionContext,
}

/// How a request reached the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Mqtt,
}

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum RequestState {
    /// Waiting for an administrator.
    Pending,
    /// Granted at `granted_at`; the user exists, and the device can collect
    /// its 201 until the collection window closes.
    Granted {
        #[serde(rename = "grantedAt")]
        granted_at: UnixMillis,
    },
    /// Denied at `denied_at`; the same request is answered 403 until the
    /// denial window closes.
    Denied {
        #[serde(rename = "deniedAt")]
        denied_at: UnixMillis,
    },
}

impl RequestState {
    /// Which state this is, without its timestamp.
    pub fn phase(self) -> RequestPhase {
        match self {
            RequestState::Pending => RequestPhase::Pending,
            RequestState::Granted { .. } => RequestPhase::Granted,
            RequestState::Denied { .. } => RequestPhase::Denied,
        }
    }

    pub fn name(self) -> &'static str {
        self.phase().name()
    }
}

/// A [`RequestState`] without its timestamp: the `state` field of a
/// [`RequestView`], serialised as `"pending"`, `"granted"` or `"denied"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestPhase {
    Pending,
    Granted,
    Denied,
}

impl RequestPhase {
    pub fn name(self) -> &'static str {
        match self {
            RequestPhase::Pending => "pending",
            RequestPhase::Granted => "granted",
            RequestPhase::Denied => "denied",
        }
    }
}

/// Everything the registry keeps about one username's registration request.
///
/// The device's secret is kept only as `fingerprint` (to recognise a repeated
/// poll) and `sealed` (AEAD-encrypted with a server key, opened once at grant
/// to derive the user's stored credential). After grant `sealed` is emptied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub username: String,
    pub fingerprint: Fingerprint,
    #[serde(flatten)]
    pub state: RequestState,
    pub transport: Transport,
    /// The credential sealed for the grant; empty once granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "serde_b64")]
    pub sealed: Vec<u8>,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub context: Option<String>,
    pub source_addr: Option<SocketAddr>,
    pub client_id: Option<String>,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub polls: u64,
    /// The client certificate issued at grant, for a CSR request (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The rule that granted or denied this request; `None` when an admin
    /// decided, or nothing has been decided yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

impl RequestRecord {
    pub fn pairing_id(&self) -> PairingId {
        self.fingerprint.pairing_id()
    }

    /// The admin API's view of this request.
    pub fn view(&self) -> RequestView {
        let (granted_at, denied_at) = match self.state {
            RequestState::Pending => (None, None),
            RequestState::Granted { granted_at } => (Some(granted_at.to_rfc3339()), None),
            RequestState::Denied { denied_at } => (None, Some(denied_at.to_rfc3339())),
        };
        RequestView {
            username: self.username.clone(),
            state: self.state.phase(),
            transport: self.transport,
            pairing_id: self.pairing_id().to_string(),
            context: self.context.clone(),
            roles: self.roles.clone(),
            permissions: self.permissions.clone(),
            client_id: self.client_id.clone(),
            source_addr: self.source_addr.map(|a| a.to_string()),
            first_seen: self.first_seen.to_rfc3339(),
            last_seen: self.last_seen.to_rfc3339(),
            polls: self.polls,
            granted_at,
            denied_at,
            decided_by: self.decided_by.clone(),
        }
    }
}

/// A request as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    pub username: String,
    pub state: RequestPhase,
    pub transport: Transport,
    pub pairing_id: String,
    pub context: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub source_addr: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub polls: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_at: Option<String>,
    /// `{"rule": name}` when a rule decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

/// An account that can log in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    /// The stored credential as a PHC string (`$argon2id$v=19$…`); `None` for
    /// users that authenticate only with a certificate.
    pub password_hash: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub created_at: UnixMillis,
    /// How the user came to exist.
    pub origin: UserOrigin,
    /// The client certificate this user authenticates with, if granted
    /// from a CSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateInfo>,
    /// The rule whose grant created this user; `None` for an admin's grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

/// How a user came to exist, as stored and shown (`"bootstrap"`, `"http"`,
/// `"mqtt"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserOrigin {
    /// The built-in admin, created at start.
    Bootstrap,
    /// Granted from a registration over HTTP.
    Http,
    /// Granted from a registration over MQTT.
    Mqtt,
}

impl From<Transport> for UserOrigin {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Http => UserOrigin::Http,
            Transport::Mqtt => UserOrigin::Mqtt,
        }
    }
}

/// A user's issued client certificate: what mutual TLS checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    pub not_after: UnixMillis,
}

/// The role that grants access to the admin API. It is also a built-in
/// [`Role`], created at start with [`admin_role_permissions`], which can be
/// changed but never deleted or emptied.
pub const ADMIN_ROLE: &str = "admin";

/// A named set of permissions that users hold by name (`UserRecord::roles`).
/// Roles are global: one namespace per store, not per user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// 1 to `request::ROLE_MAX` bytes from `[A-Za-z0-9._:-]`
    /// (`request::check_role_name`).
    pub name: String,
    pub permissions: Vec<Permission>,
}

/// What the built-in `admin` role allows when it is created: everything, on
/// both protocols (`#` matches every MQTT topic, `/#` every HTTP path).
pub fn admin_role_permissions() -> Vec<Permission> {
    vec![
        Permission {
            resource: "#".into(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Mqtt,
        },
        Permission {
            resource: "/#".into(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Http,
        },
    ]
}

impl UserRecord {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    pub fn view(&self) -> UserView {
        UserView {
            username: self.username.clone(),
            roles: self.roles.clone(),
            permissions: self.permissions.clone(),
            created_at: self.created_at.to_rfc3339(),
            origin: self.origin,
            has_password: self.password_hash.is_some(),
            certificate_fingerprint: self.certificate.as_ref().map(|c| c.fingerprint.clone()),
            certificate_expires: self.certificate.as_ref().map(|c| c.not_after.to_rfc3339()),
            decided_by: self.decided_by.clone(),
        }
    }
}

/// A user as the admin API shows it: never the credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub username: String,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub created_at: String,
    pub origin: UserOrigin,
    pub has_password: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    /// `{"rule": name}` when a rule's grant created the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

mod serde_b64 {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <&str>::deserialize(d)?;
        STANDARD_NO_PAD.decode(s).map_err(serde::de::Error::custom)
    }
}
