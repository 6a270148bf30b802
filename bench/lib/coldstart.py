#!/usr/bin/env python3
"""Cold starts: the latency of the first request to a tenant that has no process.

    coldstart.py --target KIND:PORT:ROOT-PID:LABEL[:wait-spare] [--target ...]
                 --uid-base U --count N --gap SECONDS [--prefix e]

KIND is bulkhead (PORT: bulkhead's, ROOT-PID: its supervisor), bhfpm (the same,
bulkhead running php-fpm masters as its environments' backends) or fpm (PORT:
nginx's, ROOT-PID: the php-fpm master). For each tenant PREFIX1 .. PREFIXN in turn,
and for each target (interleaved: the targets' order alternates per tenant):

1. wait (at most 15 s) until the tenant has no process left:
   - bulkhead: `GET /server-status?json` (Host: the tenant's vhost, served by the
     multiplexer itself) says environments[i].processors_alive == 0, and no child of
     the supervisor (ROOT-PID) runs as the tenant's uid (U + i);
   - bhfpm: the same, except the tenant's php-fpm master, which always runs: it must
     have no child (no pool process);
   - fpm: no child of the php-fpm master (ROOT-PID) is titled "php-fpm: pool PREFIXi";
2. with :wait-spare (bulkhead only): wait (at most 5 s) until a spare processor
   (a child of the supervisor exec'd as `bulkhead processor` still running as root)
   has existed for at least 100 ms;
3. sleep GAP;
4. time one request on a new connection (connect, `GET / HTTP/1.1`, `Connection:
   close`, read to EOF): the cold start; the body must be "PREFIXi\\n";
5. then time a second request the same way: the warm figure, for scale.

Prints one TSV line per start on stdout:
    label tenant cold_ms warm_ms spares_waiting error
(ms as floats, NA when not measured; spares_waiting = spare processors alive
just before step 4, bulkhead only). For each bulkhead target, its own cold-start
counters (sums of environments[].cold_starts / cold_start_us) before and after are
printed on stderr as `counters LABEL BEFORE_N BEFORE_US AFTER_N AFTER_US`.
"""
import argparse
import json
import os
import socket
import sys
import time


def http(port, host, path, timeout=10.0):
    """-> (status, body, seconds) of one request on a new connection."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    t1 = time.perf_counter()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body, t1 - t0


def dechunk(b):
    out = b""
    while b:
        line, _, rest = b.partition(b"\r\n")
        try:
            n = int(line.split(b";")[0], 16)
        except ValueError:
            return out
        if n == 0:
            break
        out += rest[:n]
        b = rest[n + 2:]
    return out


def children(ppid):
    """[(pid, uid, argv)] of ppid's children."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read()
            if int(st.rsplit(")", 1)[1].split()[1]) != ppid:
                continue
            with open("/proc/%s/status" % e) as f:
                uid = next(int(l.split()[1]) for l in f if l.startswith("Uid:"))
            with open("/proc/%s/cmdline" % e, "rb") as f:
                argv = f.read().split(b"\0")
            out.append((int(e), uid, [a.decode(errors="replace") for a in argv if a]))
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return out


def age_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return up - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def spares(sup):
    """bulkhead's spare processors: exec'd as `bulkhead processor`, still root."""
    return [p for p, uid, argv in children(sup) if uid == 0 and len(argv) > 1 and argv[1] == "processor"]


def status_json(port, host):
    code, body, _ = http(port, host, "/server-status?json", timeout=5)
    if code != 200:
        raise RuntimeError("server-status answered %d" % code)
    return json.loads(body)


def counters(port, host):
    try:
        d = status_json(port, host)
        return (sum(e.get("cold_starts", 0) for e in d["environments"]),
                sum(e.get("cold_start_us", 0) for e in d["environments"]))
    except Exception:
        return ("NA", "NA")


