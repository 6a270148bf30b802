//! The imported configuration as TOML text: tables of keys in the order they were
//! set, each key with the directive and `file:line` it came from as a comment, and
//! the judgement calls of the translation as comment lines above the key. Strings are
//! TOML basic strings with every control character escaped, and comments never hold
//! one, so no file name or argument can break the document.

use std::fmt::Write;

/// A key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
    /// `[a, b]` of integers (`processor_wait_timeout`).
    Pair(i64, i64),
}

/// One key: its value, where it came from and, for a judgement call, why.
#[derive(Debug, Clone)]
pub struct Key {
    pub key: &'static str,
    pub value: Value,
    pub from: String,
    pub why: Option<String>,
}

/// A table: its comment lines and keys (setting a key again replaces it in place).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub comments: Vec<String>,
    pub keys: Vec<Key>,
}

impl Table {
    pub fn set(&mut self, key: &'static str, value: Value, from: String, why: Option<&str>) {
        let k = Key {
            key,
            value,
            from,
            why: why.map(str::to_string),
        };
        match self.keys.iter_mut().find(|x| x.key == key) {
            Some(old) => *old = k,
            None => self.keys.push(k),
        }
    }
}

/// A TOML basic string.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text safe inside a `#` comment: control characters become `?`.
pub fn comment(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => string(s),
        Value::List(l) => {
            let items: Vec<String> = l.iter().map(|s| string(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Pair(a, b) => format!("[{a}, {b}]"),
    }
}

/// Writes `[header]` (or `[[header]]` when `array`) and the table.
pub fn table(out: &mut String, header: &str, array: bool, t: &Table) {
    out.push('\n');
    for c in &t.comments {
        let _ = writeln!(out, "# {}", comment(c));
    }
    if array {
        let _ = writeln!(out, "[[{header}]]");
    } else {
        let _ = writeln!(out, "[{header}]");
    }
    let mut last_why = None;
    for k in &t.keys {
        // A reason shared by consecutive keys is said once.
        if k.why.is_some() && k.why != last_why {
            let _ = writeln!(out, "# {}", comment(k.why.as_deref().unwrap_or("")));
        }
        last_why.clone_from(&k.why);
        let _ = writeln!(out, "{} = {}  # {}", k.key, value(&k.value), comment(&k.from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_comments_cannot_break_out() {
        assert_eq!(string("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(comment("x\ny"), "x?y");
        let mut t = Table::default();
        t.comments.push("from\n[server]".into());
        t.set("user", Value::Str("a".into()), "User (f:1)".into(), None);
        t.set("user", Value::Int(5), "User (f:2)".into(), Some("why\nnot"));
        let mut out = String::new();
        table(&mut out, "server", false, &t);
        assert_eq!(
            out,
            "\n# from?[server]\n[server]\n# why?not\nuser = 5  # User (f:2)\n"
        );
    }
}
