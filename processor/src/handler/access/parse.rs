//! The `.htaccess` parser: Apache's syntax (case-insensitive directives, `\`
//! continuations, `#` comment lines, `<Container args>` … `</Container>`), reduced to the
//! access rules bulkhead implements. Everything else is kept as a note, for one debug
//! line per file; a file whose meaning cannot be known (unbalanced containers, a bad
//! `<FilesMatch>` pattern, nesting past [`MAX_DEPTH`]) is an error, and its directory is
//! refused (fail closed), as Apache answers 500 for it.

use regex::bytes::{Regex, RegexBuilder};
use thiserror::Error;

/// Containers nested deeper than this make the file an error.
pub const MAX_DEPTH: usize = 16;
/// The compiled size one `<FilesMatch>` pattern may take.
const REGEX_SIZE: usize = 256 * 1024;
/// `<Files>` sections one file may have (each pattern compiles within [`REGEX_SIZE`]).
pub const MAX_SECTIONS: usize = 256;
/// Notes kept per file (the rest are counted in the last one).
const MAX_NOTES: usize = 32;

/// Why a `.htaccess` cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("line {line}: </{name}> without <{name}>")]
    Unopened { line: usize, name: String },
    #[error("line {line}: <{name}> is not closed")]
    Unclosed { line: usize, name: String },
    #[error("line {line}: more than {MAX_SECTIONS} <Files> sections")]
    TooMany { line: usize },
    #[error("line {line}: containers nested deeper than {MAX_DEPTH}")]
    TooDeep { line: usize },
    #[error("line {line}: {directive} needs an argument")]
    Argument { line: usize, directive: String },
    #[error("line {line}: bad pattern {pattern:?}: {reason}")]
    Pattern {
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("line {line}: Order {value:?} is not Deny,Allow, Allow,Deny or Mutual-failure")]
    Order { line: usize, value: String },
}

/// `Order` (mod_access_compat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// The default: allowed unless a `Deny` matches and no `Allow` does.
    #[default]
    DenyAllow,
    /// Denied unless an `Allow` matches and no `Deny` does.
    AllowDeny,
    /// Like `AllowDeny` (Apache 2.4 treats it so).
    MutualFailure,
}

/// Which hosts an `Allow from` or `Deny from` list names, as far as it is evaluated:
/// `all`, or something else (an address, a host, `env=`), which is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hosts {
    pub all: bool,
    pub unevaluated: bool,
}

/// Order/Allow/Deny of one section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compat {
    pub order: Order,
    pub allow: Hosts,
    pub deny: Hosts,
}

impl Compat {
    /// Fail closed: an unevaluated `Allow` matches nobody, an unevaluated `Deny`
    /// everybody.
    pub fn grants(&self) -> bool {
        let allowed = self.allow.all;
        let denied = self.deny.all || self.deny.unevaluated;
        match self.order {
            Order::DenyAllow => !denied || allowed,
            Order::AllowDeny | Order::MutualFailure => allowed && !denied,
        }
    }
}

/// The access rules of one section (the directory level of a file, or one `<Files>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// The section has `Require` lines (mod_authz_core), which replace the inherited ones.
    pub require: bool,
    /// One of them is `Require all granted` (they combine as RequireAny).
    pub require_granted: bool,
    /// A restriction not evaluated (`<RequireAll>`, `<If>`…): the section grants nobody.
    pub require_unevaluated: bool,
    /// Order/Allow/Deny, when the section has any (they replace the inherited ones).
    pub compat: Option<Compat>,
}

impl Rules {
    /// What this section's `Require` lines decide, if it has any.
    pub fn require(&self) -> Option<bool> {
        self.require
            .then_some(self.require_granted && !self.require_unevaluated)
    }
}

/// A `<Files>` or `<FilesMatch>` section (nested ones: every pattern must match).
#[derive(Debug, Clone)]
pub struct FilesSection {
    pub patterns: Vec<Regex>,
    pub rules: Rules,
}

