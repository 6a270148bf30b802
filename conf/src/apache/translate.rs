//! The server-wide directives and the environments. Judgement calls, each also a
//! comment above its key in the output:
//! - `MaxClients`/`MaxRequestWorkers` → `max_clients`: Peruser's counts children,
//!   prefork's simultaneous requests (one per process); bulkhead's counts connections
//!   in processors, which is what a prefork process held.
//! - `MaxRequestsPerChild`/`MaxConnectionsPerChild` → `max_requests_per_child`
//!   (httpd counts connections, bulkhead requests: a keep-alive client recycles
//!   sooner).
//! - `ThreadsPerChild` (worker) / `MaxThreadsPerChild` (perchild) →
//!   `max_connections_per_processor`: what one process serves at once.
//! - Peruser's global `MinProcessors` … `MaxSpareProcessors`, `ExpireTimeout`,
//!   `IdleTimeout` → `[server]`'s defaults of every environment; inside `<Processor>`
//!   the environment's own.
//! - perchild's `ChildPerUserID user group N` → an environment with `min_processors`,
//!   `start_processors` and `max_processors` all N (perchild's fixed count).
//! - `StartServers`, `Min/MaxSpareServers`, `Min/MaxSpareThreads`, `ThreadLimit`,
//!   `NumServers`: server-wide process counts with no bulkhead equivalent (pools are
//!   per environment): reported, not translated.
//! - `LoadModule php_module` (mod_php, PHP inside httpd as the vhost's user under
//!   mpm-itk or Peruser) → every environment's `fastcgi` with Debian's php-cgi for
//!   `.php`.
//! - `Cgroup` (a v1 group Peruser joins): not translated; bulkhead makes its own
//!   groups from limits (`memory_max`, `cpu_max`, `pids_max` …), reported with those.

use std::path::Path;

use super::emit::{self, Table, Value};
use super::expand::Directive;
use super::vhost::{self, Vhost};
use super::{At, Note};

/// A user or group as httpd writes one: a name or `#id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Num(u32),
    Name(String),
}

impl Id {
    pub fn parse(s: &str) -> Option<Id> {
        match s.strip_prefix('#') {
            Some(n) => n.parse::<u32>().ok().filter(|&n| n != u32::MAX).map(Id::Num),
            None if !s.is_empty() => Some(Id::Name(s.to_string())),
            None => None,
        }
    }

    fn value(&self) -> Value {
        match self {
            Id::Num(n) => Value::Int(i64::from(*n)),
            Id::Name(s) => Value::Str(s.clone()),
        }
    }

    fn label(&self) -> String {
        match self {
            Id::Num(n) => format!("uid{n}"),
            Id::Name(s) => s.clone(),
        }
    }
}

/// An environment: a `<Processor>`, or one made for a user and group.
pub struct Env {
    pub name: String,
    /// `<Processor NAME>`'s name as written.
    pub processor: Option<String>,
    /// The user, group and chroot it was made for (not a `<Processor>`).
    pub derived: Option<(Id, Id, Option<String>)>,
    pub chroot: Option<String>,
    pub table: Table,
}

/// Debian's php-cgi: the FastCGI backend an environment gets where httpd had mod_php.
const PHP_CGI: &str = "/usr/bin/php-cgi";
const WHY_PHP: &str = "mod_php ran PHP inside httpd as each vhost's user (mpm-itk, Peruser); bulkhead runs it as this environment's FastCGI backends (Debian's php-cgi; or manager = \"php-fpm\")";

/// The translation so far.
pub struct State<'a> {
    pub server: Table,
    listen: Vec<(String, String)>,
    listen_tls: Vec<(String, String)>,
    pub envs: Vec<Env>,
    pub vhosts: Vec<Vhost>,
    pub main: Vhost,
    pub notes: &'a mut Vec<Note>,
    pub root: &'a Path,
    /// `LogFormat` nicknames and their formats.
    pub log_formats: Vec<(String, String)>,
    user: Option<(Id, String)>,
    group: Option<(Id, String)>,
    /// `LoadModule php…_module` (file:line).
    php: Option<String>,
}

const WHY_CLIENTS: &str = "MaxClients: httpd's limit of simultaneous requests (Peruser's of children); bulkhead's max_clients counts connections in processors, what a prefork child held one of";
const WHY_PER_CHILD: &str = "httpd counts connections per child, bulkhead requests per processor";
const WHY_THREADS: &str =
    "the connections one process serves at once (a thread each in httpd, all async in a processor)";
