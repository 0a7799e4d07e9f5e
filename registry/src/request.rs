//! Parsing and validating the body of `POST /api/client-registry/register`.
//!
//! This is steps 1 and 2 of the decision order: a body that is not the right
//! JSON shape is `invalid` (400); a well-formed body that breaks a rule is
//! `policy` (422) and the error names the rule. Both are decided before any
//! state is looked at. Unknown fields are ignored. Every list and string has a
//! cap, so a valid request has a bounded size in memory.

use std::borrow::Cow;

use serde::Deserialize;

use crate::model::Permission;

/// Largest accepted request body; the proxy answers 413 above it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Username length bounds, in bytes (the charset is ASCII).
pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 128;
/// Password length bounds, in bytes.
pub const PASSWORD_MIN: usize = 5;
pub const PASSWORD_MAX: usize = 1024;
/// At most this many roles, each at most `ROLE_MAX` bytes.
pub const ROLES_MAX: usize = 32;
pub const ROLE_MAX: usize = 64;
/// At most this many permissions, each resource at most `RESOURCE_MAX` bytes.
pub const PERMISSIONS_MAX: usize = 64;
pub const RESOURCE_MAX: usize = 256;
/// Longest free-text `context`.
pub const CONTEXT_MAX: usize = 256;
/// At most this many roles may be defined in one store (`PUT
/// /api/roles/{name}`). A role holds at most [`PERMISSIONS_MAX`]
/// permissions, the same cap as a user's direct permissions, so the whole
/// role table stays bounded (1,000 × 64 permissions) and `list_roles` can
/// return all of it at once.
pub const DEFINED_ROLES_MAX: usize = 1000;

/// Why a register request was refused before any state was consulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// 400: the body is not a register request.
    #[error("{0}")]
    Invalid(String),
    /// 422: the request is well-formed but breaks the named rule.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
}

impl RequestError {
    pub(crate) fn policy(rule: &'static str, message: impl Into<String>) -> Self {
        RequestError::Policy {
            rule,
            message: message.into(),
        }
    }
}

/// The credential a device registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Password(Cow<'a, str>),
    /// A PEM PKCS#10 request; the CA signs it at grant.
    Csr(Cow<'a, str>),
}

/// A validated register request, borrowing from the body where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest<'a> {
    pub username: Cow<'a, str>,
    pub credential: Credential<'a>,
    /// The subject CN of a verified CSR (`None` for a password request, or
    /// a CSR without a CN).
    pub csr_common_name: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
    pub context: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawRegister<'a> {
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    password: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    csr: Option<Cow<'a, str>>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    permissions: Option<Vec<Permission>>,
    #[serde(borrow, default)]
    context: Option<Cow<'a, str>>,
}

impl<'a> RegisterRequest<'a> {
    /// Parses and validates a JSON body.
    pub fn parse(body: &'a [u8]) -> Result<Self, RequestError> {
        // JSON is UTF-8 (RFC 8259 §8.1). serde_json's `from_slice` checks
        // only the strings it keeps, so invalid bytes in an ignored key or
        // value went through (found by the `register_request` fuzz target;
        // see docs/FUZZING.md). Validating the whole body first makes every
        // byte of an accepted body text.
        let text = std::str::from_utf8(body)
            .map_err(|_| RequestError::Invalid("body is not UTF-8 text".into()))?;
        let raw: RawRegister<'a> = serde_json::from_str(text)
            .map_err(|e| RequestError::Invalid(format!("body is not a register request: {e}")))?;
        let username = raw
            .username
            .ok_or_else(|| RequestError::Invalid("missing field `username`".into()))?;
        let credential = match (raw.password, raw.csr) {
            (Some(p), None) => Credential::Password(p),
            (None, Some(c)) => Credential::Csr(c),
            (Some(_), Some(_)) => {
                return Err(RequestError::Invalid(
                    "send either `password` or `csr`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(RequestError::Invalid(
                    "missing credential: send `password` or `csr`".into(),
                ))
            }
        };
        // A CSR must parse and its signature verify: that is step 1 (400).
        let csr_common_name = match &credential {
            Credential::Csr(pem) => {
                crate::ca::parse_csr(pem).map_err(|e| RequestError::Invalid(e.to_string()))?
            }
            Credential::Password(_) => None,
        };
        let req = RegisterRequest {
            username,
            credential,
            csr_common_name,
            roles: raw.roles.unwrap_or_default(),
            permissions: raw.permissions.unwrap_or_default(),
            context: raw.context,
        };
        req.check_policy()?;
        Ok(req)
    }

