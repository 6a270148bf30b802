//! One test binary for every integration test (ripgrep's trick, `autotests = false`):
//! each module starts the real `bulkhead` binary through `util::TestServer`. A test
//! that needs root starts with `require_root!()`; each gets its own `Dir::new(name)`.

#[macro_use]
mod util;

/// The admin subcommands: `check`'s open-files warning, `reopen-logs`, `status`.
mod admin;
/// `bench/run --smoke`: the benchmark harness still runs, nothing about speed.
mod bench_smoke;
/// CGI/1.1 scripts: uid, meta-variables, fds, request bodies, answers, chroot, cgi_timeout.
mod cgi;
/// cgroup limits per environment: memory (OOM killed and counted), pids, cpu, the
/// groups' placement, reload and removal, none without limits, `check`'s report, a
/// refused limit stopping the start.
mod cgroups;
/// Chrooted environments: served inside the jail, nothing outside it reachable.
mod chroot;
/// A compromised processor (its fds taken with pidfd_getfd) harms nobody else.
mod compromised;
/// `bulkhead check` and `serve` on good and bad config files; no root needed.
mod config_check;
/// DokuWiki through php-cgi backends: login, edit and save, sectok, its data never served.
mod dokuwiki;
/// FastCGI backends per environment (PHP): uids, on demand, recycling, 502/504, isolation.
mod fastcgi;
/// FastCGI backends run as the environment: fds, socket ownership and mode, on demand,
/// replacement after a kill and after max_requests, stop on SIGTERM and reload.
mod fastcgi_backends;
/// What fds each child holds, from /proc: listeners, other environments, close-on-exec.
mod fd_hygiene;
/// Routing by Host and hand-back of keep-alive connections between environments.
mod handback;
/// Regressions of issue 9's review: panics, leaks, capabilities, the child environment.
mod hardening;
/// Small hot files answered from memory: the resolver's answers (HEAD, 304, ranges)
/// over HTTP/1.1 and HTTP/2, and every change seen on the next request.
mod hot_files;
/// The access rules applications ship: `.htaccess` denials, the vhost's `deny`, `.ht*`.
mod htaccess;
/// HTTP/2 over TLS: curl gets h2 and the page, CGI and FastCGI over h2, 421 for
/// another environment's host, many streams at once, rapid-reset and CONTINUATION
/// floods ended without harm to others, idle connections closed, a download across a
/// reload, `http2 = false`, ALPN metrics.
mod http2;
/// Error answers, timeouts, body framing, static files and path safety.
mod http_errors;
/// `bulkhead import-apache`: Peruser's example and an mpm-itk configuration with
/// includes translated, checked and served as the same uids; syntax errors.
mod import_apache;
/// A vhost's `index` (in order, a CGI script among them) and `fallback` (a CGI front
/// controller or a static file), never for a denied path.
mod index_fallback;
/// Each environment served by its own uid; another's files refused by the kernel.
mod isolation;
/// Replacing dead children, SIGTERM/SIGINT, shutdown_timeout, start failures, parent death.
mod lifecycle;
/// Server-wide and per-vhost connection limits.
mod limits;
/// Error-log lines: their role in each, colour only on a terminal.
mod log_format;
/// Access and error log paths a tenant controls are never followed.
mod log_links;
/// Debian's `logrotate -f` with the shipped file: nothing lost or duplicated.
mod logrotate;
/// Access logs per vhost, rotation with SIGUSR1, the error log file.
mod logs;
/// 10,000 environments under a 20,000 open-files limit: start, one fd per environment
/// in any process (fd keepers), a reload under a looping client, a killed multiplexer.
mod many;
/// The private view per environment (mount, PID and IPC namespaces, Landlock,
/// seccomp): /proc, other trees, /tmp, SysV IPC, denied syscalls, system PHP and
/// DokuWiki in a jail, a killed holder, a reload, `check`.
mod namespaces;
/// The Debian package: built, installed into a clean mmdebstrap root, started there as
/// the unit would, the default site served, purged with nothing left.
mod package;
/// `max_connections_per_ip`: one address over the cap refused, another served.
mod per_ip;
/// `manager = "php-fpm"`: one php-fpm master per environment (uids, fds, a killed
/// master, a reload, a jail), its children counted as the environment's backends.
mod php_fpm;
/// Pool sizing: scale to zero, saturation and availability, expiry, recycling, spares.
mod pools;
/// PROXY protocol v1/v2 listeners: the carried client in the access log and CGI, bad
/// headers and foreign sources refused, status, TLS with SNI, a hand-back, HAProxy in
/// front of two instances.
mod proxy_protocol;
/// SIGHUP generations: no failed request, refused configs, listeners kept.
mod reload;
/// One SO_REUSEPORT socket per multiplexer slot: spread, a killed multiplexer's queue
/// kept for its replacement, a retired slot's queue moved on at a reload.
mod reuseport;
/// RFC 9112/9110, table-driven, each case naming its clause: Apache's limits just under
/// and over, read timeouts with a minimum rate, Expect, TRACE, OPTIONS *, CONNECT,
/// framing and field syntax (helpers in `util/wire.rs`).
mod rfc9112;
/// Shared-memory scoreboard: who maps what, and garbage in a tenant's own slot.
mod scoreboard;
/// The HTML status page rendered by headless Chromium.
mod screenshot;
/// slowhttptest's slowloris, slow-body and slow-read modes for 30 s each: a normal
/// client meanwhile is always served, its p99 within 2x of unloaded; and idle
/// keep-alive connections parked by their processor (resumed, timed out, counted,
/// stopped, 2,000 at once).
mod slow_clients;
/// Request smuggling: every CL/TE variant with a request hidden in its body, first and
/// later on a keep-alive connection; the hidden request is never answered.
mod smuggling;
/// Who may read the status page and the metrics.
mod status_access;
/// What the status page and `/metrics` say, checked with Apache's and Prometheus' tools.
mod status_page;
/// systemd: the notification protocol (READY, WATCHDOG, RELOADING, STOPPING, STATUS)
/// played by the test, and the unit file checked by `systemd-analyze verify`.
mod systemd;
/// Sessions, terminals and stdio of the children; tenant output in the log.
mod tenant_stdio;
/// HTTPS with each tenant's own key: SNI routing in the multiplexer (names, default,
/// strict, split hellos, hostile hellos without spinning), the handshake in the
/// processor (TLS 1.2/1.3 only, 421 for another environment's host), no key outside its
/// environment (fds and memory), sessions resumed across an environment's processors,
/// a renewed certificate after SIGHUP, `check` refusing a key the multiplexers can read.
mod tls;
/// Unprivileged mode: everything as one normal user, isolation off, both vhosts served.
mod unprivileged;