const WHY_POOL: &str =
    "Peruser's server-wide value: the default of every environment (an environment's own wins)";
const WHY_COUNTS: &str = "a server-wide process count with no bulkhead equivalent: pools are per environment (min_processors, max_processors, min_spare_processors): not translated";

/// Integer directives: httpd's name (lower case), bulkhead's key, why when not exact.
const INTS: &[(&str, &str, Option<&str>)] = &[
    ("serverlimit", "server_limit", None),
    ("maxclients", "max_clients", Some(WHY_CLIENTS)),
    ("maxrequestworkers", "max_clients", Some(WHY_CLIENTS)),
    ("minmultiplexers", "min_multiplexers", None),
    ("maxmultiplexers", "max_multiplexers", None),
    ("multiplexeridletimeout", "multiplexer_idle_timeout", None),
    ("expiretimeout", "expire_timeout", Some(WHY_POOL)),
    ("idletimeout", "idle_timeout", Some(WHY_POOL)),
    (
        "maxrequestsperchild",
        "max_requests_per_child",
        Some(WHY_PER_CHILD),
    ),
    (
        "maxconnectionsperchild",
        "max_requests_per_child",
        Some(WHY_PER_CHILD),
    ),
    (
        "threadsperchild",
        "max_connections_per_processor",
        Some(WHY_THREADS),
    ),
    (
        "maxthreadsperchild",
        "max_connections_per_processor",
        Some(WHY_THREADS),
    ),
    ("keepalivetimeout", "keep_alive_timeout", None),
    ("limitrequestbody", "limit_request_body", None),
    ("maxkeepaliverequests", "keep_alive_max_requests", None),
];

/// Peruser's pool directives, global (defaults) or in `<Processor>`.
const POOL: &[(&str, &str)] = &[
    ("minprocessors", "min_processors"),
    ("maxprocessors", "max_processors"),
    ("startprocessors", "start_processors"),
    ("minspareprocessors", "min_spare_processors"),
    ("maxspareprocessors", "max_spare_processors"),
];

const COUNTS: &[&str] = &[
    "numservers",
    "startservers",
    "minspareservers",
    "maxspareservers",
    "minsparethreads",
    "maxsparethreads",
    "threadlimit",
    "startthreads",
];

/// `Directive (file:line)`, the comment after a key.
pub fn from(d: &Directive) -> String {
    format!("{} ({})", d.name, d.at)
}

/// The TOML for `directives`; what it leaves out goes to `notes`.
pub fn translate(directives: &[Directive], root: &Path, main: &Path, notes: &mut Vec<Note>) -> String {
    let mut st = State {
        server: Table::default(),
        listen: Vec::new(),
        listen_tls: Vec::new(),
        envs: Vec::new(),
        vhosts: Vec::new(),
        main: Vhost::default(),
        notes,
        root,
        log_formats: Vec::new(),
        user: None,
        group: None,
        php: None,
    };
    for d in directives {
        st.global(d);
    }
    st.finish(main)
}

