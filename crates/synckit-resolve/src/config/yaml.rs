//! YAML rule files into the positioned tree, from saphyr-parser's event stream.
//!
//! The parser reports each event with its span, so every node keeps its line and column.
//! Plain scalars are typed by the YAML 1.2 core schema (`null`, `true`, `12`, `1.5`); quoted
//! and block scalars are strings, so `"1"` stays a string and `1` a number, exactly as in JSON.
//! Aliases are expanded, counted against [`MAX_NODES`] so that a file of nested aliases cannot
//! exhaust memory. Duplicate keys, complex keys and tags outside the core schema are refused.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span, Tag};
use serde_json::Number;

use super::tree::{Entry, Kind, Node, duplicate_key};
use super::{MAX_DEPTH, MAX_NODES};
use crate::error::{Position, RulesError, RulesErrorKind};

/// Parse `text` as one YAML document (an empty document is `null`).
pub(crate) fn parse(text: &str) -> Result<Node, RulesError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            RulesError::new(RulesErrorKind::Syntax, e.info().to_owned()).at(position(*e.marker()))
        })?;
        builder.event(event, span)?;
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Node::new(Position::new(1, 1), Kind::Null)))
}

fn position(marker: Marker) -> Position {
    Position::new(marker.line().max(1), marker.col() + 1)
}

enum Frame {
    Seq {
        pos: Position,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Position,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Position)>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
}

impl Builder {
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn count(&mut self, n: usize, pos: Position) -> Result<(), RulesError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(RulesError::new(
                RulesErrorKind::LimitExceeded,
                format!("the document has more than {MAX_NODES} values (aliases included)"),
            )
            .at(pos));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), RulesError> {
        let pos = position(span.start);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(RulesError::new(
                        RulesErrorKind::Syntax,
                        "a rules file holds one YAML document; found a second",
                    )
                    .at(pos));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                if self.expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some((value.into_owned(), pos));
                    }
                    return Ok(());
                }
                self.count(1, pos)?;
                let node = Node::new(pos, scalar(&value, style, tag.as_deref(), pos)?);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.value(node)?;
            }
            Event::SequenceStart(anchor, tag) => self.start(true, anchor, tag.as_deref(), pos)?,
            Event::MappingStart(anchor, tag) => self.start(false, anchor, tag.as_deref(), pos)?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => {
                        (Node::new(pos, Kind::Seq(items)), anchor)
                    }
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (Node::new(pos, Kind::Map(entries)), anchor),
                    None => {
                        return Err(
                            RulesError::new(RulesErrorKind::Syntax, "unbalanced YAML").at(pos)
                        );
                    }
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.value(node)?;
            }
            Event::Alias(id) => {
                if self.expecting_key() {
                    return Err(
                        RulesError::invalid("keys must be plain strings, not aliases").at(pos),
                    );
                }
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(RulesError::new(
                        RulesErrorKind::Syntax,
                        "alias to an unknown anchor",
                    )
                    .at(pos));
                };
                self.count(node.size(), pos)?;
                self.value(node)?;
            }
        }
        Ok(())
    }

    fn start(
        &mut self,
        is_seq: bool,
        anchor: usize,
        tag: Option<&Tag>,
        pos: Position,
    ) -> Result<(), RulesError> {
        if self.expecting_key() {
            return Err(
                RulesError::invalid("keys must be plain strings, not lists or mappings").at(pos),
            );
        }
        if let Some(tag) = tag {
            let want = if is_seq { "seq" } else { "map" };
            if !(tag.is_yaml_core_schema() && tag.suffix == want) {
                return Err(unsupported_tag(tag, pos));
            }
        }
        self.count(1, pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(pos));
        }
        self.stack.push(if is_seq {
            Frame::Seq {
                pos,
                anchor,
                items: Vec::new(),
            }
        } else {
            Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                key: None,
            }
        });
        Ok(())
    }

    fn value(&mut self, node: Node) -> Result<(), RulesError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => {
                let Some((key, key_pos)) = key.take() else {
                    return Err(RulesError::invalid("a mapping key is missing").at(node.pos));
                };
                if let Some(first) = entries.iter().find(|e| e.key == key) {
                    return Err(duplicate_key(&key, first.key_pos, key_pos));
                }
                entries.push(Entry {
                    key,
                    key_pos,
                    value: node,
                });
            }
        }
        Ok(())
    }
}

pub(super) fn too_deep(pos: Position) -> RulesError {
    RulesError::new(
        RulesErrorKind::LimitExceeded,
        format!("lists and mappings nest deeper than {MAX_DEPTH} levels"),
    )
    .at(pos)
}

fn unsupported_tag(tag: &Tag, pos: Position) -> RulesError {
    RulesError::invalid(format!(
        "unsupported YAML tag {tag}; only the core schema tags (!!str, !!int, ...) are allowed"
    ))
    .at(pos)
}

/// Type a scalar by the YAML 1.2 core schema.
fn scalar(
    value: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Position,
) -> Result<Kind, RulesError> {
    let not = |what: &str| RulesError::invalid(format!("{value:?} is not {what}")).at(pos);
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(unsupported_tag(tag, pos));
        }
        return match tag.suffix.as_str() {
            "str" => Ok(Kind::String(value.to_owned())),
            "null" => null(value).ok_or_else(|| not("null")),
            "bool" => boolean(value).ok_or_else(|| not("a boolean")),
            "int" => integer(value).ok_or_else(|| not("an integer")),
            "float" => float(value, pos)?.ok_or_else(|| not("a number")),
            _ => Err(unsupported_tag(tag, pos)),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Kind::String(value.to_owned()));
    }
    if let Some(kind) = null(value)
        .or_else(|| boolean(value))
        .or_else(|| integer(value))
    {
        return Ok(kind);
    }
    Ok(float(value, pos)?.unwrap_or_else(|| Kind::String(value.to_owned())))
}

