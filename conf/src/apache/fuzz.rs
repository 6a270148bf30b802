//! Fuzz target for the importer: arbitrary bytes as the main file (beside a few fixed
//! files it may include), through the lexer, the section parser, the expansion and
//! the translation. Runs in `cargo test` (random inputs plus the seed corpus in
//! `src/apache/__fuzz__/apache__fuzz__import/corpus/`) and under
//! `cargo bolero test -p conf apache::fuzz::import --sanitizer none`.

use std::path::Path;

use bolero::check;

use super::source::Memory;
use super::{import_from, Options};

const ITERATIONS: usize = 5_000;

/// Pieces of configurations: an input byte below `TOKENS.len()` stands for one.
const TOKENS: &[&str] = &[
    "\n",
    "<VirtualHost *:80>\n",
    "</VirtualHost>\n",
    "<Processor p>\n",
    "</Processor>\n",
    "<IfModule !mod_ssl.c>\n",
    "</IfModule>\n",
    "<IfDefine X>\n",
    "</IfDefine>\n",
    "Define X ${X}${X}\n",
    "Include inc/*.conf\n",
    "IncludeOptional /etc/a/inc\n",
    "ServerName a.test\n",
    "ServerAlias *.a.test b\n",
    "DocumentRoot \"/srv/a b\"\n",
    "ServerEnvironment p\n",
    "AssignUserID #2001 alice\n",
    "User #2001\n",
    "Group g\n",
    "Chroot /srv\n",
    "Listen 443\n",
    "SSLEngine on\n",
    "SSLCertificateFile c.pem\n",
    "Redirect permanent / https://a.test/\n",
    "CustomLog logs/x combined\n",
    "MaxProcessors 5\n",
    "ChildPerUserID u g 2\n",
    "ScriptAlias /cgi-bin/ /srv/a b/cgi-bin/\n",
    "\\\n",
    "\"",
    "'",
    "#",
    "${",
    "}",
    "<",
    ">",
    "</",
    "[",
    "*",
];

fn assemble(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 8);
    for &b in bytes {
        match TOKENS.get(b as usize) {
            Some(t) => out.extend_from_slice(t.as_bytes()),
            None => out.push(b),
        }
    }
    out
}

fn run(main: &[u8]) {
    let mut m = Memory::with(&[
        (
            "/etc/a/inc/1.conf",
            "<VirtualHost *>\nServerName b.test\nAssignUserID bob bob\nDocumentRoot /srv/b\n</VirtualHost>\n",
        ),
        ("/etc/a/inc/2.conf", "Include inc/*.conf\n"),
    ]);
    m.0.insert("/etc/a/main.conf".into(), main.to_vec());
    let opts = Options::default();
    match import_from(&m, Path::new("/etc/a/main.conf"), &opts, &|_| None) {
        Ok(imported) => {
            // Whatever the input, the output is TOML.
            if let Err(e) = imported.toml.parse::<toml_edit::DocumentMut>() {
                panic!("not TOML ({e}):\n{}", imported.toml);
            }
        }
        Err(e) => assert!(!e.errors.is_empty()),
    }
}

#[test]
fn import() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        run(input);
        run(&assemble(input));
    });
}
