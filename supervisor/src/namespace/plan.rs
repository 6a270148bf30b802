//! What an environment's private view is made of, decided by the supervisor from the
//! configuration and the host's tree: the holder's mount steps and the Landlock paths
//! its children apply (as they see them). Reads the host's directories (which names
//! exist, which are links), never writes.
//!
//! With a chroot, the jail's `/` is rebuilt as a tmpfs: the jail's own entries bound
//! back read-write, the system's programs and libraries (`/usr`, `/lib*`, and `/bin`,
//! `/sbin` as the links they are on a merged-/usr system) read-only, an `/etc` holding
//! read-only binds of what programs read (`/etc/php*`, `alternatives`, `ssl`,
//! `localtime`, the loader's cache, name resolution) and a generated `passwd` and
//! `group` naming only root and the environment's own user and group, a `/dev` with
//! `null`, `zero`, `full`, `random`, `urandom`, a private `/dev/shm` and `/tmp`, and the
//! environment's own `/proc`. Without a chroot the host's tree stays, with a private
//! `/tmp` (the environment's own paths below it bound back) and `/dev/shm`, its own
//! `/proc`, and every other environment's chroot and document roots covered by an
//! empty read-only tmpfs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::sandbox::mounts::Step;
use common::sandbox::Sandbox;
use conf::Config;

/// Top-level names the view provides itself; a jail's own entries of these names are
/// not shown.
pub const PROVIDED: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "tmp", "proc",
];
/// The system's programs and libraries.
const SYSTEM: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// What of the host's `/etc` a jail gets (read-only), besides `php*`.
const ETC: &[&str] = &[
    "alternatives",
    "ssl",
    "ca-certificates",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "mime.types",
    "magic",
];
/// Where Debian's PHP keeps sessions (`session.save_path`'s compiled default).
const PHP_SESSIONS: &str = "/var/lib/php/sessions";
/// Device files every view has.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// The holder's steps and the children's sandbox for environment `env`.
pub fn plan(cfg: &Config, env: usize) -> (Vec<Step>, Sandbox) {
    match &cfg.environments[env].chroot {
        Some(root) => jail(cfg, env, root),
        None => host(cfg, env),
    }
}

/// What decides whether a reload keeps an environment's view (its holder, namespaces,
/// `/tmp` and `/dev/shm`): its uid and gid, chroot and document roots, and the plan's
/// steps and sandbox but for the other environments' `Hide`s (which `bind_ro`, the
/// jail's entries, FastCGI's socket directory and the system's `/etc/php*` are in).
/// Equal keys: the view is kept, and the `Hide`s it lacks are added to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    uid: u32,
    gid: u32,
    chroot: Option<PathBuf>,
    roots: Vec<PathBuf>,
    steps: Vec<Step>,
    sandbox: Sandbox,
}

/// The key of environment `env`'s view planned as `steps` and `sandbox`.
pub fn key(cfg: &Config, env: usize, steps: &[Step], sandbox: &Sandbox) -> Key {
    let e = &cfg.environments[env];
    let mut roots: Vec<PathBuf> = cfg
        .vhosts
        .iter()
        .filter(|v| v.environment == env)
        .map(|v| v.document_root.clone())
        .collect();
    roots.sort();
    roots.dedup();
    Key {
        uid: e.uid,
        gid: e.gid,
        chroot: e.chroot.clone(),
        roots,
        steps: steps
            .iter()
            .filter(|s| !matches!(s, Step::Hide { .. }))
            .cloned()
            .collect(),
        sandbox: sandbox.clone(),
    }
}

