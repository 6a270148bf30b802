//! The vhosts as read into `[[vhosts]]` tables. Judgement calls, also comments or
//! notes in the output:
//! - A vhost without `ServerEnvironment` (Peruser) or `AssignUserID` (mpm-itk,
//!   perchild), its own or the main server's, is served by httpd as the main
//!   `User`, which bulkhead keeps for its multiplexers: not translated.
//! - The blocks of one `ServerName` (typically `*:80` and `*:443`) become one vhost:
//!   bulkhead serves a name from one environment on every listener, the certificate
//!   of the `SSLEngine on` block on `listen_tls`.
//! - Each host name once, in order (httpd answers a name with the first vhost that
//!   has it); aliases with wildcards other than a leading `*.` are left out.
//! - `Redirect [permanent] / https://NAME/` in it is `redirect_to_https` (bulkhead
//!   answers 301 for GET and HEAD, 308 for others, where httpd's plain `Redirect` is
//!   302); any other `Redirect` is reported.
//! - With a chroot, Peruser's `DocumentRoot` is the path inside it; bulkhead's is the
//!   host path, so the chroot is put in front (unless it is already there).
//! - `ScriptAlias /url/ DIR` with DIR the document root's `url` is `cgi_dirs`; any
//!   other is reported.

use super::emit::{Table, Value};
use super::expand::Directive;
use super::translate::{from, State};
use super::vhost::{host_of, EnvRef, Vhost};
use super::At;

/// A vhost ready to emit.
struct Built {
    comments: Vec<String>,
    at: At,
    name: (String, String),
    aliases: Vec<String>,
    aliases_from: Vec<String>,
    env: usize,
    env_from: At,
    env_directive: String,
    docroot: (String, String),
    max_clients: Option<(i64, String)>,
    cert: Option<(String, String)>,
    key: Option<(String, String)>,
    log: Option<(String, String)>,
    redirects: Vec<Directive>,
    index: Option<(Vec<String>, String)>,
    cgi: Option<(Vec<String>, String)>,
    script_aliases: Vec<Directive>,
    body_limit: Option<(i64, String)>,
}

/// Every vhost, with the main server's defaults, merged by name, as tables.
pub fn finish(st: &mut State) -> Vec<Table> {
    let main = std::mem::take(&mut st.main);
    let list = if st.vhosts.is_empty() && main.name.is_some() {
        // No <VirtualHost>: the main server is the one site.
        vec![main.clone()]
    } else {
        if let Some(at) = &main.name_at {
            st.note(at, "the main server's ServerName: bulkhead has no main server (its first vhost answers unknown hosts): not translated");
        }
        std::mem::take(&mut st.vhosts)
    };
    let mut built: Vec<Built> = Vec::new();
    for mut v in list {
        let at =
            v.at.clone()
                .or_else(|| main.name_at.clone())
                .unwrap_or_else(|| At::new(std::rc::Rc::new(st.root.to_path_buf()), 0));
        inherit(&mut v, &main);
        let Some(b) = build(st, v, at) else { continue };
        merge(st, &mut built, b);
    }
    let built = claim_names(st, built);
    built.into_iter().map(|b| table(st, b)).collect()
}

/// Each host name once, in order (httpd answers a name with the first vhost that has
/// it), and only wildcards bulkhead has (`*.` before a name).
fn claim_names(st: &mut State, built: Vec<Built>) -> Vec<Built> {
    let mut claimed: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for mut b in built {
        let name = b.name.0.to_ascii_lowercase();
        if claimed.contains(&name) {
            st.note(&b.at, format!("vhost {}: an earlier vhost has this name as an alias (httpd answers it there too): not translated", b.name.0));
            continue;
        }
        claimed.push(name);
        let mut kept = Vec::new();
        for a in std::mem::take(&mut b.aliases) {
            let lower = a.to_ascii_lowercase();
            let rest = lower.strip_prefix("*.").unwrap_or(&lower);
            if rest.contains(['*', '?']) {
                st.note(
                    &b.at,
                    format!("ServerAlias {a}: bulkhead's only wildcard is a leading `*.`: not translated"),
                );
            } else if claimed.contains(&lower) {
                st.note(&b.at, format!("ServerAlias {a}: an earlier vhost has this name (httpd answers it there): not translated"));
            } else {
                claimed.push(lower);
                kept.push(a);
            }
        }
        b.aliases = kept;
        out.push(b);
    }
    out
}

/// What a vhost takes from the main server when it has none of its own (httpd's
/// merge): the document root, the log, the index, CGI, and mpm-itk's user.
fn inherit(v: &mut Vhost, main: &Vhost) {
    if v.docroot.is_none() {
        v.docroot.clone_from(&main.docroot);
    }
    if v.log.is_none() {
        v.log.clone_from(&main.log);
    }
    if v.index.is_none() {
        v.index.clone_from(&main.index);
    }
    if v.cgi.is_none() {
        v.cgi.clone_from(&main.cgi);
    }
    if v.body_limit.is_none() {
        v.body_limit.clone_from(&main.body_limit);
    }
    if v.env.is_none() {
        if let Some((EnvRef::Index(i), at)) = &main.env {
            v.env = Some((EnvRef::Index(*i), at.clone()));
            v.env_directive.clone_from(&main.env_directive);
        }
    }
}

