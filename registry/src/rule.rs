//! Auto-approval rules: what an operator writes down so that matching
//! devices are granted (or denied) without an admin clicking.
//!
//! A [`Rule`] names what it matches (a username pattern, source networks,
//! a transport, whether the device sent a CSR, a validity period, a use
//! budget) and what it does (`grant` with exactly the rule's roles and
//! permissions, or `deny`). Rules are kept in one ordered list per store;
//! the first rule that matches decides.
//!
//! Rules are evaluated once per device, when its pending request is created
//! (`Registry::register_parsed`), never on a re-poll: the poll path does
//! not change. A locked registry creates nothing, except for devices a
//! `whileLocked` rule matches: those are preauthorized.
//!
//! This module is pure: parsing and validation (422 with a rule name, as for
//! every other policy error), the compiled matcher ([`CompiledRule`]), and
//! the marker a decision carries ([`DecidedBy`]). The stores keep the list
//! and the use counters (`Store::put_rule`, `Store::claim_rule_use`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::UnixMillis;
use crate::model::{Permission, Transport};
use crate::request::{check_access_limits, RequestError};

/// At most this many rules per store. Rules are evaluated in order at each
/// creation, so the cap bounds that work (and the metric's label set).
pub const RULES_MAX: usize = 1000;
/// Rule names: 1 to this many bytes of `[A-Za-z0-9._:-]`, like role names.
pub const RULE_NAME_MAX: usize = 64;
/// Longest `usernamePattern`, in bytes.
pub const PATTERN_MAX: usize = 1024;
/// Most entries in `sourceCidrs`.
pub const SOURCE_CIDRS_MAX: usize = 64;
/// The compiled size a pattern may take (the `regex` crate's
/// `size_limit`): a short pattern like `a{1000}{1000}` is refused instead
/// of taking megabytes per rule.
const PATTERN_COMPILED_MAX: usize = 256 * 1024;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Grant,
    Deny,
}

impl RuleAction {
    /// The `action` label value of `fleetgate_rule_decisions_total`.
    pub fn name(self) -> &'static str {
        match self {
            RuleAction::Grant => "grant",
            RuleAction::Deny => "deny",
        }
    }
}

/// Who decided a request, when it was not an admin. Recorded on the
/// request and on the user a grant creates; shown as `decidedBy`.
/// Externally tagged, so the JSON is `{"rule": "<name>"}`, and later
/// deciders (an admin by name, for the audit log) can be added as variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DecidedBy {
    Rule(String),
}

impl DecidedBy {
    /// The rule's name, if a rule decided.
    pub fn rule(&self) -> Option<&str> {
        match self {
            DecidedBy::Rule(name) => Some(name),
        }
    }
}

/// An IPv4 or IPv6 network, `address/prefix`. A bare address is a /32 or
/// /128. The address is stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside. An IPv4-mapped IPv6 address counts as its
    /// IPv4 address, as it does for the rate limits (`source::network_of`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0 to {max}")),
            },
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask32(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask128(prefix)).into()),
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One auto-approval rule, as stored and as the API shows it (the view adds
/// `uses`). Every match field is optional: a rule with none matches every
/// device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// A `regex` pattern the whole username must match (it is anchored:
    /// `plant4-.*` does not match `xplant4-1`). `regex` runs in linear
    /// time, so no pattern can make a creation slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_pattern: Option<String>,
    /// The device's source address must be in one of these; empty: any
    /// source. A poll without a known source never matches a non-empty list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Only devices that sent a CSR (whose CN is the username, as for every
    /// CSR) match.
    #[serde(default)]
    pub require_csr: bool,
    pub action: RuleAction,
    /// What a granting rule gives: exactly these, never what the device
    /// asked for. Only allowed with `action: grant`.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// How many decisions the rule may make; `None`: unlimited. Counted
    /// by the store, atomically (`Store::claim_rule_use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// The rule stops matching at this time (RFC 3339 in UTC in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub expires_at: Option<UnixMillis>,
    /// Also decide while the registry is locked (preauthorization).
    #[serde(default)]
    pub while_locked: bool,
}

