//! Rule files: the document model, its decoding from YAML or JSON (one decoder over a positioned
//! tree, so both formats build identical resolvers), validation with file positions, and the
//! loader that compiles a document into a [`CompositeResolver`]. RULES.md describes the format.

mod json;
mod tree;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use synckit_types::DynResolver;

use crate::engine::{CompositeResolver, CompositeResolverBuilder};
use crate::error::{Position, RulesError, RulesErrorKind};
use crate::hooks::ResolverHooks;
use crate::registry::StrategyRegistry;
use crate::rule::{Rule, RuleGroup, check_name};
use crate::spec::{self, AggregateMatches, AnyFieldChanged, DynSpec, KindIs, MetadataEquals};
use tree::{Kind, Node};

/// The file format version this crate reads.
pub const FORMAT_VERSION: u64 = 1;
/// The largest rules file read, in bytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The most values a document may hold once YAML aliases are expanded.
pub const MAX_NODES: usize = 1_000_000;
/// The deepest nesting of lists and mappings a document may have.
pub const MAX_DEPTH: usize = 64;
/// Default of `settings.limits.max_rules`.
pub const DEFAULT_MAX_RULES: usize = 10_000;
/// Default of `settings.limits.max_group_depth`.
pub const DEFAULT_MAX_GROUP_DEPTH: usize = 8;

/// The syntax of a rules file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML 1.2.
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file name's extension implies: `.yaml`/`.yml` or `.json`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A value and the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it starts in the file.
    pub position: Position,
}

impl<T> Spanned<T> {
    fn new(value: T, position: Position) -> Self {
        Spanned { value, position }
    }
}

/// A decoded rules file, before strategies are looked up and rules compiled.
///
/// Not yet stable: fields will be added as the format grows.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesDocument {
    /// Format version; only [`FORMAT_VERSION`] is read.
    pub version: u64,
    /// The rule set's name (the resolver's name).
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Fallback, timeout, limits.
    pub settings: SettingsDef,
    /// Top-level rules, tried before any group, in file order.
    pub rules: Vec<RuleDef>,
    /// Groups, in file order.
    pub groups: Vec<GroupDef>,
    /// Where the document starts.
    pub position: Position,
}

/// The `settings` block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsDef {
    /// The global fallback strategy.
    pub default_fallback: Option<StrategyDef>,
    /// Abandon a strategy after this many milliseconds (the conflict goes to review).
    pub resolution_timeout_ms: Option<Spanned<u64>>,
    /// Limits.
    pub limits: LimitsDef,
}

/// The `settings.limits` block.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsDef {
    /// The most rules the file may hold (default [`DEFAULT_MAX_RULES`]).
    pub max_rules: usize,
    /// The deepest group nesting allowed, top-level groups being depth 1 (default
    /// [`DEFAULT_MAX_GROUP_DEPTH`]).
    pub max_group_depth: usize,
    /// Conflicts with more events than this (local plus remote) go to review unevaluated.
    pub max_events: Option<usize>,
}

impl Default for LimitsDef {
    fn default() -> Self {
        LimitsDef {
            max_rules: DEFAULT_MAX_RULES,
            max_group_depth: DEFAULT_MAX_GROUP_DEPTH,
            max_events: None,
        }
    }
}

/// A group of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    /// The group's own name.
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Higher first among siblings; ties keep file order.
    pub priority: i64,
    /// A disabled group, with everything in it, never fires.
    pub enabled: bool,
    /// The group's scope: it is entered only when these hold.
    pub conditions: Option<Conditions>,
    /// Decides when the group was entered and nothing in it matched.
    pub fallback: Option<StrategyDef>,
    /// The group's rules.
    pub rules: Vec<RuleDef>,
    /// Subgroups.
    pub groups: Vec<GroupDef>,
    /// Where the group starts.
    pub position: Position,
}