impl State<'_> {
    pub fn note(&mut self, at: &At, message: impl Into<String>) {
        self.notes.push(Note {
            at: at.clone(),
            message: message.into(),
        });
    }

    /// A directive with nothing to translate it to.
    pub fn untranslated(&mut self, d: &Directive, why: Option<&str>) {
        let why = why.unwrap_or("not translated");
        let args = d.args.join(" ");
        let shown: String = args.chars().take(60).collect();
        self.note(&d.at, format!("{} {}: {why}", d.name, emit::comment(&shown)));
    }

    /// A section no bulkhead key means (`<Directory>`, `<Location>` …).
    pub fn section(&mut self, d: &Directive) {
        fn count(ds: &[Directive]) -> usize {
            ds.iter()
                .map(|d| 1 + d.children.as_deref().map_or(0, count))
                .sum()
        }
        let n = d.children.as_deref().map_or(0, count);
        let args = emit::comment(&d.args.join(" "));
        self.note(
            &d.at,
            format!(
                "<{} {args}> section and the {n} directive(s) in it: not translated",
                d.name
            ),
        );
    }

    /// One integer argument, or a note.
    pub fn int(&mut self, d: &Directive) -> Option<i64> {
        match d.args.as_slice() {
            [a] => match a.parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    self.untranslated(d, Some("not a whole number"));
                    None
                }
            },
            _ => {
                self.untranslated(d, Some("takes one number"));
                None
            }
        }
    }

    fn global(&mut self, d: &Directive) {
        let name = d.name.to_ascii_lowercase();
        if d.children.is_some() {
            match name.as_str() {
                "processor" => self.processor(d),
                "virtualhost" => {
                    let v = vhost::read(self, d);
                    self.vhosts.push(v);
                }
                _ => self.section(d),
            }
            return;
        }
        if let Some((_, key, why)) = INTS.iter().find(|(n, _, _)| *n == name) {
            if let Some(i) = self.int(d) {
                self.server.set(key, Value::Int(i), from(d), *why);
            }
            return;
        }
        if let Some((_, key)) = POOL.iter().find(|(n, _)| *n == name) {
            if let Some(i) = self.int(d) {
                self.server.set(key, Value::Int(i), from(d), Some(WHY_POOL));
            }
            return;
        }
        if COUNTS.contains(&name.as_str()) {
            return self.untranslated(d, Some(WHY_COUNTS));
        }
        match name.as_str() {
            "user" | "group" => match d.args.as_slice() {
                [a] => match Id::parse(a) {
                    Some(id) => {
                        let slot = if name == "user" { &mut self.user } else { &mut self.group };
                        *slot = Some((id, from(d)));
                    }
                    None => self.untranslated(d, Some("not a user or group")),
                },
                _ => self.untranslated(d, Some("takes one argument")),
            },
            "listen" => self.listen(d),
            "processorwaittimeout" => {
                let nums: Vec<Option<i64>> = d.args.iter().map(|a| a.parse().ok()).collect();
                match nums.as_slice() {
                    [Some(t)] => self.server.set("processor_wait_timeout", Value::Pair(*t, 10), from(d), None),
                    [Some(t), Some(s)] => {
                        self.server.set("processor_wait_timeout", Value::Pair(*t, *s), from(d), None)
                    }
                    _ => self.untranslated(d, Some("takes a number of seconds and a number of steps")),
                }
            }
            "keepalive" => match d.args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
                Some("off") => self.server.set(
                    "keep_alive_timeout",
                    Value::Int(0),
                    from(d),
                    Some("KeepAlive Off: no keep-alive is a timeout of 0"),
                ),
                Some("on") => {}
                _ => self.untranslated(d, Some("takes On or Off")),
            },
            "pidfile" | "errorlog" => match d.args.as_slice() {
                [p] if !p.starts_with('|') && !p.starts_with("syslog") => {
                    let key = if name == "pidfile" { "pid_file" } else { "error_log" };
                    let path = self.path(p);
                    self.server.set(key, Value::Str(path), from(d), None);
                }
                _ => self.untranslated(
                    d,
                    Some("only a file: bulkhead logs to stderr (the journal) or to a file"),
                ),
            },
            "logformat" => match d.args.as_slice() {
                [f] => self.log_formats.push((String::new(), f.clone())),
                [f, nick] => self.log_formats.push((nick.clone(), f.clone())),
                _ => self.untranslated(d, Some("takes a format and a nickname")),
            },
            "childperuserid" => self.child_per_user(d),
            "loadmodule" => {
                let m = d.args.first().map(|m| super::expand::canonical_module(m));
                if m.is_some_and(|m| m.starts_with("php")) {
                    self.php = Some(from(d));
                }
            }
            // Name-based virtual hosts are all bulkhead has.
            "namevirtualhost" => {}
            "timeout" => self.untranslated(d, Some("httpd's one I/O timeout; bulkhead has request_head_timeout ([20, 40, 500]) and request_body_timeout ([20, 0, 500]), keep_alive_timeout, cgi_timeout and fastcgi_timeout: not translated")),
            "loglevel" => self.untranslated(d, Some("bulkhead's level is RUST_LOG's: not translated")),
            _ => {
                let mut main = std::mem::take(&mut self.main);
                if !vhost::directive(self, &mut main, d) {
                    self.untranslated(d, None);
                }
                self.main = main;
            }
        }
    }

    /// A path relative to `ServerRoot` made absolute.
    pub fn path(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            self.root.join(p).display().to_string()
        }
    }

    /// `Listen [addr:]port [protocol]`: `https`, or port 443 without a protocol, is
    /// `listen_tls` (httpd's own default protocol for 443).
    fn listen(&mut self, d: &Directive) {
        let (addr, proto) = match d.args.as_slice() {
            [a] => (a.as_str(), None),
            [a, p] => (a.as_str(), Some(p.to_ascii_lowercase())),
            _ => return self.untranslated(d, Some("takes an address and a protocol")),
        };
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => (Some(h), p),
            _ => (None, addr),
        };
        let Ok(port_num) = port.parse::<u16>() else {
            return self.untranslated(d, Some("not an address and port"));
        };
        let tls = match proto.as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(_) => return self.untranslated(d, Some("only http and https listeners exist")),
            None => port_num == 443,
        };
        let addrs = match host {
            None | Some("*") | Some("0.0.0.0") => {
                if host == Some("0.0.0.0") {
                    vec![format!("0.0.0.0:{port}")]
                } else {
                    // httpd's `Listen 80` takes IPv4 and IPv6; bulkhead's v6 sockets are
                    // v6-only, so both.
                    vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")]
                }
            }
            Some(h) => vec![format!("{h}:{port}")],
        };
        let list = if tls {
            &mut self.listen_tls
        } else {
            &mut self.listen
        };
        for a in addrs {
            if !list.iter().any(|(x, _)| *x == a) {
                list.push((a, from(d)));
            }
        }
    }

    fn processor(&mut self, d: &Directive) {
        let Some(name) = d.args.first().cloned() else {
            return self.section(d);
        };
        let mut table = Table::default();
        table.comments.push(format!("<Processor {name}> ({})", d.at));
        let (mut user, mut group, mut chroot) = (None, None, None);
        for c in d.children.as_deref().unwrap_or(&[]) {
            let lower = c.name.to_ascii_lowercase();
            if c.children.is_some() {
                self.section(c);
                continue;
            }
            if let Some((_, key)) = POOL.iter().find(|(n, _)| *n == lower) {
                if let Some(i) = self.int(c) {
                    table.set(key, Value::Int(i), from(c), None);
                }
                continue;
            }
            match (lower.as_str(), c.args.as_slice()) {
                ("user", [u]) => user = Id::parse(u).map(|id| (id, from(c))),
                ("group", [g]) => group = Id::parse(g).map(|id| (id, from(c))),
                ("chroot", [p]) => chroot = Some((self.path(p), from(c))),
                ("cgroup", _) => self.untranslated(c, Some("Peruser joins an existing cgroup v1 group; bulkhead makes its own from limits: set memory_max, memory_high, pids_max, cpu_max, cpu_weight or io_weight in this environment")),
                ("nicelevel", _) => self.untranslated(c, Some("no nice level in bulkhead; cpu_weight is the share under contention")),
                _ => self.untranslated(c, None),
            }
        }
        let (Some((user, uf)), Some((group, gf))) = (user, group) else {
            return self.note(
                &d.at,
                format!("<Processor {name}> without a User and a Group: not translated"),
            );
        };
        let mut t = Table {
            comments: table.comments,
            keys: Vec::new(),
        };
        t.set("user", user.value(), uf, None);
        t.set("group", group.value(), gf, None);
        if let Some((p, f)) = &chroot {
            t.set("chroot", Value::Str(p.clone()), f.clone(), None);
        }
        t.keys.extend(table.keys);
        let env_name = self.unique_name(&name);
        self.envs.push(Env {
            name: env_name,
            processor: Some(name),
            derived: None,
            chroot: chroot.map(|(p, _)| p),
            table: t,
        });
    }

    /// perchild's `ChildPerUserID user group N`.
    fn child_per_user(&mut self, d: &Directive) {
        let [u, g, n] = d.args.as_slice() else {
            return self.untranslated(d, Some("takes a user, a group and a number of children"));
        };
        let (Some(u), Some(g), Ok(n)) = (Id::parse(u), Id::parse(g), n.parse::<i64>()) else {
            return self.untranslated(d, Some("takes a user, a group and a number of children"));
        };
        let i = self.derived_env(u, g, None, d);
        let why = "perchild's fixed number of children for this user";
        for key in ["min_processors", "start_processors", "max_processors"] {
            self.envs[i].table.set(key, Value::Int(n), from(d), Some(why));
        }
    }

    /// The environment for `user`/`group`/`chroot` (`AssignUserID`,
    /// `ChildPerUserID`, the old `ServerEnvironment user group [chroot]`), made on
    /// first use and named after the user.
    pub fn derived_env(&mut self, user: Id, group: Id, chroot: Option<String>, d: &Directive) -> usize {
        let key = (user, group, chroot);
        if let Some(i) = self.envs.iter().position(|e| e.derived.as_ref() == Some(&key)) {
            return i;
        }
        let name = self.unique_name(&key.0.label());
        let mut t = Table::default();
        t.comments.push(format!("the user and group of {}", from(d)));
        t.set("user", key.0.value(), from(d), None);
        t.set("group", key.1.value(), from(d), None);
        if let Some(c) = &key.2 {
            t.set("chroot", Value::Str(c.clone()), from(d), None);
        }
        self.envs.push(Env {
            name,
            processor: None,
            chroot: key.2.clone(),
            derived: Some(key),
            table: t,
        });
        self.envs.len() - 1
    }

    /// `[A-Za-z0-9_-]+` (bulkhead's rule for environment names), unique.
    fn unique_name(&self, base: &str) -> String {
        let mut clean: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if clean.is_empty() {
            clean = "environment".into();
        }
        let mut name = clean.clone();
        let mut n = 2;
        while self.envs.iter().any(|e| e.name == name) {
            name = format!("{clean}-{n}");
            n += 1;
        }
        name
    }

    fn finish(mut self, main: &Path) -> String {
        let top = At::new(std::rc::Rc::new(main.to_path_buf()), 0);
        let vhosts = super::sites::finish(&mut self);
        let mut server = Table::default();
        match self.user.take() {
            Some((id, f)) => server.set("user", id.value(), f, None),
            None => {
                self.note(
                    &top,
                    "no User: the multiplexers run as www-data (httpd's Debian default)",
                );
                server.set("user", Value::Str("www-data".into()), "default".into(), None);
            }
        }
        match self.group.take() {
            Some((id, f)) => server.set("group", id.value(), f, None),
            None => server.set("group", Value::Str("www-data".into()), "default".into(), None),
        }
        if self.listen.is_empty() {
            self.note(&top, "no Listen for plain HTTP: port 80 assumed");
            self.listen = vec![
                ("0.0.0.0:80".into(), "default".into()),
                ("[::]:80".into(), "default".into()),
            ];
        }
        let list = |l: &[(String, String)]| {
            let from: Vec<&str> = l.iter().map(|(_, f)| f.as_str()).collect();
            let mut from = from;
            from.dedup();
            (
                Value::List(l.iter().map(|(a, _)| a.clone()).collect()),
                from.join(", "),
            )
        };
        let (v, f) = list(&self.listen);
        server.set("listen", v, f, None);
        let with_cert = vhosts
            .iter()
            .any(|v| v.keys.iter().any(|k| k.key == "tls_certificate"));
        if !self.listen_tls.is_empty() && !with_cert {
            let (v, f) = list(&self.listen_tls);
            if let Value::List(addrs) = v {
                self.note(
                    &top,
                    format!(
                        "{f}: HTTPS on {} but no vhost with SSLEngine on and a certificate: not translated",
                        addrs.join(", ")
                    ),
                );
            }
        } else if !self.listen_tls.is_empty() {
            let (v, f) = list(&self.listen_tls);
            server.set("listen_tls", v, f, None);
        }
        server.keys.extend(std::mem::take(&mut self.server.keys));
        if vhosts.is_empty() {
            self.note(
                &top,
                "no virtual host could be translated: bulkhead needs at least one [[vhosts]]",
            );
        }
        let mut out = format!(
            "# bulkhead configuration imported from {} by `bulkhead import-apache`.\n\
             # What was not translated is listed on stderr, each with its file:line.\n\
             # Review it, then run `bulkhead check --config FILE`.\n",
            emit::comment(&main.display().to_string())
        );
        emit::table(&mut out, "server", false, &server);
        for e in &self.envs {
            emit::table(&mut out, &format!("environments.{}", e.name), false, &e.table);
            if let Some(php) = &self.php {
                let mut t = Table::default();
                t.set(
                    "command",
                    Value::List(vec![PHP_CGI.into()]),
                    php.clone(),
                    Some(WHY_PHP),
                );
                t.set(
                    "extensions",
                    Value::List(vec![".php".into()]),
                    php.clone(),
                    Some(WHY_PHP),
                );
                emit::table(&mut out, &format!("environments.{}.fastcgi", e.name), false, &t);
            }
        }
        for v in &vhosts {
            emit::table(&mut out, "vhosts", true, v);
        }
        out
    }
}