fn null(value: &str) -> Option<Kind> {
    matches!(value, "" | "~" | "null" | "Null" | "NULL").then_some(Kind::Null)
}

fn boolean(value: &str) -> Option<Kind> {
    match value {
        "true" | "True" | "TRUE" => Some(Kind::Bool(true)),
        "false" | "False" | "FALSE" => Some(Kind::Bool(false)),
        _ => None,
    }
}

fn integer(value: &str) -> Option<Kind> {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = value.strip_prefix("0x") {
        return digits(hex, 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .map(|n| Kind::Number(n.into()));
    }
    if let Some(oct) = value.strip_prefix("0o") {
        return digits(oct, 8)
            .then(|| u64::from_str_radix(oct, 8).ok())
            .flatten()
            .map(|n| Kind::Number(n.into()));
    }
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    if !digits(unsigned, 10) {
        return None;
    }
    // Like serde_json: i64 or u64 when it fits, a float beyond.
    if let Ok(n) = value.parse::<i64>() {
        return Some(Kind::Number(n.into()));
    }
    if let Ok(n) = value.strip_prefix('+').unwrap_or(value).parse::<u64>() {
        return Some(Kind::Number(n.into()));
    }
    value
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Kind::Number)
}

/// A core-schema float; `.inf` and `.nan` are refused since JSON cannot hold them.
fn float(value: &str, pos: Position) -> Result<Option<Kind>, RulesError> {
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    if matches!(
        unsigned,
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
    ) {
        return Err(RulesError::invalid(format!(
            "{value} is not a finite number; rule files hold JSON values"
        ))
        .at(pos));
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match fraction {
        // `.5`, `1.`, `1.5`
        Some(f) => all_digits(whole) && all_digits(f) && !(whole.is_empty() && f.is_empty()),
        None => !whole.is_empty() && all_digits(whole),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if !(mantissa_ok && exponent_ok) {
        return Ok(None);
    }
    Ok(value
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Kind::Number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap()
    }

    fn entries(node: &Node) -> &[Entry] {
        match &node.kind {
            Kind::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let doc = root(
            "a: 1\nb: '1'\nc: \"1\"\nd: 1.5\ne: true\nf: ~\ng: hello\nh: -7\ni: 0x1F\nj: !!str 12\nk: 1e3\nl: .5\nm: 12abc\nn:\n",
        );
        let got: Vec<_> = entries(&doc)
            .iter()
            .map(|e| (e.key.as_str(), e.value.to_json()))
            .collect();
        use serde_json::json;
        assert_eq!(
            got,
            vec![
                ("a", json!(1)),
                ("b", json!("1")),
                ("c", json!("1")),
                ("d", json!(1.5)),
                ("e", json!(true)),
                ("f", json!(null)),
                ("g", json!("hello")),
                ("h", json!(-7)),
                ("i", json!(31)),
                ("j", json!("12")),
                ("k", json!(1000.0)),
                ("l", json!(0.5)),
                ("m", json!("12abc")),
                ("n", json!(null)),
            ]
        );
        // Numbers are represented as serde_json would parse them from JSON.
        let json_doc = super::super::json::parse("{\"a\": 1, \"d\": 1.5, \"h\": -7}").unwrap();
        let pick = |n: &Node, k: &str| {
            entries(n)
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.kind.clone())
        };
        for k in ["a", "d", "h"] {
            assert_eq!(pick(&doc, k), pick(&json_doc, k), "{k}");
        }
    }

    #[test]
    fn positions_are_one_based() {
        let doc = root("version: 1\nrules:\n  - name: a\n    strategy: lww\n");
        let e = entries(&doc);
        assert_eq!(e[0].key_pos, Position::new(1, 1));
        assert_eq!(e[0].value.pos, Position::new(1, 10));
        let Kind::Seq(rules) = &e[1].value.kind else {
            panic!()
        };
        let rule = entries(&rules[0]);
        assert_eq!(rule[1].key_pos, Position::new(4, 5));
        assert_eq!(rule[1].value.pos, Position::new(4, 15));
    }

    #[test]
    fn refusals() {
        let cases = [
            ("a: 1\na: 2\n", RulesErrorKind::Syntax, 2),
            ("a: [1\n", RulesErrorKind::Syntax, 2),
            ("a: 1\n---\nb: 2\n", RulesErrorKind::Syntax, 2),
            ("? [x]\n: 1\n", RulesErrorKind::InvalidValue, 1),
            ("a: !custom 1\n", RulesErrorKind::InvalidValue, 1),
            ("a: .inf\n", RulesErrorKind::InvalidValue, 1),
            ("a: !!int x\n", RulesErrorKind::InvalidValue, 1),
            ("a: *nope\n", RulesErrorKind::Syntax, 1),
        ];
        for (text, kind, line) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.kind(), kind, "{text:?}: {e}");
            assert_eq!(e.position().map(|p| p.line), Some(line), "{text:?}: {e}");
        }
    }

    #[test]
    fn aliases_expand_and_are_bounded() {
        let doc = root("base: &b {x: 1}\ncopy: *b\n");
        let e = entries(&doc);
        assert_eq!(e[1].value.to_json(), serde_json::json!({"x": 1}));

        // Nine levels of ten-fold aliases would be a billion values.
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let e = parse(&text).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::LimitExceeded);

        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.kind(), RulesErrorKind::LimitExceeded);
        assert!(parse(&format!("a: {}{}\n", "[".repeat(20), "]".repeat(20))).is_ok());
    }
}