/// A rule of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    /// The rule's own name.
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Higher first within the group; ties keep file order.
    pub priority: i64,
    /// A disabled rule never fires.
    pub enabled: bool,
    /// When the rule matches; absent means always.
    pub conditions: Option<Conditions>,
    /// What decides when it matches.
    pub strategy: StrategyDef,
    /// Where the rule starts.
    pub position: Position,
}

/// A strategy reference: a registered name and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyDef {
    /// The registered name.
    pub name: Spanned<String>,
    /// Options for a factory strategy; `null` when none are written.
    pub options: Value,
}

/// A `conditions` block. Within one field the listed values are alternatives; every field
/// that is present must hold. An empty block always holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conditions {
    /// A local event has one of these kinds.
    pub event_types: Vec<String>,
    /// The aggregate id matches one of these globs.
    pub aggregate_ids: Vec<Spanned<String>>,
    /// One of these JSON paths changed between the local and remote states.
    pub changed_fields: Vec<Spanned<String>>,
    /// For each key, a local event's metadata value equals one of the values.
    pub metadata: Vec<MetadataCondition>,
    /// At least one of these blocks holds.
    pub any: Vec<Conditions>,
    /// This block does not hold.
    pub not: Option<Box<Conditions>>,
    /// Where the block starts.
    pub position: Position,
}

/// One key of a `metadata` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataCondition {
    /// The metadata key.
    pub key: String,
    /// The alternatives: a scalar is one value, a list is several (a list value must itself be
    /// written inside a list).
    pub values: Vec<Value>,
    /// Where the condition is written.
    pub position: Position,
}

impl RulesDocument {
    /// Parse and decode `text`; syntax and schema errors carry their position.
    pub fn parse(text: &str, format: Format) -> Result<RulesDocument, RulesError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(RulesError::new(
                RulesErrorKind::LimitExceeded,
                format!(
                    "the rules file is {} bytes; the limit is {MAX_FILE_BYTES}",
                    text.len()
                ),
            ));
        }
        let root = match format {
            Format::Yaml => yaml::parse(text)?,
            Format::Json => json::parse(text)?,
        };
        decode_document(&root)
    }

    /// Every rule of the document with its full name, depth first in file order.
    pub fn rules(&self) -> Vec<(String, &RuleDef)> {
        fn walk<'a>(prefix: &str, group: &'a GroupDef, out: &mut Vec<(String, &'a RuleDef)>) {
            let path = format!("{prefix}{}", group.name.value);
            for rule in &group.rules {
                out.push((format!("{path}.{}", rule.name.value), rule));
            }
            for sub in &group.groups {
                walk(&format!("{path}."), sub, out);
            }
        }
        let mut out: Vec<_> = self
            .rules
            .iter()
            .map(|r| (r.name.value.clone(), r))
            .collect();
        for group in &self.groups {
            walk("", group, &mut out);
        }
        out
    }
}

const ROOT_FIELDS: &[&str] = &[
    "version",
    "name",
    "description",
    "settings",
    "rules",
    "groups",
];
const SETTINGS_FIELDS: &[&str] = &["default_fallback", "resolution_timeout_ms", "limits"];
const LIMITS_FIELDS: &[&str] = &["max_rules", "max_group_depth", "max_events"];
const GROUP_FIELDS: &[&str] = &[
    "name",
    "description",
    "priority",
    "enabled",
    "conditions",
    "fallback",
    "rules",
    "groups",
];
const RULE_FIELDS: &[&str] = &[
    "name",
    "description",
    "priority",
    "enabled",
    "conditions",
    "strategy",
];
const STRATEGY_FIELDS: &[&str] = &["name", "options"];
const CONDITION_FIELDS: &[&str] = &[
    "event_types",
    "aggregate_ids",
    "changed_fields",
    "metadata",
    "any",
    "not",
];

