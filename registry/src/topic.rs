//! MQTT topic names, topic filters, and the per-user permission sets the
//! proxy checks relayed PUBLISH and SUBSCRIBE packets against. Pure
//! functions, no I/O.
//!
//! # Matching
//! A topic is split on `/` into levels; an empty level is a level like any
//! other (`a//b` has three, `/a` two). In a filter, `+` matches exactly one
//! level and `#`, allowed only as the last level, matches any number of
//! levels, including none: `a/#` matches `a` itself (MQTT 3.1.1 §4.7.1.2,
//! MQTT 5 §4.7.1.2).
//!
//! # The `$` rule
//! A filter whose first level is a wildcard does not match a topic whose
//! first level starts with `$` (MQTT-4.7.2-1): `#` does not match
//! `$SYS/broker/uptime`, but `$SYS/#` does. So a `#` grant is "every
//! application topic", not broker internals, and [`covers`] applies the same
//! rule (`covers("#", "$SYS/#")` is false).
//!
//! # `{username}`
//! A granted resource may contain a level that is exactly `{username}`, e.g.
//! `devices/{username}/#`: [`expand`] replaces it with the connecting user's
//! name, so one role can give every device its own subtree. Only whole
//! levels are replaced (`a{username}` stays as written), and a username that
//! could change the filter's shape (one outside the registry's username rule,
//! [`check_username`]: a `/`, a wildcard, a leading `$`) is never
//! substituted, so the permission grants nothing rather than more.
//!
//! # Why SUBSCRIBE is decided by subset, not intersection
//! A subscription is standing: once the broker accepts `+/telemetry` it
//! delivers every message published to any matching topic, now and later.
//! The gateway relays the broker's deliveries without looking at them, so
//! it cannot drop the ones the user may not read. A SUBSCRIBE is therefore
//! forwarded only if every topic the requested filter can match is readable:
//! [`covers`]`(granted, requested)` for some read grant. That the requested
//! filter merely overlaps a grant (`+/telemetry` vs `dev1/telemetry`) is not
//! enough. A device that wants less should subscribe to less.
//!
//! [`check_username`]: crate::request::check_username

use crate::model::{Operation, Permission, PermissionContext};
use crate::request::check_username;

/// The longest topic name or filter, in bytes: MQTT strings carry a
/// two-byte length.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The placeholder level [`expand`] replaces with the username.
pub const USERNAME_PLACEHOLDER: &str = "{username}";

