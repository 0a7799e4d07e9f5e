use super::*;
use crate::model::{Operation, Permission, PermissionContext};

fn mqtt(resource: &str, operation: Operation) -> Permission {
    Permission {
        resource: resource.to_owned(),
        operation,
        context: PermissionContext::Mqtt,
    }
}

#[test]
fn topic_names() {
    for ok in ["a", "a/b", "/", "a//b", "/a", "$SYS/x", "a b", "ü/ñ"] {
        assert!(valid_topic_name(ok), "{ok:?}");
    }
    for bad in ["", "a/+", "+", "#", "a/#", "a+b", "a#", "a\0b"] {
        assert!(!valid_topic_name(bad), "{bad:?}");
    }
    assert!(valid_topic_name(&"x".repeat(MAX_TOPIC_LEN)));
    assert!(!valid_topic_name(&"x".repeat(MAX_TOPIC_LEN + 1)));
}

#[test]
fn topic_filters() {
    for ok in [
        "a", "#", "+", "a/#", "+/+", "a/+/b", "/", "//", "+/", "/#", "$SYS/#", "+/#",
    ] {
        assert!(valid_filter(ok), "{ok:?}");
    }
    for bad in [
        "", "a#", "a/b#", "#/a", "a/#/b", "a+", "+a/b", "a/++", "##", "a\0",
    ] {
        assert!(!valid_filter(bad), "{bad:?}");
    }
    assert!(valid_filter(&"x".repeat(MAX_TOPIC_LEN)));
    assert!(!valid_filter(&"x".repeat(MAX_TOPIC_LEN + 1)));
}

#[test]
fn topic_matching() {
    let yes = [
        ("a/b", "a/b"),
        ("a/+", "a/b"),
        ("+/b", "a/b"),
        ("a/#", "a/b/c"),
        ("a/#", "a"), // `#` includes the parent level
        ("#", "a"),
        ("#", "a/b/c"),
        ("+", "a"),
        ("a/+/c", "a//c"), // an empty level is a level
        ("+/+", "/a"),
        ("/#", "/"),
        ("$SYS/#", "$SYS/uptime"),
        ("$SYS/+", "$SYS/uptime"),
        ("a/$x", "a/$x"),
        ("a/+", "a/$x"), // the `$` rule is about the first level only
    ];
    let no = [
        ("a/b", "a/c"),
        ("a/+", "a/b/c"),
        ("a/+", "a"),
        ("+", "a/b"),
        ("a/b", "a/b/c"),
        ("a/b/c", "a/b"),
        ("a/+/c", "a/c"),
        ("#", "$SYS/uptime"), // MQTT-4.7.2-1
        ("+/uptime", "$SYS/uptime"),
        ("+", "$x"),
        ("a/#", "ab"),
        // Invalid inputs never match.
        ("a/#/b", "a/x/b"),
        ("a+", "a+"),
        ("+", "+"),
        ("#", "#"),
    ];
    for (filter, topic) in yes {
        assert!(matches(filter, topic), "{filter:?} should match {topic:?}");
    }
    for (filter, topic) in no {
        assert!(
            !matches(filter, topic),
            "{filter:?} should not match {topic:?}"
        );
    }
    // The empty string is not a topic name, so nothing matches it.
    assert!(!matches("+", "") && !matches("#", ""));
}

