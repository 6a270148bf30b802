//! Configuration errors: each one names the file, the line and the key path involved,
//! and [`ConfigErrors`] carries all of them at once (nginx's "in FILE:LINE").

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
///
/// Displays as `{file}:{line}: {key}: {message}`. A `line` of 0 means the problem is
/// not tied to one line (the file cannot be read, a required table is absent) and an
/// empty `key` means it concerns the whole file; both parts are then left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.location())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when no single line is at fault.
    pub line: usize,
    /// Full key path, e.g. `environments.alice.user` or `vhosts[1].environment`.
    pub key: String,
    pub message: String,
}

/// Something `bulkhead check` prints with a `warning:` prefix and `serve` logs, but
/// that does not stop the configuration from loading. Same shape as an error.
pub type ConfigWarning = ConfigError;

impl ConfigError {
    fn location(&self) -> String {
        let mut out = self.file.display().to_string();
        if self.line > 0 {
            out.push_str(&format!(":{}", self.line));
        }
        if !self.key.is_empty() {
            out.push_str(": ");
            out.push_str(&self.key);
        }
        out
    }
}

/// Every problem found in a configuration file, in line order. Never empty when
/// returned by [`crate::load`] or [`crate::parse_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors { errors: vec![error] }
    }
}

/// Byte range of a key, table header or value in the source text, when known.
pub(crate) type Span = Option<Range<usize>>;

/// Collects errors while the document is walked, turning byte offsets into lines.
pub(crate) struct Report<'a> {
    file: &'a Path,
    /// Byte offset at which each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: &'a Path, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Report {
            file,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The 1-based line holding the start of `span`, or 0 when the span is unknown.
    pub(crate) fn line(&self, span: &Span) -> usize {
        match span {
            Some(range) => self.line_starts.partition_point(|&s| s <= range.start),
            None => 0,
        }
    }

    pub(crate) fn error(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        let error = ConfigError {
            file: self.file.to_path_buf(),
            line: self.line(span),
            key: key.to_string(),
            message: message.into(),
        };
        self.errors.push(error);
    }

    pub(crate) fn warn(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        let warning = ConfigWarning {
            file: self.file.to_path_buf(),
            line: self.line(span),
            key: key.to_string(),
            message: message.into(),
        };
        self.warnings.push(warning);
    }

    /// The warnings so far, sorted by line; they are removed from the report.
    pub(crate) fn take_warnings(&mut self) -> Vec<ConfigWarning> {
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.sort_by_key(|w| w.line);
        warnings
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// All errors, sorted by line (stable, so same-line errors keep walk order).
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| e.line);
        ConfigErrors { errors: self.errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let r = Report::new(Path::new("f"), "a\nbb\n\nc");
        assert_eq!(r.line(&Some(0..1)), 1);
        assert_eq!(r.line(&Some(1..2)), 1); // the newline itself
        assert_eq!(r.line(&Some(2..3)), 2);
        assert_eq!(r.line(&Some(5..6)), 3);
        assert_eq!(r.line(&Some(6..7)), 4);
        assert_eq!(r.line(&None), 0);
    }

    #[test]
    fn display_leaves_out_unknown_parts() {
        let e = ConfigError {
            file: "/etc/b.toml".into(),
            line: 3,
            key: "server.lisen".into(),
            message: "unknown key".into(),
        };
        assert_eq!(e.to_string(), "/etc/b.toml:3: server.lisen: unknown key");
        let e = ConfigError {
            line: 0,
            key: String::new(),
            ..e
        };
        assert_eq!(e.to_string(), "/etc/b.toml: unknown key");
    }
}
