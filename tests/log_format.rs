//! What the error log looks like to a machine: no colour codes unless stderr is a
//! terminal (never in a file, a pipe or the journal), and the role that wrote every
//! line in that line.

use std::time::Duration;

use crate::util::*;

#[test]
fn error_log_lines_carry_their_role_and_no_colour() {
    require_root!();
    let w = Dir::new("error_log_lines_carry_their_role_and_no_colour");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    let log_dir = w.path().join("log");
    std::fs::create_dir(&log_dir).unwrap();
    let error_log = log_dir.join("error.log");
    let config = two_env_config(w.path(), &format!("error_log = \"{}\"", error_log.display()));
    let server = TestServer::start_with_error_log(&config, &error_log);
    assert_eq!(get(server.addr, "alice.test", "/").status, 200);
    assert!(server
        .wait_for_log("processor serving", Duration::from_secs(5))
        .is_some());
    let text = std::fs::read_to_string(&error_log).unwrap();
    assert!(
        !text.contains('\x1b'),
        "colour codes in the error log file:\n{text}"
    );
    for role in ["supervisor", "multiplexer", "processor"] {
        assert!(
            text.contains(&format!("bulkhead{{role={role}}}")),
            "no {role} line:\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.contains("bulkhead{role="), "a line without its role: {line}");
    }
}
