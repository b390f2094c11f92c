//! Specs: predicates over a conflict (event kind, aggregate glob, changed fields, metadata) and
//! the `and`/`or`/`not` combinators that rules are written with.
//!
//! # The two sides of a conflict
//! A conflict has a *local side*, the node's pending events on the aggregate
//! ([`Conflict::local`], in outbox order), and a *remote side*, the hub's events the writer did
//! not know ([`Conflict::remote`], ordered here by `aggregate_version`, whatever order they are
//! listed in).
//!
//! The *state* of a side, used by [`FieldChanged`] and [`AnyFieldChanged`], is the `data` of its
//! events folded in order by a deep merge that starts from `null`:
//! - an object merged into an object merges key by key, recursively;
//! - anything else (a scalar, an array, an object over a non-object) replaces what was there;
//! - `null` is a value like any other: it does not delete the key.
//!
//! So a side that renamed a task and then moved it has the state `{"title": .., "column": ..}`.
//! A path *changed* when its value differs between the two states, where a path present on one
//! side only counts as changed and a path absent on both does not. Values compare with
//! [`json_eq`]. This differs on purpose from [`Conflict::changed_fields`], which looks only at
//! the last event of each side and only at top-level keys.
//!
//! Kind and metadata specs look at the local side unless told otherwise ([`Side`]): the local
//! events are the writes being decided, and their metadata is what the writer said about them.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::hash::Hasher as _;
use std::sync::Arc;

use serde_json::Value;
use synckit_types::{Conflict, Event};

use crate::error::RulesError;
use crate::glob::Glob;
use crate::path::JsonPath;

/// A predicate over a conflict. Must be deterministic and cheap: rules evaluate specs in order
/// for every conflict.
pub trait Spec: Send + Sync + fmt::Debug + 'static {
    /// Whether `conflict` satisfies this spec.
    fn matches(&self, conflict: &ConflictView<'_>) -> bool;
}

/// A shared spec, as rules hold them.
pub type DynSpec = Arc<dyn Spec>;

impl<S: Spec + ?Sized> Spec for Arc<S> {
    fn matches(&self, conflict: &ConflictView<'_>) -> bool {
        (**self).matches(conflict)
    }
}

impl<S: Spec + ?Sized> Spec for Box<S> {
    fn matches(&self, conflict: &ConflictView<'_>) -> bool {
        (**self).matches(conflict)
    }
}

/// A conflict as specs see it: the conflict plus the state of each side, computed on first use
/// and shared by every spec evaluated for this conflict.
#[derive(Debug)]
pub struct ConflictView<'a> {
    conflict: &'a Conflict,
    local: OnceCell<Cow<'a, Value>>,
    remote: OnceCell<Cow<'a, Value>>,
    local_kinds: OnceCell<Vec<u64>>,
    remote_kinds: OnceCell<Vec<u64>>,
}

impl<'a> ConflictView<'a> {
    /// A view of `conflict`.
    pub fn new(conflict: &'a Conflict) -> Self {
        ConflictView {
            conflict,
            local: OnceCell::new(),
            remote: OnceCell::new(),
            local_kinds: OnceCell::new(),
            remote_kinds: OnceCell::new(),
        }
    }