#[test]
fn topic_covers_table() {
    let yes = [
        ("devices/a/#", "devices/a/+/x"),
        ("devices/a/#", "devices/a/#"),
        ("devices/a/#", "devices/a"),
        ("a/#", "a"),
        ("+/x", "a/x"),
        ("+/x", "+/x"),
        ("#", "#"),
        ("#", "a/b/c"),
        ("#", "+/#"),
        ("#", "a/#"),
        ("+", "a"),
        ("+", "+"),
        ("+/+", "a/+"),
        ("a/+/#", "a/b"),
        ("a/+/#", "a/+/c/#"),
        ("+/#", "#"), // every topic has a first level, so these match the same
        ("+/#", "a"),
        ("/+/#", "/#"), // `/#`'s parent would be the empty topic
        ("+/+/#", "/#"),
        ("a//b", "a//b"),
        ("a/+/b", "a//b"),
        ("$SYS/#", "$SYS/x"),
        ("$SYS/#", "$SYS"),
        ("+", "a"),
        ("a/+", "a/$x"), // `$` matters on the first level only
    ];
    let no = [
        ("devices/a/#", "#"),
        ("devices/a/#", "devices/+/x"),
        ("a/+", "a/#"), // `a/#` matches `a/b/c` and `a`
        ("a/+", "a"),
        ("a/+/#", "a/#"), // `a/#` matches `a`
        ("a/+/#", "a"),
        ("+/+/#", "#"), // `#` matches `a`
        ("+", "#"),
        ("+", "+/+"),
        ("a", "+"),
        ("a/x", "+/x"),
        ("a", "a/#"),
        ("a", "a/b"),
        ("a/b", "a"),
        ("a/b", "a/+"),
        ("#", "$SYS/x"), // MQTT-4.7.2-1
        ("#", "$SYS/#"),
        ("+/x", "$SYS/x"),
        ("+/#", "$SYS"),
        ("a/+/#", "a/#"),
        ("//+/#", "//#"), // `//#` matches `/`
        ("+/+/#", "+/#"), // `+/#` matches `a`
        ("$SYS/#", "#"),
        ("a//b", "a/+/b"),
        // Invalid filters cover nothing and are covered by nothing.
        ("#", "a/#/b"),
        ("#", ""),
        ("a/#/b", "a/x/b"),
    ];
    for (g, r) in yes {
        assert!(covers(g, r), "{g:?} should cover {r:?}");
    }
    for (g, r) in no {
        assert!(!covers(g, r), "{g:?} should not cover {r:?}");
    }
}

/// Every valid string of 1..=`depth` levels drawn from `alphabet`.
fn enumerate(alphabet: &[&str], depth: usize, valid: fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut layer: Vec<String> = vec![String::new()];
    for d in 1..=depth {
        let mut next = Vec::new();
        for prefix in &layer {
            for level in alphabet {
                next.push(if d == 1 {
                    (*level).to_owned()
                } else {
                    format!("{prefix}/{level}")
                });
            }
        }
        out.extend(next.iter().filter(|s| valid(s)).cloned());
        layer = next;
    }
    out
}

/// `covers(g, r)` agrees with the definition, "every topic `r` matches,
/// `g` matches too", over every pair of filters of up to 3 levels drawn
/// from {a, b, $s, "", +, #}.
///
/// Why a finite set of topics decides the definition: topics are enumerated
/// with levels from {a, b, $s, ""} and 1..=4 levels. If some topic `t`
/// witnesses that `r` is not covered (`r` matches `t`, `g` does not), an
/// enumerated one does too:
/// - depth: a filter of at most 3 levels looks only at a topic's first 3
///   levels and at whether it has more; truncating `t` to 4 levels keeps
///   both, so the 4-level truncation is still a witness. (A witness can
///   need a level more than either filter has: `a/b` does not cover
///   `a/b/#` because of `a/b/x`; hence 4 levels, not 3.)
/// - level values: a filter compares a topic level only for equality with
///   its own literal at that position, and, at the first level, for a
///   leading `$`. A level of `t` outside the alphabet is matched by a
///   wildcard in `r` (no literal of `r` equals it), so it cannot start with
///   `$` at the first level; replace it with whichever of `a` or `b` is not
///   `g`'s literal there. `r` still matches, `g` still does not.
///
/// The empty topic is not a topic name, so the enumeration skips it; that
/// is what makes `+/#` cover `#`, and `/+/#` cover `/#` (a case this test
/// found: `/#` would otherwise "match" `""`).
#[test]
fn topic_covers_brute_force() {
    let filters = enumerate(&["a", "b", "$s", "", "+", "#"], 3, valid_filter);
    let topics = enumerate(&["a", "b", "$s", ""], 4, valid_topic_name);
    assert_eq!(
        topics.len(),
        4 + 16 + 64 + 256 - 1,
        "all but the empty topic"
    );
    assert!(filters.len() > 150, "{}", filters.len());
    // One bit per topic: which topics each filter matches.
    let matched: Vec<Vec<bool>> = filters
        .iter()
        .map(|f| topics.iter().map(|t| matches(f, t)).collect())
        .collect();
    let mut covered_pairs = 0;
    for (gi, g) in filters.iter().enumerate() {
        for (ri, r) in filters.iter().enumerate() {
            let subset = matched[ri]
                .iter()
                .zip(&matched[gi])
                .all(|(in_r, in_g)| !in_r || *in_g);
            assert_eq!(covers(g, r), subset, "covers({g:?}, {r:?})");
            covered_pairs += usize::from(subset);
        }
    }
    // Not a vacuous agreement: both answers occur, and often.
    assert!(covered_pairs > filters.len(), "{covered_pairs}");
    assert!(covered_pairs < filters.len() * filters.len() / 2);
}

