//! A vhost's `index` and `fallback`.

use crate::*;

#[test]
fn index_and_fallback_defaults_and_values() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert_eq!(config.vhosts[0].index, ["index.html"]);
    assert_eq!(config.vhosts[0].fallback, None);
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "index = [\"index.php\", \"index.html\"]\nfallback = \"/index.php\"\n",
        VHOST.replace("alice.example", "b.example").as_str(),
        "fallback = \"/app/front.cgi\"\n",
    ]);
    let config = parse(&text);
    let (a, b) = (&config.vhosts[0], &config.vhosts[1]);
    assert_eq!(a.index, ["index.php", "index.html"]);
    assert_eq!(a.fallback.as_deref(), Some("/index.php"));
    assert_eq!(b.index, ["index.html"]);
    assert_eq!(b.fallback.as_deref(), Some("/app/front.cgi"));
}

#[test]
fn index_and_fallback_errors() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "index = [\"a/b.html\", \"..\", \"\", \"x.html\", \"x.html\", 3]\n",
        "fallback = \"index.php\"\n",
        VHOST.replace("alice.example", "b.example").as_str(),
        "index = []\nfallback = \"/a/../b.php\"\n",
        VHOST.replace("alice.example", "c.example").as_str(),
        "index = \"index.html\"\nfallback = \"/dir/\"\n",
    ]);
    let errs = errors(&text);
    let index = line_of(&text, "index = [\"a/b");
    for i in 0..3 {
        assert_has(&errs, index, &format!("vhosts[0].index[{i}]"), "is a file name");
    }
    assert_has(&errs, index, "vhosts[0].index[4]", "listed twice");
    assert_has(&errs, index, "vhosts[0].index[5]", "string");
    let fallback = line_of(&text, "fallback = \"index.php\"");
    assert_has(&errs, fallback, "vhosts[0].fallback", "starting with '/'");
    assert_has(
        &errs,
        line_of(&text, "index = []"),
        "vhosts[1].index",
        "at least one",
    );
    let dotdot = line_of(&text, "fallback = \"/a/../b.php\"");
    assert_has(&errs, dotdot, "vhosts[1].fallback", "no '.' or '..' segments");
    assert_has(
        &errs,
        line_of(&text, "index = \"index.html\""),
        "vhosts[2].index",
        "array",
    );
    let dir = line_of(&text, "fallback = \"/dir/\"");
    assert_has(&errs, dir, "vhosts[2].fallback", "no trailing '/'");
}
