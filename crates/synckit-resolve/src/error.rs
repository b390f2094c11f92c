//! The crate's one error: what is wrong with a rule set, a rules file or a registry, and where.

use std::fmt;
use std::path::{Path, PathBuf};

use synckit_types::BoxError;

/// A place in a rules file: 1-based line and 1-based column, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The line, starting at 1.
    pub line: usize,
    /// The column, starting at 1, in characters (not bytes).
    pub column: usize,
}

impl Position {
    /// A position at `line` and `column` (both 1-based).
    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }

    /// The position of byte `offset` in `text` (clamped to the text, moved back to a character
    /// boundary).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position { line, column }
    }
}

/// Positions of byte offsets in one text, each found in O(log lines) after one pass over the
/// text: [`Position::of_offset`] scans from the start, which is quadratic over the thousands of
/// values of a large rules file (all on one line, when the JSON is compact).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
    /// Whether each line is ASCII, so a column is a byte difference.
    ascii: Vec<bool>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        let mut ascii = Vec::new();
        let mut line_ascii = true;
        for (i, b) in text.bytes().enumerate() {
            line_ascii &= b.is_ascii();
            if b == b'\n' {
                starts.push(i + 1);
                ascii.push(line_ascii);
                line_ascii = true;
            }
        }
        ascii.push(line_ascii);
        LineIndex {
            text,
            starts,
            ascii,
        }
    }

    /// The same as [`Position::of_offset`] on the indexed text.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        let column = if self.ascii[line - 1] {
            offset - start
        } else {
            self.text[start..offset].chars().count()
        };
        Position {
            line,
            column: column + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What kind of problem a [`RulesError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RulesErrorKind {
    /// The file is not well-formed YAML or JSON.
    Syntax,
    /// A value has the wrong type or is out of range (a string where a number belongs, an
    /// empty list of alternatives, a name with a dot).
    InvalidValue,
    /// A required field (`version`, `name`, a rule's `strategy`) is absent.
    MissingField,
    /// A field the format does not know; usually a typo.
    UnknownField,
    /// The file's `version` is not one this crate reads.
    UnsupportedVersion,
    /// A strategy name that the registry does not know, or options it refuses.
    UnknownStrategy,
    /// Two rules, two groups or two registered strategies share a name.
    DuplicateName,
    /// The rule set could never decide: no enabled rule and no fallback.
    Empty,
    /// A glob or JSON path that does not parse.
    InvalidPattern,
    /// A limit was exceeded: file size, node count, rule count, group depth.
    LimitExceeded,
    /// The file could not be read.
    Io,
}

impl RulesErrorKind {
    /// A stable snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RulesErrorKind::Syntax => "syntax",
            RulesErrorKind::InvalidValue => "invalid_value",
            RulesErrorKind::MissingField => "missing_field",
            RulesErrorKind::UnknownField => "unknown_field",
            RulesErrorKind::UnsupportedVersion => "unsupported_version",
            RulesErrorKind::UnknownStrategy => "unknown_strategy",
            RulesErrorKind::DuplicateName => "duplicate_name",
            RulesErrorKind::Empty => "empty",
            RulesErrorKind::InvalidPattern => "invalid_pattern",
            RulesErrorKind::LimitExceeded => "limit_exceeded",
            RulesErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for RulesErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rule set, a rules file or a strategy registration was refused.
///
/// Errors found in a file carry the [`Position`] of the offending value (or key) and, when the
/// file was read from disk, its path; `Display` prints `path:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub struct RulesError {
    kind: RulesErrorKind,
    message: String,
    position: Option<Position>,
    file: Option<PathBuf>,
    #[source]
    source: Option<BoxError>,
}

impl RulesError {
    /// A new error of `kind`, without a position.
    pub fn new(kind: RulesErrorKind, message: impl Into<String>) -> Self {
        RulesError {
            kind,
            message: message.into(),
            position: None,
            file: None,
            source: None,
        }
    }

    /// Set the position, unless one is already set (the innermost position is the precise one).
    pub fn at(mut self, position: Position) -> Self {
        self.position.get_or_insert(position);
        self
    }

    /// Set the file the error was found in.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> RulesErrorKind {
        self.kind
    }

    /// The message, without file or position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the file, when the error came from a file.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// The file, when the error came from a file on disk.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        RulesError::new(RulesErrorKind::InvalidValue, message)
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some(p)) => write!(f, "{}:{}:{}: ", file.display(), p.line, p.column)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(p)) => write!(f, "{p}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl From<RulesError> for synckit_types::Error {
    fn from(error: RulesError) -> Self {
        synckit_types::Error::config(error.to_string()).with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let text = "ab\ncé d\n";
        assert_eq!(Position::of_offset(text, 0), Position::new(1, 1));
        assert_eq!(Position::of_offset(text, 3), Position::new(2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(Position::of_offset(text, 6), Position::new(2, 3));
        assert_eq!(Position::of_offset(text, 5), Position::new(2, 2));
        assert_eq!(Position::of_offset(text, 99), Position::new(3, 1));
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                index.position(offset),
                Position::of_offset(text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn display_has_file_and_position() {
        let e = RulesError::invalid("bad")
            .at(Position::new(3, 4))
            .in_file("r.yaml");
        assert_eq!(e.to_string(), "r.yaml:3:4: bad");
        // The first position set wins.
        let e = RulesError::invalid("bad")
            .at(Position::new(1, 2))
            .at(Position::new(9, 9));
        assert_eq!(e.to_string(), "line 1, column 2: bad");
    }
}