impl FilesSection {
    pub fn matches(&self, name: &[u8]) -> bool {
        self.patterns.iter().all(|p| p.is_match(name))
    }
}

/// A parsed `.htaccess`.
#[derive(Debug, Clone, Default)]
pub struct Htaccess {
    /// The directory-level rules.
    pub dir: Rules,
    /// `<Files>` sections in order; they apply after every directory level.
    pub files: Vec<FilesSection>,
    /// What was ignored, `line N: text`, for one debug line per file.
    pub notes: Vec<String>,
}

/// The modules `<IfModule>` counts as loaded: the access modules whose directives are
/// implemented. Either spelling Apache accepts (`mod_x.c`, `x_module`).
const PRESENT: &[&str] = &[
    "mod_authz_core.c",
    "authz_core_module",
    "mod_access_compat.c",
    "access_compat_module",
    "mod_authz_host.c",
    "authz_host_module",
];

/// Directives that restrict access: inside a container that is not implemented, they
/// make the section grant nobody.
const ACCESS_DIRECTIVES: &[&str] = &["require", "allow", "deny", "order", "satisfy"];

/// One logical line: its first physical line number and text.
struct Line {
    number: usize,
    text: String,
}

/// Physical lines joined at a trailing `\`, comment and blank lines dropped.
fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        let (body, continued) = match raw.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        let line = match pending.take() {
            Some(mut l) => {
                l.text.push(' ');
                l.text.push_str(body.trim());
                l
            }
            None => Line {
                number: i + 1,
                text: body.trim().to_owned(),
            },
        };
        if continued {
            pending = Some(line);
        } else if !line.text.is_empty() && !line.text.starts_with('#') {
            out.push(line);
        }
    }
    if let Some(l) = pending {
        if !l.text.is_empty() && !l.text.starts_with('#') {
            out.push(l);
        }
    }
    out
}

/// Arguments split at white space; `"…"` and `'…'` quote (a backslash escapes the quote).
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&first) => word.push(first),
                    c if c == first => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        out.push(word);
    }
}

/// Where the directives being read go.
#[derive(Clone, Copy)]
enum Dest {
    Dir,
    Files(usize),
    /// An unimplemented container: access directives mark `outer` unevaluated.
    Unknown {
        outer: Outer,
    },
    /// A branch not taken (`<IfModule>` of an absent module, `<Limit>` without GET).
    Skip,
}

#[derive(Clone, Copy)]
enum Outer {
    Dir,
    Files(usize),
}

struct Parser {
    lines: Vec<Line>,
    at: usize,
    out: Htaccess,
    /// The patterns of the `<Files>` sections being read, outermost first.
    patterns: Vec<Regex>,
}

/// Parse a `.htaccess`.
pub fn parse(text: &str) -> Result<Htaccess, ParseError> {
    let mut p = Parser {
        lines: logical_lines(text),
        at: 0,
        out: Htaccess::default(),
        patterns: Vec::new(),
    };
    p.block(None, Dest::Dir, 0)?;
    Ok(p.out)
}

impl Parser {
    fn note(&mut self, line: usize, text: &str) {
        match self.out.notes.len() {
            n if n < MAX_NOTES => {
                let short: String = text.chars().take(120).collect();
                self.out.notes.push(format!("line {line}: {short}"));
            }
            MAX_NOTES => self.out.notes.push("and more".to_owned()),
            _ => {}
        }
    }

    fn rules(&mut self, into: Dest) -> Option<&mut Rules> {
        match into {
            Dest::Dir => Some(&mut self.out.dir),
            Dest::Files(i) => self.out.files.get_mut(i).map(|f| &mut f.rules),
            Dest::Unknown { .. } | Dest::Skip => None,
        }
    }