fn decode_document(root: &Node) -> Result<RulesDocument, RulesError> {
    let f = root.fields("the rules file", ROOT_FIELDS)?;
    let version_node = f.required("version")?;
    let version = version_node.as_u64("`version`")?;
    if version != FORMAT_VERSION {
        return Err(RulesError::new(
            RulesErrorKind::UnsupportedVersion,
            format!("rules file version {version} is not supported; this build reads version {FORMAT_VERSION}"),
        )
        .at(version_node.pos));
    }
    let name = spanned_str(f.required("name")?, "`name`")?;
    Ok(RulesDocument {
        version,
        name,
        description: optional_str(f.get("description"), "`description`")?,
        settings: match f.get("settings") {
            Some(node) => decode_settings(node)?,
            None => SettingsDef::default(),
        },
        rules: list(f.get("rules"), "`rules`", decode_rule)?,
        groups: list(f.get("groups"), "`groups`", decode_group)?,
        position: root.pos,
    })
}

fn spanned_str(node: &Node, what: &str) -> Result<Spanned<String>, RulesError> {
    Ok(Spanned::new(node.as_str(what)?.to_owned(), node.pos))
}

fn optional_str(node: Option<&Node>, what: &str) -> Result<Option<String>, RulesError> {
    node.map(|n| n.as_str(what).map(str::to_owned)).transpose()
}

fn list<T>(
    node: Option<&Node>,
    what: &str,
    decode: fn(&Node) -> Result<T, RulesError>,
) -> Result<Vec<T>, RulesError> {
    match node {
        None => Ok(Vec::new()),
        Some(node) => node.as_seq(what)?.iter().map(decode).collect(),
    }
}

fn decode_settings(node: &Node) -> Result<SettingsDef, RulesError> {
    let f = node.fields("`settings`", SETTINGS_FIELDS)?;
    let timeout = match f.get("resolution_timeout_ms") {
        Some(n) => {
            let ms = n.as_u64("`resolution_timeout_ms`")?;
            if ms == 0 {
                return Err(
                    RulesError::invalid("`resolution_timeout_ms` must be at least 1").at(n.pos),
                );
            }
            Some(Spanned::new(ms, n.pos))
        }
        None => None,
    };
    let mut limits = LimitsDef::default();
    if let Some(n) = f.get("limits") {
        let l = n.fields("`limits`", LIMITS_FIELDS)?;
        if let Some(n) = l.get("max_rules") {
            limits.max_rules = n.as_usize("`max_rules`")?;
        }
        if let Some(n) = l.get("max_group_depth") {
            limits.max_group_depth = n.as_usize("`max_group_depth`")?;
        }
        if let Some(n) = l.get("max_events") {
            limits.max_events = Some(n.as_usize("`max_events`")?);
        }
    }
    Ok(SettingsDef {
        default_fallback: f.get("default_fallback").map(decode_strategy).transpose()?,
        resolution_timeout_ms: timeout,
        limits,
    })
}

fn decode_strategy(node: &Node) -> Result<StrategyDef, RulesError> {
    if let Kind::String(name) = &node.kind {
        return Ok(StrategyDef {
            name: Spanned::new(name.clone(), node.pos),
            options: Value::Null,
        });
    }
    let f = node.fields("a strategy", STRATEGY_FIELDS)?;
    Ok(StrategyDef {
        name: spanned_str(f.required("name")?, "a strategy's `name`")?,
        options: f.get("options").map_or(Value::Null, Node::to_json),
    })
}

fn decode_rule(node: &Node) -> Result<RuleDef, RulesError> {
    let f = node.fields("a rule", RULE_FIELDS)?;
    Ok(RuleDef {
        name: spanned_str(f.required("name")?, "a rule's `name`")?,
        description: optional_str(f.get("description"), "`description`")?,
        priority: f
            .get("priority")
            .map_or(Ok(0), |n| n.as_i64("`priority`"))?,
        enabled: f
            .get("enabled")
            .map_or(Ok(true), |n| n.as_bool("`enabled`"))?,
        conditions: f.get("conditions").map(decode_conditions).transpose()?,
        strategy: decode_strategy(f.required("strategy")?)?,
        position: node.pos,
    })
}

