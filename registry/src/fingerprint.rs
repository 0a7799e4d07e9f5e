//! Credential fingerprints, pairing ids, and sealing a pending secret.
//!
//! A device repeats the same register request until it is decided. The
//! fingerprint recognises "the same request" in about a microsecond: it is
//! HMAC-SHA256, keyed with a server key, over a canonical encoding of the
//! username, the credential (password or CSR) and the requested roles and
//! permissions. Roles and permissions are sorted and deduplicated first, so
//! their order in the JSON does not matter.
//!
//! The pending request must also keep the secret until an admin grants it,
//! because the user's stored credential (a slow argon2id hash) is derived
//! only then. The secret is sealed with XChaCha20-Poly1305 under the server's
//! seal key. The nonce is the fingerprint's first 24 bytes: a deterministic,
//! SIV-style construction. Two seals share a nonce only if their fingerprints
//! are equal, which means the same username, secret and roles, so the same
//! plaintext. Sealing then needs no random numbers on the hot path.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::model::Permission;
use crate::secrets::Secrets;

/// The kind of credential a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    Password,
    Csr,
}

/// A keyed hash identifying one exact request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Fingerprint(out))
    }
}

/// Six hex characters derived from the fingerprint, shown to both the device
/// (in the 202 body) and the admin, so the two can compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairingId([u8; 3]);

impl fmt::Display for PairingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}{:02x}{:02x}", self.0[0], self.0[1], self.0[2])
    }
}

impl Fingerprint {
    /// Computes the fingerprint of a request. `roles` and `permissions` are
    /// canonicalised (sorted, deduplicated) before hashing.
    pub fn compute(
        secrets: &Secrets,
        username: &str,
        kind: CredentialKind,
        credential: &[u8],
        roles: &[String],
        permissions: &[Permission],
    ) -> Fingerprint {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&secrets.fingerprint_key).expect("32-byte key");
        mac.update(b"fleetgate/request/v1");
        field(&mut mac, username.as_bytes());
        mac.update(&[match kind {
            CredentialKind::Password => 1,
            CredentialKind::Csr => 2,
        }]);
        field(&mut mac, credential);
        // Most devices ask for nothing, so the common case allocates nothing.
        if !roles.is_empty() {
            let mut sorted: Vec<&str> = roles.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            mac.update(&(sorted.len() as u32).to_be_bytes());
            for role in sorted {
                field(&mut mac, role.as_bytes());
            }
        } else {
            mac.update(&0u32.to_be_bytes());
        }
        if !permissions.is_empty() {
            let mut sorted: Vec<&Permission> = permissions.iter().collect();
            sorted.sort_unstable();
            sorted.dedup();
            mac.update(&(sorted.len() as u32).to_be_bytes());
            for p in sorted {
                field(&mut mac, p.resource.as_bytes());
                mac.update(&[p.operation as u8, p.context as u8]);
            }
        } else {
            mac.update(&0u32.to_be_bytes());
        }
        Fingerprint(mac.finalize().into_bytes().into())
    }

    pub fn pairing_id(&self) -> PairingId {
        PairingId([self.0[0], self.0[1], self.0[2]])
    }
}

fn field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u32).to_be_bytes());
    mac.update(bytes);
}

/// Seals `secret` for the request with fingerprint `fp` and username
/// `username` (bound in as associated data).
pub fn seal(secrets: &Secrets, fp: &Fingerprint, username: &str, secret: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new((&secrets.seal_key).into());
    let nonce = XNonce::from_slice(&fp.0[..24]);
    cipher
        .encrypt(
            nonce,
            Payload {
                msg: secret,
                aad: username.as_bytes(),
            },
        )
        .expect("encryption of an in-memory buffer cannot fail")
}

/// Seals a credential with its kind: one tag byte (`P` password, `C` CSR)
/// before the secret, so the grant knows what to derive from it.
pub fn seal_credential(
    secrets: &Secrets,
    fp: &Fingerprint,
    username: &str,
    kind: CredentialKind,
    secret: &[u8],
) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(secret.len() + 1);
    tagged.push(match kind {
        CredentialKind::Password => b'P',
        CredentialKind::Csr => b'C',
    });
    tagged.extend_from_slice(secret);
    seal(secrets, fp, username, &tagged)
}

/// Opens what [`seal_credential`] sealed.
pub fn unseal_credential(
    secrets: &Secrets,
    fp: &Fingerprint,
    username: &str,
    sealed: &[u8],
) -> Result<(CredentialKind, Vec<u8>), UnsealError> {
    let mut tagged = unseal(secrets, fp, username, sealed)?;
    let kind = match tagged.first() {
        Some(b'P') => CredentialKind::Password,
        Some(b'C') => CredentialKind::Csr,
        _ => return Err(UnsealError),
    };
    tagged.remove(0);
    Ok((kind, tagged))
}

/// Opens a sealed secret. Fails if the data, username or key do not match.
pub fn unseal(
    secrets: &Secrets,
    fp: &Fingerprint,
    username: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, UnsealError> {
    let cipher = XChaCha20Poly1305::new((&secrets.seal_key).into());
    let nonce = XNonce::from_slice(&fp.0[..24]);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: sealed,
                aad: username.as_bytes(),
            },
        )
        .map_err(|_| UnsealError)
}

