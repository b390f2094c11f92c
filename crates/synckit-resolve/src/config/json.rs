//! JSON rule files into the positioned tree, through serde_json.
//!
//! serde_json does the parsing (its syntax errors carry line and column). Positions of values
//! come from `RawValue`: each level is read as borrowed raw values, whose text is a slice of
//! the file, so the slice's start minus the file's start is the value's byte offset. A key's
//! position is found by stepping back from its value over `:` and the quoted key.

use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::tree::{Entry, Kind, Node, duplicate_key};
use super::yaml::too_deep;
use super::{MAX_DEPTH, MAX_NODES};
use crate::error::{LineIndex, Position, RulesError, RulesErrorKind};

/// Parse `text` as one JSON document.
pub(crate) fn parse(text: &str) -> Result<Node, RulesError> {
    let raw: &RawValue = serde_json::from_str(text).map_err(syntax)?;
    let mut state = State {
        text,
        lines: LineIndex::new(text),
        nodes: 0,
        depth: 0,
    };
    convert(raw, &mut state)
}

/// The text being converted, and what a conversion may still spend: values (against
/// [`MAX_NODES`]) and nesting (against [`MAX_DEPTH`]).
struct State<'a> {
    text: &'a str,
    lines: LineIndex<'a>,
    nodes: usize,
    depth: usize,
}

fn syntax(error: serde_json::Error) -> RulesError {
    // serde_json appends " at line L column C"; the position is carried separately instead.
    let position = (error.line() > 0).then(|| Position::new(error.line(), error.column().max(1)));
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    let e = RulesError::new(RulesErrorKind::Syntax, message).with_source(error);
    match position {
        Some(p) => e.at(p),
        None => e,
    }
}

/// Byte offset of `part` (a slice of `text`) in `text`.
fn offset(text: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize)
}

fn convert(raw: &RawValue, budget: &mut State<'_>) -> Result<Node, RulesError> {
    let part = raw.get();
    let at = offset(budget.text, part);
    let pos = budget.lines.position(at);
    budget.nodes += 1;
    if budget.nodes > MAX_NODES {
        return Err(RulesError::new(
            RulesErrorKind::LimitExceeded,
            format!("the document has more than {MAX_NODES} values"),
        )
        .at(pos));
    }
    if budget.depth >= MAX_DEPTH && matches!(part.as_bytes().first(), Some(b'{' | b'[')) {
        return Err(too_deep(pos));
    }
    budget.depth += 1;
    let node = convert_inner(part, pos, budget);
    budget.depth -= 1;
    node
}

fn convert_inner(part: &str, pos: Position, budget: &mut State<'_>) -> Result<Node, RulesError> {
    let text = budget.text;
    let kind = match part.as_bytes().first() {
        Some(b'{') => {
            let RawEntries(raw_entries) = serde_json::from_str(part).map_err(syntax)?;
            let mut entries: Vec<Entry> = Vec::with_capacity(raw_entries.len());
            for (key, value) in raw_entries {
                let value_at = offset(text, value.get());
                let key_pos = budget
                    .lines
                    .position(key_offset(text, value_at).unwrap_or(value_at));
                if let Some(first) = entries.iter().find(|e| e.key == key) {
                    return Err(duplicate_key(&key, first.key_pos, key_pos));
                }
                entries.push(Entry {
                    key,
                    key_pos,
                    value: convert(value, budget)?,
                });
            }
            Kind::Map(entries)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(part).map_err(syntax)?;
            Kind::Seq(
                items
                    .into_iter()
                    .map(|item| convert(item, budget))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => match serde_json::from_str(part).map_err(syntax)? {
            serde_json::Value::Null => Kind::Null,
            serde_json::Value::Bool(b) => Kind::Bool(b),
            serde_json::Value::Number(n) => Kind::Number(n),
            serde_json::Value::String(s) => Kind::String(s),
            // Objects and arrays start with '{' or '['.
            other => {
                return Err(RulesError::new(
                    RulesErrorKind::Syntax,
                    format!("unexpected JSON value {other}"),
                )
                .at(pos));
            }
        },
    };
    Ok(Node::new(pos, kind))
}

/// The offset of the opening quote of the key whose value starts at `value_at`.
fn key_offset(text: &str, value_at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = value_at;
    let skip_space = |mut i: usize| {
        while i > 0 && matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
            i -= 1;
        }
        i
    };
    i = skip_space(i);
    if i == 0 || bytes[i - 1] != b':' {
        return None;
    }
    i = skip_space(i - 1);
    if i == 0 || bytes[i - 1] != b'"' {
        return None;
    }
    // `i - 1` is the closing quote; find the opening one, skipping escaped quotes.
    let mut j = i - 1;
    while j > 0 {
        j -= 1;
        if bytes[j] == b'"' {
            let backslashes = bytes[..j].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// A JSON object's entries in file order, values left raw.
struct RawEntries<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawEntries<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for EntriesVisitor<'a> {
            type Value = RawEntries<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'a RawValue = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(RawEntries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys_carry_positions() {
        let text = "{\n  \"a\": [1, \"x\"],\n  \"b\\\"q\" :  {\"c\": null}\n}";
        let root = parse(text).unwrap();
        assert_eq!(root.pos, Position::new(1, 1));
        let Kind::Map(entries) = &root.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].key_pos, Position::new(2, 3));
        assert_eq!(entries[0].value.pos, Position::new(2, 8));
        let Kind::Seq(items) = &entries[0].value.kind else {
            panic!("not a list")
        };
        assert_eq!(items[1].pos, Position::new(2, 12));
        assert_eq!(items[1].kind, Kind::String("x".into()));
        assert_eq!(entries[1].key, "b\"q");
        assert_eq!(entries[1].key_pos, Position::new(3, 3));
        assert_eq!(entries[1].value.pos, Position::new(3, 13));
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_have_positions() {
        let e = parse("{\n  \"a\": 1,\n  \"b\": }").unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::Syntax);
        assert_eq!(e.position().map(|p| p.line), Some(3));
        assert!(!e.message().contains("at line"), "{e}");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse(&deep).unwrap_err().kind(),
            RulesErrorKind::LimitExceeded
        );
        let e = parse("{\"a\": 1,\n \"a\": 2}").unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::Syntax);
        assert_eq!(e.position(), Some(Position::new(2, 2)));
    }
}