fn build(st: &mut State, mut v: Vhost, at: At) -> Option<Built> {
    let label = match v.at {
        Some(_) => format!("<VirtualHost {}>", v.addrs.join(" ")),
        None => "the main server".to_string(),
    };
    let name = match (&v.name, v.aliases.first().cloned()) {
        (Some(n), _) => n.clone(),
        (None, Some(a)) => {
            st.note(
                &at,
                format!("{label} has no ServerName: its first ServerAlias {a} is the name"),
            );
            v.aliases.remove(0);
            (a, v.aliases_from.first().cloned().unwrap_or_default())
        }
        (None, None) => {
            st.note(&at, format!("{label} has no ServerName: not translated"));
            return None;
        }
    };
    let (env, env_from) = match &v.env {
        Some((EnvRef::Index(i), at)) => (*i, at.clone()),
        Some((EnvRef::Named(n), eat)) => match st.envs.iter().position(|e| e.processor.as_deref() == Some(n))
        {
            Some(i) => (i, eat.clone()),
            None => {
                st.note(
                    eat,
                    format!(
                        "ServerEnvironment {n}: no <Processor {n}>: vhost {} not translated",
                        name.0
                    ),
                );
                return None;
            }
        },
        None => {
            st.note(&at, format!("{label} ({}) has no ServerEnvironment or AssignUserID: httpd serves it as the main User, which bulkhead keeps for its multiplexers: not translated (give it an environment)", name.0));
            return None;
        }
    };
    let Some(mut docroot) = v.docroot.clone() else {
        st.note(
            &at,
            format!("{label} ({}) has no DocumentRoot: not translated", name.0),
        );
        return None;
    };
    if let Some(chroot) = &st.envs[env].chroot {
        let c = chroot.trim_end_matches('/');
        if !(docroot.0 == c || docroot.0.starts_with(&format!("{c}/"))) {
            docroot.0 = format!("{c}{}", docroot.0);
            docroot.1 = format!("{} inside the chroot {c}", docroot.1);
        }
    }
    let tls = matches!(v.ssl_engine, Some((true, _)));
    let (cert, key) = if tls {
        if v.cert.is_none() {
            st.note(
                &at,
                format!("{label} ({}): SSLEngine on without SSLCertificateFile", name.0),
            );
        }
        // httpd reads the key from the certificate file when there is no key file.
        let key = v.key.clone().or_else(|| v.cert.clone());
        if let Some(chroot) = st.envs[env].chroot.clone() {
            let inside = |p: &str| p.starts_with(&format!("{}/", chroot.trim_end_matches('/')));
            for (p, f) in v.cert.iter().chain(key.iter()) {
                if !inside(p) {
                    st.note(&at, format!("{f}: {p} is outside the chroot {chroot}: bulkhead's processors read it inside the jail, so copy it there and change the path"));
                }
            }
        }
        (v.cert.clone(), key)
    } else {
        if let Some((_, f)) = &v.cert {
            st.note(&at, format!("{f}: SSLEngine is not on in this vhost: ignored"));
        }
        (None, None)
    };
    Some(Built {
        comments: vec![format!("{label} ({at})")],
        at,
        name,
        aliases: v.aliases.clone(),
        aliases_from: v.aliases_from.clone(),
        env,
        env_from,
        env_directive: v.env_directive.clone(),
        docroot,
        max_clients: v.max_clients,
        cert,
        key,
        log: v.log,
        redirects: v.redirects,
        index: v.index,
        cgi: v.cgi,
        script_aliases: v.script_aliases,
        body_limit: v.body_limit,
    })
}

/// One vhost per name: a second block of the same name adds what the first lacks.
fn merge(st: &mut State, built: &mut Vec<Built>, b: Built) {
    let Some(first) = built
        .iter_mut()
        .find(|x| x.name.0.eq_ignore_ascii_case(&b.name.0))
    else {
        built.push(b);
        return;
    };
    if first.env != b.env {
        st.note(&b.env_from, format!("vhost {} is also at {} in another environment: bulkhead serves a name from one environment; this one not translated", b.name.0, first.at));
        return;
    }
    if first.docroot.0 != b.docroot.0 {
        st.note(&b.at, format!("vhost {}: DocumentRoot {} differs from the one at {} ({}): bulkhead has one per name; the first kept", b.name.0, b.docroot.0, first.at, first.docroot.0));
    }
    first.comments.extend(b.comments);
    first.aliases_from.extend(b.aliases_from);
    for a in b.aliases {
        if !first.aliases.contains(&a) {
            first.aliases.push(a);
        }
    }
    macro_rules! fill {
        ($($f:ident),*) => { $( if first.$f.is_none() { first.$f = b.$f; } )* };
    }
    fill!(max_clients, cert, key, log, index, cgi, body_limit);
    first.redirects.extend(b.redirects);
    first.script_aliases.extend(b.script_aliases);
}