    /// The conflict.
    pub fn conflict(&self) -> &'a Conflict {
        self.conflict
    }

    /// The local events, in outbox order.
    pub fn local_events(&self) -> impl Iterator<Item = &'a Event> + 'a {
        self.conflict.local.iter()
    }

    /// The remote events, in the order they are listed in the conflict.
    pub fn remote_events(&self) -> impl Iterator<Item = &'a Event> + 'a {
        self.conflict.remote.iter().map(|e| &e.event)
    }

    /// Whether some event of `side` satisfies `predicate` (without allocating).
    pub fn any_event(&self, side: Side, mut predicate: impl FnMut(&Event) -> bool) -> bool {
        match side {
            Side::Local => self.local_events().any(predicate),
            Side::Remote => self.remote_events().any(predicate),
            Side::Either => {
                self.local_events().any(&mut predicate) || self.remote_events().any(predicate)
            }
        }
    }

    /// Whether an event of `side` has one of `kinds`, each given with its [`kind_hash`]. The
    /// events' kind hashes are computed once per conflict, so a resolver with many kind rules
    /// compares integers and reads a string only where the hashes agree.
    fn has_kind(&self, side: Side, kinds: &[(u64, String)]) -> bool {
        let local = || {
            let hashes = self
                .local_kinds
                .get_or_init(|| self.local_events().map(|e| kind_hash(&e.kind)).collect());
            self.local_events()
                .zip(hashes)
                .any(|(e, h)| kinds.iter().any(|(k, kind)| k == h && *kind == e.kind))
        };
        let remote = || {
            let hashes = self
                .remote_kinds
                .get_or_init(|| self.remote_events().map(|e| kind_hash(&e.kind)).collect());
            self.remote_events()
                .zip(hashes)
                .any(|(e, h)| kinds.iter().any(|(k, kind)| k == h && *kind == e.kind))
        };
        match side {
            Side::Local => local(),
            Side::Remote => remote(),
            Side::Either => local() || remote(),
        }
    }

    /// The local side's state: its events' data folded in outbox order (see the module docs).
    pub fn local_state(&self) -> &Value {
        self.local
            .get_or_init(|| fold(self.conflict.local.iter().map(|e| &e.data)))
    }

    /// The remote side's state: its events' data folded in `aggregate_version` order.
    pub fn remote_state(&self) -> &Value {
        self.remote.get_or_init(|| {
            if let [only] = self.conflict.remote.as_slice() {
                return fold(std::iter::once(&only.event.data));
            }
            let mut remote: Vec<_> = self.conflict.remote.iter().collect();
            remote.sort_by_key(|e| e.aggregate_version);
            fold(remote.into_iter().map(|e| &e.event.data))
        })
    }

    /// Whether the value at `path` differs between the two sides' states.
    pub fn field_changed(&self, path: &JsonPath) -> bool {
        match (path.get(self.local_state()), path.get(self.remote_state())) {
            (None, None) => false,
            (Some(l), Some(r)) => !json_eq(l, r),
            _ => true,
        }
    }
}

/// The data of `data` merged in order. One event's state is its data, borrowed: most conflicts
/// carry one event a side, and copying its data for every conflict costs more than deciding.
fn fold<'v>(mut data: impl Iterator<Item = &'v Value>) -> Cow<'v, Value> {
    let Some(first) = data.next() else {
        return Cow::Owned(Value::Null);
    };
    let mut state = Cow::Borrowed(first);
    for d in data {
        merge(state.to_mut(), d);
    }
    state
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

/// Typed JSON equality: values of different JSON types are never equal (`1` is not `"1"`,
/// `true` is not `"true"`, `null` is not `""`), numbers compare by value (`1` equals `1.0`),
/// arrays element by element, objects key by key.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (a, b) => a == b,
    }
}

/// Which events of a conflict a kind or metadata spec looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Side {
    /// The node's pending events: the writes being decided (the default).
    #[default]
    Local,
    /// The hub's events that the writer did not know.
    Remote,
    /// Either side.
    Either,
}

/// Holds when an event of the chosen side (local by default) has one of the listed kinds.
#[derive(Clone, PartialEq, Eq)]
pub struct KindIs {
    /// Each kind with its [`kind_hash`].
    kinds: Vec<(u64, String)>,
    side: Side,
}

/// The hash [`KindIs`] compares first (FNV-1a: short strings, no setup).
fn kind_hash(kind: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(kind.as_bytes());
    hasher.finish()
}

impl KindIs {
    /// Any of `kinds`, on the local side.
    pub fn new<I, S>(kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KindIs {
            kinds: kinds
                .into_iter()
                .map(|kind| {
                    let kind = kind.into();
                    (kind_hash(&kind), kind)
                })
                .collect(),
            side: Side::Local,
        }
    }

    /// Look at `side` instead.
    pub fn on(mut self, side: Side) -> Self {
        self.side = side;
        self
    }
}

impl fmt::Debug for KindIs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindIs")
            .field(
                "kinds",
                &self.kinds.iter().map(|(_, k)| k).collect::<Vec<_>>(),
            )
            .field("side", &self.side)
            .finish()
    }
}

impl Spec for KindIs {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        c.has_kind(self.side, &self.kinds)
    }
}

/// Holds when the aggregate id matches one of the globs (see [`Glob`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateMatches {
    globs: Vec<Glob>,
}

