//! Conflict resolvers for synckit: deterministic strategies, and a rule engine that picks a
//! strategy per conflict from specs over its event kinds, aggregate id, changed fields and
//! metadata, written in code or in YAML/JSON rule files that reload while the node runs.
//!
//! The node hands every conflict to a [`ConflictResolver`]; everything here is one.
//!
//! # Strategies
//! | strategy | decides |
//! |---|---|
//! | [`LastWriteWins`] | the side with the latest event wins (by HLC, ties by node id) |
//! | [`FirstWriteWins`] | the side with the earliest event wins: the mirror image |
//! | [`AdditiveMerge`] | keep both: the local events are rebased after the remote ones |
//! | [`ManualReview`] | park the local events in the review queue for the application |
//!
//! "The local side wins" means the local events are rebased and pushed after the remote ones,
//! so their effect is the final state; "the remote side wins" drops the local events, recorded
//! in the audit trail. A [`StrategyRegistry`] names them (`lww`, `fww`, `merge`, `review`) and
//! holds custom strategies registered by name.
//!
//! # Rules
//! A [`Rule`] pairs a [`Spec`] (see [`spec`]: kind, aggregate glob, field changed, metadata
//! equality, and `and`/`or`/`not`) with a strategy. A [`DynamicResolver`] tries a list of rules
//! in order; a [`CompositeResolver`] tries top-level rules, then nested [`RuleGroup`]s, each
//! with a scope, a fallback and an on/off switch, then a global fallback. The first match
//! decides; when nothing matches and there is no fallback, resolution fails and the node parks
//! the conflict for review. [`ResolverHooks`] observe each step, per-group [`GroupStats`] count
//! them, and [`observe`] lists the metrics recorded through the `metrics` facade.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use synckit_resolve::{spec, DynamicResolver, LastWriteWins, ManualReview, AdditiveMerge, Rule};
//!
//! let resolver = DynamicResolver::builder()
//!     .rule(Rule::new("admins", spec::metadata_eq("role", json!("admin")), Arc::new(ManualReview)))
//!     .rule(Rule::new("users", spec::kind_is(["UserUpdated"]), Arc::new(LastWriteWins)))
//!     .rule(Rule::new("orders", spec::kind_is(["OrderCreated"]), Arc::new(AdditiveMerge)))
//!     .fallback(Arc::new(LastWriteWins))
//!     .build()?;
//! assert_eq!(resolver.rule_names(), ["admins", "users", "orders"]);
//! # Ok::<(), synckit_resolve::RulesError>(())
//! ```
//!
//! # Rule files
//! [`RulesLoader`] builds a [`CompositeResolver`] from a YAML or JSON file (`RULES.md` in this
//! crate describes the format); both formats decode through one positioned tree, so they build
//! identical resolvers, and every validation error names its line and column.
//! [`ReloadingResolver`] follows a file: a valid new version replaces the rule set atomically,
//! an invalid one keeps the old set and is reported.
//!
//! # Audit
//! The node records every decision, with its rule, group, context and the state before and
//! after, in its store. [`audit::query`] lists them by aggregate, time range, rule or group, a
//! page at a time; [`audit::rollback_analysis`] lists the later decisions on the same aggregate
//! that depend on one.
//!
//! # Stability
//! Stable in 0.1: the strategies, [`Spec`] and the built-in specs, the resolvers' builders,
//! and the rules file format version 1. Not yet stable: [`RulesDocument`] and its parts (fields
//! will be added), the text of [`CompositeResolver::describe`], and metric label sets.

pub mod audit;
mod config;
mod engine;
mod error;
mod glob;
mod hooks;
pub mod observe;
mod path;
mod registry;
mod reload;
mod rule;
pub mod spec;
mod strategies;

pub use config::{
    Conditions, DEFAULT_MAX_GROUP_DEPTH, DEFAULT_MAX_RULES, FORMAT_VERSION, Format, GroupDef,
    LimitsDef, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MetadataCondition, RuleDef, RulesDocument,
    RulesLoader, SettingsDef, Spanned, StrategyDef,
};
pub use engine::{
    CompositeResolver, CompositeResolverBuilder, DEFAULT_RESOLVER_NAME, DynamicResolver,
    DynamicResolverBuilder, GroupStats,
};
pub use error::{Position, RulesError, RulesErrorKind};
pub use glob::Glob;
pub use hooks::ResolverHooks;
pub use path::JsonPath;
pub use registry::{StrategyFactory, StrategyRegistry};
pub use reload::{DEFAULT_DEBOUNCE, ReloadReport, ReloadingResolver, ReloadingResolverBuilder};
pub use rule::{Rule, RuleGroup};
pub use spec::{ConflictView, DynSpec, Side, Spec};
pub use strategies::{AdditiveMerge, FirstWriteWins, LastWriteWins, ManualReview, by_name};
pub use synckit_types::{
    Conflict, ConflictResolver, Decision, DynResolver, Resolution, ResolutionContext,
};
