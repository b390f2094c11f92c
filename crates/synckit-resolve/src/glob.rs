//! Shell-style globs over aggregate ids: `*`, `?`, `[a-z]`, `[!x]` and `\` escapes.

use std::fmt;

use crate::error::{RulesError, RulesErrorKind};

/// A compiled glob pattern, matched against a whole string.
///
/// | pattern | matches |
/// |---|---|
/// | `*` | any run of characters, including none and including `/` and `.` |
/// | `?` | exactly one character |
/// | `[abc]`, `[a-z]` | one character of the set; `[!a-z]` or `[^a-z]` negates; `]` first is literal |
/// | `\x` | the character `x` literally |
///
/// Matching is linear in practice (one backtracking point, the last `*`), never recursive.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Char(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Char(x) => *x == c,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

impl Glob {
    /// Compile `pattern`; an unclosed `[` or a trailing `\` is an error.
    pub fn new(pattern: &str) -> Result<Self, RulesError> {
        let bad = |why: &str| {
            RulesError::new(
                RulesErrorKind::InvalidPattern,
                format!("invalid glob {pattern:?}: {why}"),
            )
        };
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::Any,
                '\\' => Token::Char(chars.next().ok_or_else(|| bad("trailing backslash"))?),
                '[' => {
                    let negated = matches!(chars.peek(), Some('!' | '^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = chars.next().ok_or_else(|| bad("unclosed '['"))?;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            chars.next().ok_or_else(|| bad("trailing backslash"))?
                        } else {
                            c
                        };
                        let mut ahead = chars.clone();
                        if ahead.next() == Some('-') && ahead.peek().is_some_and(|c| *c != ']') {
                            chars.next();
                            let hi = chars.next().ok_or_else(|| bad("unclosed '['"))?;
                            if hi < lo {
                                return Err(bad("range out of order"));
                            }
                            ranges.push((lo, hi));
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Token::Class { negated, ranges }
                }
                other => Token::Char(other),
            };
            tokens.push(token);
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize);
        // The last star seen: its token index and the text position it currently absorbs up to.
        let mut star: Option<(usize, usize)> = None;
        loop {
            if let Some(token) = tokens.get(t) {
                if *token == Token::Star {
                    star = Some((t, s));
                    t += 1;
                    continue;
                }
                if let Some(c) = text[s..].chars().next()
                    && token.matches(c)
                {
                    t += 1;
                    s += c.len_utf8();
                    continue;
                }
            } else if s == text.len() {
                return true;
            }
            // Mismatch: let the last star absorb one more character, or fail.
            let Some((star_t, star_s)) = star else {
                return false;
            };
            let Some(c) = text[star_s..].chars().next() else {
                return false;
            };
            let next = star_s + c.len_utf8();
            star = Some((star_t, next));
            t = star_t + 1;
            s = next;
        }
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn truth_table() {
        let cases = [
            ("order-*", "order-1", true),
            ("order-*", "order-", true),
            ("order-*", "orders-1", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b", "abab", true),
            ("?", "é", true),
            ("??", "é", false),
            ("user/*/profile", "user/42/profile", true),
            ("user/*/profile", "user/42/profile/x", false),
            ("[abc]1", "b1", true),
            ("[abc]1", "d1", false),
            ("[a-c]x", "cx", true),
            ("[!a-c]x", "cx", false),
            ("[!a-c]x", "dx", true),
            ("[^0-9]*", "a9", true),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a**b", "ab", true),
            ("*.json", "rules.json", true),
            ("*.json", "rules.yaml", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(m(pattern, text), want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for pattern in ["[abc", "abc\\", "[z-a]", "[\\"] {
            let e = Glob::new(pattern).unwrap_err();
            assert_eq!(e.kind(), RulesErrorKind::InvalidPattern, "{pattern}");
        }
    }
}
