//! JWTs for logged-in users: HS256, signed with a key derived from the
//! server secret.
//!
//! The token carries the username (`sub`), the user's roles, `iat`, `exp`,
//! and `gen`: the creation time (ms) of the user record it was issued for.
//! Verification checks the signature and expiry; the admin service also
//! checks that the user still exists *and has the same `gen`*, so deleting a
//! user revokes its tokens, and a token of a deleted user does not come back
//! to life when the name is registered again, even within the same second.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

/// Default token lifetime when a login does not ask for one.
pub const DEFAULT_EXPIRE_HOURS: u64 = 24;
/// Longest lifetime a login may ask for (30 days).
pub const MAX_EXPIRE_HOURS: u64 = 30 * 24;

/// A login's `expireTimeInHours` outside 1 to [`MAX_EXPIRE_HOURS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expireTimeInHours must be between 1 and {MAX_EXPIRE_HOURS}")]
pub struct LifetimeOutOfRange;

/// The token lifetime a login asked for, in hours: the default when it
/// asked for none. Shared by password login (admin service) and
/// certificate login (proxy), so both accept the same range.
pub fn lifetime_hours(asked: Option<i64>) -> Result<u64, LifetimeOutOfRange> {
    match asked {
        None => Ok(DEFAULT_EXPIRE_HOURS),
        Some(h) if h >= 1 && h.unsigned_abs() <= MAX_EXPIRE_HOURS => Ok(h.unsigned_abs()),
        Some(_) => Err(LifetimeOutOfRange),
    }
}

/// The claims fleetgate puts in a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub roles: Vec<String>,
    pub iat: u64,
    pub exp: u64,
    /// The user generation: `created_at` (ms) of the user record the token
    /// was issued for. Tokens without it (from before it existed) read 0,
    /// which matches no user.
    #[serde(default)]
    pub gen: u64,
}

/// A token could not be verified.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct TokenError(String);

/// Issues and verifies tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    pub fn new(key: &[u8; 32]) -> Self {
        Tokens {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// Issues a token for `user` valid for `hours` from `now`.
    pub fn issue_for(
        &self,
        user: &crate::model::UserRecord,
        now: UnixMillis,
        hours: u64,
    ) -> String {
        self.issue(&user.username, &user.roles, user.created_at, now, hours)
    }

    /// Issues a token for `username` (a user record created at
    /// `generation`) valid for `hours` from `now`.
    pub fn issue(
        &self,
        username: &str,
        roles: &[String],
        generation: UnixMillis,
        now: UnixMillis,
        hours: u64,
    ) -> String {
        let claims = Claims {
            sub: username.to_owned(),
            roles: roles.to_vec(),
            iat: now.as_secs(),
            exp: now.as_secs() + hours * 3600,
            gen: generation.0,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Verifies signature and expiry (no leeway) and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_with_claims() {
        let t = Tokens::new(&[9; 32]);
        let now = UnixMillis::now();
        let tok = t.issue("dev01", &["sensor".into()], now, now, 2);
        let c = t.verify(&tok).unwrap();
        assert_eq!(c.sub, "dev01");
        assert_eq!(c.roles, vec!["sensor".to_string()]);
        assert_eq!(c.exp - c.iat, 7200);
        assert_eq!(c.gen, now.0);
    }

    #[test]
    fn wrong_key_and_expired_tokens_fail() {
        let t = Tokens::new(&[9; 32]);
        let tok = t.issue("dev01", &[], UnixMillis(5), UnixMillis::now(), 1);
        assert!(Tokens::new(&[8; 32]).verify(&tok).is_err());
        let old = t.issue("dev01", &[], UnixMillis(5), UnixMillis(1_000_000), 1);
        assert!(t.verify(&old).is_err());
        assert!(t.verify("not.a.token").is_err());
    }
}
