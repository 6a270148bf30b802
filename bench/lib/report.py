#!/usr/bin/env python3
"""Turn the raw figures bench/run collected in WORKDIR into bench/RESULTS.md.

WORKDIR/meta.tsv    key<TAB>value
WORKDIR/status.tsv  server<TAB>ok|failed<TAB>reason
WORKDIR/idle.tsv    server rss_kb pss_kb nprocs cpu_pct
WORKDIR/runs.tsv    server scenario run rps p50_ms p99_ms requests non2xx sockerr
                    rss_kb pss_kb nprocs wrk_exit cpu_us_per_request  (NA = not measured)
WORKDIR/<server>.tail  last lines of a failed server's log (optional)
WORKDIR/cold.tsv    label tenant cold_ms warm_ms spares_waiting error   (coldstart.py)
WORKDIR/cold-counters.tsv  label before_n before_us after_n after_us  (bulkhead's own)
WORKDIR/mem.tsv     phase server component nprocs rss_kb pss_kb fds     (procmem.py)
WORKDIR/parts.tsv   part failed|note message
WORKDIR/php-*.tsv   the PHP parts (report_php.py)
"""
import math
import os
import statistics
import sys

SCENARIOS = [  # (key, short label for the table, legend)
    ("ka-1k", "1K keep-alive", "GET a.test/index.html (1 KiB) over keep-alive connections"),
    ("close-1k", "1K new conn", "the same with `Connection: close`: a new connection per request"),
    ("close-seq", "1K new conn, 1 client", "the same, one connection at a time (bench/lib/seqconn.py, "
     "not wrk): latency from connect() to the last byte, as a lone client sees it"),
    ("ka-100k", "100K keep-alive", "GET a.test/big.bin (100 KiB) over keep-alive connections"),
    ("mixed-conn", "1K 2 tenants", "both tenants at once: half the connections (one wrk thread) "
     "ask a.test, half b.test, keep-alive"),
    ("mixed-req", "1K switch/req", "the Host header alternates a.test / b.test on every request "
     "of each keep-alive connection (a tenant switch inside a connection; mpm-itk closes the "
     "connection there, which wrk counts as socket errors and reconnects)"),
]
NAMES = {
    "bulkhead": "bulkhead",
    "bulkhead-tuned": "bulkhead, tuned",
    "nginx": "nginx (1 worker)",
    "apache": "apache prefork+itk",
}
BASE = "nginx"


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n").split("\t") for l in f if l.strip()]


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt(v, kind):
    if v is None:
        return "—"
    if kind == "rps":
        return "%.0f" % v
    if kind == "ms":
        return "%.3f" % v if v < 1 else ("%.2f" % v if v < 10 else "%.1f" % v)
    if kind == "mib":
        return "%.1f" % v
    if kind == "us":
        return "%.1f" % v
    return str(v)


def cell(vals, kind):
    """median (min–max) of a list of floats"""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—", None
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, kind), med
    return "%s (%s–%s)" % (fmt(med, kind), fmt(min(vals), kind), fmt(max(vals), kind)), med


def ratio(v, base):
    if v is None or base is None or base == 0:
        return "—"
    return "%.2f×" % (v / base)


