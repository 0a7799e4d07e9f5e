//! The server secret and the purpose-bound keys derived from it.
//!
//! One 32-byte random secret is created on first start (file `secret.key`
//! in the data dir, mode 0600) and never leaves the machine. Each use gets
//! its own key, derived as HMAC-SHA256(secret, label), so a key leaked from
//! one use (say, the JWT key) says nothing about the others.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Length of the server secret and of every derived key.
pub const KEY_LEN: usize = 32;

/// The keys the registry works with, all derived from one server secret.
#[derive(Clone)]
pub struct Secrets {
    /// Keys the credential fingerprint (HMAC-SHA256).
    pub fingerprint_key: [u8; KEY_LEN],
    /// Seals a pending request's secret until grant (XChaCha20-Poly1305).
    pub seal_key: [u8; KEY_LEN],
    /// Signs and verifies JWTs (HS256).
    pub jwt_key: [u8; KEY_LEN],
    /// The argon2 "secret" (pepper) mixed into every stored password hash.
    pub password_pepper: [u8; KEY_LEN],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Derives every key from `secret`.
    pub fn derive(secret: &[u8; KEY_LEN]) -> Self {
        let key = |label: &[u8]| -> [u8; KEY_LEN] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        Secrets {
            fingerprint_key: key(b"fleetgate/fingerprint/v1"),
            seal_key: key(b"fleetgate/seal/v1"),
            jwt_key: key(b"fleetgate/jwt/v1"),
            password_pepper: key(b"fleetgate/password-pepper/v1"),
        }
    }

    /// A fresh random secret, for tests and benches.
    pub fn random() -> Self {
        let mut s = [0u8; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut s);
        Self::derive(&s)
    }

    /// Loads `dir/secret.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> io::Result<Self> {
        let path = dir.join("secret.key");
        match fs::read(&path) {
            Ok(bytes) => {
                let secret: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} must hold exactly {KEY_LEN} bytes, found {}",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(Self::derive(&secret))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut secret = [0u8; KEY_LEN];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                let tmp = dir.join("secret.key.tmp");
                {
                    let mut opts = fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        opts.mode(0o600);
                    }
                    let mut f = opts.open(&tmp)?;
                    f.write_all(&secret)?;
                    f.sync_all()?;
                }
                fs::rename(&tmp, &path)?;
                fs::File::open(dir)?.sync_all()?;
                Ok(Self::derive(&secret))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_are_stable() {
        let a = Secrets::derive(&[7; KEY_LEN]);
        let b = Secrets::derive(&[7; KEY_LEN]);
        assert_eq!(a.fingerprint_key, b.fingerprint_key);
        assert_ne!(a.fingerprint_key, a.seal_key);
        assert_ne!(a.seal_key, a.jwt_key);
        assert_ne!(a.jwt_key, a.password_pepper);
    }

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Secrets::load_or_create(dir.path()).unwrap();
        let second = Secrets::load_or_create(dir.path()).unwrap();
        assert_eq!(first.jwt_key, second.jwt_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("secret.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn truncated_secret_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret.key"), b"short").unwrap();
        let err = Secrets::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