fn table(st: &mut State, b: Built) -> Table {
    let mut t = Table {
        comments: b.comments.clone(),
        keys: Vec::new(),
    };
    t.set(
        "server_name",
        Value::Str(b.name.0.clone()),
        b.name.1.clone(),
        None,
    );
    if !b.aliases.is_empty() {
        t.set(
            "server_alias",
            Value::List(b.aliases.clone()),
            b.aliases_from.join(", "),
            None,
        );
    }
    t.set(
        "environment",
        Value::Str(st.envs[b.env].name.clone()),
        format!("{} ({})", b.env_directive, b.env_from),
        None,
    );
    t.set(
        "document_root",
        Value::Str(b.docroot.0.clone()),
        b.docroot.1.clone(),
        None,
    );
    if let Some((n, f)) = &b.max_clients {
        t.set("max_clients_vhost", Value::Int(*n), f.clone(), None);
    }
    if let Some((p, f)) = &b.log {
        t.set("access_log", Value::Str(p.clone()), f.clone(), None);
    }
    if let (Some((c, cf)), Some((k, kf))) = (&b.cert, &b.key) {
        t.set("tls_certificate", Value::Str(c.clone()), cf.clone(), None);
        let why =
            (c == k).then_some("no SSLCertificateKeyFile: httpd reads the key from the certificate file");
        t.set("tls_key", Value::Str(k.clone()), kf.clone(), why);
    }
    for r in &b.redirects {
        redirect(st, &mut t, &b, r);
    }
    if let Some((l, f)) = &b.index {
        t.set("index", Value::List(l.clone()), f.clone(), None);
    }
    if let Some((l, f)) = &b.cgi {
        t.set(
            "cgi",
            Value::List(l.clone()),
            f.clone(),
            Some("AddHandler cgi-script: httpd also needs Options ExecCGI, not checked here"),
        );
    }
    let mut dirs = Vec::new();
    let mut dirs_from = Vec::new();
    for s in &b.script_aliases {
        match s.args.as_slice() {
            [url, dir] => {
                let url_slash = format!("{}/", url.trim_end_matches('/'));
                let dir_slash = format!("{}/", st.path(dir).trim_end_matches('/'));
                if url.starts_with('/')
                    && dir_slash == format!("{}{url_slash}", b.docroot.0.trim_end_matches('/'))
                {
                    dirs.push(url_slash);
                    dirs_from.push(from(s));
                } else {
                    st.untranslated(s, Some("bulkhead runs scripts from under the document root only (cgi_dirs): not translated"));
                }
            }
            _ => st.untranslated(s, Some("takes a URL path and a directory")),
        }
    }
    if !dirs.is_empty() {
        t.set("cgi_dirs", Value::List(dirs), dirs_from.join(", "), None);
    }
    if let Some((n, f)) = &b.body_limit {
        t.set("limit_request_body", Value::Int(*n), f.clone(), None);
    }
    t
}

/// `Redirect [status] / https://NAME[/]` → `redirect_to_https`; anything else a note.
fn redirect(st: &mut State, t: &mut Table, b: &Built, r: &Directive) {
    let mut args: &[String] = &r.args;
    let mut temporary = r.is("redirecttemp");
    if r.is("redirect") {
        if let Some(s) = args.first() {
            match s.to_ascii_lowercase().as_str() {
                "permanent" | "301" | "308" => args = &args[1..],
                "temp" | "302" | "303" | "307" | "seeother" => {
                    temporary = true;
                    args = &args[1..];
                }
                _ if !s.starts_with('/') => {
                    return st.untranslated(
                        r,
                        Some(
                            "only redirects to the vhost's HTTPS address (redirect_to_https) are translated",
                        ),
                    );
                }
                _ => temporary = true,
            }
        }
    }
    let to_https = match args {
        [path, url] if path == "/" => url.strip_prefix("https://").is_some_and(|rest| {
            let host = host_of(rest);
            let tail = rest.split_once('/').map_or("", |(_, t)| t);
            tail.is_empty()
                && (host.eq_ignore_ascii_case(&b.name.0)
                    || b.aliases.iter().any(|a| a.eq_ignore_ascii_case(&host)))
        }),
        _ => false,
    };
    if !to_https {
        return st.untranslated(
            r,
            Some("only a whole vhost's redirect to its own HTTPS address (redirect_to_https) is translated"),
        );
    }
    if b.cert.is_none() {
        return st.untranslated(r, Some("redirect_to_https needs the vhost's certificate (an SSLEngine on block of the same ServerName): not translated"));
    }
    let why = temporary
        .then_some("httpd's Redirect is 302 without `permanent`; bulkhead answers 301 (GET, HEAD) or 308");
    t.set("redirect_to_https", Value::Bool(true), from(r), why);
}
