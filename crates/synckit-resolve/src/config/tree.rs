//! A positioned document tree: YAML and JSON rule files are both read into it, so one decoder
//! serves both formats and every value keeps the line and column it was written at.

use serde_json::{Number, Value};

use crate::error::{Position, RulesError, RulesErrorKind};

/// One value of the document and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Position,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique (the parsers reject duplicates).
    Map(Vec<Entry>),
}

/// One key of a mapping, where the key is written, and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Position,
    pub value: Node,
}

impl Node {
    pub fn new(pos: Position, kind: Kind) -> Self {
        Node { pos, kind }
    }

    /// The number of nodes in this subtree, for the node-count limit.
    pub fn size(&self) -> usize {
        1 + match &self.kind {
            Kind::Seq(items) => items.iter().map(Node::size).sum(),
            Kind::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
            _ => 0,
        }
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::String(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    fn wrong_type(&self, what: &str, expected: &str) -> RulesError {
        RulesError::invalid(format!(
            "{what} must be {expected}, found {}",
            self.type_name()
        ))
        .at(self.pos)
    }

    /// The value as plain JSON (positions dropped).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => Value::Number(n.clone()),
            Kind::String(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn as_str(&self, what: &str) -> Result<&str, RulesError> {
        match &self.kind {
            Kind::String(s) => Ok(s),
            _ => Err(self.wrong_type(what, "a string")),
        }
    }

    pub fn as_bool(&self, what: &str) -> Result<bool, RulesError> {
        match self.kind {
            Kind::Bool(b) => Ok(b),
            _ => Err(self.wrong_type(what, "true or false")),
        }
    }

    pub fn as_i64(&self, what: &str) -> Result<i64, RulesError> {
        match &self.kind {
            Kind::Number(n) => n.as_i64().ok_or_else(|| {
                RulesError::invalid(format!("{what} must be a whole number, found {n}"))
                    .at(self.pos)
            }),
            _ => Err(self.wrong_type(what, "a whole number")),
        }
    }

    pub fn as_u64(&self, what: &str) -> Result<u64, RulesError> {
        match &self.kind {
            Kind::Number(n) => n.as_u64().ok_or_else(|| {
                RulesError::invalid(format!(
                    "{what} must be a whole number of at least 0, found {n}"
                ))
                .at(self.pos)
            }),
            _ => Err(self.wrong_type(what, "a whole number")),
        }
    }

    pub fn as_usize(&self, what: &str) -> Result<usize, RulesError> {
        let n = self.as_u64(what)?;
        usize::try_from(n)
            .map_err(|_| RulesError::invalid(format!("{what} is too large: {n}")).at(self.pos))
    }

    pub fn as_seq(&self, what: &str) -> Result<&[Node], RulesError> {
        match &self.kind {
            Kind::Seq(items) => Ok(items),
            _ => Err(self.wrong_type(what, "a list")),
        }
    }

    /// A string, or a non-empty list of strings (alternatives).
    pub fn strings(&self, what: &str) -> Result<Vec<(String, Position)>, RulesError> {
        let items: Vec<&Node> = match &self.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![self],
        };
        if items.is_empty() {
            return Err(
                RulesError::invalid(format!("{what} must list at least one value")).at(self.pos),
            );
        }
        items
            .into_iter()
            .map(|n| Ok((n.as_str(what)?.to_owned(), n.pos)))
            .collect()
    }

    /// The mapping's entries, refusing any key not in `allowed`.
    pub fn fields<'a>(
        &'a self,
        what: &'static str,
        allowed: &'static [&'static str],
    ) -> Result<Fields<'a>, RulesError> {
        let Kind::Map(entries) = &self.kind else {
            return Err(self.wrong_type(what, "a mapping"));
        };
        if let Some(e) = entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
            return Err(RulesError::new(
                RulesErrorKind::UnknownField,
                format!(
                    "unknown field `{}` in {what}; expected one of: {}",
                    e.key,
                    allowed.join(", ")
                ),
            )
            .at(e.key_pos));
        }
        Ok(Fields {
            entries,
            pos: self.pos,
            what,
        })
    }
}

/// The fields of one mapping, read by name.
pub(crate) struct Fields<'a> {
    entries: &'a [Entry],
    pos: Position,
    what: &'static str,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub fn required(&self, key: &str) -> Result<&'a Node, RulesError> {
        self.get(key).ok_or_else(|| {
            RulesError::new(
                RulesErrorKind::MissingField,
                format!("{} has no `{key}`; it is required", self.what),
            )
            .at(self.pos)
        })
    }
}

/// The error for a key written twice in one mapping.
pub(crate) fn duplicate_key(key: &str, first: Position, again: Position) -> RulesError {
    RulesError::new(
        RulesErrorKind::Syntax,
        format!("key `{key}` appears twice in one mapping (first at {first})"),
    )
    .at(again)
}