impl AggregateMatches {
    /// Any of `patterns`; fails on a malformed glob.
    pub fn new<I, S>(patterns: I) -> Result<Self, RulesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(AggregateMatches {
            globs: patterns
                .into_iter()
                .map(|p| Glob::new(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Spec for AggregateMatches {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        let id = c.conflict().aggregate_id.as_str();
        self.globs.iter().any(|g| g.matches(id))
    }
}

/// Holds when the value at a JSON path differs between the local and remote states (see the
/// module docs for how a side's state is defined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChanged {
    path: JsonPath,
}

impl FieldChanged {
    /// The field at `path` (a JSON Pointer or a dotted path, see [`JsonPath`]).
    pub fn new(path: &str) -> Result<Self, RulesError> {
        Ok(FieldChanged {
            path: JsonPath::parse(path)?,
        })
    }
}

impl Spec for FieldChanged {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        c.field_changed(&self.path)
    }
}

/// Holds when any of the listed fields changed (see [`FieldChanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnyFieldChanged {
    paths: Vec<JsonPath>,
}

impl AnyFieldChanged {
    /// Any of `paths`.
    pub fn new<I, S>(paths: I) -> Result<Self, RulesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(AnyFieldChanged {
            paths: paths
                .into_iter()
                .map(|p| JsonPath::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Spec for AnyFieldChanged {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        self.paths.iter().any(|p| c.field_changed(p))
    }
}

/// Holds when an event of the chosen side (local by default) has metadata `key` equal, by
/// [`json_eq`], to one of the listed values: `1` never equals `"1"`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataEquals {
    key: String,
    values: Vec<Value>,
    side: Side,
}

impl MetadataEquals {
    /// `key` equals `value`, on the local side.
    pub fn new(key: impl Into<String>, value: Value) -> Self {
        MetadataEquals::any_of(key, [value])
    }

    /// `key` equals one of `values`, on the local side.
    pub fn any_of(key: impl Into<String>, values: impl IntoIterator<Item = Value>) -> Self {
        MetadataEquals {
            key: key.into(),
            values: values.into_iter().collect(),
            side: Side::Local,
        }
    }

    /// Look at `side` instead.
    pub fn on(mut self, side: Side) -> Self {
        self.side = side;
        self
    }
}

impl Spec for MetadataEquals {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        c.any_event(self.side, |e| {
            e.metadata
                .get(&self.key)
                .is_some_and(|v| self.values.iter().any(|want| json_eq(v, want)))
        })
    }
}

/// Always holds: the catch-all rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Always;

impl Spec for Always {
    fn matches(&self, _: &ConflictView<'_>) -> bool {
        true
    }
}

/// Holds when every spec holds, evaluated left to right, stopping at the first that does not.
/// An empty `And` holds.
#[derive(Debug, Clone)]
pub struct And(pub Vec<DynSpec>);

impl Spec for And {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        self.0.iter().all(|s| s.matches(c))
    }
}

/// Holds when some spec holds, evaluated left to right, stopping at the first that does.
/// An empty `Or` does not hold.
#[derive(Debug, Clone)]
pub struct Or(pub Vec<DynSpec>);

impl Spec for Or {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        self.0.iter().any(|s| s.matches(c))
    }
}

/// Holds when the inner spec does not.
#[derive(Debug, Clone)]
pub struct Not(pub DynSpec);

impl Spec for Not {
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        !self.0.matches(c)
    }
}

/// A spec written as a closure, named for debug output.
pub struct FnSpec<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for FnSpec<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnSpec({:?})", self.name)
    }
}

impl<F> Spec for FnSpec<F>
where
    F: Fn(&ConflictView<'_>) -> bool + Send + Sync + 'static,
{
    fn matches(&self, c: &ConflictView<'_>) -> bool {
        (self.f)(c)
    }
}

/// [`KindIs`] on the local side.
pub fn kind_is<I, S>(kinds: I) -> DynSpec
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Arc::new(KindIs::new(kinds))
}

/// [`AggregateMatches`] with one glob.
pub fn aggregate_matches(glob: &str) -> Result<DynSpec, RulesError> {
    Ok(Arc::new(AggregateMatches::new([glob])?))
}

/// [`FieldChanged`].
pub fn field_changed(path: &str) -> Result<DynSpec, RulesError> {
    Ok(Arc::new(FieldChanged::new(path)?))
}

/// [`AnyFieldChanged`].
pub fn any_field_changed<I, S>(paths: I) -> Result<DynSpec, RulesError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    Ok(Arc::new(AnyFieldChanged::new(paths)?))
}