    /// Read lines until `</end>` (or the end of the file at the top level).
    fn block(&mut self, end: Option<(&str, usize)>, into: Dest, depth: usize) -> Result<(), ParseError> {
        while let Some(line) = self.lines.get(self.at) {
            let number = line.number;
            let text = line.text.clone();
            self.at += 1;
            if let Some(name) = text.strip_prefix("</") {
                let name = name.trim_end_matches('>').trim();
                return match end {
                    Some((open, _)) if open.eq_ignore_ascii_case(name) => Ok(()),
                    _ => Err(ParseError::Unopened {
                        line: number,
                        name: name.to_owned(),
                    }),
                };
            }
            if let Some(rest) = text.strip_prefix('<') {
                if depth + 1 > MAX_DEPTH {
                    return Err(ParseError::TooDeep { line: number });
                }
                let rest = rest.strip_suffix('>').unwrap_or(rest);
                let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                self.container(name, &words(args), number, into, depth)?;
                continue;
            }
            let (name, args) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
            self.directive(name, &words(args), number, &text, into)?;
        }
        match end {
            Some((name, line)) => Err(ParseError::Unclosed {
                line,
                name: name.to_owned(),
            }),
            None => Ok(()),
        }
    }

    fn container(
        &mut self,
        name: &str,
        args: &[String],
        line: usize,
        into: Dest,
        depth: usize,
    ) -> Result<(), ParseError> {
        let lower = name.to_ascii_lowercase();
        let inner = match (lower.as_str(), into) {
            (_, Dest::Skip) => Dest::Skip,
            ("ifmodule", _) => {
                let Some(module) = args.first() else {
                    return Err(argument(line, name));
                };
                let (negated, module) = match module.strip_prefix('!') {
                    Some(m) => (true, m),
                    None => (false, module.as_str()),
                };
                let present = PRESENT.iter().any(|p| p.eq_ignore_ascii_case(module));
                if present != negated {
                    into
                } else {
                    Dest::Skip
                }
            }
            ("files" | "filesmatch", Dest::Dir | Dest::Files(_)) => {
                let (regex, pattern) = match (lower.as_str(), args) {
                    ("files", [tilde, p, ..]) if tilde == "~" => (true, p),
                    ("files", [p, ..]) => (false, p),
                    ("filesmatch", [p, ..]) => (true, p),
                    _ => return Err(argument(line, name)),
                };
                if self.out.files.len() >= MAX_SECTIONS {
                    return Err(ParseError::TooMany { line });
                }
                let source = if regex { pattern.clone() } else { wildcard(pattern) };
                let compiled = RegexBuilder::new(&source)
                    .size_limit(REGEX_SIZE)
                    .dfa_size_limit(REGEX_SIZE)
                    .build()
                    .map_err(|e| ParseError::Pattern {
                        line,
                        pattern: pattern.clone(),
                        reason: e.to_string(),
                    })?;
                self.patterns.push(compiled);
                let index = self.out.files.len();
                self.out.files.push(FilesSection {
                    patterns: self.patterns.clone(),
                    rules: Rules::default(),
                });
                let result = self.block(Some((name, line)), Dest::Files(index), depth + 1);
                self.patterns.pop();
                return result;
            }
            ("limit" | "limitexcept", Dest::Dir | Dest::Files(_)) => {
                // Static files answer GET and HEAD (HEAD counts as GET, as in Apache).
                let get = args.iter().any(|m| m == "GET" || m == "HEAD");
                if get == (lower == "limit") {
                    into
                } else {
                    Dest::Skip
                }
            }
            (_, Dest::Unknown { outer }) => Dest::Unknown { outer },
            (_, Dest::Dir) => {
                self.note(line, &format!("<{name}> not implemented"));
                Dest::Unknown { outer: Outer::Dir }
            }
            (_, Dest::Files(i)) => {
                self.note(line, &format!("<{name}> not implemented"));
                Dest::Unknown {
                    outer: Outer::Files(i),
                }
            }
        };
        self.block(Some((name, line)), inner, depth + 1)
    }