/// Whether `t` may be published to: non-empty, at most [`MAX_TOPIC_LEN`]
/// bytes, no wildcard and no NUL.
pub fn valid_topic_name(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && !t.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Whether `f` is a well-formed topic filter: non-empty, at most
/// [`MAX_TOPIC_LEN`] bytes, no NUL, `+` only as a whole level, `#` only as
/// the whole last level.
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > MAX_TOPIC_LEN || f.contains('\0') {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" => return levels.peek().is_none(),
            "+" => {}
            other if other.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether a message published to `topic` is delivered to a subscription
/// on `filter`. False when either is invalid.
pub fn matches(filter: &str, topic: &str) -> bool {
    valid_filter(filter)
        && valid_topic_name(topic)
        && matches_levels(filter.split('/'), topic.split('/'))
}

/// Whether every topic `requested` can match is also matched by `granted`
/// (a subset test, see the module doc). False when either is invalid.
pub fn covers(granted: &str, requested: &str) -> bool {
    valid_filter(granted)
        && valid_filter(requested)
        && covers_levels(granted.split('/'), requested.split('/'))
}

/// Replaces every level of `filter` that is exactly `{username}` with
/// `username`. A username outside the registry's rule is not substituted
/// (see the module doc).
pub fn expand(filter: &str, username: &str) -> String {
    if check_username(username).is_err() || !filter.split('/').any(|l| l == USERNAME_PLACEHOLDER) {
        return filter.to_owned();
    }
    let mut out = String::with_capacity(filter.len() + username.len());
    for (i, level) in filter.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if level == USERNAME_PLACEHOLDER {
            username
        } else {
            level
        });
    }
    out
}

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// [`matches`] over pre-split levels. `filter` must be valid; `topic` is
/// not checked here (callers do).
fn matches_levels<'f, 't>(
    mut filter: impl Iterator<Item = &'f str>,
    mut topic: impl Iterator<Item = &'t str>,
) -> bool {
    let mut first = true;
    loop {
        match (filter.next(), topic.next()) {
            (Some(f), Some(t)) if first && is_wildcard(f) && t.starts_with('$') => return false,
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// [`covers`] over pre-split levels; both filters must be valid.
///
/// Level by level, a granted level covers the requested one when it is `#`
/// (everything from here on, the parent included), `+` against `+` or a
/// literal, or the same literal. A requested `#` also matches its parent
/// topic, which in general only a granted `#` at the same depth matches too.
/// The exception is a parent that is not a topic name because it would be
/// the empty string: at the top (`#` has no parent) and under an empty first
/// level (`/#`'s parent would be `""`). There a granted `+/#` matches
/// exactly what the requested `#` matches (`covers("+/#", "#")`,
/// `covers("/+/#", "/#")`); the brute-force test found the second case.
fn covers_levels<'g, 'r>(
    mut granted: impl Iterator<Item = &'g str>,
    mut requested: impl Iterator<Item = &'r str>,
) -> bool {
    let mut depth = 0usize;
    // Whether the requested levels so far join to "" (no topic has that name).
    let mut parent_is_empty = true;
    loop {
        let (g, r) = (granted.next(), requested.next());
        if depth == 0 {
            // The `$` rule: a requested `$`-literal first level matches
            // topics a granted wildcard first level never does.
            if let (Some(g), Some(r)) = (g, r) {
                if is_wildcard(g) && !is_wildcard(r) && r.starts_with('$') {
                    return false;
                }
            }
        }
        match (g, r) {
            (Some("#"), _) => return true,
            (Some("+"), Some("#")) if parent_is_empty => return granted.next() == Some("#"),
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            // Both literal (a requested `+` only equals a granted `+`, handled above).
            (Some(g), Some(r)) if g == r => {}
            (None, None) => return true,
            _ => return false,
        }
        parent_is_empty = depth == 0 && r == Some("");
        depth += 1;
    }
}

/// A filter split into its levels once, when the set is compiled, so that a
/// check compares slices and allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledFilter {
    levels: Box<[Box<str>]>,
}

impl CompiledFilter {
    fn new(filter: &str) -> CompiledFilter {
        CompiledFilter {
            levels: filter.split('/').map(Box::from).collect(),
        }
    }

    fn levels(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().map(|l| &**l)
    }

    fn is_hash(&self) -> bool {
        self.levels.len() == 1 && &*self.levels[0] == "#"
    }
}

/// What one user may do over MQTT, compiled from the user's granted
/// permissions. The proxy keeps one per user per worker and asks it about
/// every relayed PUBLISH ([`can_publish`](Self::can_publish), the hot path)
/// and SUBSCRIBE ([`can_subscribe`](Self::can_subscribe)). An empty set
/// denies everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermissionSet {
    /// Filters a SUBSCRIBE must fall under. Minimal: a filter another one
    /// covers is dropped at compile time, so a check tries fewer filters.
    read: Vec<CompiledFilter>,
    /// Filters a PUBLISH topic must match, minimal in the same way.
    write: Vec<CompiledFilter>,
}

impl PermissionSet {
    /// Compiles the MQTT permissions among `permissions` for `username`:
    /// `read` and `readWrite` grant subscribing, `write` and `readWrite`
    /// publishing; each resource is expanded with [`expand`]. A resource
    /// that is not a valid filter after expansion, or still holds a
    /// `{username}` level (an unsubstitutable username), grants nothing.
    pub fn compile(username: &str, permissions: &[Permission]) -> PermissionSet {
        let mut set = PermissionSet::default();
        for p in permissions
            .iter()
            .filter(|p| p.context == PermissionContext::Mqtt)
        {
            let filter = expand(&p.resource, username);
            if !valid_filter(&filter) || filter.split('/').any(|l| l == USERNAME_PLACEHOLDER) {
                continue;
            }
            if matches!(p.operation, Operation::Read | Operation::ReadWrite) {
                add_minimal(&mut set.read, &filter);
            }
            if matches!(p.operation, Operation::Write | Operation::ReadWrite) {
                add_minimal(&mut set.write, &filter);
            }
        }
        set
    }

    /// Whether the user may publish to `topic` (the resolved topic name,
    /// after any v5 topic alias): some write filter matches it. False for
    /// an invalid topic name.
    pub fn can_publish(&self, topic: &str) -> bool {
        valid_topic_name(topic)
            && self
                .write
                .iter()
                .any(|f| matches_levels(f.levels(), topic.split('/')))
    }

    /// Whether the user may subscribe to `filter`: some read filter covers
    /// it. A shared subscription `$share/{group}/{filter}` (MQTT 5 §4.8.2)
    /// delivers the messages that match its inner filter, so the inner
    /// filter is what is checked. False for an invalid filter.
    pub fn can_subscribe(&self, filter: &str) -> bool {
        let Some(inner) = unshare(filter) else {
            return false;
        };
        self.read
            .iter()
            .any(|g| covers_levels(g.levels(), inner.split('/')))
    }

    /// Whether the user may publish and subscribe to `#`, i.e. to every
    /// topic outside the `$` namespace. The caller may then relay with a
    /// plain byte splice; note that a splice also passes `$`-topics, which
    /// this set would refuse, leaving them to the broker's own rules.
    pub fn is_everything(&self) -> bool {
        self.read.iter().any(CompiledFilter::is_hash)
            && self.write.iter().any(CompiledFilter::is_hash)
    }

    /// Whether the set denies everything.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }
}

/// Adds `filter` to `list` unless a filter already there covers it, and
/// drops the filters it covers.
fn add_minimal(list: &mut Vec<CompiledFilter>, filter: &str) {
    if list
        .iter()
        .any(|g| covers_levels(g.levels(), filter.split('/')))
    {
        return;
    }
    list.retain(|f| !covers_levels(filter.split('/'), f.levels()));
    list.push(CompiledFilter::new(filter));
}

/// The filter whose matches a subscription receives: `filter` itself, or
/// the inner filter of `$share/{group}/{inner}`. `None` when invalid.
fn unshare(filter: &str) -> Option<&str> {
    if !valid_filter(filter) {
        return None;
    }
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Some(filter);
    };
    // `valid_filter` already rules out a partial wildcard in the group; a
    // whole-level one (`$share/+/x`) is not a group name either.
    let (group, inner) = rest.split_once('/')?;
    (!group.is_empty() && !is_wildcard(group) && !inner.is_empty()).then_some(inner)
}

#[cfg(test)]
mod tests;
