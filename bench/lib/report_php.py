"""The PHP sections of bench/RESULTS.md (called by report.py).

WORKDIR/php-runs.tsv   server scenario run rps p50_ms p99_ms requests non2xx sockerr
                       cpu_us_per_req rss_kb pss_kb nprocs wrk_exit   (bench/lib/php.bash)
WORKDIR/php-cold.tsv   label tenant cold_ms warm_ms spares_waiting error   (coldstart.py)
WORKDIR/php-cold-counters.tsv  label before_n before_us after_n after_us
"""
import os
import statistics

from report import cell, fmt, num, pctl, ratio, rows

SCENARIOS = [
    ("php-ka", "whoami keep-alive", "GET a.test/whoami.php (`<?php echo posix_geteuid();`) over keep-alive connections"),
    ("php-close", "whoami new conn", "the same with `Connection: close`: a new connection per request"),
    ("wiki-ka", "DokuWiki keep-alive", "GET a.test/wiki/doku.php: DokuWiki's start page (a short page, its render cache warm) over keep-alive"),
    ("wiki-close", "DokuWiki new conn", "the same with `Connection: close`"),
]
NAMES = {
    "bh-php": "bulkhead + php-cgi",
    "bh-fpm": "bulkhead + php-fpm",
    "nginx-php": "nginx + php-fpm",
    "apache-php": "apache itk + mod_php",
}
BASE = "nginx-php"


def php_sections(w, work, md):
    runs = rows(os.path.join(work, "php-runs.tsv"))
    cold = rows(os.path.join(work, "php-cold.tsv"))
    notes = rows(os.path.join(work, "parts.tsv"))
    if runs or any(r[0] == "php" for r in notes):
        throughput(w, md, runs)
    if cold or any(r[0] == "php-cold" for r in notes):
        cold_section(w, work, md, cold)


def throughput(w, md, runs):
    w("## PHP: a tiny script and DokuWiki")
    w("")
    for key, title in (("php_bulkhead", "bulkhead"), ("php_bhfpm", "bulkhead + php-fpm"),
                       ("php_fpm", "nginx + php-fpm"),
                       ("php_apache", "apache"), ("php_ini", "PHP settings"),
                       ("php_opcache", "OPcache")):
        if key in md:
            w("- %s: %s" % (title, md[key]))
    w("- Same method as the throughput part (see Method: pinning, warm-up, interleaved runs, "
      "wrk -t1 and its connections). CPU µs/req: utime+stime of the server's whole process "
      "tree (for nginx + php-fpm both trees) plus what its processes reaped (cutime+cstime: "
      "php-cgi backends recycled, mpm-itk children that exit after their connection) over "
      "the measured run, divided by the requests wrk completed. ×php-fpm = this server's "
      "median over nginx + php-fpm's (for req/s higher is better, else lower).")
    w("")
    for _, title, legend in SCENARIOS:
        w("- **%s**: %s" % (title, legend))
    w("")
    by = {}
    for r in runs:
        by.setdefault((r[0], r[1]), []).append(r)
    servers = [s for s in NAMES if any(k[0] == s for k in by)]
    w("| Scenario | Server | Req/s | ×php-fpm | p50 ms | p99 ms | ×php-fpm | CPU µs/req | ×php-fpm | PSS MiB | Procs | Errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for scen, title, _ in SCENARIOS:
        def col(s, i, k=1.0):
            return [num(r[i]) * k for r in by.get((s, scen), []) if num(r[3]) is not None and num(r[i]) is not None]
        base = {}
        for key, i, k in (("rps", 3, 1), ("p99", 5, 1), ("cpu", 9, 1)):
            v = col(BASE, i, k)
            base[key] = statistics.median(v) if v else None
        for s in servers:
            rs = by.get((s, scen), [])
            if not col(s, 3):
                w("| %s | %s | no valid run | | | | | | | | | |" % (title, NAMES[s]))
                continue
            rps, mrps = cell(col(s, 3), "rps")
            p50, _ = cell(col(s, 4), "ms")
            p99, mp99 = cell(col(s, 5), "ms")
            cpu, mcpu = cell(col(s, 9), "ms")
            pss, _ = cell(col(s, 11, 1 / 1024), "mib")
            procs = col(s, 12)
            n2xx = sum(int(num(r[7]) or 0) for r in rs)
            serr = sum(int(num(r[8]) or 0) for r in rs)
            errs = ", ".join(x for x in ("%d non-2xx" % n2xx if n2xx else "", "%d socket" % serr if serr else "") if x)
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                title, NAMES[s], rps, ratio(mrps, base["rps"]), p50, p99, ratio(mp99, base["p99"]),
                cpu, ratio(mcpu, base["cpu"]), pss, "%d" % statistics.median(procs) if procs else "—",
                errs or "0"))
    w("")