/// The paths `steps` hide (other environments' trees).
pub fn hidden(steps: &[Step]) -> BTreeSet<PathBuf> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Hide { path } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// What `bulkhead check` says of the private views: one line per environment with one,
/// and `warning: ` lines for what the view cannot do as written.
pub fn describe(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    let viewed = cfg.environments.iter().filter(|e| e.private_view).count();
    if !root && viewed > 0 {
        out.push(format!(
            "warning: private_view needs root: off for the {viewed} environments that have it when not run as root"
        ));
    }
    // Who holds which tree: a path of another environment that is one of ours or
    // above it cannot be hidden from us. Found by walking up from our own roots.
    let mut owners: std::collections::HashMap<&Path, Vec<usize>> = std::collections::HashMap::new();
    let mut roots_of: Vec<Vec<&Path>> = vec![Vec::new(); cfg.environments.len()];
    for v in &cfg.vhosts {
        owners
            .entry(v.document_root.as_path())
            .or_default()
            .push(v.environment);
        if let Some(r) = roots_of.get_mut(v.environment) {
            r.push(v.document_root.as_path());
        }
    }
    for (j, other) in cfg.environments.iter().enumerate() {
        if let Some(c) = &other.chroot {
            owners.entry(c.as_path()).or_default().push(j);
        }
    }
    let mut described = 0usize;
    let mut held = 0usize;
    for (i, e) in cfg.environments.iter().enumerate() {
        if !e.private_view {
            continue;
        }
        // One line per view for the first few; past that a summary (a plan walks the
        // whole configuration, and 10,000 lines say nothing more).
        if described < DESCRIBED_VIEWS {
            described += 1;
            out.extend(describe_one(cfg, i));
        }
        if e.chroot.is_none() {
            let mut seen = BTreeSet::new();
            for root in &roots_of[i] {
                for a in root.ancestors() {
                    for &j in owners.get(a).into_iter().flatten() {
                        if j != i && seen.insert((a, j)) {
                            held += 1;
                            if held > DESCRIBED_VIEWS {
                                continue;
                            }
                            out.push(format!(
                                "warning: environment {}: {} (environment {}) holds one of its document roots and cannot be hidden from it",
                                e.name,
                                a.display(),
                                cfg.environments[j].name
                            ));
                        }
                    }
                }
            }
        }
    }
    if held > DESCRIBED_VIEWS {
        out.push(format!(
            "warning: {} more document roots held by another environment cannot be hidden from it (shared or nested trees)",
            held - DESCRIBED_VIEWS
        ));
    }
    if viewed > described {
        out.push(format!(
            "{} more environments: private views alike (each built at its first processor's start)",
            viewed - described
        ));
    }
    out
}

/// How many environments `describe` gives a line of their own.
const DESCRIBED_VIEWS: usize = 20;

/// `describe`'s line (and the jail's warnings) for environment `i`.
fn describe_one(cfg: &Config, i: usize) -> Vec<String> {
    let e = &cfg.environments[i];
    let mut out = Vec::new();
    let (steps, _) = plan(cfg, i);
    let hidden = steps.iter().filter(|s| matches!(s, Step::Hide { .. })).count();
    let what = match &e.chroot {
        Some(jail) => {
            if let Ok(dir) = std::fs::read_dir(jail) {
                for d in dir.flatten() {
                    if PROVIDED.iter().any(|p| d.file_name() == *p) {
                        out.push(format!(
                                "warning: environment {}: the jail's own '{}' is not shown (the private view provides the system's)",
                                e.name,
                                d.path().display()
                            ));
                    }
                }
            }
            format!("its jail {} rebuilt with the system read-only", jail.display())
        }
        None => format!("the host's tree with {hidden} other environments' paths hidden"),
    };
    out.push(format!(
        "environment {}: private view: mount, PID and IPC namespaces ({what}), Landlock, seccomp",
        e.name
    ));
    out
}

fn devices() -> Vec<PathBuf> {
    DEVICES.iter().map(|d| Path::new("/dev").join(d)).collect()
}

/// The read-only system paths as a child sees them.
fn system_ro(bind_ro: &[PathBuf]) -> Vec<PathBuf> {
    let mut ro: Vec<PathBuf> = SYSTEM.iter().map(|s| Path::new("/").join(s)).collect();
    ro.push("/etc".into());
    ro.push("/proc".into());
    ro.extend(bind_ro.iter().cloned());
    ro
}