class Target:
    """One server measured in a pass: KIND:PORT:ROOT-PID:LABEL[:wait-spare]."""

    def __init__(self, spec):
        f = spec.split(":")
        if len(f) not in (4, 5) or f[0] not in ("bulkhead", "bhfpm", "fpm") or (len(f) == 5 and f[4] != "wait-spare"):
            raise SystemExit("coldstart.py: bad --target %r" % spec)
        self.kind, self.port, self.root_pid, self.label = f[0], int(f[1]), int(f[2]), f[3]
        self.wait_spare = len(f) == 5


def is_cold(t, name, uid):
    if t.kind in ("bulkhead", "bhfpm"):
        for p, u, argv in children(t.root_pid):
            if u != uid:
                continue
            master = t.kind == "bhfpm" and argv and argv[0].startswith("php-fpm: master")
            if not master or children(p):
                return False
        d = status_json(t.port, name + ".test")
        env = next((e for e in d["environments"] if e["name"] == name), None)
        if env is None:
            raise RuntimeError("environment %s not in server-status" % name)
        return env["processors_alive"] == 0
    title = "php-fpm: pool %s" % name
    for _, _, argv in children(t.root_pid):
        if argv and (argv[0].strip() == title or argv[0].split() == title.split()):
            return False
    return True


def start(t, name, uid, gap):
    """One cold start of tenant NAME on target T -> the TSV line."""
    host = name + ".test"
    cold_ms = warm_ms = nspare = "NA"
    err = ""
    try:
        deadline = time.monotonic() + 15
        while not is_cold(t, name, uid):
            if time.monotonic() > deadline:
                raise RuntimeError("still had a process 15 s after its last request")
            time.sleep(0.05)
        if t.kind in ("bulkhead", "bhfpm") and t.wait_spare:
            deadline = time.monotonic() + 5
            while not any(age_s(p) >= 0.1 for p in spares(t.root_pid)):
                if time.monotonic() > deadline:
                    raise RuntimeError("no spare processor within 5 s")
                time.sleep(0.02)
        time.sleep(gap)
        if t.kind in ("bulkhead", "bhfpm"):
            nspare = str(len(spares(t.root_pid)))
        code, body, dt = http(t.port, host, "/")
        if code != 200 or body != (name + "\n").encode():
            err = "cold: status %d, body %r" % (code, body[:60])
        else:
            cold_ms = "%.3f" % (dt * 1000)
            code, body, dt = http(t.port, host, "/")
            if code != 200 or body != (name + "\n").encode():
                err = "warm: status %d, body %r" % (code, body[:60])
            else:
                warm_ms = "%.3f" % (dt * 1000)
    except Exception as e:  # recorded, and the run goes on
        err = "%s: %s" % (type(e).__name__, e)
    return "\t".join((t.label, name, cold_ms, warm_ms, nspare, err.replace("\t", " ")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True,
                    help="KIND:PORT:ROOT-PID:LABEL[:wait-spare], KIND bulkhead or fpm; repeatable")
    ap.add_argument("--uid-base", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--gap", type=float, default=0.05)
    ap.add_argument("--prefix", default="e")
    a = ap.parse_args()
    targets = [Target(x) for x in a.target]

    host1 = "%s%d.test" % (a.prefix, a.first)
    before = {t.label: counters(t.port, host1) for t in targets if t.kind in ("bulkhead", "bhfpm")}
    for i in range(a.first, a.first + a.count):
        # Interleaved, the order alternating per tenant, so that drift in the
        # machine's load hits every target alike.
        order = targets if i % 2 else targets[::-1]
        for t in order:
            print(start(t, "%s%d" % (a.prefix, i), a.uid_base + i, a.gap), flush=True)
    for t in targets:
        if t.kind in ("bulkhead", "bhfpm"):
            print("counters %s %s %s %s %s" % ((t.label,) + before[t.label] + counters(t.port, host1)),
                  file=sys.stderr)


if __name__ == "__main__":
    main()
