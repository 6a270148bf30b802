#!/usr/bin/env python3
"""Ad hoc, as root: the cold start of a scaled-to-zero environment (a static file,
then PHP through php-cgi) and the cost of a CGI request on a warm processor, with
private_view off and then on, one environment (uid 2001). Usage:

    N_COLD=20 python3 bench/lib/viewcost.py target/release/bulkhead /tmp/viewcost
"""
import os, socket, subprocess, sys, time, statistics, re, shutil

BIN, OUT = sys.argv[1], sys.argv[2]
UID = 2001
PHP = "/usr/bin/php-cgi"

def world(view):
    d = os.path.join(OUT, "view-on" if view else "view-off")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d + "/site"); os.makedirs(d + "/run")
    open(d + "/site/index.html", "w").write("hi\n")
    open(d + "/site/t.php", "w").write("<?php echo 'php';")
    open(d + "/site/t.cgi", "w").write("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok'\n")
    os.chmod(d + "/site/t.cgi", 0o755)
    for root, dirs, files in os.walk(d + "/site"):
        for n in dirs + files:
            os.chown(os.path.join(root, n), UID, UID)
    os.chown(d + "/site", UID, UID)
    os.chmod(d, 0o755)
    cfg = f"""
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:0"]
min_multiplexers = 1
runtime_dir = "{d}/run"
private_view = {'true' if view else 'false'}
[environments.alice]
user = {UID}
group = {UID}
min_processors = 0
max_processors = 2
idle_timeout = 1
[environments.alice.fastcgi]
command = ["{PHP}"]
extensions = [".php"]
min_backends = 0
idle_timeout = 1
[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{d}/site"
cgi = [".cgi"]
[status]
metrics_listen = "off"
"""
    open(d + "/b.toml", "w").write(cfg)
    return d

def start(d):
    p = subprocess.Popen([BIN, "serve", "--config", d + "/b.toml"], stderr=subprocess.PIPE, text=True,
                         env={"RUST_LOG": "info", "PATH": os.environ["PATH"]})
    port = None
    for line in p.stderr:
        m = re.search(r"ready: listening on .*?127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1)); break
    import threading
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, port

def req(port, path):
    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    s.close()
    dt = time.perf_counter() - t
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return dt

def tenant_procs(sup):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            st = open(f"/proc/{pid}/status").read()
        except OSError: continue
        uid = int(re.search(r"Uid:\s+(\d+)", st).group(1))
        ppid = int(re.search(r"PPid:\s+(\d+)", st).group(1))
        if uid == UID and ppid == sup: out.append(pid)
    return out

def wait_zero(sup, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if not tenant_procs(sup): return True
        time.sleep(0.05)
    return False

def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]

def ms(v): return f"p50 {statistics.median(v)*1e3:.2f} ms, p99 {pct(v,0.99)*1e3:.2f} ms, n={len(v)}"

res = {}
N_COLD = int(os.environ.get("N_COLD", "15"))
for view in (False, True):
    d = world(view)
    p, port = start(d)
    try:
        req(port, "/index.html"); req(port, "/t.php")
        cold_static, cold_php, cgi = [], [], []
        for i in range(N_COLD):
            assert wait_zero(p.pid), "tenant never reached zero"
            time.sleep(0.3)  # spares refilled (view off)
            cold_static.append(req(port, "/index.html"))
            assert wait_zero(p.pid), "tenant never reached zero"
            time.sleep(0.3)
            cold_php.append(req(port, "/t.php"))
        req(port, "/t.cgi")
        for i in range(300):
            cgi.append(req(port, "/t.cgi"))
        res[view] = (cold_static, cold_php, cgi)
    finally:
        p.terminate(); p.wait(20)
for view in (False, True):
    cs, cp, cg = res[view]
    print(f"private_view={'on ' if view else 'off'}: cold static {ms(cs)}; cold PHP {ms(cp)}; CGI request (warm processor) {ms(cg)}")