def cold_section(w, work, md, cold):
    w("## PHP cold start: the first PHP request to a scaled-to-zero environment")
    w("")
    w("- World: as the cold-start part (%s tenants), but bulkhead runs each tenant's `index.php` "
      "through php-cgi backends (`[environments.eN.fastcgi]`, idle_timeout = 1, `index = "
      "[\"index.php\"]`), so a start is a processor *and* a backend started for the "
      "request; php-fpm (pm = ondemand) forks a pool child for it. The same client, checks "
      "and passes as the cold-start part; the tenant has no process at all before each start "
      "(no child of the supervisor runs as its uid: no processor, no backend). bulkhead + "
      "php-fpm: a second bulkhead whose environments' manager is php-fpm (`manager = "
      "\"php-fpm\"`: one master per environment, always running, pm = ondemand, "
      "pm.process_idle_timeout = 1s); before each start the tenant has no processor and "
      "its master no child, so a start is a processor started and a pool child forked." % md.get("cold_envs", "?"))
    w("")
    by = {}
    for r in cold:
        by.setdefault(r[0], []).append(r)

    def line(title, label, anchor):
        av = [num(r[2]) for r in by.get(anchor, []) if num(r[2]) is not None]
        a50, a99 = (pctl(av, 50), pctl(av, 99)) if av else (None, None)
        rs = by.get(label, [])
        vals = [num(r[2]) for r in rs if num(r[2]) is not None]
        warm = [num(r[3]) for r in rs if num(r[3]) is not None]
        errs = sum(1 for r in rs if len(r) > 5 and r[5])
        if not vals:
            w("| %s | 0 | — | | — | | — | — | %d |" % (title, errs))
            return
        p50, p99 = pctl(vals, 50), pctl(vals, 99)
        w("| %s | %d | %s | %s | %s | %s | %s | %s | %d |" % (
            title, len(vals), fmt(p50, "ms"), ratio(p50, a50), fmt(p99, "ms"), ratio(p99, a99),
            fmt(max(vals), "ms"), fmt(pctl(warm, 50), "ms") if warm else "—", errs))

    w("| Server, pass | Starts | p50 ms | ×php-fpm | p99 ms | ×php-fpm | max ms | warm p50 ms | Errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    line("bulkhead + php-cgi, pass 1 (back to back)", "bh-gap", "fpm-gap")
    line("**php-fpm** ondemand via nginx, pass 1", "fpm-gap", "fpm-gap")
    line("bulkhead + php-fpm, pass 1 (back to back)", "bhfpm-gap", "fpm-gap")
    line("bulkhead + php-cgi, pass 2 (a spare processor ready)", "bh-spare", "fpm-spare")
    line("**php-fpm** ondemand via nginx, pass 2", "fpm-spare", "fpm-spare")
    line("bulkhead + php-fpm, pass 2 (a spare processor ready)", "bhfpm-spare", "fpm-spare")
    w("")
    errs = [r for r in cold if len(r) > 5 and r[5]]
    for r in errs[:5]:
        w("- error, pass %s, tenant %s: %s" % (r[0], r[1], r[5][:200]))
    if len(errs) > 5:
        w("- … %d more errors" % (len(errs) - 5))
    w("")
