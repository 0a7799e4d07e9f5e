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
//!
//! A device-scheme hash runs in memory this thread keeps from its last one
//! (`MEMORY`), not in a fresh megabyte: see [`REUSED_BLOCKS`].

use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The largest argon2 memory (in 1 KiB blocks) a thread keeps between
/// hashes: the device scheme's 1 MiB. Allocated per hash, as `argon2`'s
/// own hasher does, the megabyte was zeroed and its pages faulted in anew
/// each time on the gateway's hashing threads: `memset`, `clear_page_erms`
/// and the page-fault path were about 15% of the gateway's CPU while it
/// granted, and are gone with the kept memory; 8 concurrent admin clients
/// then grant 1.45× as many requests a second (median of 4 alternating
/// rounds of `bench/compare/single-grant.sh`, 2026-12-02, in
/// docs/BENCHMARKS.md). In one thread alone glibc hands the freed block
/// straight back, so a single-threaded microbench shows no difference.
/// Argon2's first pass overwrites every block before reading it, so what
/// the memory held before never enters a hash. Larger (admin) hashes
/// allocate as before: keeping 19 MiB per thread is not worth it for a
/// rare login.
pub const REUSED_BLOCKS: usize = 1024;

thread_local! {
    /// This thread's argon2 memory, at most [`REUSED_BLOCKS`] blocks; only
    /// threads that hash hold it (the hashing pools, bounded by the
    /// cores), and it goes when the thread does.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// `argon2`'s raw hash of `password` with `salt` into `out`, in this
/// thread's kept memory when it is small enough.
fn hash_into(
    argon2: &Argon2<'_>,
    blocks: usize,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    if blocks > REUSED_BLOCKS {
        return argon2.hash_password_into(password, salt, out);
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

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

    /// Hashes `password` under `scheme` with a fresh random salt: the PHC
    /// string `argon2`'s own `PasswordHasher` writes, computed by
    /// [`hash_into`].
    pub fn hash(&self, password: &[u8], scheme: Scheme) -> Result<String, PasswordError> {
        let (m, t, p) = scheme.params();
        let params = Params::new(m, t, p, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let salt = SaltString::generate(&mut OsRng);
        let hash_err = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .as_salt()
            .decode_b64(&mut salt_bytes)
            .map_err(|e| hash_err(&e))?;
        let blocks = params.block_count();
        let params_string = ParamsString::try_from(&params).map_err(|e| hash_err(&e))?;
        let argon2 = self.argon2(params);
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            hash_into(&argon2, blocks, password, salt_raw, out)
                .map_err(argon2::password_hash::Error::from)
        })
        .map_err(|e| hash_err(&e))?;
        Ok(PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: params_string,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
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
        if hash.version.is_some_and(|v| v != u32::from(Version::V0x13)) {
            return Err(PasswordError::Malformed(format!(
                "unsupported argon2 version {:?}",
                hash.version
            )));
        }
        let params =
            Params::try_from(&hash).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Err(PasswordError::Malformed("no salt or no hash".into()));
        };
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| PasswordError::Malformed(e.to_string()))?;
        let blocks = params.block_count();
        let argon2 = self.argon2(params);
        let computed = Output::init_with(expected.len(), |out| {
            hash_into(&argon2, blocks, password, salt_raw, out)
                .map_err(argon2::password_hash::Error::from)
        })
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
        // `Output`'s `==` is constant-time.
        Ok(computed == expected)
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

    /// Ours and `argon2`'s own `PasswordHasher`/`PasswordVerifier` (which
    /// allocate their memory per hash) agree both ways, for both schemes:
    /// the kept memory changes nothing stored.
    #[test]
    fn hashes_are_those_of_argon2s_own_hasher_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let pepper = [7; 32];
        let h = PasswordHashing::new(pepper);
        for scheme in [Scheme::Device, Scheme::Admin] {
            let (m, t, p) = scheme.params();
            let theirs = h.argon2(Params::new(m, t, p, None).unwrap());
            let ours = h.hash(b"s3cret-pass1", scheme).unwrap();
            let parsed = PasswordHash::new(&ours).unwrap();
            assert!(theirs.verify_password(b"s3cret-pass1", &parsed).is_ok());
            assert!(theirs.verify_password(b"s3cret-pass2", &parsed).is_err());
            let salt = SaltString::generate(&mut OsRng);
            let made = theirs
                .hash_password(b"s3cret-pass1", &salt)
                .unwrap()
                .to_string();
            assert!(h.verify(b"s3cret-pass1", &made).unwrap(), "{scheme:?}");
            assert!(!h.verify(b"s3cret-pass2", &made).unwrap(), "{scheme:?}");
        }
    }

    /// One thread, many hashes in the same kept memory: each still matches
    /// only its own password, and a larger (admin) hash does not make the
    /// thread keep more than [`REUSED_BLOCKS`].
    #[test]
    fn the_kept_memory_is_reused_and_bounded() {
        let h = PasswordHashing::new([9; 32]);
        let hashes: Vec<String> = (0..4)
            .map(|i| {
                h.hash(format!("pass-{i}").as_bytes(), Scheme::Device)
                    .unwrap()
            })
            .collect();
        assert_eq!(MEMORY.with_borrow(Vec::len), REUSED_BLOCKS);
        for (i, phc) in hashes.iter().enumerate() {
            for j in 0..4 {
                let pw = format!("pass-{j}");
                assert_eq!(h.verify(pw.as_bytes(), phc).unwrap(), i == j, "{i} {j}");
            }
        }
        h.hash(b"admin-pass", Scheme::Admin).unwrap();
        assert_eq!(MEMORY.with_borrow(Vec::len), REUSED_BLOCKS);
    }

    #[test]
    fn malformed_phc_is_an_error_not_a_match() {
        let h = PasswordHashing::new([3; 32]);
        assert!(h.verify(b"x", "plaintext").is_err());
        assert!(h.verify(b"x", "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA").is_err());
    }
}