/// [`MetadataEquals`] on the local side.
pub fn metadata_eq(key: impl Into<String>, value: Value) -> DynSpec {
    Arc::new(MetadataEquals::new(key, value))
}

/// [`Always`].
pub fn always() -> DynSpec {
    Arc::new(Always)
}

/// [`And`].
pub fn and(specs: impl IntoIterator<Item = DynSpec>) -> DynSpec {
    Arc::new(And(specs.into_iter().collect()))
}

/// [`Or`].
pub fn or(specs: impl IntoIterator<Item = DynSpec>) -> DynSpec {
    Arc::new(Or(specs.into_iter().collect()))
}

/// [`Not`].
pub fn not(spec: DynSpec) -> DynSpec {
    Arc::new(Not(spec))
}

/// [`FnSpec`]: a closure as a spec.
pub fn from_fn<F>(name: impl Into<String>, f: F) -> DynSpec
where
    F: Fn(&ConflictView<'_>) -> bool + Send + Sync + 'static,
{
    Arc::new(FnSpec {
        name: name.into(),
        f,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use serde_json::json;
    use synckit_types::{AggregateId, Hlc, Seq, StoredEvent};

    fn event(kind: &str, data: Value, meta: &[(&str, Value)]) -> Event {
        let mut b = Event::builder(kind, "order-1")
            .origin("n")
            .hlc(Hlc::new(1, 0))
            .data(data);
        for (k, v) in meta {
            b = b.metadata(*k, v.clone());
        }
        b.build().unwrap()
    }

    fn stored(event: Event, version: u64) -> StoredEvent {
        StoredEvent {
            event,
            seq: Seq(version),
            aggregate_version: version,
            recorded_at: 0,
        }
    }

    fn conflict(aggregate: &str, local: Vec<Event>, remote: Vec<StoredEvent>) -> Conflict {
        Conflict {
            aggregate_id: AggregateId::new(aggregate).unwrap(),
            base_version: 0,
            current_version: remote.len() as u64,
            local,
            remote,
        }
    }

    fn holds(spec: &DynSpec, c: &Conflict) -> bool {
        spec.matches(&ConflictView::new(c))
    }

    #[test]
    fn kind_and_aggregate() {
        let c = conflict(
            "order-7",
            vec![event("OrderCreated", json!({}), &[])],
            vec![stored(event("OrderShipped", json!({}), &[]), 1)],
        );
        assert!(holds(&kind_is(["OrderCreated", "X"]), &c));
        assert!(!holds(&kind_is(["OrderShipped"]), &c));
        let remote: DynSpec = Arc::new(KindIs::new(["OrderShipped"]).on(Side::Remote));
        assert!(holds(&remote, &c));
        let either: DynSpec = Arc::new(KindIs::new(["OrderCreated"]).on(Side::Either));
        assert!(holds(&either, &c));
        assert!(holds(&aggregate_matches("order-*").unwrap(), &c));
        assert!(!holds(&aggregate_matches("user-*").unwrap(), &c));
        let any: DynSpec = Arc::new(AggregateMatches::new(["user-*", "order-?"]).unwrap());
        assert!(holds(&any, &c));
    }

    #[test]
    fn metadata_equality_is_typed() {
        let c = conflict(
            "a",
            vec![event(
                "K",
                json!({}),
                &[("tier", json!(1)), ("role", json!("admin"))],
            )],
            vec![],
        );
        assert!(holds(&metadata_eq("tier", json!(1)), &c));
        assert!(holds(&metadata_eq("tier", json!(1.0)), &c));
        assert!(!holds(&metadata_eq("tier", json!("1")), &c));
        assert!(holds(&metadata_eq("role", json!("admin")), &c));
        assert!(!holds(&metadata_eq("role", json!(["admin"])), &c));
        assert!(!holds(&metadata_eq("missing", json!(null)), &c));
        let alt: DynSpec = Arc::new(MetadataEquals::any_of("tier", [json!("1"), json!(1)]));
        assert!(holds(&alt, &c));
        let remote: DynSpec = Arc::new(MetadataEquals::new("tier", json!(1)).on(Side::Remote));
        assert!(!holds(&remote, &c));
    }

    #[test]
    fn json_eq_truth_table() {
        let cases = [
            (json!(1), json!(1), true),
            (json!(1), json!(1.0), true),
            (json!(1), json!("1"), false),
            (json!(true), json!("true"), false),
            (json!(null), json!(""), false),
            (json!(-1), json!(u64::MAX), false),
            (json!([1, {"a": 2}]), json!([1.0, {"a": 2.0}]), true),
            (json!({"a": 1}), json!({"a": 1, "b": 2}), false),
            (json!({"a": 1}), json!({"b": 1}), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(json_eq(&a, &b), want, "{a} vs {b}");
            assert_eq!(json_eq(&b, &a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn field_changed_uses_the_folded_state_of_each_side() {
        // Local renamed then moved; remote changed the price twice, ending where local started.
        let c = conflict(
            "a",
            vec![
                event("Renamed", json!({"title": "new", "meta": {"x": 1}}), &[]),
                event("Moved", json!({"column": "done", "meta": {"y": 2}}), &[]),
            ],
            // Listed out of order: the state follows aggregate_version.
            vec![
                stored(event("Priced", json!({"price": 5, "title": "new"}), &[]), 3),
                stored(
                    event("Priced", json!({"price": 9, "meta": {"x": 1}}), &[]),
                    2,
                ),
            ],
        );
        let changed = |p: &str| holds(&field_changed(p).unwrap(), &c);
        assert!(changed("column"), "set on one side only");
        assert!(changed("price"));
        assert!(!changed("title"), "equal on both sides");
        assert!(!changed("meta.x"), "deep merge keeps x on the local side");
        assert!(changed("/meta/y"));
        assert!(!changed("nowhere"));
        assert!(holds(&any_field_changed(["nowhere", "price"]).unwrap(), &c));
        assert!(!holds(
            &any_field_changed(["nowhere", "title"]).unwrap(),
            &c
        ));

        let view = ConflictView::new(&c);
        assert_eq!(view.remote_state()["price"], json!(5));
        assert_eq!(
            view.local_state(),
            &json!({"title": "new", "column": "done", "meta": {"x": 1, "y": 2}})
        );
    }

    #[test]
    fn null_is_a_value_and_scalars_replace() {
        let c = conflict(
            "a",
            vec![
                event("K", json!({"a": 1, "b": 1}), &[]),
                event("K", json!({"a": null}), &[]),
            ],
            vec![stored(event("K", json!({"b": 1}), &[]), 1)],
        );
        let view = ConflictView::new(&c);
        assert_eq!(view.local_state(), &json!({"a": null, "b": 1}));
        assert!(holds(&field_changed("a").unwrap(), &c));
        let c = conflict(
            "a",
            vec![event("K", json!({"a": 1}), &[]), event("K", json!(7), &[])],
            vec![],
        );
        assert_eq!(ConflictView::new(&c).local_state(), &json!(7));
    }

    fn counting(hits: &Arc<AtomicUsize>, answer: bool) -> DynSpec {
        let hits = Arc::clone(hits);
        from_fn("counting", move |_| {
            hits.fetch_add(1, Ordering::SeqCst);
            answer
        })
    }

    fn panics() -> DynSpec {
        from_fn("panics", |_| {
            panic!("short-circuit failed: this spec must not run")
        })
    }

    #[test]
    fn combinators_truth_table_and_short_circuit() {
        let c = conflict("a", vec![event("K", json!({}), &[])], vec![]);
        let t = always;
        let f = || not(always());
        for (a, b) in [(true, true), (true, false), (false, true), (false, false)] {
            let s = |x: bool| if x { t() } else { f() };
            assert_eq!(holds(&and([s(a), s(b)]), &c), a && b);
            assert_eq!(holds(&or([s(a), s(b)]), &c), a || b);
        }
        assert!(holds(&and([]), &c));
        assert!(!holds(&or([]), &c));

        // The right-hand side is never evaluated once the answer is known.
        assert!(!holds(&and([f(), panics()]), &c));
        assert!(holds(&or([t(), panics()]), &c));
        assert!(!holds(&not(or([t(), panics()])), &c));

        // Left to right: the first spec runs once, the second not at all.
        let first = Arc::new(AtomicUsize::new(0));
        let second = Arc::new(AtomicUsize::new(0));
        assert!(!holds(
            &and([counting(&first, false), counting(&second, true)]),
            &c
        ));
        assert_eq!(
            (first.load(Ordering::SeqCst), second.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert!(holds(
            &or([counting(&first, false), counting(&second, true)]),
            &c
        ));
        assert_eq!(
            (first.load(Ordering::SeqCst), second.load(Ordering::SeqCst)),
            (2, 1)
        );
    }
}
