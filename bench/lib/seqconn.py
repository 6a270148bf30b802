#!/usr/bin/env python3
"""One new connection per request, one at a time: the latency a lone client sees
from connect() to the response's last byte (the server closes: Connection: close).

    seqconn.py PORT HOST PATH SECONDS OUT

Runs for SECONDS and writes to OUT the same figures wrk-parse.awk prints for wrk:
    rps p50_ms p99_ms requests non2xx socket_errors
(p50/p99 nearest rank). A request whose answer is not `HTTP/1.1 200` counts as
non-2xx; a connection refused, reset or silent for 5 s as a socket error.
"""
import math
import socket
import sys
import time


def main():
    port, host, path, secs, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode()
    lat, bad, errs = [], 0, 0
    t_end = time.monotonic() + secs
    t0 = time.monotonic()
    while time.monotonic() < t_end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5)
        start = time.perf_counter()
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(req)
            first = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                if len(first) < 12:
                    first += b[:12]
            lat.append(time.perf_counter() - start)
            if not first.startswith(b"HTTP/1.1 200"):
                bad += 1
        except OSError:
            errs += 1
        finally:
            s.close()
    elapsed = time.monotonic() - t0
    lat.sort()

    def pct(q):
        if not lat:
            return "NA"
        return "%.4f" % (lat[max(0, math.ceil(q / 100.0 * len(lat)) - 1)] * 1000)

    n = len(lat) + errs
    with open(out, "w") as f:
        f.write("%s %s %s %d %d %d\n" % ("%.1f" % (len(lat) / elapsed) if lat else "NA", pct(50), pct(99), n, bad, errs))


if __name__ == "__main__":
    main()
