//! The private view's keys: `private_view` (per environment, its default in
//! `[server]`) and `bind_ro` (paths only root can change).

use std::path::PathBuf;

use crate::*;

#[test]
fn private_view_defaults_and_inheritance() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert!(config.environments[0].private_view);
    assert!(config.environments[0].bind_ro.is_empty());
    let bob = ALICE.replace("alice", "bob").replace("2001", "2002");
    let text = cat(&[
        SERVER,
        "private_view = true\n",
        ALICE,
        &bob,
        "private_view = false\nbind_ro = [\"/usr/share/zoneinfo\", \"/etc/hostname\"]\n",
        VHOST,
    ]);
    let config = parse(&text);
    assert!(config.environments[0].private_view);
    assert!(!config.environments[1].private_view);
    assert_eq!(
        config.environments[1].bind_ro,
        [
            PathBuf::from("/usr/share/zoneinfo"),
            PathBuf::from("/etc/hostname")
        ]
    );
}

#[test]
fn private_view_errors() {
    let text = cat(&[
        SERVER,
        "private_view = \"yes\"\n",
        ALICE,
        "bind_ro = [\"relative\", \"/nonexistent-bulkhead-path\", \"/\"]\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "private_view"),
        "server.private_view",
        "true or false",
    );
    let line = line_of(&text, "bind_ro");
    assert_has(&errs, line, "environments.alice.bind_ro[0]", "absolute");
    assert_has(&errs, line, "environments.alice.bind_ro[1]", "nonexistent");
    assert_has(&errs, line, "environments.alice.bind_ro[2]", "whole host");
}
