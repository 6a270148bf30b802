//! Unit tests of the `.htaccess` parser.

use super::*;

/// DokuWiki's `data/.htaccess` (Debian's dokuwiki 0.0.20220731).
pub const DOKUWIKI_DATA: &str = "<IfModule mod_authz_core.c>\n    Require all denied\n</IfModule>\n<IfModule !mod_authz_core.c>\n    Order allow,deny\n    Deny from all\n</IfModule>";

fn grants(h: &Htaccess) -> bool {
    h.dir.require().unwrap_or(true) && h.dir.compat.is_none_or(|c| c.grants())
}

#[test]
fn dokuwiki_denies_either_way() {
    let h = parse(DOKUWIKI_DATA).unwrap();
    assert_eq!(h.dir.require(), Some(false));
    assert!(h.dir.compat.is_none());
    assert!(!grants(&h));
    // With mod_authz_core absent, the other branch denies too.
    let compat = parse("Order allow,deny\nDeny from all\n").unwrap();
    assert!(!grants(&compat));
}

#[test]
fn order_allow_deny() {
    assert!(!grants(&parse("Deny from all").unwrap()));
    assert!(grants(&parse("Order Allow,Deny\nAllow from all").unwrap()));
    assert!(!grants(&parse("Order allow,deny").unwrap()));
    assert!(grants(
        &parse("Order deny,allow\nDeny from all\nAllow from all").unwrap()
    ));
    // Not evaluated: fail closed.
    assert!(!grants(&parse("Deny from 10.0.0.1").unwrap()));
    assert!(!grants(
        &parse("Order deny,allow\nDeny from all\nAllow from 10.0.0.1").unwrap()
    ));
    assert!(!grants(&parse("Require ip 10.0.0.1").unwrap()));
    assert!(grants(
        &parse("Require ip 10.0.0.1\nRequire all granted").unwrap()
    ));
    assert!(parse("Order sideways").is_err());
}

#[test]
fn files_sections() {
    let h = parse("<FilesMatch \"\\.bak$\">\nRequire all denied\n</FilesMatch>\n<Files *.inc>\nDeny from all\n</Files>\n<Files ~ \"^secret\">\n<IfModule mod_authz_core.c>\nRequire all denied\n</IfModule>\n</Files>").unwrap();
    assert!(grants(&h));
    let matching = |name: &[u8]| h.files.iter().filter(|f| f.matches(name)).count();
    assert_eq!(matching(b"x.bak"), 1);
    assert_eq!(matching(b"x.bak.txt"), 0);
    assert_eq!(matching(b"a.inc"), 1);
    assert_eq!(matching(b"a.incx"), 0);
    assert_eq!(matching(b"secret.txt"), 1);
    assert_eq!(h.files[2].rules.require(), Some(false));
    let d = parse(
        "<Files \".ht*\">\nRequire all denied\n</Files>\n<Files \"[ab]?.txt\">\nRequire all denied\n</Files>",
    )
    .unwrap();
    assert!(d.files[0].matches(b".htpasswd") && !d.files[0].matches(b"x.htpasswd"));
    assert!(d.files[1].matches(b"a1.txt") && !d.files[1].matches(b"c1.txt"));
    assert!(parse("<FilesMatch \"(\">\n</FilesMatch>").is_err());
}

#[test]
fn ignored_and_noted() {
    let h = parse("Options -Indexes\n  # comment\nRewriteEngine on\nRequire all \\\n  denied\n<IfModule mod_rewrite.c>\nRewriteRule x y\n</IfModule>\n<Directory /x>\nRequire all granted\n</Directory>").unwrap();
    assert_eq!(h.dir.require(), Some(false));
    assert_eq!(h.notes.len(), 4, "{:?}", h.notes);
    assert!(h.notes[0].starts_with("line 1: Options"));
    // Access rules inside a container we do not implement: nobody is granted.
    assert!(h.dir.require_unevaluated);
    let h = parse("<RequireAll>\nRequire all granted\n</RequireAll>").unwrap();
    assert!(!grants(&h));
    let h = parse("<LimitExcept GET POST>\nRequire valid-user\n</LimitExcept>").unwrap();
    assert!(grants(&h));
    let h = parse("<Limit GET>\nRequire all denied\n</Limit>").unwrap();
    assert!(!grants(&h));
}

#[test]
fn broken_files() {
    assert!(matches!(parse("<IfModule x>"), Err(ParseError::Unclosed { .. })));
    assert!(matches!(parse("</Files>"), Err(ParseError::Unopened { .. })));
    assert!(matches!(
        parse("<Files a>\n</IfModule>"),
        Err(ParseError::Unopened { .. })
    ));
    let deep = "<IfModule x>\n".repeat(MAX_DEPTH + 1);
    assert!(matches!(parse(&deep), Err(ParseError::TooDeep { .. })));
    let many = "<Files a>\n</Files>\n".repeat(MAX_SECTIONS + 1);
    assert!(matches!(parse(&many), Err(ParseError::TooMany { .. })));
    assert!(parse("Require").is_err());
    assert!(parse("").unwrap().dir == Rules::default());
}
