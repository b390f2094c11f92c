//! The rule engine: `CompositeResolver` (groups tried in order, then the global fallback) and
//! `DynamicResolver` (a flat list of rules), with hooks, per-group statistics, metrics, tracing
//! spans, a resolution timeout and an event-count limit.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use synckit_types::{
    Conflict, ConflictResolver, Decision, DynResolver, Error, ErrorKind, Resolution,
    ResolutionContext, Result,
};
use tracing::{Instrument, field};

use crate::error::{RulesError, RulesErrorKind};
use crate::hooks::ResolverHooks;
use crate::observe::{Decider, Labels, NONE, Via};
use crate::rule::{Rule, RuleGroup, check_name};
use crate::spec::{ConflictView, DynSpec};

/// The name a resolver gets when none is given.
pub const DEFAULT_RESOLVER_NAME: &str = "rules";

/// Counters of one group, read with [`CompositeResolver::group_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupStats {
    /// Conflicts that entered the group (it was enabled and its scope held).
    pub entered: u64,
    /// Conflicts decided by one of the group's own rules.
    pub rule_matches: u64,
    /// Conflicts decided by the group's fallback.
    pub fallbacks: u64,
    /// Times the group was passed over because it is disabled.
    pub skipped_disabled: u64,
    /// Strategies of the group (rules or fallback) that failed.
    pub errors: u64,
    /// Strategies of the group abandoned after the resolution timeout.
    pub timeouts: u64,
}