/// The body of `PUT /api/client-registry/rules/{name}`: a [`Rule`] whose
/// name comes from the path, with the networks and the expiry as text, so
/// that a bad CIDR or time is a 422 naming it (not a 400 of the JSON).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username_pattern: Option<String>,
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    #[serde(default)]
    pub transport: Option<Transport>,
    #[serde(default)]
    pub require_csr: bool,
    pub action: RuleAction,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub max_uses: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub while_locked: bool,
}

impl RuleSpec {
    /// The rule named `name` (the path's). A `name` in the body must be the
    /// same (422 `rule_name`); every CIDR must parse (422 `source_cidrs`,
    /// naming the entry), after the count cap (`source_cidrs_count`);
    /// `expiresAt` must be RFC 3339 (422 `expires_at`).
    pub fn into_rule(self, name: &str) -> Result<Rule, RequestError> {
        if self.name.as_deref().is_some_and(|n| n != name) {
            return Err(RequestError::policy(
                "rule_name",
                format!("the body's `name` must be the path's (`{name}`), or left out"),
            ));
        }
        if self.source_cidrs.len() > SOURCE_CIDRS_MAX {
            return Err(RequestError::policy(
                "source_cidrs_count",
                format!("at most {SOURCE_CIDRS_MAX} sourceCidrs per rule"),
            ));
        }
        let source_cidrs = self
            .source_cidrs
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map_err(|e| RequestError::policy("source_cidrs", format!("sourceCidrs: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expires_at = match &self.expires_at {
            None => None,
            Some(t) => Some(rfc3339_opt::parse(t).map_err(|e| {
                RequestError::policy("expires_at", format!("expiresAt must be RFC 3339: {e}"))
            })?),
        };
        Ok(Rule {
            name: name.to_owned(),
            username_pattern: self.username_pattern,
            source_cidrs,
            transport: self.transport,
            require_csr: self.require_csr,
            action: self.action,
            roles: self.roles,
            permissions: self.permissions,
            max_uses: self.max_uses,
            expires_at,
            while_locked: self.while_locked,
        })
    }
}

/// A rule as the API shows it: the rule and its use count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    #[serde(flatten)]
    pub rule: Rule,
    pub uses: u64,
}

/// A rule as listed by a store: the rule and how many decisions it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRule {
    pub rule: Rule,
    pub uses: u64,
}

impl StoredRule {
    pub fn view(&self) -> RuleView {
        RuleView {
            rule: self.rule.clone(),
            uses: self.uses,
        }
    }
}

/// What `Store::put_rule` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutRuleResult {
    /// A new rule, placed last in the order.
    Created,
    /// An existing rule, replaced in place; its use count is kept.
    Replaced,
    /// A new rule would pass the cap given; nothing changed.
    Full,
}

/// What `Store::claim_rule_use` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleClaim {
    /// The use was counted; this is the count now.
    Claimed(u64),
    /// The rule's `maxUses` are spent; nothing changed.
    Exhausted,
    /// No rule of that name (deleted since it was read).
    Gone,
}

/// What `Store::set_rule_order` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleOrderResult {
    Applied,
    /// The names are not exactly the defined rules, each once; nothing
    /// changed.
    Mismatch,
}

/// A validated rule with its pattern compiled, ready to match.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub rule: Rule,
    pattern: Option<regex::Regex>,
}

/// What a rule is matched against: the device's request as the poll that
/// creates its pending request saw it.
#[derive(Clone, Copy, Debug)]
pub struct RuleInput<'a> {
    pub username: &'a str,
    pub source: Option<IpAddr>,
    pub transport: Transport,
    pub has_csr: bool,
    /// The registry is locked: only `whileLocked` rules take part.
    pub locked: bool,
    pub now: UnixMillis,
}