/// A sealed secret did not authenticate (wrong key, or tampered data).
#[derive(Debug, thiserror::Error)]
#[error("sealed credential does not authenticate under this server's key")]
pub struct UnsealError;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Operation, PermissionContext};

    fn perm(r: &str) -> Permission {
        Permission {
            resource: r.into(),
            operation: Operation::Read,
            context: PermissionContext::Mqtt,
        }
    }

    #[test]
    fn same_request_same_fingerprint_regardless_of_order() {
        let s = Secrets::derive(&[1; 32]);
        let a = Fingerprint::compute(
            &s,
            "dev1",
            CredentialKind::Password,
            b"secret",
            &["b".into(), "a".into()],
            &[perm("x"), perm("y")],
        );
        let b = Fingerprint::compute(
            &s,
            "dev1",
            CredentialKind::Password,
            b"secret",
            &["a".into(), "b".into(), "a".into()],
            &[perm("y"), perm("x")],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn every_input_changes_the_fingerprint() {
        let s = Secrets::derive(&[1; 32]);
        let base = Fingerprint::compute(&s, "dev1", CredentialKind::Password, b"pw", &[], &[]);
        let variants = [
            Fingerprint::compute(&s, "dev2", CredentialKind::Password, b"pw", &[], &[]),
            Fingerprint::compute(&s, "dev1", CredentialKind::Csr, b"pw", &[], &[]),
            Fingerprint::compute(&s, "dev1", CredentialKind::Password, b"pw2", &[], &[]),
            Fingerprint::compute(
                &s,
                "dev1",
                CredentialKind::Password,
                b"pw",
                &["r".into()],
                &[],
            ),
            Fingerprint::compute(
                &s,
                "dev1",
                CredentialKind::Password,
                b"pw",
                &[],
                &[perm("t")],
            ),
            Fingerprint::compute(
                &Secrets::derive(&[2; 32]),
                "dev1",
                CredentialKind::Password,
                b"pw",
                &[],
                &[],
            ),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        // Length prefixes keep field boundaries apart: ("ab","c") != ("a","bc").
        let x = Fingerprint::compute(&s, "ab", CredentialKind::Password, b"c", &[], &[]);
        let y = Fingerprint::compute(&s, "a", CredentialKind::Password, b"bc", &[], &[]);
        assert_ne!(x, y);
    }

    /// Stored fingerprints (the journal, Redis) were computed with these
    /// bytes; a change would orphan every pending request and grant record.
    #[test]
    fn encoded_discriminants_are_pinned() {
        use crate::model::{Operation, PermissionContext};
        assert_eq!(
            [
                Operation::Read as u8,
                Operation::Write as u8,
                Operation::ReadWrite as u8
            ],
            [0, 1, 2]
        );
        assert_eq!(
            [PermissionContext::Mqtt as u8, PermissionContext::Http as u8],
            [0, 1]
        );
        // The sort order that canonicalises a permission list follows them.
        assert!(Operation::Read < Operation::Write && Operation::Write < Operation::ReadWrite);
        assert!(PermissionContext::Mqtt < PermissionContext::Http);
        // And the whole encoding, end to end: a fixed secret and request give
        // this fingerprint in every version.
        let s = Secrets::derive(&[7; 32]);
        let perms = [
            Permission {
                resource: "t/#".into(),
                operation: Operation::ReadWrite,
                context: PermissionContext::Http,
            },
            Permission {
                resource: "t/#".into(),
                operation: Operation::Read,
                context: PermissionContext::Mqtt,
            },
        ];
        let fp = Fingerprint::compute(
            &s,
            "dev1",
            CredentialKind::Password,
            b"pw",
            &["b".into(), "a".into()],
            &perms,
        );
        assert_eq!(hex::encode(fp.0), PINNED_FINGERPRINT);
    }

    const PINNED_FINGERPRINT: &str =
        "8a51844e25630c8b212707b76130d74893f8ae652dd575c5e1eff5f70b8c8ed1";

    #[test]
    fn pairing_id_is_six_hex_chars_of_the_fingerprint() {
        let fp = Fingerprint([
            0xab, 0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(fp.pairing_id().to_string(), "ab01ff");
    }

    #[test]
    fn seal_round_trips_and_binds_username_and_key() {
        let s = Secrets::derive(&[1; 32]);
        let fp = Fingerprint::compute(&s, "dev1", CredentialKind::Password, b"pw", &[], &[]);
        let sealed = seal(&s, &fp, "dev1", b"hunter22");
        assert!(!sealed.windows(8).any(|w| w == b"hunter22"));
        assert_eq!(unseal(&s, &fp, "dev1", &sealed).unwrap(), b"hunter22");
        assert!(unseal(&s, &fp, "dev2", &sealed).is_err());
        assert!(unseal(&Secrets::derive(&[2; 32]), &fp, "dev1", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(unseal(&s, &fp, "dev1", &tampered).is_err());
    }
}