#[derive(Debug, Default)]
struct GroupCounters {
    entered: AtomicU64,
    rule_matches: AtomicU64,
    fallbacks: AtomicU64,
    skipped_disabled: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl GroupCounters {
    fn snapshot(&self) -> GroupStats {
        GroupStats {
            entered: self.entered.load(Ordering::Relaxed),
            rule_matches: self.rule_matches.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            skipped_disabled: self.skipped_disabled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct CompiledRule {
    name: Arc<str>,
    enabled: bool,
    spec: DynSpec,
    strategy: DynResolver,
    decider: Decider,
}

#[derive(Debug)]
struct CompiledGroup {
    /// Full path; empty for the root.
    path: Arc<str>,
    enabled: bool,
    scope: DynSpec,
    rules: Vec<CompiledRule>,
    groups: Vec<CompiledGroup>,
    fallback: Option<DynResolver>,
    /// Labels and metric keys of `fallback`.
    fallback_decider: Decider,
    stats: GroupCounters,
}

/// What decides one conflict.
enum Choice<'a> {
    Rule(&'a CompiledRule, &'a CompiledGroup),
    GroupFallback(&'a CompiledGroup, &'a DynResolver),
    Fallback(&'a CompiledGroup, &'a DynResolver),
}

struct Compiler {
    resolver: Arc<str>,
    rule_names: BTreeSet<Arc<str>>,
    group_paths: BTreeSet<Arc<str>>,
    deciders: usize,
    rules: usize,
}

impl Compiler {
    fn group(
        &mut self,
        group: RuleGroup,
        parent: Option<&str>,
        parent_enabled: bool,
    ) -> Result<CompiledGroup, RulesError> {
        let root = parent.is_none();
        let path: Arc<str> = match parent {
            None => "".into(),
            Some("") => group.name.as_str().into(),
            Some(parent) => format!("{parent}.{}", group.name).into(),
        };
        if !root {
            check_name(&group.name, "group")?;
            if !self.group_paths.insert(Arc::clone(&path)) {
                return Err(RulesError::new(
                    RulesErrorKind::DuplicateName,
                    format!("two groups are named {path:?}"),
                ));
            }
        }
        let enabled = parent_enabled && group.enabled;
        let mut rules = group.rules;
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut compiled_rules = Vec::with_capacity(rules.len());
        for rule in rules {
            check_name(&rule.name, "rule")?;
            let name: Arc<str> = if root {
                rule.name.as_str().into()
            } else {
                format!("{path}.{}", rule.name).into()
            };
            if !self.rule_names.insert(Arc::clone(&name)) {
                return Err(RulesError::new(
                    RulesErrorKind::DuplicateName,
                    format!("two rules are named {name:?}"),
                ));
            }
            self.rules += 1;
            if enabled && rule.enabled {
                self.deciders += 1;
            }
            let decider = Decider::new(Labels {
                resolver: Arc::clone(&self.resolver),
                group: if root { NONE.into() } else { Arc::clone(&path) },
                rule: Arc::clone(&name),
                via: Via::Rule,
            });
            compiled_rules.push(CompiledRule {
                name,
                decider,
                enabled: rule.enabled,
                spec: rule.spec,
                strategy: rule.strategy,
            });
        }
        let mut groups = group.groups;
        groups.sort_by_key(|g| std::cmp::Reverse(g.priority));
        let groups = groups
            .into_iter()
            .map(|g| self.group(g, Some(&path), enabled))
            .collect::<Result<Vec<_>, _>>()?;
        if enabled && group.fallback.is_some() {
            self.deciders += 1;
        }
        Ok(CompiledGroup {
            fallback_decider: Decider::new(Labels {
                resolver: Arc::clone(&self.resolver),
                // The metric label: the path, or `-` for the root.
                group: if root { NONE.into() } else { Arc::clone(&path) },
                rule: NONE.into(),
                via: Via::GroupFallback,
            }),
            path,
            enabled: group.enabled,
            scope: group.scope,
            rules: compiled_rules,
            groups,
            fallback: group.fallback,
            stats: GroupCounters::default(),
        })
    }
}

impl CompiledGroup {
    /// The first rule that matches, depth first, or the innermost fallback of an entered group.
    fn choose<'a>(&'a self, view: &ConflictView<'_>) -> Option<Choice<'a>> {
        bump(&self.stats.entered);
        for rule in &self.rules {
            if rule.enabled && rule.spec.matches(view) {
                return Some(Choice::Rule(rule, self));
            }
        }
        for group in &self.groups {
            if !group.enabled {
                bump(&group.stats.skipped_disabled);
                continue;
            }
            if !group.scope.matches(view) {
                continue;
            }
            if let Some(choice) = group.choose(view) {
                return Some(choice);
            }
        }
        self.fallback
            .as_ref()
            .map(|fallback| Choice::GroupFallback(self, fallback))
    }

    fn visit<'a>(&'a self, out: &mut Vec<&'a CompiledGroup>) {
        out.push(self);
        for group in &self.groups {
            group.visit(out);
        }
    }

    fn describe(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        for rule in &self.rules {
            let state = if rule.enabled { "" } else { " (disabled)" };
            let _ = writeln!(
                out,
                "{pad}rule {}{state} when {:?} => {:?}",
                rule.name, rule.spec, rule.strategy
            );
        }
        for group in &self.groups {
            let state = if group.enabled { "" } else { " (disabled)" };
            let _ = writeln!(
                out,
                "{pad}group {}{state} when {:?}",
                group.path, group.scope
            );
            group.describe(out, depth + 1);
        }
        if !self.path.is_empty()
            && let Some(fallback) = &self.fallback
        {
            let _ = writeln!(out, "{pad}fallback => {fallback:?}");
        }
    }
}

/// The rule engine shared by [`CompositeResolver`] and [`DynamicResolver`].
#[derive(Debug)]
struct Engine {
    name: Arc<str>,
    root: CompiledGroup,
    fallback: Option<DynResolver>,
    timeout: Option<Duration>,
    max_events: Option<usize>,
    hooks: Vec<Arc<dyn ResolverHooks>>,
    rule_count: usize,
    /// Labels and metric keys of the global fallback.
    fallback_decider: Decider,
    /// Labels and metric keys of the event-count limit.
    limit_decider: Decider,
}

/// Settings shared by both builders.
#[derive(Debug, Clone, Default)]
struct Settings {
    name: Option<String>,
    fallback: Option<DynResolver>,
    timeout: Option<Duration>,
    max_events: Option<usize>,
    hooks: Vec<Arc<dyn ResolverHooks>>,
}

impl Engine {
    fn build(root: RuleGroup, settings: Settings) -> Result<Engine, RulesError> {
        let name = settings
            .name
            .unwrap_or_else(|| DEFAULT_RESOLVER_NAME.to_owned());
        if name.is_empty() {
            return Err(RulesError::invalid("a resolver name must not be empty"));
        }
        if settings.timeout == Some(Duration::ZERO) {
            return Err(RulesError::invalid(
                "the resolution timeout must be longer than zero",
            ));
        }
        let name: Arc<str> = name.into();
        let mut compiler = Compiler {
            resolver: Arc::clone(&name),
            rule_names: BTreeSet::new(),
            group_paths: BTreeSet::new(),
            deciders: 0,
            rules: 0,
        };
        let root = compiler.group(root, None, true)?;
        if compiler.deciders == 0 && settings.fallback.is_none() {
            return Err(RulesError::new(
                RulesErrorKind::Empty,
                format!(
                    "resolver {name:?} has no enabled rule and no fallback, so it could never \
                     decide; add a rule or a fallback"
                ),
            ));
        }
        let decider = |via| {
            Decider::new(Labels {
                resolver: Arc::clone(&name),
                group: NONE.into(),
                rule: NONE.into(),
                via,
            })
        };
        Ok(Engine {
            fallback_decider: decider(Via::Fallback),
            limit_decider: decider(Via::Limit),
            name,
            root,
            fallback: settings.fallback,
            timeout: settings.timeout,
            max_events: settings.max_events,
            hooks: settings.hooks,
            rule_count: compiler.rules,
        })
    }

    fn choose(&self, conflict: &Conflict) -> Option<Choice<'_>> {
        let view = ConflictView::new(conflict);
        self.root.choose(&view).or_else(|| {
            self.fallback
                .as_ref()
                .map(|fallback| Choice::Fallback(&self.root, fallback))
        })
    }

    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        let span = tracing::debug_span!(
            "resolve",
            resolver = %self.name,
            aggregate = %conflict.aggregate_id,
            rule = field::Empty,
            group = field::Empty,
            decision = field::Empty,
        );
        self.resolve_in(conflict, context, &span)
            .instrument(span.clone())
            .await
    }