impl CompiledRule {
    /// Validates `rule` (the caps, the name, the pattern, grant-only
    /// fields) and compiles its pattern. Errors are 422 `policy` with a
    /// `rule` naming what was broken.
    pub fn new(rule: Rule) -> Result<Self, RequestError> {
        check_rule_name(&rule.name)?;
        if rule.source_cidrs.len() > SOURCE_CIDRS_MAX {
            return Err(RequestError::policy(
                "source_cidrs_count",
                format!("at most {SOURCE_CIDRS_MAX} sourceCidrs per rule"),
            ));
        }
        if rule.action == RuleAction::Deny
            && (!rule.roles.is_empty() || !rule.permissions.is_empty())
        {
            return Err(RequestError::policy(
                "rule_action",
                "a deny rule gives nothing: remove `roles` and `permissions`",
            ));
        }
        check_access_limits(&rule.roles, &rule.permissions, "given by a rule")?;
        if rule.roles.iter().any(|r| r == crate::model::ADMIN_ROLE) {
            return Err(RequestError::policy(
                "admin_role",
                "a rule cannot give the `admin` role",
            ));
        }
        if rule.max_uses == Some(0) {
            return Err(RequestError::policy(
                "max_uses",
                "maxUses must be at least 1 (delete the rule to stop it)",
            ));
        }
        let pattern = match &rule.username_pattern {
            None => None,
            Some(p) if p.len() > PATTERN_MAX => {
                return Err(RequestError::policy(
                    "username_pattern",
                    format!("usernamePattern is longer than {PATTERN_MAX} bytes"),
                ))
            }
            Some(p) => Some(
                regex::RegexBuilder::new(&format!("^(?:{p})$"))
                    .size_limit(PATTERN_COMPILED_MAX)
                    .build()
                    .map_err(|e| {
                        RequestError::policy(
                            "username_pattern",
                            format!("usernamePattern is not a valid regex: {e}"),
                        )
                    })?,
            ),
        };
        Ok(CompiledRule { rule, pattern })
    }

    /// Whether this rule decides for `input` (its use budget aside, which
    /// only the store can answer exactly).
    pub fn matches(&self, input: &RuleInput<'_>) -> bool {
        let r = &self.rule;
        (!input.locked || r.while_locked)
            && r.expires_at.is_none_or(|t| input.now < t)
            && r.transport.is_none_or(|t| t == input.transport)
            && (!r.require_csr || input.has_csr)
            && (r.source_cidrs.is_empty()
                || input
                    .source
                    .is_some_and(|ip| r.source_cidrs.iter().any(|c| c.contains(ip))))
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| p.is_match(input.username))
    }
}

/// A rule name: 1 to [`RULE_NAME_MAX`] bytes of `[A-Za-z0-9._:-]`, and not
/// `order` (the path `/rules/order` sets the order).
pub fn check_rule_name(name: &str) -> Result<(), RequestError> {
    if name.is_empty()
        || name.len() > RULE_NAME_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    {
        return Err(RequestError::policy(
            "rule_name",
            format!("a rule name is 1 to {RULE_NAME_MAX} characters from [A-Za-z0-9._:-]"),
        ));
    }
    if name == "order" {
        return Err(RequestError::policy(
            "rule_name",
            "`order` is reserved (PUT .../rules/order sets the order)",
        ));
    }
    Ok(())
}

mod rfc3339_opt {
    use std::time::{Duration, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::clock::UnixMillis;

    pub fn serialize<S: Serializer>(v: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UnixMillis>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        parse(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("expiresAt `{s}`: {e}")))
    }

