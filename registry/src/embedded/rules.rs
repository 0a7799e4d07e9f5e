//! The embedded store's rule list: the rules in evaluation order, each with
//! its use count. At most `rule::RULES_MAX` of them, written only by an
//! admin (and counted by a rule's decisions), so one `Vec` behind a
//! read-write lock; a lookup by name is a scan of at most a thousand names.
//!
//! Every method here is a pure change of the table. The store calls them
//! under the journal mutex: it checks with the `check_*` methods, journals
//! the change, and only then applies it, so nothing is applied that is not
//! on disk.

use crate::rule::{PutRuleResult, Rule, RuleClaim, StoredRule};

#[derive(Debug, Default)]
pub struct RuleTable {
    rules: Vec<StoredRule>,
}

impl RuleTable {
    pub fn rules(&self) -> &[StoredRule] {
        &self.rules
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.rule.name == name)
    }

    /// What [`RuleTable::put`] would do.
    pub fn check_put(&self, name: &str, max: usize) -> PutRuleResult {
        if self.position(name).is_some() {
            PutRuleResult::Replaced
        } else if self.rules.len() >= max {
            PutRuleResult::Full
        } else {
            PutRuleResult::Created
        }
    }

    /// Replaces the rule in place (keeping its uses) or appends it.
    pub fn put(&mut self, rule: Rule) {
        match self.position(&rule.name) {
            Some(i) => self.rules[i].rule = rule,
            None => self.rules.push(StoredRule { rule, uses: 0 }),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn delete(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(i) => {
                self.rules.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether `names` is exactly the defined rules, each once.
    pub fn is_order(&self, names: &[String]) -> bool {
        if names.len() != self.rules.len() {
            return false;
        }
        let mut given: Vec<&str> = names.iter().map(String::as_str).collect();
        given.sort_unstable();
        let mut have: Vec<&str> = self.rules.iter().map(|r| r.rule.name.as_str()).collect();
        have.sort_unstable();
        given == have
    }

    /// Puts the rules in the order of `names` (which [`RuleTable::is_order`]
    /// accepted). Names that are not defined are ignored.
    pub fn reorder(&mut self, names: &[String]) {
        let mut old = std::mem::take(&mut self.rules);
        for name in names {
            if let Some(i) = old.iter().position(|r| &r.rule.name == name) {
                self.rules.push(old.swap_remove(i));
            }
        }
        // Anything not named keeps its relative order, last.
        self.rules.extend(old);
    }

    /// What claiming one use of `name` would give: the new count, or why
    /// not.
    pub fn check_claim(&self, name: &str) -> RuleClaim {
        match self.position(name) {
            None => RuleClaim::Gone,
            Some(i) => {
                let r = &self.rules[i];
                if r.rule.max_uses.is_some_and(|max| r.uses >= max) {
                    RuleClaim::Exhausted
                } else {
                    RuleClaim::Claimed(r.uses + 1)
                }
            }
        }
    }

    pub fn set_uses(&mut self, name: &str, uses: u64) {
        if let Some(i) = self.position(name) {
            self.rules[i].uses = uses;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RuleAction;

    fn rule(name: &str, max_uses: Option<u64>) -> Rule {
        Rule {
            name: name.into(),
            username_pattern: None,
            source_cidrs: vec![],
            transport: None,
            require_csr: false,
            action: RuleAction::Grant,
            roles: vec![],
            permissions: vec![],
            max_uses,
            expires_at: None,
            while_locked: false,
        }
    }

    fn names(t: &RuleTable) -> Vec<&str> {
        t.rules().iter().map(|r| r.rule.name.as_str()).collect()
    }

    #[test]
    fn put_appends_replaces_in_place_and_caps() {
        let mut t = RuleTable::default();
        for n in ["a", "b", "c"] {
            assert_eq!(t.check_put(n, 3), PutRuleResult::Created);
            t.put(rule(n, None));
        }
        assert_eq!(t.check_put("d", 3), PutRuleResult::Full);
        assert_eq!(t.check_put("b", 3), PutRuleResult::Replaced);
        t.set_uses("b", 4);
        t.put(rule("b", Some(9)));
        assert_eq!(names(&t), ["a", "b", "c"]);
        assert_eq!(t.rules()[1].uses, 4, "a replaced rule keeps its uses");
    }

    #[test]
    fn order_must_name_every_rule_once() {
        let mut t = RuleTable::default();
        for n in ["a", "b", "c"] {
            t.put(rule(n, None));
        }
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!t.is_order(&v(&["a", "b"])));
        assert!(!t.is_order(&v(&["a", "b", "b"])));
        assert!(!t.is_order(&v(&["a", "b", "x"])));
        assert!(t.is_order(&v(&["c", "a", "b"])));
        t.reorder(&v(&["c", "a", "b"]));
        assert_eq!(names(&t), ["c", "a", "b"]);
    }

    #[test]
    fn claims_stop_at_max_uses() {
        let mut t = RuleTable::default();
        t.put(rule("once", Some(1)));
        assert_eq!(t.check_claim("once"), RuleClaim::Claimed(1));
        t.set_uses("once", 1);
        assert_eq!(t.check_claim("once"), RuleClaim::Exhausted);
        assert_eq!(t.check_claim("nope"), RuleClaim::Gone);
    }
}
