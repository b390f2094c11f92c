//! The strategy registry: built-in strategies by name, plus custom strategies registered by name
//! (a fixed resolver, or a factory that builds one from the options written in a rules file).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use synckit_types::{ConflictResolver, DynResolver};

use crate::error::{RulesError, RulesErrorKind};
use crate::strategies::{AdditiveMerge, FirstWriteWins, LastWriteWins, ManualReview};

/// Builds a strategy from the `options` a rules file gives it.
pub type StrategyFactory = dyn Fn(&Value) -> Result<DynResolver, RulesError> + Send + Sync;

#[derive(Clone)]
enum Entry {
    Fixed(DynResolver),
    Factory(Arc<StrategyFactory>),
}

/// Strategies by name, for rule files and for code that names strategies.
///
/// [`StrategyRegistry::new`] holds the built-ins under their short and long names:
///
/// | names | strategy |
/// |---|---|
/// | `lww`, `last_write_wins` | [`LastWriteWins`] |
/// | `fww`, `first_write_wins` | [`FirstWriteWins`] |
/// | `merge`, `additive_merge` | [`AdditiveMerge`] |
/// | `review`, `manual_review` | [`ManualReview`] |
///
/// Built-ins and strategies registered with [`register`](Self::register) take no options;
/// a [`register_factory`](Self::register_factory) strategy receives its options as JSON.
/// A name can be registered once: registering it again is an error rather than a silent
/// replacement, so a rules file always means what its author saw.
#[derive(Clone)]
pub struct StrategyRegistry {
    entries: BTreeMap<String, Entry>,
}

impl StrategyRegistry {
    /// A registry with the built-in strategies.
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        let builtins: [(&str, &str, DynResolver); 4] = [
            ("lww", "last_write_wins", Arc::new(LastWriteWins)),
            ("fww", "first_write_wins", Arc::new(FirstWriteWins)),
            ("merge", "additive_merge", Arc::new(AdditiveMerge)),
            ("review", "manual_review", Arc::new(ManualReview)),
        ];
        for (short, long, resolver) in builtins {
            entries.insert(short.to_owned(), Entry::Fixed(Arc::clone(&resolver)));
            entries.insert(long.to_owned(), Entry::Fixed(resolver));
        }
        StrategyRegistry { entries }
    }

    /// A registry with no strategy at all, not even the built-ins.
    pub fn empty() -> Self {
        StrategyRegistry {
            entries: BTreeMap::new(),
        }
    }

    /// Register `resolver` under `name`; it takes no options.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        resolver: impl ConflictResolver,
    ) -> Result<&mut Self, RulesError> {
        self.insert(name.into(), Entry::Fixed(Arc::new(resolver)))
    }

    /// Register a shared resolver under `name`; it takes no options.
    pub fn register_shared(
        &mut self,
        name: impl Into<String>,
        resolver: DynResolver,
    ) -> Result<&mut Self, RulesError> {
        self.insert(name.into(), Entry::Fixed(resolver))
    }

    /// Register a factory under `name`: each use in a rules file calls it with that use's
    /// `options` (JSON `null` when none are written).
    pub fn register_factory<F>(
        &mut self,
        name: impl Into<String>,
        factory: F,
    ) -> Result<&mut Self, RulesError>
    where
        F: Fn(&Value) -> Result<DynResolver, RulesError> + Send + Sync + 'static,
    {
        self.insert(name.into(), Entry::Factory(Arc::new(factory)))
    }

    fn insert(&mut self, name: String, entry: Entry) -> Result<&mut Self, RulesError> {
        if name.is_empty() {
            return Err(RulesError::invalid("a strategy name must not be empty"));
        }
        if self.entries.contains_key(&name) {
            return Err(RulesError::new(
                RulesErrorKind::DuplicateName,
                format!("strategy {name:?} is already registered"),
            ));
        }
        self.entries.insert(name, entry);
        Ok(self)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The strategy `name` with `options` (`null` or `{}` for none).
    ///
    /// Fails with [`RulesErrorKind::UnknownStrategy`] for a name that is not registered and
    /// for options given to a strategy that takes none; a factory's own error is passed on.
    pub fn create(&self, name: &str, options: &Value) -> Result<DynResolver, RulesError> {
        match self.entries.get(name) {
            None => Err(RulesError::new(
                RulesErrorKind::UnknownStrategy,
                format!(
                    "unknown strategy {name:?}; known strategies: {}",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(Entry::Fixed(resolver)) => {
                let empty = match options {
                    Value::Null => true,
                    Value::Object(map) => map.is_empty(),
                    _ => false,
                };
                if !empty {
                    return Err(RulesError::new(
                        RulesErrorKind::UnknownStrategy,
                        format!("strategy {name:?} takes no options, got {options}"),
                    ));
                }
                Ok(Arc::clone(resolver))
            }
            Some(Entry::Factory(factory)) => factory(options),
        }
    }
}

impl Default for StrategyRegistry {
    fn default() -> Self {
        StrategyRegistry::new()
    }
}

impl fmt::Debug for StrategyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyRegistry")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtins_and_custom_strategies() {
        let mut registry = StrategyRegistry::new();
        for name in ["lww", "last_write_wins", "fww", "merge", "review"] {
            assert!(registry.create(name, &Value::Null).is_ok(), "{name}");
        }
        assert!(registry.create("lww", &json!({})).is_ok());
        let e = registry.create("lww", &json!({"x": 1})).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::UnknownStrategy);
        let e = registry.create("nope", &Value::Null).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::UnknownStrategy);
        assert!(e.message().contains("lww"), "{e}");

        registry.register("mine", ManualReview).unwrap();
        let e = registry.register("mine", LastWriteWins).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::DuplicateName);
        let e = registry.register("lww", LastWriteWins).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::DuplicateName);

        registry
            .register_factory("pick", |options| match options["side"].as_str() {
                Some("first") => Ok(Arc::new(FirstWriteWins) as DynResolver),
                Some("last") => Ok(Arc::new(LastWriteWins) as DynResolver),
                _ => Err(RulesError::invalid("side must be first or last")),
            })
            .unwrap();
        let r = registry.create("pick", &json!({"side": "first"})).unwrap();
        assert_eq!(format!("{r:?}"), "FirstWriteWins");
        assert!(registry.create("pick", &Value::Null).is_err());
        assert!(
            StrategyRegistry::empty()
                .create("lww", &Value::Null)
                .is_err()
        );
    }
}