def main(work):
    meta = rows(os.path.join(work, "meta.tsv"))
    status = rows(os.path.join(work, "status.tsv"))
    servers = [r[0] for r in status]
    state = {r[0]: (r[1], r[2] if len(r) > 2 else "") for r in status}
    idle = {r[0]: r[1:] for r in rows(os.path.join(work, "idle.tsv"))}
    runs = {}
    for r in rows(os.path.join(work, "runs.tsv")):
        runs.setdefault((r[0], r[1]), []).append(r)

    out = []
    w = out.append
    md = dict((r[0], r[1] if len(r) > 1 else "") for r in meta)
    w("# bulkhead benchmark")
    w("")
    w("- Date: %s" % md.get("date", "?"))
    w("- Commit: %s" % md.get("commit", "?"))
    w("- Machine: %s" % md.get("machine", "?"))
    w("- Load average: %s" % md.get("load", "?"))
    w("- Method: %s" % md.get("method", "?"))
    w("- Logging: %s" % md.get("logging", "?"))
    if "command" in md:
        w("- Command: `%s` (wall time %s s)" % (md["command"], md.get("wall_secs", "?")))
    if servers:
        w("- Keep-alive: %s" % md.get("keepalive", "?"))
    for s in servers:
        if s in md:
            w("- %s: %s" % (NAMES.get(s, s), md[s]))
    if servers and "wrk" in md:
        w("- Client: %s (pinned apart from the servers; see Method)" % md["wrk"])
    w("")
    if servers:
        throughput(w, work, md, servers, state, idle, runs)
    parts(w, work, md)
    sys.stdout.write("\n".join(out) + "\n")


