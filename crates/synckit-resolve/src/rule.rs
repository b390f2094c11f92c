//! Rules (name, spec, strategy) and rule groups (nested, each with a scope, a fallback and an
//! on/off switch), as written in code before a resolver compiles them.

use synckit_types::DynResolver;

use crate::error::RulesError;
use crate::spec::{self, DynSpec};

/// One rule: when `spec` holds, `strategy` decides.
///
/// Rules are tried in order of [`priority`](Self::priority), higher first; rules of equal
/// priority keep the order they were added in. A disabled rule never fires.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) spec: DynSpec,
    pub(crate) strategy: DynResolver,
    pub(crate) priority: i64,
    pub(crate) enabled: bool,
}

impl Rule {
    /// A rule named `name` (letters, digits, `_` and `-`; unique in its group).
    pub fn new(name: impl Into<String>, spec: DynSpec, strategy: DynResolver) -> Self {
        Rule {
            name: name.into(),
            spec,
            strategy,
            priority: 0,
            enabled: true,
        }
    }

    /// Set the priority (default 0): higher priorities are tried first.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    /// Switch the rule on or off (default on).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The rule's own name (without its group path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule can fire.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// A named set of rules and subgroups with its own scope and fallback.
///
/// A resolver enters an enabled group when its scope ([`when`](Self::when), default: always)
/// holds, tries the group's rules in priority order, then its subgroups in priority order,
/// then the group's fallback. When none of them decides, the resolver goes on with the next
/// group. A rule's full name is its group path and its name joined by dots:
/// `orders.bulk.big_total`.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub(crate) name: String,
    pub(crate) scope: DynSpec,
    pub(crate) rules: Vec<Rule>,
    pub(crate) groups: Vec<RuleGroup>,
    pub(crate) fallback: Option<DynResolver>,
    pub(crate) priority: i64,
    pub(crate) enabled: bool,
}

impl RuleGroup {
    /// An empty, enabled group named `name` (letters, digits, `_` and `-`).
    pub fn new(name: impl Into<String>) -> Self {
        RuleGroup {
            name: name.into(),
            scope: spec::always(),
            rules: Vec::new(),
            groups: Vec::new(),
            fallback: None,
            priority: 0,
            enabled: true,
        }
    }

    /// Enter the group only for conflicts that satisfy `scope`.
    pub fn when(mut self, scope: DynSpec) -> Self {
        self.scope = scope;
        self
    }

    /// Add a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Add a subgroup.
    pub fn group(mut self, group: RuleGroup) -> Self {
        self.groups.push(group);
        self
    }

    /// Decide with `strategy` when the group is entered and nothing in it matched.
    pub fn fallback(mut self, strategy: DynResolver) -> Self {
        self.fallback = Some(strategy);
        self
    }

    /// Set the priority among sibling groups (default 0): higher first, ties in insertion order.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    /// Switch the whole group, subgroups included, on or off (default on).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The group's own name (without its parent path).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Check a rule or group name: non-empty, letters, digits, `_` and `-` only. Dots are reserved
/// for full names (`group.sub.rule`).
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), RulesError> {
    if name.is_empty() {
        return Err(RulesError::invalid(format!(
            "a {what} name must not be empty"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(RulesError::invalid(format!(
            "{what} name {name:?} contains {c:?}; use letters, digits, '_' and '-' (dots join group paths)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("orders-2_big", "rule").is_ok());
        assert!(check_name("é", "rule").is_ok());
        for bad in ["", "a.b", "a b", "a/b", "(fallback)"] {
            assert!(check_name(bad, "rule").is_err(), "{bad:?}");
        }
    }
}
