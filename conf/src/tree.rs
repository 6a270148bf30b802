//! Typed, span-aware access to the parsed TOML tree. Every getter records a
//! [`crate::ConfigError`] (with line and key path) and returns `None` instead of
//! failing fast, so one pass finds every problem.

use std::path::{Component, Path, PathBuf};

use toml_edit::{Item, TableLike, Value};

use crate::error::{Report, Span};

/// A table (`[header]`, dotted, or inline) together with its key path.
pub(crate) struct Table<'a> {
    /// Key path of the table itself: `""` for the document, `server`, `vhosts[1]`, ...
    pub path: String,
    /// The header, or failing that the key naming the table in its parent.
    pub span: Span,
    inner: &'a dyn TableLike,
}

/// One value found under a key (or at an array index), with its key path.
pub(crate) struct Entry<'a> {
    pub path: String,
    /// The key when there is one, else the value.
    pub span: Span,
    node: Node<'a>,
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(item) => item.as_value(),
            Node::Value(value) => Some(value),
        }
    }

    fn table_like(self) -> Option<(&'a dyn TableLike, Span)> {
        match self {
            Node::Item(Item::Table(t)) => Some((t, t.span())),
            Node::Item(item) => item.as_inline_table().map(|t| (t as &dyn TableLike, t.span())),
            Node::Value(value) => value.as_inline_table().map(|t| (t as &dyn TableLike, t.span())),
        }
    }

    /// What the user wrote, for "expected X, found Y".
    fn describe(self) -> &'static str {
        match self {
            Node::Item(Item::None) => "nothing",
            Node::Item(Item::Table(_)) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a datetime",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "a table",
            },
        }
    }
}

