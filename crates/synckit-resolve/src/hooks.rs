//! Hooks: callbacks a resolver calls when a rule matched, a fallback was used, a conflict was
//! resolved, or resolution failed.

use std::fmt::Debug;
use std::time::Duration;

use synckit_types::{Conflict, Error, Resolution};

/// Observes a rule-based resolver. Every method does nothing by default.
///
/// Hooks run inline on the resolving task, in the order they were added: keep them short and
/// never block. For one conflict the calls come in this order: `rule_matched` or
/// `fallback_used` (at most one), then `resolved` or `error`; a timed-out strategy gives `error`
/// with [`synckit_types::ErrorKind::Timeout`] and then `resolved` with the review decision.
pub trait ResolverHooks: Send + Sync + Debug + 'static {
    /// The rule with full name `rule` (`group.sub.rule`) matched and its strategy will decide.
    fn rule_matched(&self, _conflict: &Conflict, _rule: &str) {}

    /// No rule matched; the fallback of `group` (a full group path) decides, or the global
    /// fallback when `group` is `None`.
    fn fallback_used(&self, _conflict: &Conflict, _group: Option<&str>) {}

    /// The resolver answered `resolution` after `elapsed`.
    fn resolved(&self, _conflict: &Conflict, _resolution: &Resolution, _elapsed: Duration) {}

    /// Resolution failed (no rule matched and no fallback, a strategy failed, or a strategy
    /// timed out).
    fn error(&self, _conflict: &Conflict, _error: &Error) {}
}