    /// Step 2 of the decision order: the rules a well-formed request must meet.
    pub fn check_policy(&self) -> Result<(), RequestError> {
        check_username(&self.username)?;
        match &self.credential {
            Credential::Password(p) => check_password(p)?,
            Credential::Csr(_) => {
                check_csr_common_name(self.csr_common_name.as_deref(), &self.username)?
            }
        }
        check_access_limits(&self.roles, &self.permissions, "requested")?;
        if self.roles.iter().any(|r| r == crate::model::ADMIN_ROLE) {
            return Err(RequestError::policy(
                "admin_role",
                "a device may not ask for the `admin` role; only an administrator can give it",
            ));
        }
        if self.context.as_ref().is_some_and(|c| c.len() > CONTEXT_MAX) {
            return Err(RequestError::policy(
                "context_length",
                format!("context must be at most {CONTEXT_MAX} bytes long"),
            ));
        }
        Ok(())
    }
}

/// The CSR rule shared by registration and every later check: the subject
/// CN must be present, non-empty, and equal the username.
pub fn check_csr_common_name(cn: Option<&str>, username: &str) -> Result<(), RequestError> {
    match cn {
        Some(cn) if !cn.is_empty() && cn == username => Ok(()),
        Some(cn) if !cn.is_empty() => Err(RequestError::policy(
            "csr_common_name",
            format!("the CSR's subject CN `{cn}` must equal the username"),
        )),
        _ => Err(RequestError::policy(
            "csr_common_name",
            "the CSR's subject CN must be present, non-empty, and equal the username",
        )),
    }
}

/// The caps on roles and permissions, shared by what a device requests and
/// what an admin grants (`verb` says which, for the message): at most
/// [`ROLES_MAX`] roles of 1 to [`ROLE_MAX`] bytes, at most
/// [`PERMISSIONS_MAX`] permissions whose resource is 1 to [`RESOURCE_MAX`]
/// bytes.
pub fn check_access_limits(
    roles: &[String],
    permissions: &[Permission],
    verb: &str,
) -> Result<(), RequestError> {
    if roles.len() > ROLES_MAX {
        return Err(RequestError::policy(
            "roles_count",
            format!("at most {ROLES_MAX} roles may be {verb}"),
        ));
    }
    if let Some(r) = roles.iter().find(|r| r.is_empty() || r.len() > ROLE_MAX) {
        return Err(RequestError::policy(
            "role_length",
            format!(
                "each role must be 1 to {ROLE_MAX} bytes long (found {} bytes)",
                r.len()
            ),
        ));
    }
    if permissions.len() > PERMISSIONS_MAX {
        return Err(RequestError::policy(
            "permissions_count",
            format!("at most {PERMISSIONS_MAX} permissions may be {verb}"),
        ));
    }
    if permissions
        .iter()
        .any(|p| p.resource.is_empty() || p.resource.len() > RESOURCE_MAX)
    {
        return Err(RequestError::policy(
            "resource_length",
            format!("each permission resource must be 1 to {RESOURCE_MAX} bytes long"),
        ));
    }
    Ok(())
}