    async fn resolve_in(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
        span: &tracing::Span,
    ) -> Result<Resolution> {
        let started = Instant::now();
        let events = conflict.local.len() + conflict.remote.len();
        if let Some(max) = self.max_events
            && events > max
        {
            let decider = &self.limit_decider;
            let resolution = Resolution::new(
                Decision::Review,
                "limit",
                format!(
                    "the conflict carries {events} events, more than the limit of {max}; \
                     parked for review without evaluating rules"
                ),
            );
            decider.labels.review("limit");
            return Ok(self.finish(conflict, resolution, decider, started, span));
        }

        let Some(choice) = self.choose(conflict) else {
            let error = Error::config(format!(
                "no rule of resolver {:?} matched the conflict on aggregate {} and there is no \
                 fallback; the conflict goes to review",
                self.name, conflict.aggregate_id
            ));
            tracing::warn!(resolver = %self.name, aggregate = %conflict.aggregate_id, "no rule matched and no fallback");
            self.fallback_decider.labels.error("unmatched");
            for hook in &self.hooks {
                hook.error(conflict, &error);
            }
            return Err(error);
        };

        let (group, rule, strategy, decider) = match choice {
            Choice::Rule(rule, group) => {
                bump(&group.stats.rule_matches);
                for hook in &self.hooks {
                    hook.rule_matched(conflict, &rule.name);
                }
                (group, Some(rule), &rule.strategy, &rule.decider)
            }
            Choice::GroupFallback(group, strategy) => {
                bump(&group.stats.fallbacks);
                for hook in &self.hooks {
                    hook.fallback_used(conflict, Some(&group.path));
                }
                (group, None, strategy, &group.fallback_decider)
            }
            Choice::Fallback(root, strategy) => {
                bump(&root.stats.fallbacks);
                for hook in &self.hooks {
                    hook.fallback_used(conflict, None);
                }
                (root, None, strategy, &self.fallback_decider)
            }
        };
        let labels = &decider.labels;
        let group_path = (!group.path.is_empty()).then(|| group.path.to_string());
        span.record("rule", field::display(&labels.rule));
        span.record("group", field::display(&labels.group));

        match with_timeout(strategy.resolve(conflict, context), self.timeout).await {
            Ok(Ok(mut resolution)) => {
                resolution.group = group_path;
                match labels.via {
                    Via::Rule => resolution.rule = rule.map(|r| r.name.to_string()),
                    Via::GroupFallback => {
                        resolution.reason =
                            format!("fallback of group {}: {}", group.path, resolution.reason);
                    }
                    Via::Fallback => {
                        resolution.reason = format!("global fallback: {}", resolution.reason);
                    }
                    Via::Limit => {}
                }
                if resolution.decision == Decision::Review {
                    decider.review_decision();
                }
                Ok(self.finish(conflict, resolution, decider, started, span))
            }
            Ok(Err(error)) => {
                bump(&group.stats.errors);
                let error = error.context(format!(
                    "resolver {:?}, {}",
                    self.name,
                    decider_name(labels)
                ));
                tracing::warn!(resolver = %self.name, aggregate = %conflict.aggregate_id, %error, "strategy failed");
                labels.error("strategy");
                for hook in &self.hooks {
                    hook.error(conflict, &error);
                }
                Err(error)
            }
            Err(limit) => {
                bump(&group.stats.timeouts);
                let reason = format!(
                    "{} did not answer within {} ms; abandoned and parked for review",
                    decider_name(labels),
                    limit.as_millis()
                );
                tracing::warn!(resolver = %self.name, aggregate = %conflict.aggregate_id, "{reason}");
                labels.timeout();
                labels.review("timeout");
                let error = Error::new(ErrorKind::Timeout, reason.clone());
                for hook in &self.hooks {
                    hook.error(conflict, &error);
                }
                let resolution = Resolution {
                    rule: rule.map(|r| r.name.to_string()),
                    group: group_path,
                    ..Resolution::new(Decision::Review, "timeout", reason)
                };
                Ok(self.finish(conflict, resolution, decider, started, span))
            }
        }
    }

