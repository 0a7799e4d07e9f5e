//! Stored credentials: argon2id PHC strings, keyed with the server pepper.
//!
//! Every stored password is a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`),
//! so the scheme and its cost travel with each hash and can change later
//! without a migration. Every hash also mixes in the server's pepper (argon2's
//! "secret" input), so a stolen store alone is not enough to test guesses.
//!
//! Two cost levels (see `docs/SECURITY.md` for the measured costs):
//! - [`Scheme::Admin`]: OWASP's argon2id baseline, m = 19 MiB, t = 2, p = 1.
//!   Admins log in rarely; this is the slow, strong default.
//! - [`Scheme::Device`]: argon2id with m = 1 MiB, t = 1, p = 1. Device users
//!   re-authenticate in storms (every device reconnects after an outage), so
//!   one verification must cost well under a millisecond of one core. Their
//!   passwords are machine-generated, and the pepper carries most of the weight.
//!
//! Hashing never happens on a poll: only at grant, at admin bootstrap, and on
//! login.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Which cost level a new hash gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Admin,
    Device,
}

impl Scheme {
    /// The argon2id parameters of this scheme: (memory KiB, iterations, lanes).
    pub fn params(self) -> (u32, u32, u32) {
        match self {
            Scheme::Admin => (19 * 1024, 2, 1),
            Scheme::Device => (1024, 1, 1),
        }
    }
}

/// A stored credential could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("stored credential is not a valid PHC string: {0}")]
    Malformed(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords with the server pepper.
#[derive(Clone)]
pub struct PasswordHashing {
    pepper: [u8; 32],
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashing(..)")
    }
}

impl PasswordHashing {
    pub fn new(pepper: [u8; 32]) -> Self {
        PasswordHashing { pepper }
    }

    fn argon2(&self, params: Params) -> Argon2<'_> {
        Argon2::new_with_secret(&self.pepper, Algorithm::Argon2id, Version::V0x13, params)
            .expect("a 32-byte secret is within argon2's limits")
    }

    /// Hashes `password` under `scheme` with a fresh random salt.
    pub fn hash(&self, password: &[u8], scheme: Scheme) -> Result<String, PasswordError> {
        let (m, t, p) = scheme.params();
        let params = Params::new(m, t, p, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let salt = SaltString::generate(&mut OsRng);
        self.argon2(params)
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Checks `password` against a stored PHC string. The parameters come
    /// from the string, so any scheme this module ever produced verifies.
    pub fn verify(&self, password: &[u8], phc: &str) -> Result<bool, PasswordError> {
        let hash = PasswordHash::new(phc).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        if hash.algorithm != argon2::ARGON2ID_IDENT {
            return Err(PasswordError::Malformed(format!(
                "unsupported scheme `{}`",
                hash.algorithm
            )));
        }
        let params =
            Params::try_from(&hash).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        match self.argon2(params).verify_password(password, &hash) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(PasswordError::Hash(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_hash_round_trips_and_is_phc() {
        let h = PasswordHashing::new([3; 32]);
        let phc = h.hash(b"hunter22", Scheme::Device).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("hunter22"));
        assert!(h.verify(b"hunter22", &phc).unwrap());
        assert!(!h.verify(b"hunter23", &phc).unwrap());
    }

    #[test]
    fn admin_hash_uses_the_strong_parameters() {
        let h = PasswordHashing::new([3; 32]);
        let phc = h.hash(b"correct horse", Scheme::Admin).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(b"correct horse", &phc).unwrap());
    }

    #[test]
    fn pepper_is_required_to_verify() {
        let phc = PasswordHashing::new([3; 32])
            .hash(b"hunter22", Scheme::Device)
            .unwrap();
        assert!(!PasswordHashing::new([4; 32])
            .verify(b"hunter22", &phc)
            .unwrap());
    }

    #[test]
    fn malformed_phc_is_an_error_not_a_match() {
        let h = PasswordHashing::new([3; 32]);
        assert!(h.verify(b"x", "plaintext").is_err());
        assert!(h.verify(b"x", "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA").is_err());
    }
}
