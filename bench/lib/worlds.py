#!/usr/bin/env python3
"""Write the many-tenant worlds of the cold-start and memory benchmarks.

    worlds.py DIR --count N --uid-base U --bulkhead-port P --nginx-port Q
              --mux-uid M --idle-timeout S --fpm-idle-timeout S [--prefix e]

creates, for tenants PREFIX1 .. PREFIXN (tenant i runs as uid/gid U+i):

    DIR/www/PREFIXi/index.html    "PREFIXi\\n", owned by U+i (what bulkhead serves)
    DIR/www/PREFIXi/index.php     echoes the same line (what php-fpm runs)
    DIR/bulkhead.toml             one environment per tenant, min_processors = 0,
                                  one vhost PREFIXi.test each
    DIR/php-fpm.conf              one `pm = ondemand` pool per tenant, a unix socket each
    DIR/nginx.conf                one server block per tenant: server_name
                                  PREFIXi.test -> that tenant's pool

plus the warm-up tenant PREFIX0 (uid U), which the measurements skip. Directories
are 0755 so every uid can traverse them.

With --php (the PHP cold start, `bench/run --only php-cold`), bulkhead serves the
same index.php as php-fpm: every environment gets php-cgi backends
(`[environments.PREFIXi.fastcgi]`, its defaults but idle_timeout = the bulkhead
--idle-timeout, so a backend is gone as soon as the processor is) and every vhost
`index = ["index.php"]`, so `GET /` runs index.php; --php-ini-dir DIR is added to
php-cgi's ini scan path (`env = { PHP_INI_SCAN_DIR = ":DIR" }`, as bench/run gives
php-fpm), so both run PHP with the same settings. With --php-fpm BIN too, bulkhead's
backends are php-fpm (`manager = "php-fpm"`, `command = [BIN]`: one master per
environment, pm = ondemand, pm.process_idle_timeout = the bulkhead --idle-timeout).

Private views are bulkhead's default (as root); BULKHEAD_PRIVATE_VIEW=0 in the
environment adds `private_view = false` to [server] (=1 adds `private_view = true`).
"""
import argparse
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--uid-base", type=int, required=True)
    ap.add_argument("--bulkhead-port", type=int, required=True)
    ap.add_argument("--nginx-port", type=int, required=True)
    ap.add_argument("--mux-uid", type=int, default=2000)
    ap.add_argument("--idle-timeout", type=int, required=True, help="bulkhead idle_timeout, s")
    ap.add_argument("--fpm-idle-timeout", required=True, help="pm.process_idle_timeout, e.g. 1s")
    ap.add_argument("--prefix", default="e")
    ap.add_argument("--max-requests", default="",
                    help="bulkhead max_requests_per_child ('' = its default)")
    ap.add_argument("--php", action="store_true",
                    help="bulkhead runs index.php through php-cgi backends too")
    ap.add_argument("--php-ini-dir", default="",
                    help="with --php: a directory added to php-cgi's PHP_INI_SCAN_DIR")
    ap.add_argument("--php-fpm", default="",
                    help="with --php: bulkhead's backends are this php-fpm (manager = \"php-fpm\")")
    a = ap.parse_args()

    d = os.path.abspath(a.dir)
    www = os.path.join(d, "www")
    sock = os.path.join(d, "sock")
    for p in (d, www, sock):
        os.makedirs(p, exist_ok=True)
        os.chmod(p, 0o755)
    tenants = [(i, "%s%d" % (a.prefix, i), a.uid_base + i) for i in range(0, a.count + 1)]

    for _, name, uid in tenants:
        root = os.path.join(www, name)
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(name + "\n")
        with open(os.path.join(root, "index.php"), "w") as f:
            f.write('<?php echo "%s\\n";\n' % name)
        for p in (root, os.path.join(root, "index.html"), os.path.join(root, "index.php")):
            os.chown(p, uid, uid)
        os.chmod(root, 0o755)
        os.chmod(os.path.join(root, "index.html"), 0o644)
        os.chmod(os.path.join(root, "index.php"), 0o644)

    # --- bulkhead
    b = []
    w = b.append
    w("[server]")
    w("user = %d" % a.mux_uid)
    w("group = %d" % a.mux_uid)
    w('listen = ["127.0.0.1:%d"]' % a.bulkhead_port)
    w("keep_alive_timeout = 5")
    w("# Scale to zero: every environment starts with no processor; the first request")
    w("# gets one (a pre-exec'd spare when one is waiting), idle ones stop after idle_timeout.")
    w("min_processors = 0")
    w("idle_timeout = %d" % a.idle_timeout)
    # Private views (namespaces, Landlock, seccomp) are on by default;
    # BULKHEAD_PRIVATE_VIEW=0 turns them off, to measure what they cost a cold start.
    if os.environ.get("BULKHEAD_PRIVATE_VIEW") == "1":
        w("private_view = true")
    elif os.environ.get("BULKHEAD_PRIVATE_VIEW") == "0":
        w("private_view = false")
    if a.max_requests != "":
        w("max_requests_per_child = %s" % a.max_requests)
    w("")
    w("[status]")
    w('metrics_listen = "off"')
    w("")
    for _, name, uid in tenants:
        w("[environments.%s]" % name)
        w("user = %d" % uid)
        w("group = %d" % uid)
        w("")
        if a.php:
            w("[environments.%s.fastcgi]" % name)
            if a.php_fpm:
                w('manager = "php-fpm"')
                w('command = ["%s"]' % a.php_fpm)
            else:
                w('command = ["/usr/bin/php-cgi"]')
            w('extensions = [".php"]')
            w("idle_timeout = %d" % a.idle_timeout)
            if a.php_ini_dir:
                w('env = { PHP_INI_SCAN_DIR = ":%s" }' % a.php_ini_dir)
            w("")
    for _, name, _ in tenants:
        w("[[vhosts]]")
        w('server_name = "%s.test"' % name)
        w('environment = "%s"' % name)
        w('document_root = "%s"' % os.path.join(www, name))
        if a.php:
            w('index = ["index.php"]')
        w("")
    with open(os.path.join(d, "bulkhead.toml"), "w") as f:
        f.write("\n".join(b))

    # --- php-fpm
    p = []
    w = p.append
    w("[global]")
    w("pid = %s" % os.path.join(d, "php-fpm.pid"))
    w("error_log = %s" % os.path.join(d, "php-fpm.error.log"))
    w("daemonize = no")
    w("")
    for _, name, uid in tenants:
        w("[%s]" % name)
        w("user = %d" % uid)
        w("group = %d" % uid)
        w("listen = %s" % os.path.join(sock, name + ".sock"))
        w("listen.mode = 0666")
        w("pm = ondemand")
        w("pm.max_children = 5")
        w("pm.process_idle_timeout = %s" % a.fpm_idle_timeout)
        w("")
    with open(os.path.join(d, "php-fpm.conf"), "w") as f:
        f.write("\n".join(p))

    # --- nginx in front of php-fpm
    tmp = os.path.join(d, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    n = []
    w = n.append
    w("worker_processes 1;")
    w("daemon off;")
    w("master_process on;")
    w("user nobody nogroup;")
    w("pid %s;" % os.path.join(d, "nginx.pid"))
    w("error_log %s warn;" % os.path.join(d, "nginx.error.log"))
    w("events { worker_connections 1024; }")
    w("http {")
    w("    access_log off;")
    w("    server_tokens off;")
    w("    keepalive_timeout 5;")
    w("    server_names_hash_max_size 8192;")
    w("    server_names_hash_bucket_size 64;")
    w("    client_body_temp_path %s/body;" % tmp)
    w("    proxy_temp_path %s/proxy;" % tmp)
    w("    fastcgi_temp_path %s/fastcgi;" % tmp)
    w("    uwsgi_temp_path %s/uwsgi;" % tmp)
    w("    scgi_temp_path %s/scgi;" % tmp)
    for _, name, _ in tenants:
        root = os.path.join(www, name)
        w("    server {")
        w("        listen 127.0.0.1:%d;" % a.nginx_port)
        w("        server_name %s.test;" % name)
        w("        root %s;" % root)
        w("        location / {")
        w("            fastcgi_pass unix:%s;" % os.path.join(sock, name + ".sock"))
        w("            fastcgi_param SCRIPT_FILENAME $document_root/index.php;")
        w("            fastcgi_param SCRIPT_NAME /index.php;")
        w("            fastcgi_param REQUEST_METHOD $request_method;")
        w("            fastcgi_param QUERY_STRING $query_string;")
        w("            fastcgi_param REQUEST_URI $request_uri;")
        w("            fastcgi_param DOCUMENT_ROOT $document_root;")
        w("            fastcgi_param SERVER_PROTOCOL $server_protocol;")
        w("            fastcgi_param SERVER_NAME $server_name;")
        w("            fastcgi_param REMOTE_ADDR $remote_addr;")
        w("        }")
        w("    }")
    w("}")
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("\n".join(n) + "\n")


if __name__ == "__main__":
    main()