/// The rule for the name of a defined role: 1 to [`ROLE_MAX`] bytes (the
/// cap on a role name in a request or a grant) from `[A-Za-z0-9._:-]`, so a
/// role name is safe in a URL path segment, a Redis hash field and a log
/// line without quoting.
pub fn check_role_name(name: &str) -> Result<(), RequestError> {
    if name.is_empty() || name.len() > ROLE_MAX {
        return Err(RequestError::policy(
            "role_name",
            format!(
                "a role name must be 1 to {ROLE_MAX} bytes long (found {} bytes)",
                name.len()
            ),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(RequestError::policy(
            "role_name",
            "a role name may contain only letters, digits and . _ : -",
        ));
    }
    Ok(())
}

/// The username rule shared by every transport: 3 to 128 characters from
/// `[A-Za-z0-9._@-]`.
pub fn check_username(username: &str) -> Result<(), RequestError> {
    if username.len() < USERNAME_MIN || username.len() > USERNAME_MAX {
        return Err(RequestError::policy(
            "username_length",
            format!(
                "username must be {USERNAME_MIN} to {USERNAME_MAX} characters long (found {})",
                username.chars().count()
            ),
        ));
    }
    if !username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
    {
        return Err(RequestError::policy(
            "username_charset",
            "username may contain only letters, digits and . _ @ -",
        ));
    }
    Ok(())
}

/// The password rule shared by every transport: 5 to 1024 bytes.
pub fn check_password(password: &str) -> Result<(), RequestError> {
    if password.len() < PASSWORD_MIN {
        return Err(RequestError::policy(
            "password_length",
            format!("password must be at least {PASSWORD_MIN} characters long"),
        ));
    }
    if password.len() > PASSWORD_MAX {
        return Err(RequestError::policy(
            "password_length",
            format!("password must be at most {PASSWORD_MAX} bytes long"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(body: &str) -> String {
        match RegisterRequest::parse(body.as_bytes()) {
            Err(RequestError::Invalid(m)) => m,
            other => panic!("expected invalid for {body}, got {other:?}"),
        }
    }

    fn rule(body: &str) -> &'static str {
        match RegisterRequest::parse(body.as_bytes()) {
            Err(RequestError::Policy { rule, .. }) => rule,
            other => panic!("expected policy for {body}, got {other:?}"),
        }
    }

    #[test]
    fn minimal_password_request_parses() {
        let r = RegisterRequest::parse(br#"{"username":"dev-01","password":"secret"}"#).unwrap();
        assert_eq!(r.username, "dev-01");
        assert_eq!(r.credential, Credential::Password("secret".into()));
        assert!(r.roles.is_empty() && r.permissions.is_empty() && r.context.is_none());
    }

    #[test]
    fn full_request_with_unknown_fields_parses() {
        let r = RegisterRequest::parse(
            br#"{"username":"dev.01@site","password":"s\u00e9cret","roles":["sensor"],
                "permissions":[{"resource":"plant/#","operation":"readWrite","context":"mqtt","x":1}],
                "context":"line 4","firmware":"1.2.3"}"#,
        )
        .unwrap();
        assert_eq!(r.credential, Credential::Password("s\u{e9}cret".into()));
        assert_eq!(r.roles, vec!["sensor".to_string()]);
        assert_eq!(r.permissions[0].resource, "plant/#");
        assert_eq!(r.context.as_deref(), Some("line 4"));
    }

    /// Regression (fuzzing, `register_request`): bytes that are not UTF-8
    /// in a key or value the parser ignores made the body acceptable
    /// before; a body that is not text is now 400 whatever field they are in.
    #[test]
    fn a_body_that_is_not_utf8_is_invalid() {
        let good = br#"{"username":"dev01","password":"secret1","permissions":[{"resource":"plant/#","operation":"read","context":"mqtt","note":"ok"}],"firmware":"ok"}"#;
        RegisterRequest::parse(good).unwrap();
        for needle in [&b"\"note\""[..], b"\"firmware\":\"ok", b"resource"] {
            let at = good
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let mut bad = good.to_vec();
            bad[at + needle.len() - 1] = 0xE5; // a lone UTF-8 lead byte
            match RegisterRequest::parse(&bad) {
                Err(RequestError::Invalid(m)) => {
                    assert!(m.contains("UTF-8"), "{m}");
                }
                other => panic!(
                    "{:?}: expected invalid, got {other:?}",
                    String::from_utf8_lossy(&bad)
                ),
            }
        }
    }

    #[test]
    fn shape_errors_are_invalid() {
        invalid("");
        invalid("not json");
        invalid("[]");
        invalid(r#"{"username":"dev01","password":"secret""#);
        assert!(invalid(r#"{"password":"secret"}"#).contains("username"));
        invalid(r#"{"username":42,"password":"secret"}"#);
        invalid(r#"{"username":"dev01","password":12345}"#);
        invalid(r#"{"username":"dev01","password":"secret","roles":"admin"}"#);
        invalid(
            r#"{"username":"dev01","password":"secret","permissions":[{"resource":"a","operation":"fly","context":"mqtt"}]}"#,
        );
        assert!(
            invalid(r#"{"username":"dev01","password":"secret","csr":"x"}"#).contains("not both")
        );
        assert!(invalid(r#"{"username":"dev01"}"#).contains("credential"));
    }

    #[test]
    fn shape_is_checked_before_policy() {
        // A too-short username with no credential is a 400, not a 422.
        invalid(r#"{"username":"ab"}"#);
    }

    #[test]
    fn policy_rules_at_their_caps() {
        assert_eq!(
            rule(r#"{"username":"ab","password":"secret"}"#),
            "username_length"
        );
        RegisterRequest::parse(br#"{"username":"abc","password":"secret"}"#).unwrap();
        let u128 = "u".repeat(128);
        RegisterRequest::parse(
            format!(r#"{{"username":"{u128}","password":"secret"}}"#).as_bytes(),
        )
        .unwrap();
        let u129 = "u".repeat(129);
        assert_eq!(
            rule(&format!(r#"{{"username":"{u129}","password":"secret"}}"#)),
            "username_length"
        );
        assert_eq!(
            rule(r#"{"username":"dev 01","password":"secret"}"#),
            "username_charset"
        );
        assert_eq!(
            rule(r#"{"username":"dév01","password":"secret"}"#),
            "username_charset"
        );
        assert_eq!(
            rule(r#"{"username":"dev01","password":"four"}"#),
            "password_length"
        );
        RegisterRequest::parse(br#"{"username":"dev01","password":"fiveC"}"#).unwrap();
        let p = "p".repeat(PASSWORD_MAX + 1);
        assert_eq!(
            rule(&format!(r#"{{"username":"dev01","password":"{p}"}}"#)),
            "password_length"
        );
        let roles: Vec<String> = (0..=ROLES_MAX).map(|i| format!("\"r{i}\"")).collect();
        assert_eq!(
            rule(&format!(
                r#"{{"username":"dev01","password":"secret","roles":[{}]}}"#,
                roles.join(",")
            )),
            "roles_count"
        );
        assert_eq!(
            rule(r#"{"username":"dev01","password":"secret","roles":[""]}"#),
            "role_length"
        );
        assert_eq!(
            rule(
                r#"{"username":"dev01","password":"secret","csr":null,"context":null,"permissions":[{"resource":"","operation":"read","context":"http"}]}"#
            ),
            "resource_length"
        );
        // A CSR that does not parse is a 400 (step 1), before any 422.
        invalid(r#"{"username":"ab","csr":"-----BEGIN CERTIFICATE REQUEST-----"}"#);
    }

    #[test]
    fn role_names_at_their_caps() {
        check_role_name("a").unwrap();
        check_role_name("site-4:line_2.sensors").unwrap();
        check_role_name(&"r".repeat(ROLE_MAX)).unwrap();
        for bad in [
            String::new(),
            "r".repeat(ROLE_MAX + 1),
            "two words".into(),
            "a/b".into(),
            "caf\u{e9}".into(),
            "x%2F".into(),
        ] {
            match check_role_name(&bad) {
                Err(RequestError::Policy {
                    rule: "role_name", ..
                }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn policy_error_names_the_rule_in_its_message() {
        let e = RegisterRequest::parse(br#"{"username":"dev01","password":"abc"}"#).unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }
}
