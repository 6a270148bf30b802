//! `bulkhead import-apache`: Peruser's documented example and an mpm-itk
//! configuration with includes (globs), `Define`, `<IfDefine>` and `<IfModule>`
//! translate into a TOML that `bulkhead check` accepts and that, served, answers the
//! same vhosts as the same uids (a CGI script prints its uid), logging where
//! `CustomLog` said.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// `bulkhead import-apache FILE ARGS…`: its stdout (the TOML) and stderr (the notes);
/// fails the test unless it exits 0.
fn import(file: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .arg("import-apache")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import-apache failed:\n{stderr}\n{stdout}");
    (stdout, stderr)
}

/// `bulkhead check` on `toml` (written to `w/imported.toml`) exits 0.
fn check(w: &Path, toml: &str) {
    let path = w.join("imported.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check refused the import:\n{}\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each site: an index page and `whoami.cgi`, owned by its uid.
fn sites_with_scripts(w: &Path) {
    sites(w, 0o644);
    let script = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"uid=$(id -u)\"\n";
    put(w, "alice/whoami.cgi", script, ALICE, 0o755);
    put(w, "bob/whoami.cgi", script, BOB, 0o755);
}

/// Each vhost served by its own uid: the page, the script's uid (none in a jail
/// without a shell: `cgi` false), the processors' credentials.
fn serves_as_apache_did(server: &TestServer, hosts: &[(&str, &str, u32, bool)]) {
    for &(host, body, uid, cgi) in hosts {
        let r = get(server.addr, host, "/");
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.text(), server.log());
        assert_eq!(r.text(), body, "{host}");
        if !cgi {
            continue;
        }
        let r = get(server.addr, host, "/whoami.cgi");
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.text(), server.log());
        // (Chunked: the text holds the chunk sizes too.)
        assert!(r.text().contains(&format!("uid={uid}\n")), "{host}: {}", r.text());
    }
    for &(host, _, uid, _) in hosts {
        let pids = server.processors_of(uid);
        assert!(!pids.is_empty(), "{host}: no processor of uid {uid}");
        for pid in pids {
            let u = status_field(pid, "Uid").unwrap();
            assert!(u.split_whitespace().all(|x| x == uid.to_string()), "{host}: {u}");
        }
    }
}

#[test]
fn peruser_example_serves_the_same_vhosts_as_the_same_uids() {
    require_root!();
    let dir = Dir::new("import_peruser_example");
    let w = dir.path();
    sites_with_scripts(w);
    // bob's jail (root's, as `check` wants a chroot), its site at `/www` inside.
    put(w, "bobjail/www/index.html", b"bob jailed", BOB, 0o644);
    chown(&w.join("bobjail"), 0);
    // Peruser's documentation: its default limits, then `<Processor>` server
    // environments attached to virtual hosts with `ServerEnvironment` (the users by
    // id, as Apache writes `#uid`).
    let conf = format!(
        r#"# Peruser's example configuration
User #{MUX_UID}
Group #{MUX_UID}
Listen 127.0.0.1:0
ServerLimit 256
MaxClients 256
MinProcessors 0
MaxProcessors 10
MinSpareProcessors 2
MaxSpareProcessors 0
MinMultiplexers 3
MaxMultiplexers 10
MultiplexerIdleTimeout 0
MaxRequestsPerChild 1000
ExpireTimeout 1800
IdleTimeout 900
ProcessorWaitTimeout 5 10
AddHandler cgi-script .cgi

<Processor alice>
    User #{ALICE}
    Group #{ALICE}
</Processor>
<Processor bob>
    User #{BOB}
    Group #{BOB}
    MaxProcessors 4
    Cgroup /sys/fs/cgroup/cpu/bob
</Processor>
<Processor bobjail>
    User #{BOB}
    Group #{BOB}
    Chroot {w}/bobjail
</Processor>

<Virtualhost *:80>
    ServerName alice.test
    ServerAlias www.alice.test
    ServerEnvironment alice
    DocumentRoot {w}/alice
</Virtualhost>
<Virtualhost *:80>
    ServerName bob.test
    ServerEnvironment bob
    DocumentRoot {w}/bob
</Virtualhost>
<Virtualhost *:80>
    ServerName jail.bob.test
    ServerEnvironment bobjail
    # As the chrooted processor sees it.
    DocumentRoot /www
</Virtualhost>
"#,
        w = w.display()
    );
    let file = put(w, "apache/httpd.conf", conf.as_bytes(), 0, 0o644);
    let (toml, notes) = import(&file, &[]);
    // The one directive it cannot translate, with its file and line.
    assert_eq!(
        notes.lines().collect::<Vec<_>>(),
        [format!("{}:28: Cgroup /sys/fs/cgroup/cpu/bob: Peruser joins an existing cgroup v1 group; bulkhead makes its own from limits: set memory_max, memory_high, pids_max, cpu_max, cpu_weight or io_weight in this environment", file.display())]
    );
    assert!(toml.contains("[environments.alice]"), "{toml}");
    assert!(toml.contains("processor_wait_timeout = [5, 10]"), "{toml}");
    assert!(
        toml.contains(&format!("document_root = \"{}/bobjail/www\"", w.display())),
        "{toml}"
    );
    check(w, &toml);
    let server = TestServer::start(&toml);
    serves_as_apache_did(
        &server,
        &[
            ("alice.test", "alice home", ALICE, true),
            ("www.alice.test", "alice home", ALICE, true),
            ("bob.test", "bob home", BOB, true),
            ("jail.bob.test", "bob jailed", BOB, false),
        ],
    );
    // The jailed environment's processors run inside the jail.
    let jail = w.join("bobjail").canonicalize().unwrap();
    let jailed = server
        .processors_of(BOB)
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/root")).ok().as_deref() == Some(jail.as_path())
        })
        .count();
    assert!(jailed > 0, "no processor of bob in {}", jail.display());
}

