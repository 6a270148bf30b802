//! The whole import from text to a validated `Config`: Peruser's example from its
//! documentation, mpm-itk with includes, perchild, one name on :80 and :443, chroots,
//! and what is reported.

use std::path::Path;

use super::source::Memory;
use super::{import_from, Imported, Options};

fn import(files: &[(&str, &str)]) -> Imported {
    let m = Memory::with(files);
    import_from(
        &m,
        Path::new("/etc/apache2/apache2.conf"),
        &Options::default(),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn config(i: &Imported) -> crate::Config {
    crate::parse_str(&i.toml, Path::new("imported.toml")).unwrap_or_else(|e| panic!("{e}\n{}", i.toml))
}

fn notes(i: &Imported) -> Vec<String> {
    i.notes.iter().map(|n| n.to_string()).collect()
}

/// Peruser's documented defaults and its `<Processor>` example (the seed), with ids.
const PERUSER: &str = "\
User #2000
Group #2000
Listen 127.0.0.1:8080
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

<Processor myserver>
    User #2001
    Group #2001
    MaxProcessors 4
    Cgroup /sys/fs/cgroup/cpu/myserver
</Processor>

<Virtualhost *:80>
    ServerName myserver.test
    ServerEnvironment myserver
    DocumentRoot /srv/myserver
</Virtualhost>
";

#[test]
fn peruser_example() {
    let i = import(&[("/etc/apache2/apache2.conf", PERUSER)]);
    let c = config(&i);
    assert_eq!((c.server.uid, c.server.gid), (2000, 2000));
    assert_eq!(c.server.listen, ["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!((c.server.server_limit, c.server.max_clients), (256, 256));
    assert_eq!((c.server.min_multiplexers, c.server.max_multiplexers), (3, 10));
    assert_eq!(c.server.processor_wait_timeout.as_secs(), 5);
    assert_eq!(c.server.processor_wait_steps, 10);
    let e = &c.environments[0];
    assert_eq!((e.name.as_str(), e.uid, e.gid), ("myserver", 2001, 2001));
    // The environment's own MaxProcessors wins over the global one.
    assert_eq!(
        (e.min_processors, e.max_processors, e.min_spare_processors),
        (0, 4, 2)
    );
    assert_eq!(e.max_requests_per_child, 1000);
    assert_eq!(
        (e.expire_timeout.as_secs(), e.idle_timeout.as_secs()),
        (1800, 900)
    );
    let v = &c.vhosts[0];
    assert_eq!(v.server_name, "myserver.test");
    assert_eq!(v.document_root, Path::new("/srv/myserver"));
    assert_eq!(notes(&i), ["/etc/apache2/apache2.conf:22: Cgroup /sys/fs/cgroup/cpu/myserver: Peruser joins an existing cgroup v1 group; bulkhead makes its own from limits: set memory_max, memory_high, pids_max, cpu_max, cpu_weight or io_weight in this environment"]);
    assert!(
        i.toml
            .contains("max_clients = 256  # MaxClients (/etc/apache2/apache2.conf:5)"),
        "{}",
        i.toml
    );
}

#[test]
fn itk_with_includes_defines_and_modules() {
    let i = import(&[
        (
            "/etc/apache2/apache2.conf",
            "Define ROOT /srv/www\nUser #2000\nGroup #2000\nInclude ports.conf\nLoadModule mpm_itk_module modules/mpm_itk.so\nLoadModule php_module modules/libphp8.2.so\n<IfModule mpm_itk_module>\nMaxRequestWorkers 150\nMaxConnectionsPerChild 500\nStartServers 5\n</IfModule>\n<IfModule mpm_worker_module>\nThreadsPerChild 25\n</IfModule>\nAddHandler cgi-script .cgi\nIncludeOptional sites-enabled/*.conf\nIncludeOptional conf-enabled/*.conf\n",
        ),
        ("/etc/apache2/ports.conf", "Listen 127.0.0.1:80\n<IfDefine !NOTLS>\nListen 127.0.0.1:443\n</IfDefine>\n"),
        (
            "/etc/apache2/sites-enabled/alice.conf",
            "<VirtualHost *:80>\n ServerName alice.test\n ServerAlias www.alice.test \\\n   *.alice.test\n DocumentRoot \"${ROOT}/alice\"\n <IfModule mpm_itk_module>\n  AssignUserID #2001 #2001\n  MaxClientsVHost 20\n </IfModule>\n CustomLog /var/log/alice.log combined\n</VirtualHost>\n",
        ),
        (
            "/etc/apache2/sites-enabled/bob.conf",
            "<VirtualHost *:80>\n ServerName bob.test\n DocumentRoot ${ROOT}/bob\n AssignUserID #2002 #2002\n DirectoryIndex index.php index.html\n ScriptAlias /cgi-bin/ /srv/www/bob/cgi-bin/\n <Directory /srv/www/bob>\n  Options +ExecCGI\n </Directory>\n</VirtualHost>\n",
        ),
        ("/etc/apache2/sites-enabled/old.conf~", "<VirtualHost *:80>\nServerName ignored.test\n</VirtualHost>\n"),
    ]);
    let c = config(&i);
    // No vhost has a certificate: no HTTPS listener.
    assert!(c.server.listen_tls.is_empty());
    assert_eq!(c.server.max_clients, 150);
    let names: Vec<&str> = c.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["uid2001", "uid2002"]);
    assert_eq!(
        c.environments[0].max_connections_per_processor, 1024,
        "worker's block is not taken"
    );
    assert_eq!(c.environments[1].max_requests_per_child, 500);
    // mod_php: PHP through each environment's FastCGI backends.
    for e in &c.environments {
        let f = e.fastcgi.as_ref().expect("a FastCGI backend where mod_php was");
        assert_eq!(f.command, ["/usr/bin/php-cgi"]);
        assert_eq!(f.extensions, [".php"]);
    }
    assert_eq!(c.vhosts.len(), 2);
    let (a, b) = (&c.vhosts[0], &c.vhosts[1]);
    assert_eq!(a.server_alias, ["www.alice.test", "*.alice.test"]);
    assert_eq!(a.document_root, Path::new("/srv/www/alice"));
    assert_eq!(a.max_clients_vhost, 20);
    assert_eq!(a.access_log.as_deref(), Some(Path::new("/var/log/alice.log")));
    assert_eq!(a.cgi.extensions, [".cgi"], "the server's AddHandler");
    assert_eq!((a.environment, b.environment), (0, 1));
    assert_eq!(b.index, ["index.php", "index.html"]);
    assert_eq!(b.cgi.dirs, ["/cgi-bin/"]);
    let n = notes(&i);
    assert!(
        n.iter()
            .any(|l| l
                .starts_with("/etc/apache2/apache2.conf:10: StartServers 5: a server-wide process count")),
        "{n:?}"
    );
    assert!(
        n.iter().any(|l| l.starts_with(
            "/etc/apache2/sites-enabled/bob.conf:7: <Directory /srv/www/bob> section and the 1 directive(s)"
        )),
        "{n:?}"
    );
    assert!(n.iter().any(|l| l == "/etc/apache2/apache2.conf: Listen (/etc/apache2/ports.conf:3): HTTPS on 127.0.0.1:443 but no vhost with SSLEngine on and a certificate: not translated"), "{n:?}");
    assert_eq!(n.len(), 3, "{n:?}");
}

#[test]
fn perchild_and_shared_users() {
    let i = import(&[(
        "/etc/apache2/apache2.conf",
        "User #2000\nGroup #2000\nListen 8080\nNumServers 7\nChildPerUserID #2001 #2001 2\nMaxThreadsPerChild 32\n<VirtualHost *>\nServerName fallbackhost\n</VirtualHost>\n<VirtualHost *>\nServerName server1\nAssignUserID #2001 #2001\nDocumentRoot /srv/1\n</VirtualHost>\n<VirtualHost *>\nServerName server2\nAssignUserID #2001 #2001\nDocumentRoot /srv/2\n</VirtualHost>\n",
    )]);
    let c = config(&i);
    assert_eq!(c.server.listen.len(), 2, "Listen 8080 is v4 and v6");
    assert_eq!(c.environments.len(), 1);
    let e = &c.environments[0];
    assert_eq!(
        (e.min_processors, e.start_processors, e.max_processors),
        (2, 2, 2)
    );
    assert_eq!(e.max_connections_per_processor, 32);
    assert_eq!((c.vhosts[0].environment, c.vhosts[1].environment), (0, 0));
    let n = notes(&i);
    assert!(
        n[0].starts_with("/etc/apache2/apache2.conf:4: NumServers 7"),
        "{n:?}"
    );
    assert!(n[1].starts_with("/etc/apache2/apache2.conf:7: <VirtualHost *> (fallbackhost) has no ServerEnvironment or AssignUserID"), "{n:?}");
}

#[test]
fn one_name_on_80_and_443_with_redirect_and_chroot() {
    let i = import(&[(
        "/etc/apache2/apache2.conf",
        "User #2000\nGroup #2000\nListen 80\nListen 443 https\n<Processor shop>\nUser #2001\nGroup #2001\nChroot /jail\n</Processor>\n<VirtualHost *:80>\nServerName https://shop.test:443\nServerEnvironment shop\nDocumentRoot /www\nRedirect permanent / https://shop.test/\nRedirect /old /new\n</VirtualHost>\n<VirtualHost *:443>\nServerName shop.test\nServerAlias www.shop.test\nServerEnvironment shop\nDocumentRoot /www\nSSLEngine on\nSSLCertificateFile /jail/cert.pem\n</VirtualHost>\n<VirtualHost *:80>\nServerName shop.test\nAssignUserID #2002 #2002\nDocumentRoot /other\n</VirtualHost>\n",
    )]);
    // One vhost, its certificate from the :443 block, the key in the same file.
    let t = &i.toml;
    assert_eq!(t.matches("[[vhosts]]").count(), 1, "{t}");
    assert!(t.contains("server_name = \"shop.test\""), "{t}");
    assert!(t.contains("server_alias = [\"www.shop.test\"]"), "{t}");
    assert!(t.contains("document_root = \"/jail/www\""), "{t}");
    assert!(t.contains("tls_certificate = \"/jail/cert.pem\""), "{t}");
    assert!(t.contains("tls_key = \"/jail/cert.pem\""), "{t}");
    assert!(t.contains("redirect_to_https = true"), "{t}");
    assert!(t.contains("listen_tls = [\"0.0.0.0:443\", \"[::]:443\"]"), "{t}");
    let n = notes(&i);
    assert!(
        n.iter()
            .any(|l| l.starts_with("/etc/apache2/apache2.conf:15: Redirect /old /new: only")),
        "{n:?}"
    );
    assert!(n.iter().any(|l| l.starts_with("/etc/apache2/apache2.conf:27: vhost shop.test is also at /etc/apache2/apache2.conf:10 in another environment")), "{n:?}");
}

#[test]
fn errors_fail_the_import() {
    let m = Memory::with(&[
        (
            "/etc/apache2/apache2.conf",
            "Include a.conf\nInclude none/*.conf\n",
        ),
        ("/etc/apache2/a.conf", "<VirtualHost *>\n</Directory>\n"),
    ]);
    let e = import_from(
        &m,
        Path::new("/etc/apache2/apache2.conf"),
        &Options::default(),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(
        e.errors,
        [
            "/etc/apache2/a.conf:2: expected </VirtualHost> but saw </Directory>",
            "/etc/apache2/apache2.conf:2: no file matches /etc/apache2/none/*.conf (IncludeOptional allows none)",
        ]
    );
    let e = import_from(
        &m,
        Path::new("/etc/apache2/missing.conf"),
        &Options::default(),
        &|_| None,
    )
    .unwrap_err();
    assert!(
        e.errors[0].starts_with("/etc/apache2/missing.conf: cannot read /etc/apache2/missing.conf"),
        "{e}"
    );
}

#[test]
fn the_main_server_alone_and_names() {
    let i = import(&[(
        "/etc/apache2/apache2.conf",
        "User www-data\nGroup www-data\nListen 80\nServerName main.test:80\nDocumentRoot htdocs/\nAssignUserID john \"john smith\"\nDirectoryIndex index.php\nLimitRequestBody 1024\nFoo \"\u{1b}[31mred\"\n",
    )]);
    let t = &i.toml;
    assert!(t.contains("[environments.john]\n"), "{t}");
    assert!(
        t.contains("user = \"john\"  # AssignUserID (/etc/apache2/apache2.conf:6)"),
        "{t}"
    );
    assert!(t.contains("group = \"john smith\""), "{t}");
    assert!(t.contains("server_name = \"main.test\""), "{t}");
    assert!(t.contains("document_root = \"/etc/apache2/htdocs\""), "{t}");
    assert!(t.contains("index = [\"index.php\"]"), "{t}");
    assert!(t.contains("limit_request_body = 1024  # LimitRequestBody"), "{t}");
    assert_eq!(
        notes(&i),
        ["/etc/apache2/apache2.conf:9: Foo ?[31mred: not translated"]
    );
}

#[test]
fn first_alias_as_the_name_and_certificates_outside_a_jail() {
    let i = import(&[(
        "/etc/apache2/apache2.conf",
        "User #2000\nGroup #2000\nListen 127.0.0.1:80\n<Processor p>\nUser #2001\nGroup #2001\nChroot /jail\n</Processor>\n<VirtualHost *:443>\nServerAlias a.test b.test\nServerEnvironment p\nDocumentRoot /jail/www\nSSLEngine on\nSSLCertificateFile /etc/ssl/a.pem\nSSLCertificateKeyFile /jail/a.key\n</VirtualHost>\n",
    )]);
    let t = &i.toml;
    assert!(t.contains("server_name = \"a.test\""), "{t}");
    assert!(t.contains("server_alias = [\"b.test\"]"), "{t}");
    assert!(
        t.contains("document_root = \"/jail/www\"  # DocumentRoot (/etc/apache2/apache2.conf:12)\n"),
        "{t}"
    );
    let n = notes(&i);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n[0].ends_with("has no ServerName: its first ServerAlias a.test is the name"),
        "{n:?}"
    );
    assert!(
        n[1].contains(": /etc/ssl/a.pem is outside the chroot /jail"),
        "{n:?}"
    );
}

#[test]
fn names_claimed_once_and_wildcards_bulkhead_has() {
    let i = import(&[(
        "/etc/apache2/apache2.conf",
        "User #2000\nGroup #2000\nListen 127.0.0.1:80\n<VirtualHost *>\nServerName a.test\nServerAlias b.test *.a.test www.a.* a?.test A.TEST\nAssignUserID #2001 #2001\nDocumentRoot /a\n</VirtualHost>\n<VirtualHost *>\nServerName B.test\nAssignUserID #2002 #2002\nDocumentRoot /b\n</VirtualHost>\n<VirtualHost *>\nServerName c.test\nServerAlias b.test\nAssignUserID #2002 #2002\nDocumentRoot /c\n</VirtualHost>\n",
    )]);
    let c = config(&i);
    assert_eq!(c.vhosts.len(), 2);
    assert_eq!(c.vhosts[0].server_alias, ["b.test", "*.a.test"]);
    assert_eq!(c.vhosts[1].server_name, "c.test");
    assert!(c.vhosts[1].server_alias.is_empty());
    assert_eq!(notes(&i).len(), 5, "{:?}", notes(&i));
}