fn decode_group(node: &Node) -> Result<GroupDef, RulesError> {
    let f = node.fields("a group", GROUP_FIELDS)?;
    Ok(GroupDef {
        name: spanned_str(f.required("name")?, "a group's `name`")?,
        description: optional_str(f.get("description"), "`description`")?,
        priority: f
            .get("priority")
            .map_or(Ok(0), |n| n.as_i64("`priority`"))?,
        enabled: f
            .get("enabled")
            .map_or(Ok(true), |n| n.as_bool("`enabled`"))?,
        conditions: f.get("conditions").map(decode_conditions).transpose()?,
        fallback: f.get("fallback").map(decode_strategy).transpose()?,
        rules: list(f.get("rules"), "`rules`", decode_rule)?,
        groups: list(f.get("groups"), "`groups`", decode_group)?,
        position: node.pos,
    })
}

fn decode_conditions(node: &Node) -> Result<Conditions, RulesError> {
    let f = node.fields("`conditions`", CONDITION_FIELDS)?;
    let strings = |key: &str| -> Result<Vec<Spanned<String>>, RulesError> {
        Ok(match f.get(key) {
            None => Vec::new(),
            Some(n) => n
                .strings(&format!("`{key}`"))?
                .into_iter()
                .map(|(s, p)| Spanned::new(s, p))
                .collect(),
        })
    };
    let metadata = match f.get("metadata") {
        None => Vec::new(),
        Some(n) => {
            let Kind::Map(entries) = &n.kind else {
                return Err(
                    RulesError::invalid("`metadata` must be a mapping of keys to values").at(n.pos),
                );
            };
            entries
                .iter()
                .map(|e| {
                    let values = match &e.value.kind {
                        Kind::Seq(items) if items.is_empty() => {
                            return Err(RulesError::invalid(format!(
                                "metadata `{}` must list at least one value",
                                e.key
                            ))
                            .at(e.value.pos));
                        }
                        Kind::Seq(items) => items.iter().map(Node::to_json).collect(),
                        _ => vec![e.value.to_json()],
                    };
                    Ok(MetadataCondition {
                        key: e.key.clone(),
                        values,
                        position: e.key_pos,
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Conditions {
        event_types: strings("event_types")?
            .into_iter()
            .map(|s| s.value)
            .collect(),
        aggregate_ids: strings("aggregate_ids")?,
        changed_fields: strings("changed_fields")?,
        metadata,
        any: match f.get("any") {
            None => Vec::new(),
            Some(n) => {
                let items = n.as_seq("`any`")?;
                if items.is_empty() {
                    return Err(RulesError::invalid("`any` must list at least one block").at(n.pos));
                }
                items
                    .iter()
                    .map(decode_conditions)
                    .collect::<Result<_, _>>()?
            }
        },
        not: f
            .get("not")
            .map(|n| decode_conditions(n).map(Box::new))
            .transpose()?,
        position: node.pos,
    })
}

/// Compiles rules files into resolvers: holds the strategy registry and the hooks every
/// resolver it builds gets.
#[derive(Debug, Clone)]
pub struct RulesLoader {
    registry: Arc<StrategyRegistry>,
    hooks: Vec<Arc<dyn ResolverHooks>>,
}

impl Default for RulesLoader {
    fn default() -> Self {
        RulesLoader::new(StrategyRegistry::new())
    }
}

impl RulesLoader {
    /// A loader that looks strategies up in `registry`.
    pub fn new(registry: StrategyRegistry) -> Self {
        RulesLoader::with_registry(Arc::new(registry))
    }

    /// A loader sharing `registry`.
    pub fn with_registry(registry: Arc<StrategyRegistry>) -> Self {
        RulesLoader {
            registry,
            hooks: Vec::new(),
        }
    }

    /// Give every resolver built from now on this hook.
    pub fn hook(mut self, hook: Arc<dyn ResolverHooks>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// The registry strategies are looked up in.
    pub fn registry(&self) -> &StrategyRegistry {
        &self.registry
    }

    /// Parse `text` and build its resolver.
    pub fn load_str(&self, text: &str, format: Format) -> Result<CompositeResolver, RulesError> {
        self.build(&RulesDocument::parse(text, format)?)
    }

    /// Read, parse and build the file at `path`; the format comes from the extension (`.yaml`,
    /// `.yml`, `.json`). Errors name the file.
    pub fn load_file(&self, path: &Path) -> Result<CompositeResolver, RulesError> {
        let (text, format) = read_file(path)?;
        self.load_str(&text, format).map_err(|e| e.in_file(path))
    }

    /// Compile `doc`: look every strategy up, compile conditions into specs, order rules and
    /// groups by priority (ties in file order), and check names and limits, each error at the
    /// position of the offending value.
    pub fn build(&self, doc: &RulesDocument) -> Result<CompositeResolver, RulesError> {
        let limits = &doc.settings.limits;
        let mut compiler = Compiler {
            registry: &self.registry,
            limits,
            rules: 0,
            rule_names: BTreeMap::new(),
            group_paths: BTreeMap::new(),
        };
        let name = &doc.name;
        if name.value.is_empty() {
            return Err(RulesError::invalid("`name` must not be empty").at(name.position));
        }
        let mut builder: CompositeResolverBuilder =
            CompositeResolver::builder().name(name.value.clone());
        for rule in &doc.rules {
            builder = builder.rule(compiler.rule(rule, None)?);
        }
        for group in &doc.groups {
            builder = builder.group(compiler.group(group, None, 1)?);
        }
        if let Some(fallback) = &doc.settings.default_fallback {
            builder = builder.fallback(compiler.strategy(fallback)?);
        }
        if let Some(ms) = &doc.settings.resolution_timeout_ms {
            builder = builder.timeout(Duration::from_millis(ms.value));
        }
        if let Some(max) = limits.max_events {
            builder = builder.max_events(max);
        }
        for hook in &self.hooks {
            builder = builder.hook(Arc::clone(hook));
        }
        builder.build().map_err(|e| e.at(doc.position))
    }
}

/// Read a rules file, bounded by [`MAX_FILE_BYTES`], and pick its format from the extension.
pub(crate) fn read_file(path: &Path) -> Result<(String, Format), RulesError> {
    let format = Format::from_path(path).ok_or_else(|| {
        RulesError::invalid("a rules file must end in .yaml, .yml or .json").in_file(path)
    })?;
    let io = |e: std::io::Error| {
        RulesError::new(
            RulesErrorKind::Io,
            format!("cannot read the rules file: {e}"),
        )
        .with_source(e)
        .in_file(path)
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES as u64 {
        return Err(RulesError::new(
            RulesErrorKind::LimitExceeded,
            format!("the rules file is {size} bytes; the limit is {MAX_FILE_BYTES}"),
        )
        .in_file(path));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    Ok((text, format))
}

struct Compiler<'a> {
    registry: &'a StrategyRegistry,
    limits: &'a LimitsDef,
    rules: usize,
    rule_names: BTreeMap<String, Position>,
    group_paths: BTreeMap<String, Position>,
}

impl Compiler<'_> {
    fn strategy(&self, def: &StrategyDef) -> Result<DynResolver, RulesError> {
        self.registry
            .create(&def.name.value, &def.options)
            .map_err(|e| e.at(def.name.position))
    }

    fn rule(&mut self, def: &RuleDef, path: Option<&str>) -> Result<Rule, RulesError> {
        let name = &def.name;
        check_name(&name.value, "rule").map_err(|e| e.at(name.position))?;
        self.rules += 1;
        if self.rules > self.limits.max_rules {
            return Err(RulesError::new(
                RulesErrorKind::LimitExceeded,
                format!(
                    "more than {} rules (settings.limits.max_rules)",
                    self.limits.max_rules
                ),
            )
            .at(def.position));
        }
        let full = match path {
            Some(path) => format!("{path}.{}", name.value),
            None => name.value.clone(),
        };
        if let Some(first) = self.rule_names.get(&full) {
            return Err(RulesError::new(
                RulesErrorKind::DuplicateName,
                format!("two rules are named {full:?} (the first at {first})"),
            )
            .at(name.position));
        }
        self.rule_names.insert(full, name.position);
        let spec = match &def.conditions {
            Some(c) => conditions(c)?,
            None => spec::always(),
        };
        Ok(
            Rule::new(name.value.clone(), spec, self.strategy(&def.strategy)?)
                .priority(def.priority)
                .enabled(def.enabled),
        )
    }

    fn group(
        &mut self,
        def: &GroupDef,
        parent: Option<&str>,
        depth: usize,
    ) -> Result<RuleGroup, RulesError> {
        let name = &def.name;
        check_name(&name.value, "group").map_err(|e| e.at(name.position))?;
        if depth > self.limits.max_group_depth {
            return Err(RulesError::new(
                RulesErrorKind::LimitExceeded,
                format!(
                    "groups nest deeper than {} levels (settings.limits.max_group_depth)",
                    self.limits.max_group_depth
                ),
            )
            .at(def.position));
        }
        let path = match parent {
            Some(parent) => format!("{parent}.{}", name.value),
            None => name.value.clone(),
        };
        if let Some(first) = self.group_paths.get(&path) {
            return Err(RulesError::new(
                RulesErrorKind::DuplicateName,
                format!("two groups are named {path:?} (the first at {first})"),
            )
            .at(name.position));
        }
        self.group_paths.insert(path.clone(), name.position);
        let mut group = RuleGroup::new(name.value.clone())
            .priority(def.priority)
            .enabled(def.enabled);
        if let Some(c) = &def.conditions {
            group = group.when(conditions(c)?);
        }
        for rule in &def.rules {
            group = group.rule(self.rule(rule, Some(&path))?);
        }
        for sub in &def.groups {
            group = group.group(self.group(sub, Some(&path), depth + 1)?);
        }
        if let Some(fallback) = &def.fallback {
            group = group.fallback(self.strategy(fallback)?);
        }
        Ok(group)
    }
}

/// Compile a conditions block. Cheap tests come first (kinds, globs, metadata), field
/// comparisons after them, so `and` usually stops before computing side states.
fn conditions(c: &Conditions) -> Result<DynSpec, RulesError> {
    let mut specs: Vec<DynSpec> = Vec::new();
    if !c.event_types.is_empty() {
        specs.push(Arc::new(KindIs::new(c.event_types.iter().cloned())));
    }
    if !c.aggregate_ids.is_empty() {
        for glob in &c.aggregate_ids {
            AggregateMatches::new([&glob.value]).map_err(|e| e.at(glob.position))?;
        }
        specs.push(Arc::new(AggregateMatches::new(
            c.aggregate_ids.iter().map(|g| &g.value),
        )?));
    }
    for m in &c.metadata {
        specs.push(Arc::new(MetadataEquals::any_of(
            m.key.clone(),
            m.values.iter().cloned(),
        )));
    }
    if !c.changed_fields.is_empty() {
        for path in &c.changed_fields {
            AnyFieldChanged::new([&path.value]).map_err(|e| e.at(path.position))?;
        }
        specs.push(Arc::new(AnyFieldChanged::new(
            c.changed_fields.iter().map(|p| &p.value),
        )?));
    }
    if !c.any.is_empty() {
        specs.push(spec::or(
            c.any
                .iter()
                .map(conditions)
                .collect::<Result<Vec<_>, _>>()?,
        ));
    }
    if let Some(not) = &c.not {
        specs.push(spec::not(conditions(not)?));
    }
    Ok(match specs.len() {
        0 => spec::always(),
        1 => specs.remove(0),
        _ => spec::and(specs),
    })
}