fn jail(cfg: &Config, env: usize, root: &Path) -> (Vec<Step>, Sandbox) {
    let e = &cfg.environments[env];
    let mut steps = vec![
        Step::Private,
        Step::NewRoot {
            path: root.to_path_buf(),
            skip: PROVIDED.iter().map(|s| s.to_string()).collect(),
        },
    ];
    for name in SYSTEM {
        steps.extend(mirror(Path::new("/").join(name), root));
    }
    steps.push(Step::Dir {
        path: root.join("etc"),
        mode: 0o755,
    });
    let mut etc: Vec<String> = ETC.iter().map(|s| s.to_string()).collect();
    if let Ok(dir) = std::fs::read_dir("/etc") {
        let mut php: Vec<String> = dir
            .flatten()
            .filter_map(|d| d.file_name().into_string().ok())
            .filter(|n| n.starts_with("php"))
            .collect();
        php.sort();
        etc.extend(php);
    }
    for name in etc {
        steps.extend(mirror(Path::new("/etc").join(name), root));
    }
    steps.push(Step::File {
        path: root.join("etc/passwd"),
        contents: format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n{}:x:{}:{}:{}:/:/usr/sbin/nologin\n",
            e.user_name, e.uid, e.gid, e.name
        ),
    });
    steps.push(Step::File {
        path: root.join("etc/group"),
        contents: format!("root:x:0:\n{}:x:{}:\n", e.group_name, e.gid),
    });
    steps.push(Step::Dir {
        path: root.join("dev"),
        mode: 0o755,
    });
    for d in devices() {
        steps.push(Step::Bind {
            source: d.clone(),
            target: inside(root, &d),
            read_only: false,
        });
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            path: root.join("dev").join(name),
            to: to.into(),
        });
    }
    for (p, mode) in [("dev/shm", 0o1777), ("tmp", 0o1777)] {
        steps.push(Step::Tmpfs {
            path: root.join(p),
            mode,
        });
    }
    steps.push(Step::Proc {
        path: root.join("proc"),
    });
    for p in &e.bind_ro {
        steps.push(Step::Bind {
            source: p.clone(),
            target: inside(root, p),
            read_only: true,
        });
    }
    // Its own tree: every entry of the jail but the provided names.
    let mut rw: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into()];
    if let Ok(dir) = std::fs::read_dir(root) {
        let mut own: Vec<PathBuf> = dir
            .flatten()
            .filter(|d| !PROVIDED.iter().any(|p| d.file_name() == *p))
            .map(|d| Path::new("/").join(d.file_name()))
            .collect();
        own.sort();
        rw.extend(own);
    }
    let sandbox = Sandbox {
        namespaces: true,
        read_only: system_ro(&e.bind_ro),
        read_write: rw,
        devices: devices(),
        list_root: true,
    };
    (steps, sandbox)
}