/// A compiled set answers like its filters taken one by one, for every pair
/// of grants of up to 2 levels: dropping covered filters loses nothing.
#[test]
fn topic_permission_set_agrees_with_its_filters() {
    let filters = enumerate(&["a", "b", "$s", "", "+", "#"], 2, valid_filter);
    let topics = enumerate(&["a", "b", "$s", ""], 3, valid_topic_name);
    let requests = enumerate(&["a", "b", "$s", "", "+", "#"], 3, valid_filter);
    for g1 in &filters {
        for g2 in &filters {
            let set = PermissionSet::compile(
                "dev-1",
                &[
                    mqtt(g1, Operation::ReadWrite),
                    mqtt(g2, Operation::ReadWrite),
                ],
            );
            for t in &topics {
                assert_eq!(
                    set.can_publish(t),
                    matches(g1, t) || matches(g2, t),
                    "{g1:?} + {g2:?} publishing {t:?}"
                );
            }
            for r in requests.iter().step_by(7) {
                assert_eq!(
                    set.can_subscribe(r),
                    covers(g1, r) || covers(g2, r),
                    "{g1:?} + {g2:?} subscribing {r:?}"
                );
            }
        }
    }
}

#[test]
fn topic_expand_username() {
    assert_eq!(expand("devices/{username}/#", "dev-1"), "devices/dev-1/#");
    assert_eq!(expand("{username}", "dev.1@x_y"), "dev.1@x_y");
    assert_eq!(expand("{username}/{username}", "abc"), "abc/abc");
    // Only whole levels are placeholders.
    assert_eq!(expand("a{username}/b", "dev-1"), "a{username}/b");
    assert_eq!(expand("{username}x", "dev-1"), "{username}x");
    assert_eq!(expand("a/{user}/b", "dev-1"), "a/{user}/b");
    assert_eq!(expand("plain/topic", "dev-1"), "plain/topic");
    // A username that could change the filter's shape is not substituted.
    for bad in ["a/b", "+", "#", "$SYS", "x+y", "ab", ""] {
        assert_eq!(expand("{username}/#", bad), "{username}/#", "{bad:?}");
    }
}