    fn finish(
        &self,
        conflict: &Conflict,
        resolution: Resolution,
        decider: &Decider,
        started: Instant,
        span: &tracing::Span,
    ) -> Resolution {
        let elapsed = started.elapsed();
        let decision = resolution.decision.kind();
        span.record("decision", field::display(decision.as_str()));
        decider.decision(decision, elapsed);
        tracing::debug!(
            decision = decision.as_str(),
            strategy = %resolution.strategy,
            reason = %resolution.reason,
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "resolved"
        );
        for hook in &self.hooks {
            hook.resolved(conflict, &resolution, elapsed);
        }
        resolution
    }

    fn group_stats(&self) -> Vec<(String, GroupStats)> {
        let mut groups = Vec::new();
        self.root.visit(&mut groups);
        groups
            .into_iter()
            .map(|g| (g.path.to_string(), g.stats.snapshot()))
            .collect()
    }

    fn rule_names(&self) -> Vec<String> {
        fn walk(group: &CompiledGroup, out: &mut Vec<String>) {
            out.extend(group.rules.iter().map(|r| r.name.to_string()));
            for g in &group.groups {
                walk(g, out);
            }
        }
        let mut out = Vec::with_capacity(self.rule_count);
        walk(&self.root, &mut out);
        out
    }

    fn describe(&self) -> String {
        let mut out = format!("resolver {:?}", self.name);
        if let Some(timeout) = self.timeout {
            let _ = write!(out, " timeout={}ms", timeout.as_millis());
        }
        if let Some(max) = self.max_events {
            let _ = write!(out, " max_events={max}");
        }
        out.push('\n');
        self.root.describe(&mut out, 1);
        if let Some(fallback) = &self.fallback {
            let _ = writeln!(out, "  fallback => {fallback:?}");
        }
        out
    }
}

/// Names what decided, for messages: `rule "a.b"`, `the fallback of group "a"`, ...
fn decider_name(labels: &Labels) -> String {
    match labels.via {
        Via::Rule => format!("the strategy of rule {:?}", labels.rule),
        Via::GroupFallback => format!("the fallback of group {:?}", labels.group),
        Via::Fallback | Via::Limit => "the global fallback".to_owned(),
    }
}