/// `p` (absolute) below `root`.
fn inside(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The host's `p` inside the jail, as it is: a link recreated, a directory or file
/// bound read-only; nothing when the host has none.
fn mirror(p: PathBuf, root: &Path) -> Option<Step> {
    let meta = std::fs::symlink_metadata(&p).ok()?;
    let target = inside(root, &p);
    if meta.file_type().is_symlink() {
        let to = std::fs::read_link(&p).ok()?;
        return Some(Step::Symlink { path: target, to });
    }
    (meta.is_dir() || meta.is_file()).then_some(Step::Bind {
        source: p,
        target,
        read_only: true,
    })
}

/// Whether no component of `p` (absolute) is a symbolic link (a missing one is not).
fn no_link(p: &Path) -> bool {
    p.ancestors()
        .all(|a| std::fs::symlink_metadata(a).map_or(true, |m| !m.file_type().is_symlink()))
}

/// Whether `a` is `b` or below it (component-wise).
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

fn host(cfg: &Config, env: usize) -> (Vec<Step>, Sandbox) {
    let e = &cfg.environments[env];
    let mut own: Vec<PathBuf> = cfg
        .vhosts
        .iter()
        .filter(|v| v.environment == env)
        .map(|v| v.document_root.clone())
        .collect();
    if e.fastcgi.is_some() {
        own.push(cfg.server.runtime_dir.join(crate::bootstrap::RUNTIME_SOCKET_DIR));
    }
    own.sort();
    own.dedup();
    let mut steps = vec![Step::Private];
    // Other environments' trees, unless one holds one of ours (it cannot be covered
    // without covering ours; their files are still the kernel's and Landlock's).
    // One pass over the environments and one over the vhosts: a plan costs what the
    // configuration's size does, not its square.
    let mut hide: Vec<PathBuf> = Vec::new();
    for (i, other) in cfg.environments.iter().enumerate() {
        if i != env {
            hide.extend(other.chroot.iter().cloned());
        }
    }
    hide.extend(
        cfg.vhosts
            .iter()
            .filter(|v| v.environment != env)
            .map(|v| v.document_root.clone()),
    );
    hide.sort();
    hide.dedup();
    for p in hide {
        if own.iter().any(|o| within(o, &p)) || within(&p, Path::new("/tmp")) {
            continue;
        }
        steps.push(Step::Hide { path: p });
    }
    // Its certificates and keys, which its processors read when they start.
    let tls: Vec<PathBuf> = cfg
        .vhosts
        .iter()
        .filter(|v| v.environment == env)
        .filter_map(|v| v.tls.as_ref())
        .flat_map(|t| [t.certificate.clone(), t.key.clone()])
        .collect();
    for (p, _) in [("/tmp", ()), ("/dev/shm", ())] {
        // What of its own is below: its directories, and its certificate and key files
        // (one by one: nothing else of their directories), bound back.
        // A file reached through a link is not kept (it is bound by its own path, not
        // followed): its processor then cannot load it and says so.
        let mut keep: Vec<PathBuf> = own
            .iter()
            .chain(
                tls.iter()
                    .filter(|f| !own.iter().any(|o| within(f, o)) && no_link(f)),
            )
            .filter(|o| within(o, Path::new(p)))
            .cloned()
            .collect();
        keep.sort();
        keep.dedup();
        steps.push(Step::Cover {
            path: p.into(),
            mode: 0o1777,
            keep,
        });
    }
    steps.push(Step::Proc { path: "/proc".into() });
    for p in &e.bind_ro {
        steps.push(Step::Bind {
            source: p.clone(),
            target: p.clone(),
            read_only: true,
        });
    }
    let mut rw: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into()];
    rw.extend(
        own.iter()
            .filter(|o| !within(o, &cfg.server.runtime_dir))
            .cloned(),
    );
    // Debian's PHP session directory (mode 1733: nobody lists it, each session file is
    // its writer's, 0600), as php-fpm pools of several users share it.
    if Path::new(PHP_SESSIONS).is_dir() {
        rw.push(PHP_SESSIONS.into());
    }
    // Its certificates and keys (file rules: nothing else in their directories).
    let mut read_only = system_ro(&e.bind_ro);
    read_only.extend(tls);
    // A php-fpm master reads its pool file from the socket directory by path (`-y`);
    // that directory is root's 0711 and each pool file its environment's own 0400, so
    // reading it shows nothing of another environment. php-cgi needs nothing there:
    // its socket is its fd 0, and a processor's connect is not a Landlock access.
    if e.fastcgi
        .as_ref()
        .is_some_and(|f| f.manager == conf::Manager::PhpFpm)
    {
        let sockets = cfg.server.runtime_dir.join(crate::bootstrap::RUNTIME_SOCKET_DIR);
        if !rw.iter().any(|w| within(&sockets, w)) {
            read_only.push(sockets);
        }
    }
    let sandbox = Sandbox {
        namespaces: true,
        read_only,
        read_write: rw,
        devices: devices(),
        list_root: false,
    };
    (steps, sandbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        conf::parse_str(text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn a_jail_is_rebuilt_with_the_system_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("jail");
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::create_dir_all(root.join("usr")).unwrap();
        let c = cfg(&format!(
            "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:0\"]\n\
             [environments.alice]\nuser = 2001\ngroup = 2001\nchroot = \"{}\"\n\
             [[vhosts]]\nserver_name = \"a\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\n",
            root.display(),
            root.join("www").display()
        ));
        let (steps, sb) = plan(&c, 0);
        assert!(
            matches!(&steps[1], Step::NewRoot { path, skip } if path == &root && skip.contains(&"usr".to_string()))
        );
        assert!(steps.contains(&Step::Bind {
            source: "/usr".into(),
            target: root.join("usr"),
            read_only: true
        }));
        assert!(steps.iter().any(|s| matches!(s, Step::File { path, contents } if path.ends_with("etc/passwd") && contents.contains(":2001:2001:") && !contents.contains("bob"))));
        assert!(steps.iter().any(|s| matches!(s, Step::Proc { .. })));
        assert_eq!(
            sb.read_write,
            vec![PathBuf::from("/tmp"), "/dev/shm".into(), "/www".into()]
        );
        assert!(sb.read_only.contains(&PathBuf::from("/usr")));
    }

    #[test]
    fn without_a_chroot_other_trees_are_hidden_and_ours_kept_under_tmp() {
        let c = cfg(
            "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:0\"]\n\
             [environments.alice]\nuser = 2001\ngroup = 2001\n\
             [environments.bob]\nuser = 2002\ngroup = 2002\n\
             [[vhosts]]\nserver_name = \"a\"\nenvironment = \"alice\"\ndocument_root = \"/tmp\"\n\
             [[vhosts]]\nserver_name = \"b\"\nenvironment = \"bob\"\ndocument_root = \"/var\"\n",
        );
        let (steps, sb) = plan(&c, 0);
        assert!(steps.contains(&Step::Hide { path: "/var".into() }));
        assert!(steps.contains(&Step::Cover {
            path: "/tmp".into(),
            mode: 0o1777,
            keep: vec!["/tmp".into()]
        }));
        let (steps, _) = plan(&c, 1);
        // bob's view cannot cover alice's /tmp; it gets its own /tmp anyway.
        assert!(!steps.contains(&Step::Hide { path: "/tmp".into() }));
        assert!(sb.read_write.contains(&PathBuf::from("/tmp")));
    }

    #[test]
    fn a_php_fpm_environment_may_read_the_socket_directory_and_a_php_cgi_one_not() {
        let text = |manager: &str| {
            format!(
                "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:0\"]\nruntime_dir = \"/run/bh\"\n\
                 [environments.alice]\nuser = 2001\ngroup = 2001\n\
                 [environments.alice.fastcgi]\nmanager = \"{manager}\"\ncommand = [\"/usr/sbin/php-fpm8.2\"]\nextensions = [\".php\"]\n\
                 [[vhosts]]\nserver_name = \"a\"\nenvironment = \"alice\"\ndocument_root = \"/srv\"\n"
            )
        };
        let sockets = PathBuf::from("/run/bh").join(crate::bootstrap::RUNTIME_SOCKET_DIR);
        let (_, fpm) = plan(&cfg(&text("php-fpm")), 0);
        assert!(fpm.read_only.contains(&sockets), "{:?}", fpm.read_only);
        assert!(!fpm.read_write.contains(&sockets));
        let (_, cgi) = plan(&cfg(&text("bulkhead")), 0);
        assert!(!cgi.read_only.contains(&sockets), "{:?}", cgi.read_only);
        assert!(!cgi.read_write.contains(&sockets));
    }

    const TWO: &str = "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:0\"]\n\
         [environments.alice]\nuser = 2001\ngroup = 2001\n\
         [environments.bob]\nuser = 2002\ngroup = 2002\n\
         [[vhosts]]\nserver_name = \"a\"\nenvironment = \"alice\"\ndocument_root = \"/srv\"\n\
         [[vhosts]]\nserver_name = \"b\"\nenvironment = \"bob\"\ndocument_root = \"/var\"\n";

    fn key_and_hidden(c: &Config, env: usize) -> (Key, BTreeSet<PathBuf>) {
        let (steps, sb) = plan(c, env);
        (key(c, env, &steps, &sb), hidden(&steps))
    }

    #[test]
    fn an_added_environment_keeps_the_key_and_adds_a_hide() {
        let before = cfg(TWO);
        let after = cfg(&format!(
            "{TWO}[environments.carol]\nuser = 2003\ngroup = 2003\n\
             [[vhosts]]\nserver_name = \"c\"\nenvironment = \"carol\"\ndocument_root = \"/opt\"\n"
        ));
        let (k0, h0) = key_and_hidden(&before, 0);
        let (k1, h1) = key_and_hidden(&after, 0);
        assert_eq!(k0, k1);
        assert_eq!(
            h1.difference(&h0).cloned().collect::<Vec<_>>(),
            [PathBuf::from("/opt")]
        );
    }

    #[test]
    fn a_changed_bind_ro_or_document_root_changes_the_key() {
        let base = cfg(TWO);
        let bind = cfg(&TWO.replace(
            "user = 2001\ngroup = 2001\n",
            "user = 2001\ngroup = 2001\nbind_ro = [\"/usr/share\"]\n",
        ));
        let root = cfg(&TWO.replace("document_root = \"/srv\"", "document_root = \"/mnt\""));
        let k = key_and_hidden(&base, 0).0;
        assert_ne!(k, key_and_hidden(&bind, 0).0);
        assert_ne!(k, key_and_hidden(&root, 0).0);
        // bob's view only sees alice's moved root as another Hide.
        assert_eq!(key_and_hidden(&base, 1).0, key_and_hidden(&root, 1).0);
    }
}
