#!/usr/bin/env python3
"""Turn the raw figures bench/run collected in WORKDIR into bench/RESULTS.md.

WORKDIR/meta.tsv    key<TAB>value
WORKDIR/status.tsv  server<TAB>ok|failed<TAB>reason
WORKDIR/idle.tsv    server rss_kb pss_kb nprocs cpu_pct
WORKDIR/runs.tsv    server scenario run rps p50_ms p99_ms requests non2xx sockerr
                    rss_kb pss_kb nprocs wrk_exit        (NA = not measured)
WORKDIR/<server>.tail  last lines of a failed server's log (optional)
"""
import os
import statistics
import sys

SCENARIOS = [  # (key, short label for the table, legend)
    ("ka-1k", "1K keep-alive", "GET a.test/index.html (1 KiB) over keep-alive connections"),
    ("close-1k", "1K new conn", "the same with `Connection: close`: a new connection per request"),
    ("ka-100k", "100K keep-alive", "GET a.test/big.bin (100 KiB) over keep-alive connections"),
    ("mixed-conn", "1K 2 tenants", "both tenants at once: half the connections (one wrk thread) "
     "ask a.test, half b.test, keep-alive"),
    ("mixed-req", "1K switch/req", "the Host header alternates a.test / b.test on every request "
     "of each keep-alive connection (a tenant switch inside a connection; mpm-itk closes the "
     "connection there, which wrk counts as socket errors and reconnects)"),
]
NAMES = {
    "bulkhead": "bulkhead",
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
    w("- Keep-alive: %s" % md.get("keepalive", "?"))
    for s in servers:
        if s in md:
            w("- %s: %s" % (NAMES.get(s, s), md[s]))
    if "wrk" in md:
        w("- Client: %s (pinned apart from the servers; see Method)" % md["wrk"])
    w("")
    w("Cells are the median of the runs with the spread (min–max) in brackets; "
      "×nginx is this server's median divided by nginx's median from the same "
      "invocation (for req/s higher is better, for latency and memory lower is "
      "better). RSS and PSS are summed over every process of the server "
      "(its whole process tree, from /proc/PID/smaps_rollup), sampled halfway "
      "through each run; RSS counts shared pages once per process, PSS splits them.")
    w("")

    base_ok = BASE in state and state[BASE][0] == "ok"

    def medians(s, scen):
        rs = runs.get((s, scen), [])
        ok = [r for r in rs if num(r[3]) is not None]
        col = lambda i, k=1.0: [num(r[i]) * k if num(r[i]) is not None else None for r in ok]
        return rs, ok, col

    w("## Throughput, latency and memory under load")
    w("")
    for _, title, legend in SCENARIOS:
        w("- **%s**: %s" % (title, legend))
    w("")
    w("| Scenario | Server | Req/s | ×nginx | p50 ms | ×nginx | p99 ms | ×nginx "
      "| RSS MiB | ×nginx | PSS MiB | ×nginx | Procs | Errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for scen, title, _ in SCENARIOS:
        base = {}
        if base_ok:
            _, ok, col = medians(BASE, scen)
            for key, i, k in (("rps", 3, 1), ("p50", 4, 1), ("p99", 5, 1),
                              ("rss", 9, 1 / 1024), ("pss", 10, 1 / 1024)):
                vals = [v for v in col(i, k) if v is not None]
                base[key] = statistics.median(vals) if vals else None
        for s in servers:
            rs, ok, col = medians(s, scen)
            name = NAMES.get(s, s)
            if not ok:
                why = "FAILED" if state[s][0] != "ok" else "no valid run"
                w("| %s | %s | %s | | | | | | | | | | | see below |" % (title, name, why))
                continue
            line = [title, name]
            for key, i, k, kind in (("rps", 3, 1, "rps"), ("p50", 4, 1, "ms"), ("p99", 5, 1, "ms"),
                                    ("rss", 9, 1 / 1024, "mib"), ("pss", 10, 1 / 1024, "mib")):
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
        w("Benchmark phase: %s s (excluding install and build)." % md["bench_secs"])
        w("")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