    /// An RFC 3339 time in UTC (`…Z`, fractions allowed) as milliseconds
    /// since the epoch. Offsets other than `Z` are refused.
    pub fn parse(s: &str) -> Result<UnixMillis, humantime::TimestampError> {
        let t = humantime::parse_rfc3339_weak(s)?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Ok(UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Rule {
        serde_json::from_value(json).unwrap()
    }

    fn input(username: &str, source: Option<&str>) -> RuleInput<'static> {
        RuleInput {
            username: Box::leak(username.to_owned().into_boxed_str()),
            source: source.map(|s| s.parse().unwrap()),
            transport: Transport::Http,
            has_csr: false,
            locked: false,
            now: UnixMillis(1_000_000),
        }
    }

    #[test]
    fn the_pattern_is_anchored() {
        let r = CompiledRule::new(rule(serde_json::json!({
            "name": "plant4", "usernamePattern": "plant4-[0-9]+", "action": "grant"
        })))
        .unwrap();
        assert!(r.matches(&input("plant4-17", None)));
        assert!(!r.matches(&input("xplant4-17", None)));
        assert!(!r.matches(&input("plant4-17x", None)));
        // An alternation cannot escape the anchors.
        let r = CompiledRule::new(rule(serde_json::json!({
            "name": "alt", "usernamePattern": "a|b", "action": "grant"
        })))
        .unwrap();
        assert!(r.matches(&input("a", None)));
        assert!(!r.matches(&input("ab", None)));
    }

    #[test]
    fn cidrs_match_ipv4_ipv6_and_mapped_addresses() {
        let r = CompiledRule::new(rule(serde_json::json!({
            "name": "lan", "sourceCidrs": ["10.1.0.0/16", "2001:db8::/32", "127.0.0.2"],
            "action": "grant"
        })))
        .unwrap();
        assert!(r.matches(&input("dev", Some("10.1.200.3"))));
        assert!(r.matches(&input("dev", Some("::ffff:10.1.0.1"))));
        assert!(r.matches(&input("dev", Some("2001:db8:ffff::1"))));
        assert!(r.matches(&input("dev", Some("127.0.0.2"))));
        assert!(!r.matches(&input("dev", Some("127.0.0.1"))));
        assert!(!r.matches(&input("dev", Some("10.2.0.1"))));
        assert!(!r.matches(&input("dev", Some("2001:db9::1"))));
        assert!(!r.matches(&input("dev", None)), "no source, no match");
        // Host bits are cleared, and a /0 holds everything of its family.
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn bad_cidrs_are_refused_with_the_entry_named() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "nope",
            "10.0.0/8",
        ] {
            let e = serde_json::from_value::<Rule>(serde_json::json!({
                "name": "x", "sourceCidrs": [bad], "action": "grant"
            }))
            .unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn transport_csr_expiry_and_lock_narrow_the_match() {
        let r = CompiledRule::new(rule(serde_json::json!({
            "name": "x", "transport": "mqtt", "requireCsr": true,
            "expiresAt": "1970-01-01T00:16:40Z", "action": "grant"
        })))
        .unwrap();
        let mut i = input("dev", None);
        i.transport = Transport::Mqtt;
        i.has_csr = true;
        i.now = UnixMillis(999_999);
        assert!(r.matches(&i));
        i.now = UnixMillis(1_000_000);
        assert!(!r.matches(&i), "expired at 1,000,000 ms");
        i.now = UnixMillis(0);
        i.has_csr = false;
        assert!(!r.matches(&i));
        i.has_csr = true;
        i.transport = Transport::Http;
        assert!(!r.matches(&i));
        i.transport = Transport::Mqtt;
        i.locked = true;
        assert!(!r.matches(&i), "not a whileLocked rule");
        let mut locked = r.rule.clone();
        locked.while_locked = true;
        assert!(CompiledRule::new(locked).unwrap().matches(&i));
    }

    #[test]
    fn invalid_rules_name_what_is_wrong() {
        let cases = [
            (
                serde_json::json!({"name": "x", "usernamePattern": "(", "action": "grant"}),
                "username_pattern",
            ),
            (
                serde_json::json!({"name": "x", "usernamePattern": "a{1000}{1000}", "action": "grant"}),
                "username_pattern",
            ),
            (
                serde_json::json!({"name": "a/b", "action": "grant"}),
                "rule_name",
            ),
            (
                serde_json::json!({"name": "order", "action": "grant"}),
                "rule_name",
            ),
            (
                serde_json::json!({"name": "x", "action": "deny", "roles": ["r"]}),
                "rule_action",
            ),
            (
                serde_json::json!({"name": "x", "action": "grant", "roles": ["admin"]}),
                "admin_role",
            ),
            (
                serde_json::json!({"name": "x", "action": "grant", "maxUses": 0}),
                "max_uses",
            ),
        ];
        for (json, want) in cases {
            match CompiledRule::new(rule(json.clone())) {
                Err(RequestError::Policy { rule, .. }) => assert_eq!(rule, want, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn caps_hold_at_and_over_the_limit() {
        let name = "n".repeat(RULE_NAME_MAX);
        let ok = serde_json::json!({"name": name, "action": "grant",
            "usernamePattern": "a".repeat(PATTERN_MAX),
            "sourceCidrs": vec!["10.0.0.0/8"; SOURCE_CIDRS_MAX]});
        CompiledRule::new(rule(ok)).unwrap();
        let long_name =
            serde_json::json!({"name": "n".repeat(RULE_NAME_MAX + 1), "action": "grant"});
        assert!(CompiledRule::new(rule(long_name)).is_err());
        let long_pattern = serde_json::json!({"name": "x", "action": "grant",
            "usernamePattern": "a".repeat(PATTERN_MAX + 1)});
        assert!(matches!(
            CompiledRule::new(rule(long_pattern)),
            Err(RequestError::Policy {
                rule: "username_pattern",
                ..
            })
        ));
        let many = serde_json::json!({"name": "x", "action": "grant",
            "sourceCidrs": vec!["10.0.0.0/8"; SOURCE_CIDRS_MAX + 1]});
        assert!(matches!(
            CompiledRule::new(rule(many)),
            Err(RequestError::Policy {
                rule: "source_cidrs_count",
                ..
            })
        ));
    }

    #[test]
    fn a_spec_turns_bad_networks_and_times_into_named_policy_errors() {
        let spec = |json: serde_json::Value| -> RuleSpec { serde_json::from_value(json).unwrap() };
        let rule_of = |json| match spec(json).into_rule("r") {
            Err(RequestError::Policy { rule, message }) => (rule, message),
            Ok(r) => panic!("accepted {r:?}"),
            Err(e) => panic!("{e:?}"),
        };
        let (rule, message) = rule_of(
            serde_json::json!({"action": "grant", "sourceCidrs": ["10.0.0.0/8", "10.0.0.0/40"]}),
        );
        assert_eq!(rule, "source_cidrs");
        assert!(message.contains("10.0.0.0/40"), "{message}");
        let (rule, _) = rule_of(serde_json::json!({"action": "grant", "expiresAt": "tomorrow"}));
        assert_eq!(rule, "expires_at");
        let (rule, _) = rule_of(serde_json::json!({"name": "other", "action": "grant"}));
        assert_eq!(rule, "rule_name");
        let (rule, _) = rule_of(serde_json::json!({"action": "grant",
            "sourceCidrs": vec!["bad"; SOURCE_CIDRS_MAX + 1]}));
        assert_eq!(
            rule, "source_cidrs_count",
            "the cap is checked before parsing"
        );
        let r = spec(
            serde_json::json!({"name": "r", "action": "deny", "sourceCidrs": ["::1"],
            "expiresAt": "2030-01-01T00:00:00Z"}),
        )
        .into_rule("r")
        .unwrap();
        assert_eq!(r.source_cidrs[0].to_string(), "::1/128");
        assert_eq!(
            r.expires_at.unwrap().to_rfc3339(),
            "2030-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_json_round_trips_and_decided_by_is_tagged() {
        let json = serde_json::json!({
            "name": "x", "usernamePattern": "d.*", "sourceCidrs": ["10.0.0.0/8"],
            "transport": "http", "requireCsr": false, "action": "grant",
            "roles": ["sensor"], "permissions": [], "maxUses": 5,
            "expiresAt": "2030-01-01T00:00:00.000Z", "whileLocked": true
        });
        let r = rule(json.clone());
        assert_eq!(serde_json::to_value(&r).unwrap(), json);
        assert_eq!(
            serde_json::to_value(DecidedBy::Rule("x".into())).unwrap(),
            serde_json::json!({"rule": "x"})
        );
        assert!(serde_json::from_value::<Rule>(serde_json::json!({
            "name": "x", "action": "grant", "extra": 1
        }))
        .is_err());
    }
}