/// `key` as it appears in a key path: bare when TOML allows it, else quoted.
pub(crate) fn key_segment(key: &str) -> String {
    if is_bare_key(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `[A-Za-z0-9_-]+`: a TOML bare key, and the rule for environment names.
pub(crate) fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl<'a> Table<'a> {
    pub(crate) fn root(doc: &'a toml_edit::Table) -> Self {
        Table {
            path: String::new(),
            span: None,
            inner: doc,
        }
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key_segment(key)
        } else {
            format!("{}.{}", self.path, key_segment(key))
        }
    }

    /// Every key-value pair, in file order.
    pub(crate) fn entries(&self) -> Vec<(&'a str, Entry<'a>)> {
        self.inner
            .iter()
            .filter(|(_, item)| !item.is_none())
            .map(|(key, item)| (key, self.make_entry(key, item)))
            .collect()
    }

    fn make_entry(&self, key: &str, item: &'a Item) -> Entry<'a> {
        let key_span = self.inner.key(key).and_then(|k| k.span());
        Entry {
            path: self.key_path(key),
            span: key_span.or_else(|| item.span()),
            node: Node::Item(item),
        }
    }

    /// Reports every key not in `allowed`, suggesting a close match.
    pub(crate) fn check_keys(&self, r: &mut Report, allowed: &[&str]) {
        for (key, entry) in self.entries() {
            if allowed.contains(&key) {
                continue;
            }
            let what = match entry.node {
                Node::Item(Item::Table(_) | Item::ArrayOfTables(_)) => "unknown table",
                _ => "unknown key",
            };
            let message = match suggest(key, allowed) {
                Some(near) => format!("{what}; did you mean '{near}'?"),
                None => format!("{what}; expected one of: {}", allowed.join(", ")),
            };
            r.error(&entry.span, &entry.path, message);
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry<'a>> {
        self.inner
            .get(key)
            .filter(|item| !item.is_none())
            .map(|item| self.make_entry(key, item))
    }

    /// Like [`Table::get`], reporting a missing key at the table's header.
    pub(crate) fn require(&self, r: &mut Report, key: &str) -> Option<Entry<'a>> {
        let entry = self.get(key);
        if entry.is_none() {
            r.error(&self.span, &self.key_path(key), "missing required key");
        }
        entry
    }

    /// An optional integer in `min..=max`, `default` when absent.
    pub(crate) fn int_or(&self, r: &mut Report, key: &str, default: i64, min: i64, max: i64) -> Option<i64> {
        match self.get(key) {
            None => Some(default),
            Some(entry) => entry.int_in(r, min, max),
        }
    }
}

impl<'a> Entry<'a> {
    fn wrong_type(&self, r: &mut Report, expected: &str) {
        let message = format!("expected {expected}, found {}", self.node.describe());
        r.error(&self.span, &self.path, message);
    }

    pub(crate) fn error(&self, r: &mut Report, message: impl Into<String>) {
        r.error(&self.span, &self.path, message);
    }

    pub(crate) fn str(&self, r: &mut Report) -> Option<&'a str> {
        let s = self.node.value().and_then(Value::as_str);
        if s.is_none() {
            self.wrong_type(r, "a string");
        }
        s
    }

    pub(crate) fn bool(&self, r: &mut Report) -> Option<bool> {
        let b = self.node.value().and_then(Value::as_bool);
        if b.is_none() {
            self.wrong_type(r, "true or false");
        }
        b
    }

    pub(crate) fn int(&self, r: &mut Report) -> Option<i64> {
        let i = self.node.value().and_then(Value::as_integer);
        if i.is_none() {
            self.wrong_type(r, "an integer");
        }
        i
    }

    /// Either an integer or a string; anything else is reported.
    pub(crate) fn int_or_str(&self, r: &mut Report) -> Option<IntOrStr<'a>> {
        self.int_or_str_as(r, "a name or a numeric id")
    }

    /// Either an integer or a string; anything else is reported as not `expected`.
    pub(crate) fn int_or_str_as(&self, r: &mut Report, expected: &str) -> Option<IntOrStr<'a>> {
        match self.node.value() {
            Some(Value::Integer(i)) => Some(IntOrStr::Int(*i.value())),
            Some(Value::String(s)) => Some(IntOrStr::Str(s.value())),
            _ => {
                self.wrong_type(r, expected);
                None
            }
        }
    }

    pub(crate) fn int_in(&self, r: &mut Report, min: i64, max: i64) -> Option<i64> {
        let i = self.int(r)?;
        if (min..=max).contains(&i) {
            return Some(i);
        }
        // Bounds at a type's limit are not worth mentioning.
        let message = if max >= i64::from(u32::MAX) && i < min {
            format!("must be at least {min}, got {i}")
        } else {
            format!("must be between {min} and {max}, got {i}")
        };
        self.error(r, message);
        None
    }

    pub(crate) fn table(&self, r: &mut Report) -> Option<Table<'a>> {
        match self.node.table_like() {
            Some((inner, header)) => Some(Table {
                path: self.path.clone(),
                span: header.or_else(|| self.span.clone()),
                inner,
            }),
            None => {
                self.wrong_type(r, "a table");
                None
            }
        }
    }

    /// Whether the value is an inline array (nothing reported either way).
    pub(crate) fn is_array(&self) -> bool {
        self.node.value().and_then(Value::as_array).is_some()
    }

    /// The elements of an inline array, each with its own `path[i]`.
    pub(crate) fn array(&self, r: &mut Report) -> Option<Vec<Entry<'a>>> {
        self.array_shaped(r, "an array")
    }

    /// Like [`Entry::array`], with the expected shape (`an array [seconds, steps]`) in
    /// the message when the value is not an array.
    pub(crate) fn array_shaped(&self, r: &mut Report, shape: &str) -> Option<Vec<Entry<'a>>> {
        let Some(array) = self.node.value().and_then(Value::as_array) else {
            self.wrong_type(r, shape);
            return None;
        };
        let elements = array.iter().enumerate().map(|(i, value)| Entry {
            path: format!("{}[{i}]", self.path),
            span: value.span().or_else(|| self.span.clone()),
            node: Node::Value(value),
        });
        Some(elements.collect())
    }

    /// An array of tables, written as `[[key]]` sections or as an inline array.
    pub(crate) fn tables(&self, r: &mut Report) -> Option<Vec<Table<'a>>> {
        if let Node::Item(Item::ArrayOfTables(aot)) = self.node {
            let tables = aot.iter().enumerate().map(|(i, t)| Table {
                path: format!("{}[{i}]", self.path),
                span: t.span().or_else(|| self.span.clone()),
                inner: t as &dyn TableLike,
            });
            return Some(tables.collect());
        }
        if self.node.value().and_then(Value::as_array).is_none() {
            self.wrong_type(r, "an array of tables");
            return None;
        }
        let tables = self.array(r)?.iter().filter_map(|e| e.table(r)).collect();
        Some(tables)
    }

    /// An absolute path without `..` components, normalised (`//`, `.` and a
    /// trailing `/` removed).
    pub(crate) fn abs_path(&self, r: &mut Report) -> Option<PathBuf> {
        let s = self.str(r)?;
        let path = Path::new(s);
        let problem = if s.contains('\0') {
            Some("must not contain a NUL byte".to_string())
        } else if !path.is_absolute() {
            Some(format!("must be an absolute path, got '{s}'"))
        } else if path.components().any(|c| c == Component::ParentDir) {
            Some(format!("must not contain '..' components, got '{s}'"))
        } else {
            None
        };
        if let Some(message) = problem {
            self.error(r, message);
            return None;
        }
        Some(path.components().collect())
    }
}

pub(crate) enum IntOrStr<'a> {
    Int(i64),
    Str(&'a str),
}

/// The allowed key closest to `key`, if it is plausibly a typo.
fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|&a| (edit_distance(key, a), a))
        .filter(|&(d, a)| d <= 2 && d < a.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("lisen", &["user", "listen"]), Some("listen"));
        assert_eq!(suggest("frobnicate", &["user", "listen"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn key_segments() {
        assert_eq!(key_segment("alice_2-b"), "alice_2-b");
        assert_eq!(key_segment("a.b"), "\"a.b\"");
        assert_eq!(key_segment(""), "\"\"");
    }
}