/// Run `future`, abandoning it after `limit`. A future that is ready on its first poll (every
/// built-in strategy) never touches the timer. Outside a Tokio runtime the limit is not
/// enforced, since there is no timer to enforce it with.
async fn with_timeout<F: Future>(
    future: F,
    limit: Option<Duration>,
) -> Result<F::Output, Duration> {
    let Some(limit) = limit else {
        return Ok(future.await);
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut future = pin!(future);
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return Ok(output);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("resolution timeout not enforced: no Tokio runtime");
        return Ok(future.await);
    }
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| limit)
}

/// Rules and nested rule groups, tried in order, then a global fallback.
///
/// For each conflict the resolver evaluates, depth first: the top-level rules in priority
/// order, then each enabled group whose scope holds (its rules, its subgroups, its fallback),
/// then the global fallback. The first match decides; nothing after it is evaluated and no
/// other strategy is called. When nothing decides, [`resolve`](ConflictResolver::resolve)
/// returns an error and the node parks the conflict for review: nothing is lost.
///
/// The answer's [`Resolution::rule`] is the full name of the matching rule (`group.sub.rule`);
/// for a fallback it is `None` and the reason starts with `fallback of group ...:` or
/// `global fallback:`.
///
/// A strategy that has not answered within the [timeout](CompositeResolverBuilder::timeout) is
/// abandoned and the conflict is answered with [`Decision::Review`] (strategy `timeout`). The
/// timeout needs a Tokio runtime with its timer enabled; a strategy that blocks its thread
/// instead of awaiting cannot be interrupted.
///
/// Each resolution runs in a `resolve` tracing span (fields `resolver`, `aggregate`, `rule`,
/// `group`, `decision`) and records the metrics listed in [`crate::observe`].
#[derive(Debug)]
pub struct CompositeResolver {
    engine: Engine,
}

/// Builds a [`CompositeResolver`].
#[derive(Debug, Clone)]
pub struct CompositeResolverBuilder {
    root: RuleGroup,
    settings: Settings,
}

impl Default for CompositeResolverBuilder {
    fn default() -> Self {
        CompositeResolverBuilder {
            root: RuleGroup::new(""),
            settings: Settings::default(),
        }
    }
}

impl CompositeResolverBuilder {
    /// Name the resolver (metrics label `resolver`, tracing, messages); default `rules`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Add a top-level rule; top-level rules are tried before any group.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.root.rules.push(rule);
        self
    }

    /// Add a group.
    pub fn group(mut self, group: RuleGroup) -> Self {
        self.root.groups.push(group);
        self
    }

    /// Decide with `strategy` when nothing else did.
    pub fn fallback(mut self, strategy: DynResolver) -> Self {
        self.settings.fallback = Some(strategy);
        self
    }

    /// Abandon a strategy that has not answered within `timeout` (see [`CompositeResolver`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = Some(timeout);
        self
    }

    /// Park conflicts with more than `max` events (local plus remote) for review without
    /// evaluating any rule.
    pub fn max_events(mut self, max: usize) -> Self {
        self.settings.max_events = Some(max);
        self
    }

    /// Add a hook; hooks are called in the order they were added.
    pub fn hook(mut self, hook: Arc<dyn ResolverHooks>) -> Self {
        self.settings.hooks.push(hook);
        self
    }

    /// Compile the rule set.
    ///
    /// Fails when a name is malformed, two rules (or two groups) have the same full name, the
    /// timeout is zero, or there is no enabled rule, no group fallback and no global fallback.
    pub fn build(self) -> Result<CompositeResolver, RulesError> {
        Ok(CompositeResolver {
            engine: Engine::build(self.root, self.settings)?,
        })
    }
}

impl CompositeResolver {
    /// Start building a resolver.
    pub fn builder() -> CompositeResolverBuilder {
        CompositeResolverBuilder::default()
    }

    /// The resolver's name.
    pub fn name(&self) -> &str {
        &self.engine.name
    }