#[test]
fn itk_with_includes_serves_the_same_vhosts_as_the_same_uids() {
    require_root!();
    let dir = Dir::new("import_itk_includes");
    let w = dir.path();
    sites_with_scripts(w);
    let logs = log_dir(w);
    let root = w.join("apache");
    put(
        w,
        "apache/apache2.conf",
        format!(
            r#"# A Debian-style mpm-itk configuration.
ServerRoot "{root}"
Define WWW {w}
Define PORT 0
User #{MUX_UID}
Group #{MUX_UID}
Timeout 300
Include ports.conf
LoadModule mpm_itk_module /usr/lib/apache2/modules/mpm_itk.so
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
LoadModule php_module /usr/lib/apache2/modules/libphp8.2.so
<IfModule mpm_itk_module>
    MaxRequestWorkers 150
    MaxConnectionsPerChild 0
</IfModule>
<IfModule mpm_worker_module>
    ThreadsPerChild 25
</IfModule>
<IfModule mod_cgid.c>
    AddHandler cgi-script .cgi
</IfModule>
IncludeOptional sites-enabled/*.conf
IncludeOptional conf-enabled/*.conf
"#,
            root = root.display(),
            w = w.display()
        )
        .as_bytes(),
        0,
        0o644,
    );
    put(w, "apache/ports.conf", b"Listen 127.0.0.1:${PORT}\n", 0, 0o644);
    put(
        w,
        "apache/sites-enabled/alice.conf",
        format!(
            "<VirtualHost *:80>\n    ServerName alice.test\n    ServerAlias www.alice.test \\\n                *.alice.test\n    DocumentRoot ${{WWW}}/alice\n    AssignUserID #{ALICE} #{ALICE}\n    MaxClientsVHost 20\n    CustomLog \"${{WWW}}/logs/alice.log\" combined\n</VirtualHost>\n"
        )
        .as_bytes(),
        0,
        0o644,
    );
    put(
        w,
        "apache/sites-enabled/bob.conf",
        format!(
            "<IfDefine !NOBOB>\n<VirtualHost *:80>\n    ServerName bob.test\n    DocumentRoot \"${{WWW}}/bob\"\n    AssignUserID #{BOB} #{BOB}\n</VirtualHost>\n</IfDefine>\n"
        )
        .as_bytes(),
        0,
        0o644,
    );
    // Not matched by `*.conf`.
    put(
        w,
        "apache/sites-enabled/old.conf.bak",
        b"<VirtualHost *:80>\nServerName old.test\n",
        0,
        0o644,
    );
    let main = root.join("apache2.conf");
    // mod_php ran PHP as each vhost's user: FastCGI backends of each environment.
    let php = b"<?php echo 'uid=', posix_geteuid(), \"\\n\";";
    put(w, "alice/whoami.php", php, ALICE, 0o644);
    put(w, "bob/whoami.php", php, BOB, 0o644);
    let (toml, notes) = import(&main, &[]);
    assert_eq!(
        notes.lines().collect::<Vec<_>>(),
        [format!("{}:7: Timeout 300: httpd's one I/O timeout; bulkhead has request_head_timeout ([20, 40, 500]) and request_body_timeout ([20, 0, 500]), keep_alive_timeout, cgi_timeout and fastcgi_timeout: not translated", main.display())]
    );
    assert!(toml.contains("max_clients = 150"), "{toml}");
    assert!(
        !toml.contains("max_connections_per_processor"),
        "worker's block taken:\n{toml}"
    );
    assert!(toml.contains("max_clients_vhost = 20"), "{toml}");
    assert!(!toml.contains("old.test"), "{toml}");
    // `-D NOBOB` drops bob's site, as `apache2 -D NOBOB` would.
    let (without_bob, _) = import(&main, &["-D", "NOBOB"]);
    assert!(!without_bob.contains("bob.test"), "{without_bob}");
    check(w, &toml);
    let server = TestServer::start(&toml);
    serves_as_apache_did(
        &server,
        &[
            ("alice.test", "alice home", ALICE, true),
            ("shop.alice.test", "alice home", ALICE, true),
            ("bob.test", "bob home", BOB, true),
        ],
    );
    assert!(toml.contains("command = [\"/usr/bin/php-cgi\"]"), "{toml}");
    if require_tool("php-cgi", "php-cgi").is_some() {
        for (host, uid) in [("alice.test", ALICE), ("bob.test", BOB)] {
            let r = get(server.addr, host, "/whoami.php");
            assert_eq!(r.status, 200, "{host}: {}\n{}", r.text(), server.log());
            assert!(r.text().contains(&format!("uid={uid}\n")), "{host}: {}", r.text());
        }
    }
    let log = logs.join("alice.log");
    let logged = poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("\"GET /whoami.cgi HTTP/1.1\" 200").then_some(text)
    });
    assert!(logged.is_some(), "no access log line in {}", log.display());
}

#[test]
fn syntax_errors_fail_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("httpd.conf");
    std::fs::write(&main, "Include sites/*.conf\n").unwrap();
    std::fs::create_dir(dir.path().join("sites")).unwrap();
    std::fs::write(
        dir.path().join("sites/a.conf"),
        "<VirtualHost *:80>\nServerName a.test\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("import-apache")
        .arg(&main)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}/sites/a.conf:1: <VirtualHost> was not closed\n",
            dir.path().display()
        )),
        "{stderr}"
    );
}