    fn directive(
        &mut self,
        name: &str,
        args: &[String],
        line: usize,
        text: &str,
        into: Dest,
    ) -> Result<(), ParseError> {
        let lower = name.to_ascii_lowercase();
        if let Dest::Unknown { outer } = into {
            if ACCESS_DIRECTIVES.contains(&lower.as_str()) {
                self.note(
                    line,
                    "access rule in a container not implemented: nobody is granted",
                );
                let rules = match outer {
                    Outer::Dir => Some(&mut self.out.dir),
                    Outer::Files(i) => self.out.files.get_mut(i).map(|f| &mut f.rules),
                };
                if let Some(r) = rules {
                    r.require = true;
                    r.require_unevaluated = true;
                }
            }
            return Ok(());
        }
        if matches!(into, Dest::Skip) {
            return Ok(());
        }
        let mut note = None;
        match lower.as_str() {
            "require" => {
                let granted = match args {
                    [all, what] if all.eq_ignore_ascii_case("all") => {
                        if what.eq_ignore_ascii_case("granted") {
                            true
                        } else if what.eq_ignore_ascii_case("denied") {
                            false
                        } else {
                            return Err(argument(line, name));
                        }
                    }
                    [] => return Err(argument(line, name)),
                    _ => {
                        note = Some("Require not evaluated: grants nobody");
                        false
                    }
                };
                if let Some(r) = self.rules(into) {
                    r.require = true;
                    r.require_granted |= granted;
                }
            }
            "order" => {
                let value: String = args.concat().to_ascii_lowercase();
                let order = match value.as_str() {
                    "deny,allow" => Order::DenyAllow,
                    "allow,deny" => Order::AllowDeny,
                    "mutual-failure" => Order::MutualFailure,
                    _ => {
                        return Err(ParseError::Order {
                            line,
                            value: args.join(" "),
                        })
                    }
                };
                if let Some(r) = self.rules(into) {
                    r.compat.get_or_insert_with(Compat::default).order = order;
                }
            }
            "allow" | "deny" => {
                let hosts = match args {
                    [from, hosts @ ..] if from.eq_ignore_ascii_case("from") && !hosts.is_empty() => hosts,
                    _ => return Err(argument(line, name)),
                };
                let all = hosts.iter().any(|h| h.eq_ignore_ascii_case("all"));
                let unevaluated = hosts.iter().any(|h| !h.eq_ignore_ascii_case("all"));
                if unevaluated {
                    note = Some("host not evaluated: an Allow matches nobody, a Deny everybody");
                }
                if let Some(r) = self.rules(into) {
                    let compat = r.compat.get_or_insert_with(Compat::default);
                    let list = if lower == "allow" {
                        &mut compat.allow
                    } else {
                        &mut compat.deny
                    };
                    list.all |= all;
                    list.unevaluated |= unevaluated;
                }
            }
            _ => note = Some("not implemented"),
        }
        if let Some(why) = note {
            self.note(line, &format!("{text} ({why})"));
        }
        Ok(())
    }
}

fn argument(line: usize, directive: &str) -> ParseError {
    ParseError::Argument {
        line,
        directive: directive.to_owned(),
    }
}

/// A `<Files>` wildcard (`*`, `?`, `[…]`, as fnmatch) as an anchored regex.
fn wildcard(pattern: &str) -> String {
    let mut out = String::from("^(?s:");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut class = String::new();
                let mut closed = false;
                if chars.next_if(|&c| c == '!' || c == '^').is_some() {
                    class.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() && class != "^" {
                        closed = true;
                        break;
                    }
                    if matches!(c, '\\' | '[' | ']' | '&' | '~') {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if closed {
                    out.push('[');
                    out.push_str(&class);
                    out.push(']');
                } else {
                    // No closing bracket: the `[` and the rest are literal.
                    out.push_str(&regex::escape("["));
                    out.push_str(&regex::escape(class.trim_start_matches('^')));
                }
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(")$");
    out
}

#[cfg(test)]
mod tests;
