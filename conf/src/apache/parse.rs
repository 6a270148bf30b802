//! One file's logical lines into a tree: a directive is its name and its arguments'
//! text (split into words only after `${VAR}` expansion, as httpd does), a section
//! (`<VirtualHost *:80>` … `</VirtualHost>`) also holds the directives inside it. A
//! section must be closed in the file that opened it, with its own name (any case),
//! as httpd requires; sections nest at most [`MAX_DEPTH`] deep.

use thiserror::Error;

use super::lexer::{self, LexError};

/// How deep sections may nest in one file (httpd has no limit; real files nest a few).
pub const MAX_DEPTH: usize = 64;

/// A directive or a section as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The directive's name, without `<` and `>` for a section.
    pub name: String,
    /// The arguments' text, before variables are expanded.
    pub raw_args: String,
    pub line: usize,
    /// `Some` for a section: what it holds.
    pub children: Option<Vec<Node>>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SyntaxError {
    #[error(transparent)]
    Lex(#[from] LexError),
    #[error("<{name} directive missing closing '>'")]
    MissingBracket { line: usize, name: String },
    #[error("</{name}> without matching <{name}> section")]
    Unopened { line: usize, name: String },
    #[error("expected </{open}> but saw </{name}>")]
    Mismatched { line: usize, open: String, name: String },
    #[error("<{name}> was not closed")]
    Unclosed { line: usize, name: String },
    #[error("sections nested more than {MAX_DEPTH} deep")]
    TooDeep { line: usize },
}

impl SyntaxError {
    /// The line the error is about.
    pub fn line(&self) -> usize {
        match self {
            SyntaxError::Lex(LexError::TooLong { line })
            | SyntaxError::MissingBracket { line, .. }
            | SyntaxError::Unopened { line, .. }
            | SyntaxError::Mismatched { line, .. }
            | SyntaxError::Unclosed { line, .. }
            | SyntaxError::TooDeep { line } => *line,
        }
    }
}

/// The tree of one file's text.
pub fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    // The open sections, innermost last, each with what it holds so far.
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top = Vec::new();
    for line in lexer::lines(text)? {
        let Some((name, rest)) = lexer::next_word(&line.text) else {
            continue;
        };
        if let Some(close) = name.strip_prefix("</") {
            let close = close.strip_suffix('>').unwrap_or(close).to_string();
            let Some((mut open, children)) = stack.pop() else {
                return Err(SyntaxError::Unopened {
                    line: line.number,
                    name: close,
                });
            };
            if !open.name.eq_ignore_ascii_case(&close) {
                return Err(SyntaxError::Mismatched {
                    line: line.number,
                    open: open.name,
                    name: close,
                });
            }
            open.children = Some(children);
            match stack.last_mut() {
                Some((_, siblings)) => siblings.push(open),
                None => top.push(open),
            }
            continue;
        }
        if let Some(open) = name.strip_prefix('<') {
            // `<Directory>` with no argument, or `<VirtualHost *:80>`.
            let (open, raw_args) = match open.strip_suffix('>') {
                Some(bare) => (bare.to_string(), String::new()),
                None => match rest.trim_end().strip_suffix('>') {
                    Some(args) => (open.to_string(), args.trim().to_string()),
                    None => {
                        return Err(SyntaxError::MissingBracket {
                            line: line.number,
                            name: open.to_string(),
                        })
                    }
                },
            };
            if stack.len() >= MAX_DEPTH {
                return Err(SyntaxError::TooDeep { line: line.number });
            }
            let node = Node {
                name: open,
                raw_args,
                line: line.number,
                children: None,
            };
            stack.push((node, Vec::new()));
            continue;
        }
        let node = Node {
            name,
            raw_args: rest.to_string(),
            line: line.number,
            children: None,
        };
        match stack.last_mut() {
            Some((_, siblings)) => siblings.push(node),
            None => top.push(node),
        }
    }
    match stack.pop() {
        Some((open, _)) => Err(SyntaxError::Unclosed {
            line: open.line,
            name: open.name,
        }),
        None => Ok(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_nest() {
        let t = parse(
            "Listen 80\n<VirtualHost *:80>\n  ServerName a.test\n  <Directory />\n  Options None\n  </directory>\n</VirtualHost>\n<IfModule>\n</IfModule>\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].name, "Listen");
        assert_eq!(t[0].raw_args, "80");
        assert_eq!(t[1].name, "VirtualHost");
        assert_eq!(t[1].raw_args, "*:80");
        let inner = t[1].children.as_ref().unwrap();
        assert_eq!(inner[0].line, 3);
        assert_eq!(inner[1].raw_args, "/");
        assert_eq!(inner[1].children.as_ref().unwrap()[0].name, "Options");
        assert_eq!(t[2].raw_args, "");
        assert_eq!(t[2].children.as_deref(), Some(&[][..]));
    }

    #[test]
    fn errors() {
        let e = |s: &str| parse(s).unwrap_err();
        assert_eq!(
            e("<VirtualHost *:80\n"),
            SyntaxError::MissingBracket {
                line: 1,
                name: "VirtualHost".into()
            }
        );
        assert_eq!(
            e("A\n</VirtualHost>\n"),
            SyntaxError::Unopened {
                line: 2,
                name: "VirtualHost".into()
            }
        );
        assert_eq!(e("<A>\n</B>\n").line(), 2);
        assert_eq!(
            e("<A x>\n<B>\n</B>\n"),
            SyntaxError::Unclosed {
                line: 1,
                name: "A".into()
            }
        );
        let deep = "<A>\n".repeat(MAX_DEPTH + 1);
        assert_eq!(e(&deep), SyntaxError::TooDeep { line: MAX_DEPTH + 1 });
    }
}
