//! Apache's configuration syntax, as httpd reads it (`ap_cfg_getline`,
//! `ap_getword_conf`): logical lines (a line ending in one backslash continues on the
//! next; leading and trailing white space dropped; a line starting with `#` a comment,
//! even when continued), and the words of a line (white space between them; a word
//! starting with `"` or `'` runs to the same quote not preceded by a backslash, and
//! `\"` inside it is `"`). Unlike a shell, a `#` inside a line is part of a word and an
//! unterminated quote runs to the end of the line, as in httpd.

use thiserror::Error;

/// The longest logical line (continuations joined, variables expanded) accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// One logical line: the number of its first physical line and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub text: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LexError {
    #[error("a line (with its continuations) longer than {MAX_LINE} bytes")]
    TooLong { line: usize },
}

/// The logical lines of `text` that are neither blank nor comments.
pub fn lines(text: &str) -> Result<Vec<Line>, LexError> {
    let mut out = Vec::new();
    let mut current: Option<Line> = None;
    for (i, physical) in text.split('\n').enumerate() {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        let line = current.get_or_insert_with(|| Line {
            number: i + 1,
            text: String::new(),
        });
        let trimmed = physical.trim_end();
        // One trailing backslash continues the line; two are a literal backslash.
        let continued = trimmed.ends_with('\\') && !trimmed.ends_with("\\\\");
        let piece = if continued {
            &trimmed[..trimmed.len() - 1]
        } else {
            trimmed
        };
        if line.text.len() + piece.len() > MAX_LINE {
            return Err(LexError::TooLong { line: line.number });
        }
        line.text.push_str(piece);
        if continued {
            continue;
        }
        if let Some(done) = current.take() {
            push(&mut out, done);
        }
    }
    if let Some(done) = current.take() {
        push(&mut out, done);
    }
    Ok(out)
}

fn push(out: &mut Vec<Line>, mut line: Line) {
    let text = line.text.trim();
    if text.is_empty() || text.starts_with('#') {
        return;
    }
    if text.len() != line.text.len() {
        line.text = text.to_string();
    }
    out.push(line);
}

/// Splits off the first word of `s` (see the module doc), returning it and the rest
/// with its leading white space removed; `None` when `s` holds no word.
pub fn next_word(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let first = s.chars().next()?;
    let (word, rest) = if first == '"' || first == '\'' {
        let body = &s[1..];
        let mut end = body.len();
        let mut prev_backslash = false;
        for (i, c) in body.char_indices() {
            if c == first && !prev_backslash {
                end = i;
                break;
            }
            prev_backslash = c == '\\';
        }
        let word = body[..end].replace(&format!("\\{first}"), &first.to_string());
        let rest = body.get(end + 1..).unwrap_or("");
        (word, rest)
    } else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    };
    Some((word, rest.trim_start()))
}

/// Every word of `s`.
pub fn words(mut s: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((word, rest)) = next_word(s) {
        out.push(word);
        s = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<(usize, String)> {
        lines(s)
            .unwrap()
            .into_iter()
            .map(|l| (l.number, l.text))
            .collect()
    }

    #[test]
    fn comments_blanks_and_continuations() {
        let got = texts(
            "# a comment\n\n  Listen 80  \r\nServerAlias a.test \\\n   b.test\\\n c.test\n# c \\\n still comment\nX a\\\\\nY\n",
        );
        assert_eq!(
            got,
            vec![
                (3, "Listen 80".to_string()),
                (4, "ServerAlias a.test    b.test c.test".to_string()),
                (9, "X a\\\\".to_string()),
                (10, "Y".to_string()),
            ]
        );
        // A continuation on the last line simply ends.
        assert_eq!(texts("A b\\"), vec![(1, "A b".to_string())]);
    }

    #[test]
    fn too_long() {
        let long = format!("A {}\\\n{}", "x".repeat(MAX_LINE / 2), "y".repeat(MAX_LINE / 2));
        assert_eq!(lines(&long), Err(LexError::TooLong { line: 1 }));
    }

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(words(r#"a "b c" 'd e' f#g"#), ["a", "b c", "d e", "f#g"]);
        assert_eq!(words(r#""say \"hi\"" x"#), ["say \"hi\"", "x"]);
        assert_eq!(words(r#""a"b"#), ["a", "b"]);
        assert_eq!(words(r#""unterminated x"#), ["unterminated x"]);
        assert_eq!(words(r#"it's"#), ["it's"]);
        assert_eq!(words("\"\""), [""]);
        assert!(words("   ").is_empty());
        assert_eq!(words("\"é\" ü"), ["é", "ü"]);
    }
}