#[test]
fn topic_permission_set_compile() {
    let perms = [
        mqtt("devices/{username}/#", Operation::ReadWrite),
        mqtt("broadcast/+", Operation::Read),
        mqtt("telemetry/{username}", Operation::Write),
        // Not MQTT: ignored.
        Permission {
            resource: "#".to_owned(),
            operation: Operation::ReadWrite,
            context: PermissionContext::Http,
        },
        // Not a valid filter: grants nothing.
        mqtt("bad/#/filter", Operation::ReadWrite),
    ];
    let set = PermissionSet::compile("dev-1", &perms);
    assert!(!set.is_everything() && !set.is_empty());

    assert!(set.can_publish("devices/dev-1/state"));
    assert!(set.can_publish("devices/dev-1"));
    assert!(set.can_publish("telemetry/dev-1"));
    assert!(!set.can_publish("telemetry/dev-2"));
    assert!(!set.can_publish("devices/dev-2/state"));
    assert!(!set.can_publish("broadcast/all"), "read-only");
    assert!(!set.can_publish("bad/x/filter"));
    assert!(!set.can_publish("devices/dev-1/+"), "not a topic name");
    assert!(!set.can_publish(""));

    assert!(set.can_subscribe("devices/dev-1/#"));
    assert!(set.can_subscribe("devices/dev-1/+/cmd"));
    assert!(set.can_subscribe("broadcast/+"));
    assert!(set.can_subscribe("broadcast/all"));
    assert!(
        !set.can_subscribe("broadcast/#"),
        "broadcast/# matches broadcast/a/b"
    );
    assert!(!set.can_subscribe("telemetry/dev-1"), "write-only");
    assert!(!set.can_subscribe("devices/+/#"));
    assert!(!set.can_subscribe("#"));
    assert!(!set.can_subscribe("devices/dev-1/#/x"), "invalid filter");
}

#[test]
fn topic_permission_set_shared_subscriptions() {
    let set = PermissionSet::compile("dev-1", &[mqtt("jobs/#", Operation::Read)]);
    assert!(set.can_subscribe("$share/workers/jobs/#"));
    assert!(set.can_subscribe("$share/workers/jobs/+/new"));
    assert!(!set.can_subscribe("$share/workers/#"));
    assert!(!set.can_subscribe("$share/jobs/#"), "group jobs, filter #");
    assert!(
        !set.can_subscribe("$share/+/jobs/#"),
        "a wildcard is no group"
    );
    assert!(!set.can_subscribe("$share//jobs/#"), "empty group");
    assert!(!set.can_subscribe("$share/workers"), "no inner filter");
    assert!(!set.can_subscribe("$share/workers/"), "empty inner filter");
    // The inner filter obeys the `$` rule like any other.
    let all = PermissionSet::compile("dev-1", &[mqtt("#", Operation::Read)]);
    assert!(all.can_subscribe("$share/g/#"));
    assert!(!all.can_subscribe("$share/g/$SYS/#"));
}

#[test]
fn topic_permission_set_everything_and_empty() {
    let empty = PermissionSet::compile("dev-1", &[]);
    assert!(empty.is_empty() && !empty.is_everything());
    assert!(!empty.can_publish("a") && !empty.can_subscribe("a"));

    let rw = PermissionSet::compile("dev-1", &[mqtt("#", Operation::ReadWrite)]);
    assert!(rw.is_everything());
    assert!(rw.can_publish("any/topic") && rw.can_subscribe("#"));
    assert!(!rw.can_publish("$SYS/x"), "`#` is not the `$` namespace");

    let split = PermissionSet::compile(
        "dev-1",
        &[mqtt("#", Operation::Read), mqtt("#", Operation::Write)],
    );
    assert!(split.is_everything(), "read # and write # is readWrite #");
    assert!(!PermissionSet::compile("dev-1", &[mqtt("#", Operation::Read)]).is_everything());
    assert!(!PermissionSet::compile("dev-1", &[mqtt("+/#", Operation::ReadWrite)]).is_everything());

    // An unsubstitutable username: the `{username}` grant gives nothing,
    // in particular not the literal topic `{username}/x`.
    let odd = PermissionSet::compile("ab", &[mqtt("{username}/#", Operation::ReadWrite)]);
    assert!(odd.is_empty());
    assert!(!odd.can_publish("{username}/x"));
}

#[test]
fn topic_permission_set_is_minimal() {
    let set = PermissionSet::compile(
        "dev-1",
        &[
            mqtt("a/b", Operation::Write),
            mqtt("a/+", Operation::Write),
            mqtt("a/#", Operation::Write),
            mqtt("a/c", Operation::Write),
            mqtt("b", Operation::Write),
            mqtt("b", Operation::Write),
        ],
    );
    assert_eq!(set.write.len(), 2, "{:?}", set.write);
    assert!(set.can_publish("a/b") && set.can_publish("a") && set.can_publish("b"));
}
