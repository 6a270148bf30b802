//! `bulkhead`: one binary for every role. `serve` and `check` are for people; the
//! supervisor re-executes this binary as `multiplexer` or `processor` for its children.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod status_cmd;

const DEFAULT_CONFIG: &str = "/etc/bulkhead/bulkhead.toml";

#[derive(Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "A web server for shared hosting: every site under its own uid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (as root for per-environment isolation).
    Serve {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file and report every error in it.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running server to reload its configuration (SIGHUP via the pid file).
    Reload {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running server to stop gracefully (SIGTERM via the pid file).
    Stop {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running server to reopen its error log and access logs (SIGUSR1 via the
    /// pid file), as logrotate's postrotate does.
    #[command(name = "reopen-logs")]
    ReopenLogs {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the running server's per-environment table (the status page's
    /// ?peruser_stats), read from the first listen address.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Translate an Apache configuration into bulkhead's TOML (on stdout).
    ///
    /// Apache 2.2/2.4 with Peruser, perchild or mpm-itk: the TOML on stdout, every
    /// directive not translated on stderr with its file:line. Exits 2 (nothing on
    /// stdout) only for an unreadable file or a syntax error httpd would refuse.
    #[command(name = "import-apache")]
    ImportApache {
        /// The main configuration file (e.g. /etc/apache2/apache2.conf).
        file: PathBuf,
        /// Define a parameter for <IfDefine> (NAME) or a variable (NAME=VALUE), like httpd -D.
        #[arg(short = 'D', long = "define", value_name = "NAME[=VALUE]")]
        defines: Vec<String>,
        /// ServerRoot for relative paths until the file sets one (default: FILE's directory), like httpd -d.
        #[arg(short = 'd', long = "server-root", value_name = "DIR")]
        server_root: Option<PathBuf>,
        /// A module compiled into the httpd (true in <IfModule>), e.g. mpm_itk_module;
        /// the built-in ones and those loaded by LoadModule need none.
        #[arg(long = "module", value_name = "NAME")]
        modules: Vec<String>,
    },
    /// Internal: the man pages (roff, from this command line's own description) into
    /// DIR: bulkhead.1 and a bulkhead-SUBCOMMAND.1 for each one it lists, for the
    /// package build (`deploy/deb/build`).
    #[command(hide = true)]
    Manpage { dir: PathBuf },
    /// Internal: a multiplexer started by the supervisor.
    #[command(hide = true)]
    Multiplexer,
    /// Internal: a processor started by the supervisor.
    #[command(hide = true)]
    Processor,
    /// Internal: a FastCGI backend started by the supervisor (exec's the configured
    /// command as the environment).
    #[command(hide = true, name = "fastcgi-backend")]
    FastcgiBackend,
    /// Internal: an environment's namespace holder (the init of its PID namespace).
    #[command(hide = true, name = "ns-holder")]
    NsHolder,
    /// Internal: a generation's fd keeper (the environments' hand-off socket ends).
    #[command(hide = true, name = "fd-keeper")]
    FdKeeper,
}

/// Logs to stderr, with colours only when stderr is a terminal (never into a file, a
/// pipe or the journal), and every line inside a `bulkhead{role=…}` span so a line says
/// which role wrote it. A processor's stderr becomes its environment's log pipe, which
/// the supervisor reads, stamps and marks with the environment (escaping control
/// characters), so a processor logs without its own timestamp, and a line it cannot
/// write (the pipe is non-blocking and may be full) is dropped silently rather than
/// reported on that same full stderr. Returns the span's guard: hold it for the
/// process's life.
fn init_logging(role: &'static str) -> tracing::span::EnteredSpan {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("BULKHEAD_LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let processor = role == "processor";
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!processor && std::io::stderr().is_terminal());
    let _ = match (json, processor) {
        (false, false) => builder.try_init(),
        (true, false) => builder.json().try_init(),
        (false, true) => builder.log_internal_errors(false).without_time().try_init(),
        (true, true) => builder.log_internal_errors(false).json().try_init(),
    };
    // An error-level span is enabled whenever any line is, whatever RUST_LOG says. In
    // a single-threaded runtime every task is polled inside it.
    tracing::error_span!("bulkhead", role = %role).entered()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => {
            let _role = init_logging("supervisor");
            common::panics::log_panics("supervisor", None);
            supervisor::run(&config)
                .map(|code| code as u8)
                .context("bulkhead serve")
        }
        Command::Check { config } => match conf::load(&config) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                // Which hierarchy and controllers the limits get (nothing without limits).
                let cgroups = supervisor::describe_cgroups(&cfg);
                if let Err(e) = &cgroups {
                    eprintln!("{}: {e}", config.display());
                    eprintln!("{}: 1 error(s)", config.display());
                    return ExitCode::from(1);
                }
                for line in cgroups.into_iter().flatten() {
                    if line.starts_with("warning: ") {
                        eprintln!("{line}");
                    } else {
                        println!("{line}");
                    }
                }
                // What each private view will be (and what it cannot do as written).
                for line in supervisor::describe_views(&cfg) {
                    if line.starts_with("warning: ") {
                        eprintln!("{line}");
                    } else {
                        println!("{line}");
                    }
                }
                // Whether the open-files limit is enough for this many environments.
                if let Some((soft, hard)) = supervisor::fd_limit() {
                    let mut refused = false;
                    for line in supervisor::describe_fd_limit(&cfg, soft, hard) {
                        if line.starts_with("error: ") {
                            refused = true;
                            eprintln!("{line}");
                        } else if line.starts_with("warning: ") {
                            eprintln!("{line}");
                        } else {
                            println!("{line}");
                        }
                    }
                    if refused {
                        eprintln!("{}: 1 error(s)", config.display());
                        return ExitCode::from(1);
                    }
                }
                println!(
                    "{}: OK ({} environments, {} vhosts)",
                    config.display(),
                    cfg.environments.len(),
                    cfg.vhosts.len()
                );
                Ok(0)
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", config.display(), errors.errors.len());
                Ok(1)
            }
        },
        Command::ImportApache {
            file,
            defines,
            server_root,
            modules,
        } => {
            let opts = conf::apache::Options {
                defines,
                server_root,
                modules,
            };
            match conf::apache::import(&file, &opts) {
                Ok(imported) => {
                    for note in &imported.notes {
                        eprintln!("{note}");
                    }
                    print!("{}", imported.toml);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("{}: {} error(s)", file.display(), e.errors.len());
                    Ok(2)
                }
            }
        }
        Command::Reload { config } => signal_server(&config, nix::sys::signal::Signal::SIGHUP),
        Command::Stop { config } => signal_server(&config, nix::sys::signal::Signal::SIGTERM),
        Command::Manpage { dir } => man_pages(&dir).map(|()| 0),
        Command::ReopenLogs { config } => signal_server(&config, nix::sys::signal::Signal::SIGUSR1),
        Command::Status { config } => (|| {
            let cfg = conf::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let addr = status_cmd::target(&cfg)?;
            let page = status_cmd::fetch(addr, &cfg.status.path)?;
            print!("{}", status_cmd::render(&page));
            Ok(0)
        })(),
        Command::Multiplexer => {
            let _role = init_logging("multiplexer");
            child(|started| match started.role {
                common::child::Role::Multiplexer(b, fds) => {
                    common::panics::log_panics("multiplexer", None);
                    multiplexer::run(*b, fds, started.control).context("multiplexer")
                }
                _ => anyhow::bail!("bootstrap is not for a multiplexer"),
            })
        }
        Command::Processor => {
            let _role = init_logging("processor");
            child(|started| match started.role {
                common::child::Role::Processor(b, fds) => {
                    common::panics::log_panics("processor", Some(&b.environment));
                    processor::run(*b, fds, started.control).context("processor")
                }
                _ => anyhow::bail!("bootstrap is not for a processor"),
            })
        }
        Command::NsHolder => {
            // No log subscriber: one line on the supervisor's stderr on failure.
            let code = match common::child::start() {
                Ok(common::child::Started {
                    role: common::child::Role::Holder(b),
                    control,
                }) => match common::sandbox::holder::run(&b, control) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("bulkhead ns-holder: environment {}: {e}", b.environment);
                        1
                    }
                },
                Ok(_) => {
                    eprintln!("bulkhead ns-holder: bootstrap is not for a holder");
                    1
                }
                Err(e) => {
                    eprintln!("bulkhead ns-holder: starting: {e}");
                    1
                }
            };
            return ExitCode::from(code);
        }
        Command::FdKeeper => {
            // No log subscriber: one line on the supervisor's stderr on failure.
            let code = match common::child::start() {
                Ok(common::child::Started {
                    role: common::child::Role::Keeper(b),
                    control,
                }) => match common::keeper::run(&b, control) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("bulkhead fd-keeper ({} ends): {e}", b.side);
                        1
                    }
                },
                Ok(_) => {
                    eprintln!("bulkhead fd-keeper: bootstrap is not for a keeper");
                    1
                }
                Err(e) => {
                    eprintln!("bulkhead fd-keeper: starting: {e}");
                    1
                }
            };
            return ExitCode::from(code);
        }
        Command::FastcgiBackend => {
            // No log subscriber: the program exec'd here owns fds 1 and 2 (the log
            // pipe); a failure before the exec is one line there and status 127.
            match common::child::start() {
                Ok(started) => match started.role {
                    common::child::Role::Backend(b, fds) => {
                        let _ = processor::backend::exec(&b, fds);
                    }
                    _ => eprintln!("bulkhead fastcgi-backend: bootstrap is not for a backend"),
                },
                Err(e) => eprintln!("bulkhead fastcgi-backend: starting: {e}"),
            }
            return ExitCode::from(127);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One report: through the log when it is set up (serve and the roles), else stderr.
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("bulkhead: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn child(role: impl FnOnce(common::child::Started) -> anyhow::Result<()>) -> anyhow::Result<u8> {
    let started = common::child::start().context("starting child")?;
    role(started)?;
    Ok(0)
}

/// `bulkhead manpage DIR`: the main page and one per listed subcommand.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let write = |name: &str, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static without its "string" feature; a one-shot command.
        let name: &'static str = Box::leak(format!("bulkhead-{}", sub.get_name()).into_boxed_str());
        write(name, sub.clone().name(name))?;
    }
    write("bulkhead", cmd)
}

/// Sends `sig` to the supervisor named by the config's `pid_file`.
fn signal_server(config: &std::path::Path, sig: nix::sys::signal::Signal) -> anyhow::Result<u8> {
    let cfg = conf::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = cfg.server.pid_file.with_context(|| {
        format!(
            "{}: no [server] pid_file, so the server cannot be found",
            config.display()
        )
    })?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a pid", path.display()))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .with_context(|| format!("signalling pid {pid} from {}", path.display()))?;
    println!("sent {sig} to bulkhead (pid {pid})");
    Ok(0)
}