def throughput(w, work, md, servers, state, idle, runs):
    w("Cells are the median of the runs with the spread (min–max) in brackets; "
      "×nginx is this server's median divided by nginx's median from the same "
      "invocation (for req/s higher is better, for latency and memory lower is "
      "better). CPU is the server's CPU time per request: utime+stime of its whole "
      "process tree (and of the children it reaped) from /proc over the run, divided by "
      "the requests answered; it moves less than req/s on a shared machine. "
      "RSS and PSS are summed over every process of the server "
      "(its whole process tree, from /proc/PID/smaps_rollup), sampled halfway "
      "through each run; RSS counts shared pages once per process, PSS splits them.")
    w("")

    base_ok = BASE in state and state[BASE][0] == "ok"

    def medians(s, scen):
        rs = runs.get((s, scen), [])
        ok = [r for r in rs if num(r[3]) is not None]
        at = lambda r, i: num(r[i]) if i < len(r) else None
        col = lambda i, k=1.0: [at(r, i) * k if at(r, i) is not None else None for r in ok]
        return rs, ok, col

    w("## Throughput, latency and memory under load")
    w("")
    for _, title, legend in SCENARIOS:
        w("- **%s**: %s" % (title, legend))
    w("")
    w("| Scenario | Server | Req/s | ×nginx | p50 ms | ×nginx | p99 ms | ×nginx "
      "| CPU µs/req | ×nginx | RSS MiB | ×nginx | PSS MiB | ×nginx | Procs | Errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for scen, title, _ in SCENARIOS:
        base = {}
        if base_ok:
            _, ok, col = medians(BASE, scen)
            for key, i, k in (("rps", 3, 1), ("p50", 4, 1), ("p99", 5, 1), ("cpu", 13, 1),
                              ("rss", 9, 1 / 1024), ("pss", 10, 1 / 1024)):
                vals = [v for v in col(i, k) if v is not None]
                base[key] = statistics.median(vals) if vals else None
        for s in servers:
            rs, ok, col = medians(s, scen)
            name = NAMES.get(s, s)
            if not rs and s == "bulkhead-tuned":
                continue  # measured only where its setting matters
            if not ok:
                why = "FAILED" if state[s][0] != "ok" else "no valid run"
                w("| %s | %s | %s | | | | | | | | | | | | | see below |" % (title, name, why))
                continue
            line = [title, name]
            for key, i, k, kind in (("rps", 3, 1, "rps"), ("p50", 4, 1, "ms"), ("p99", 5, 1, "ms"),
                                    ("cpu", 13, 1, "us"), ("rss", 9, 1 / 1024, "mib"),
                                    ("pss", 10, 1 / 1024, "mib")):
                c, med = cell(col(i, k), kind)
                line += [c, ratio(med, base.get(key)) if s != BASE else "1.00×"]
            procs = [num(r[11]) for r in ok if num(r[11]) is not None]
            line.append("%d" % statistics.median(procs) if procs else "—")
            n2xx = sum(int(num(r[7]) or 0) for r in ok)
            serr = sum(int(num(r[8]) or 0) for r in ok)
            bad = len(rs) - len(ok)
            errs = []
            if n2xx:
                errs.append("%d non-2xx" % n2xx)
            if serr:
                errs.append("%d socket" % serr)
            if bad:
                errs.append("%d failed run(s)" % bad)
            if state[s][0] != "ok":
                errs.append("server failed later")
            line.append(", ".join(errs) if errs else "0")
            w("| " + " | ".join(line) + " |")
    w("")

    w("## Idle (after start-up and one request per file per tenant)")
    w("")
    w("| Server | Procs | RSS MiB | ×nginx | PSS MiB | ×nginx | Idle CPU % |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    bi = idle.get(BASE) if base_ok else None
    for s in servers:
        name = NAMES.get(s, s)
        if s not in idle:
            w("| %s | FAILED | | | | | |" % name)
            continue
        rss, pss, n, cpu = (num(x) for x in idle[s][:4])
        brss = num(bi[0]) / 1024 if bi else None
        bpss = num(bi[1]) / 1024 if bi else None
        w("| %s | %d | %s | %s | %s | %s | %s |" % (
            name, n, fmt(rss / 1024, "mib"), ratio(rss / 1024, brss),
            fmt(pss / 1024, "mib"), ratio(pss / 1024, bpss), "—" if cpu is None else "%.1f" % cpu))
    w("")

    notes = [(s, st, why) for s in servers for st, why in [state[s]] if st != "ok" or why]
    if notes:
        w("## Failures and notes")
        w("")
        for s, st, why in notes:
            w("- **%s**: %s%s" % (NAMES.get(s, s), "FAILED: " if st != "ok" else "", why or "?"))
            tail = os.path.join(work, s + ".tail")
            if st != "ok" and os.path.exists(tail):
                w("")
                w("  ```")
                with open(tail, errors="replace") as f:
                    for l in f.read().splitlines()[-20:]:
                        w("  " + l[:200])
                w("  ```")
        w("")
    if "bench_secs" in md:
        w("Throughput phase: %s s (excluding install and build)." % md["bench_secs"])
        w("")



# ---------------------------------------------------------------- cold start, memory

def pctl(vals, q):
    """nearest-rank percentile: the smallest value with at least q% of the values at or below it"""
    v = sorted(vals)
    if not v:
        return None
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


def parts(w, work, md):
    cold = rows(os.path.join(work, "cold.tsv"))
    mem = rows(os.path.join(work, "mem.tsv"))
    notes = rows(os.path.join(work, "parts.tsv"))
    if cold or any(r[0] in ("cold",) for r in notes):
        cold_section(w, work, md, cold)
    if mem or any(r[0] in ("memory",) for r in notes):
        mem_section(w, md, mem)
    from report_php import php_sections  # bench/lib/report_php.py: --only php, php-cold
    php_sections(w, work, md)
    if notes:
        w("### Cold start / memory / PHP: failures and notes")
        w("")
        for r in notes:
            w("- **%s** %s: %s" % (r[0], "FAILED" if r[1] == "failed" else "note", r[2] if len(r) > 2 else ""))
        w("")
    if "parts_secs" in md:
        w("Cold-start and memory phase: %s s." % md["parts_secs"])
        w("")


def cold_section(w, work, md, cold):
    gap = md.get("parts_cold", "")
    w("## Cold start: first request to a scaled-to-zero tenant")
    w("")
    w("- World: %s" % gap)
    w("- bulkhead: %s" % md.get("parts_bulkhead", "?"))
    w("- php-fpm: %s" % md.get("parts_fpm", "?"))
    w("- A *start* is the first request to a tenant that has no process: before it the "
      "client waits until the tenant has none (bulkhead: `/server-status?json` says "
      "`processors_alive == 0` and no child runs as its uid; php-fpm: no child of the "
      "master is titled `php-fpm: pool eN`), then sleeps the gap, then times "
      "connect + `GET /` + read to EOF on a new connection (`Connection: close`). Each "
      "tenant is started once per pass. *Warm* is the request right after, same way, "
      "to the process the start left.")
    w("- bulkhead keeps 2 spare processors (exec'd, still root, holding nothing) and "
      "refills them on its 1 s maintenance tick: a start finds a spare waiting, or "
      "execs a fresh processor. Pass 1 starts the tenants back to back, %s ms before "
      "each start (after the check above), so the spares run out after two and most "
      "starts exec; pass 2 (once every tenant is back at zero) first waits until a "
      "spare has existed for 100 ms. *Spare waiting* = a spare process existed just "
      "before the request. In both passes bulkhead and php-fpm are interleaved tenant "
      "by tenant (the order alternating), each with the same gap, so that the "
      "machine's load drifts alike for both; each bulkhead row's ratio is to the "
      "php-fpm row of the same pass." % md.get("gap_ms", "?"))
    w("- p50 = median; p99 = nearest rank (with 100 starts: the 99th fastest); "
      "×php-fpm = this row divided by the php-fpm row of the same run (lower is better).")
    w("")
    by = {}
    for r in cold:
        by.setdefault(r[0], []).append(r)
    def anchor(label):
        v = [num(r[2]) for r in by.get(label, []) if num(r[2]) is not None]
        return (pctl(v, 50), pctl(v, 99)) if v else (None, None)

    def line(title, rs, anchor_label):
        a50, a99 = anchor(anchor_label)
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
    g = by.get("bh-gap", [])
    line("bulkhead, pass 1 (back to back)", g, "fpm-gap")
    line("&nbsp;&nbsp;of which a spare was waiting", [r for r in g if num(r[4]) and num(r[4]) > 0], "fpm-gap")
    line("&nbsp;&nbsp;of which none was (fresh exec)", [r for r in g if num(r[4]) == 0], "fpm-gap")
    line("**php-fpm** ondemand via nginx, pass 1", by.get("fpm-gap", []), "fpm-gap")
    line("bulkhead, pass 2 (a spare ready before each start)", by.get("bh-spare", []), "fpm-spare")
    line("**php-fpm** ondemand via nginx, pass 2", by.get("fpm-spare", []), "fpm-spare")
    w("")
    cnt = rows(os.path.join(work, "cold-counters.tsv"))
    for r in cnt:
        try:
            n = int(r[3]) - int(r[1])
            us = int(r[4]) - int(r[2])
        except (ValueError, IndexError):
            continue
        if n > 0:
            w("- bulkhead's own counter, pass %s: %d cold starts, mean %.2f ms from the "
              "supervisor assigning a processor to the environment to that processor "
              "reporting ready (`cold_start_us` / `cold_starts` in `/server-status?json`)."
              % (r[0], n, us / n / 1000.0))
    errs = [r for r in cold if len(r) > 5 and r[5]]
    for r in errs[:5]:
        w("- error, pass %s, tenant %s: %s" % (r[0], r[1], r[5][:200]))
    if len(errs) > 5:
        w("- … %d more errors" % (len(errs) - 5))
    w("")


def mem_section(w, md, mem):
    try:
        n = "{:,}".format(int(md.get("mem_envs", "")))
    except ValueError:
        n = "?"
    w("## %s idle environments" % n)
    w("")
    w("- World: %s" % md.get("parts_mem", "?"))
    w("- bulkhead: %s" % md.get("parts_bulkhead", "?"))
    w("- php-fpm: %s" % md.get("parts_fpm", "?"))
    w("- Idle: 3 s after start-up (bulkhead: after its 2 spares are up), before any "
      "request to a tenant (bulkhead's start-up check reads `/server-status`, which "
      "the multiplexer answers itself).")
    w("- RSS and PSS from `/proc/PID/smaps_rollup`, summed over the processes named; "
      "fds = open file descriptors. ×php-fpm = this row divided by the php-fpm master's "
      "figure from the same run (lower is better).")
    w("")
    g = {}
    for r in mem:
        if len(r) < 7:
            continue
        g[(r[0], r[1], r[2])] = tuple(num(x) or 0 for x in r[3:7])

    def get(phase, server, comps):
        n = rss = pss = fds = 0
        found = False
        for c in comps:
            v = g.get((phase, server, c))
            if v:
                found = True
                n += v[0]; rss += v[1]; pss += v[2]; fds += v[3]
        return (n, rss / 1024.0, pss / 1024.0, fds) if found else None

    fpm = get("idle", "fpm-mem", ["php-fpm master"])
    ngx = get("idle", "nginx-mem", ["nginx master", "nginx worker"])
    fpm_ngx = None
    if fpm and ngx:
        fpm_ngx = tuple(a + b for a, b in zip(fpm, ngx))
    bh_core = get("idle", "bh-mem", ["supervisor", "multiplexer", "fd keeper"])
    bh_all = get("idle", "bh-mem", ["supervisor", "multiplexer", "fd keeper", "view holder", "spare", "processor"])
    nsp = get("idle", "bh-mem", ["spare"])
    nproc = get("idle", "bh-mem", ["processor"])
    fchild = get("idle", "fpm-mem", ["php-fpm pool child"])

    def line(title, v):
        if not v:
            w("| %s | — | | | | | | |" % title)
            return
        w("| %s | %d | %s | %s | %s | %s | %s | %d |" % (
            title, v[0], fmt(v[1], "mib"), ratio(v[1], fpm[1] if fpm else None),
            fmt(v[2], "mib"), ratio(v[2], fpm[2] if fpm else None),
            ratio(v[2], fpm_ngx[2] if fpm_ngx else None), v[3]))

    w("| What | Procs | RSS MiB | ×php-fpm | PSS MiB | ×php-fpm | PSS ×(php-fpm + nginx) | fds |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    line("**bulkhead supervisor + multiplexers + fd keepers**", bh_core)
    line("bulkhead, every process (with %d spare(s)%s)" % (
        nsp[0] if nsp else 0, ", %d processor(s)" % nproc[0] if nproc else ""), bh_all)
    line("**php-fpm master, %s ondemand pools**" % n, fpm)
    line("nginx in front of php-fpm (master + 1 worker)", ngx)
    line("php-fpm master + nginx", fpm_ngx)
    if fchild:
        line("(php-fpm pool children still alive)", fchild)
    w("")
    w("By bulkhead process (idle):")
    w("")
    w("| Process | Count | RSS MiB | PSS MiB | fds |")
    w("|---|---:|---:|---:|---:|")
    for c in ("supervisor", "multiplexer", "fd keeper", "view holder", "spare", "processor"):
        v = get("idle", "bh-mem", [c])
        if v:
            w("| %s | %d | %s | %s | %d |" % (c, v[0], fmt(v[1], "mib"), fmt(v[2], "mib"), v[3]))
    w("")
    bp = get("one", "bh-mem", ["processor"])
    fp = get("one", "fpm-mem", ["php-fpm pool child"])
    w("One idle tenant process, 1 s after one request to tenant e1 (per process: "
      "the total over the processes of that kind divided by their count):")
    w("")
    w("| Process | Count | RSS MiB each | ×php-fpm child | PSS MiB each | ×php-fpm child |")
    w("|---|---:|---:|---:|---:|---:|")
    for title, v in (("bulkhead processor", bp), ("php-fpm pool child", fp)):
        if not v or not v[0]:
            w("| %s | — | | | | |" % title)
            continue
        rss, pss = v[1] / v[0], v[2] / v[0]
        frss = fp[1] / fp[0] if fp and fp[0] else None
        fpss = fp[2] / fp[0] if fp and fp[0] else None
        w("| %s | %d | %s | %s | %s | %s |" % (title, v[0], fmt(rss, "mib"), ratio(rss, frss),
                                                fmt(pss, "mib"), ratio(pss, fpss)))
    w("")


if __name__ == "__main__":
    main(sys.argv[1])
