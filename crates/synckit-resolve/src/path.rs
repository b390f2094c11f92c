//! JSON paths into event data: JSON Pointers (`/items/0/price`) or dotted paths (`items[0].price`).

use std::fmt;

use serde_json::Value;

use crate::error::{RulesError, RulesErrorKind};

/// A path to one value inside a JSON document, compiled to a JSON Pointer (RFC 6901).
///
/// Two spellings are accepted:
/// - a JSON Pointer, starting with `/`: `/customer/address/city`, `/items/0`, with `~1` for a
///   `/` and `~0` for a `~` inside a key;
/// - a dotted path: `customer.address.city`, `items[0].price` or `items.0.price`. Keys that
///   contain `.`, `[` or `]` need the pointer spelling.
///
/// A numeric segment selects an array element or an object key made of digits, whichever the
/// document holds there.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonPath {
    text: String,
    pointer: String,
    /// The pointer's reference tokens, unescaped once here: rules evaluate paths for every
    /// conflict, and `Value::pointer` unescapes (allocating) on every call.
    segments: Vec<Segment>,
}

/// One reference token: an object key, and the array index it denotes, if it is one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Segment {
    key: String,
    index: Option<usize>,
}

impl Segment {
    fn new(token: &str) -> Self {
        let key = token.replace("~1", "/").replace("~0", "~");
        // RFC 6901 array indexes: digits, no leading zero (as `Value::pointer` reads them).
        let index = if key.starts_with('+') || (key.starts_with('0') && key.len() != 1) {
            None
        } else {
            key.parse().ok()
        };
        Segment { key, index }
    }
}

impl JsonPath {
    /// Parse `text` in either spelling.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let bad = |why: &str| {
            RulesError::new(
                RulesErrorKind::InvalidPattern,
                format!("invalid JSON path {text:?}: {why}"),
            )
        };
        let pointer = if text.starts_with('/') {
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return Err(bad("'~' must be followed by 0 or 1"));
                }
            }
            text.to_owned()
        } else {
            if text.is_empty() {
                return Err(bad("empty path"));
            }
            let mut pointer = String::with_capacity(text.len() + 1);
            for part in text.split('.') {
                let (key, mut rest) = match part.find('[') {
                    Some(i) => part.split_at(i),
                    None => (part, ""),
                };
                if key.contains(']') {
                    return Err(bad("']' without '['"));
                }
                if key.is_empty() && rest.is_empty() {
                    return Err(bad("empty segment"));
                }
                if !key.is_empty() {
                    push_segment(&mut pointer, key);
                }
                while !rest.is_empty() {
                    let Some(inner) = rest.strip_prefix('[') else {
                        return Err(bad("text after ']'"));
                    };
                    let Some(end) = inner.find(']') else {
                        return Err(bad("unclosed '['"));
                    };
                    let index = &inner[..end];
                    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("an index in [] must be a number"));
                    }
                    push_segment(&mut pointer, index);
                    rest = &inner[end + 1..];
                }
            }
            pointer
        };
        let segments = pointer.split('/').skip(1).map(Segment::new).collect();
        Ok(JsonPath {
            text: text.to_owned(),
            pointer,
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The equivalent JSON Pointer.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The value at this path in `value`, if there is one.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match value {
                Value::Object(map) => map.get(&segment.key),
                Value::Array(items) => segment.index.and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

fn push_segment(pointer: &mut String, key: &str) {
    pointer.push('/');
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({:?})", self.text)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_spellings_reach_the_same_value() {
        let doc = json!({"items": [{"price": 3}], "a/b": {"~": 1}, "7": "seven"});
        for path in ["items[0].price", "items.0.price", "/items/0/price"] {
            assert_eq!(JsonPath::parse(path).unwrap().get(&doc), Some(&json!(3)));
        }
        assert_eq!(
            JsonPath::parse("/a~1b/~0").unwrap().get(&doc),
            Some(&json!(1))
        );
        assert_eq!(
            JsonPath::parse("7").unwrap().get(&doc),
            Some(&json!("seven"))
        );
        assert_eq!(JsonPath::parse("items[1]").unwrap().get(&doc), None);
        assert_eq!(JsonPath::parse("x.y").unwrap().pointer(), "/x/y");
        assert_eq!(JsonPath::parse("m[0][1]").unwrap().pointer(), "/m/0/1");
    }

    #[test]
    fn get_reads_what_value_pointer_reads() {
        let doc = json!({
            "": {"x": 1}, "a": [10, 20, {"b": [30]}], "01": "key", "0": "zero",
            "a/b": {"~": 2}, "m": {"+1": 3, "1": 4}
        });
        for pointer in [
            "/",
            "//x",
            "/a",
            "/a/0",
            "/a/1",
            "/a/01",
            "/a/+1",
            "/a/2/b/0",
            "/a/3",
            "/a/x",
            "/01",
            "/0",
            "/a~1b/~0",
            "/m/+1",
            "/m/1",
            "/nope/deeper",
            "/a/0/0",
        ] {
            let path = JsonPath::parse(pointer).unwrap();
            assert_eq!(path.get(&doc), doc.pointer(pointer), "{pointer}");
        }
    }

    #[test]
    fn malformed_paths_are_rejected() {
        for path in ["", "a..b", "a[", "a[x]", "a[0]b", "a]", "/a~2", "/a~"] {
            let e = JsonPath::parse(path).unwrap_err();
            assert_eq!(e.kind(), RulesErrorKind::InvalidPattern, "{path}");
        }
    }
}