    /// The resolution timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.engine.timeout
    }

    /// Full names of every rule (disabled ones too), in evaluation order.
    pub fn rule_names(&self) -> Vec<String> {
        self.engine.rule_names()
    }

    /// Counters of every group, depth first in evaluation order; the first entry, with an empty
    /// path, is the top level (top-level rules and the global fallback).
    pub fn group_stats(&self) -> Vec<(String, GroupStats)> {
        self.engine.group_stats()
    }

    /// A stable multi-line outline of the compiled rule set: groups, rules in evaluation order,
    /// their specs and strategies, fallbacks, timeout and limits. Two resolvers with the same
    /// outline decide alike.
    pub fn describe(&self) -> String {
        self.engine.describe()
    }
}

#[async_trait]
impl ConflictResolver for CompositeResolver {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        self.engine.resolve(conflict, context).await
    }
}

/// An ordered list of rules with an optional fallback: the first rule whose spec holds decides.
///
/// The same engine as [`CompositeResolver`] without groups: construction fails when there is
/// neither a rule nor a fallback or when two rules share a name, and a conflict that no rule
/// matches, with no fallback, is an error (the node then parks it for review).
#[derive(Debug)]
pub struct DynamicResolver {
    engine: Engine,
}

/// Builds a [`DynamicResolver`].
#[derive(Debug, Clone, Default)]
pub struct DynamicResolverBuilder {
    inner: CompositeResolverBuilder,
}

impl DynamicResolverBuilder {
    /// Name the resolver (metrics label `resolver`, tracing, messages); default `rules`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.name(name);
        self
    }

    /// Add a rule; rules are tried in priority order, ties in the order added.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.inner = self.inner.rule(rule);
        self
    }

    /// Add several rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        for rule in rules {
            self.inner = self.inner.rule(rule);
        }
        self
    }

    /// Decide with `strategy` when no rule matched.
    pub fn fallback(mut self, strategy: DynResolver) -> Self {
        self.inner = self.inner.fallback(strategy);
        self
    }

    /// Abandon a strategy that has not answered within `timeout`: the conflict gets a review
    /// decision.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.timeout(timeout);
        self
    }

    /// Park conflicts with more than `max` events for review without evaluating any rule.
    pub fn max_events(mut self, max: usize) -> Self {
        self.inner = self.inner.max_events(max);
        self
    }

    /// Add a hook.
    pub fn hook(mut self, hook: Arc<dyn ResolverHooks>) -> Self {
        self.inner = self.inner.hook(hook);
        self
    }

    /// Compile the rules; fails when there is neither a rule nor a fallback, or when two rules
    /// share a name.
    pub fn build(self) -> Result<DynamicResolver, RulesError> {
        Ok(DynamicResolver {
            engine: Engine::build(self.inner.root, self.inner.settings)?,
        })
    }
}

impl DynamicResolver {
    /// Start building a resolver.
    pub fn builder() -> DynamicResolverBuilder {
        DynamicResolverBuilder::default()
    }

    /// `rules` in order, then `fallback`.
    pub fn new(
        rules: impl IntoIterator<Item = Rule>,
        fallback: Option<DynResolver>,
    ) -> Result<Self, RulesError> {
        let mut builder = DynamicResolver::builder().rules(rules);
        if let Some(fallback) = fallback {
            builder = builder.fallback(fallback);
        }
        builder.build()
    }

    /// The resolver's name.
    pub fn name(&self) -> &str {
        &self.engine.name
    }

    /// Rule names in evaluation order.
    pub fn rule_names(&self) -> Vec<String> {
        self.engine.rule_names()
    }

    /// The resolver's counters (`rule_matches`, `fallbacks`, `errors`, `timeouts`, ...).
    pub fn stats(&self) -> GroupStats {
        self.engine.root.stats.snapshot()
    }

    /// A stable outline of the rules (see [`CompositeResolver::describe`]).
    pub fn describe(&self) -> String {
        self.engine.describe()
    }
}

#[async_trait]
impl ConflictResolver for DynamicResolver {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        self.engine.resolve(conflict, context).await
    }
}
