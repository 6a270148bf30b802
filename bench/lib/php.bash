# bench/lib/php.bash — the PHP part of bench/run (sourced by it; uses its helpers).
#
# `--only php`: tenant a (uid 2001) with a PHP `whoami` page (`<?php echo
# posix_geteuid();`) and Debian's DokuWiki (start page), served by
#   bh-php      bulkhead, php-cgi backends with the shipped defaults (min_backends 0,
#               max_backends 8, max_requests 10000, idle_timeout 60);
#   bh-fpm      bulkhead, manager = "php-fpm" with the same keys (one php-fpm master,
#               pm = ondemand, pm.max_children 8, pm.max_requests 10000, idle 60 s);
#   nginx-php   nginx (1 worker) + php-fpm, one pool for uid 2001: pm = ondemand,
#               pm.max_children = 8, pm.max_requests = 10000, process_idle_timeout 60s
#               (the same shape as bulkhead's defaults);
#   apache-php  Apache prefork + mpm-itk (AssignUserID #2001) + mod_php;
# the same php8.2, the same extra ini (PHP_INI_DIR: opcache.enable=1 set explicitly,
# sessions in the work dir) for the three; keep-alive and a new connection per
# request; p50/p99 from wrk and the servers' CPU time per request.
# `--only php-cold` is run_cold php-cold (bench/run): the first PHP request to a
# scaled-to-zero environment, beside php-fpm ondemand's.

PHP_INI_DIR=""     # the extra ini directory every PHP server scans (php_setup)
PHP_SCENARIOS=(php-ka php-close wiki-ka wiki-close)
PHP_SERVERS=(bh-php bh-fpm nginx-php apache-php)

# php_setup: the ini every PHP server adds to Debian's (PHP_INI_SCAN_DIR=:DIR).
php_setup() {
    [[ -n $PHP_INI_DIR ]] && return 0
    PHP_INI_DIR=$WORK/php-ini
    mkdir -p "$PHP_INI_DIR" "$WORK/php-sessions"
    chmod 0755 "$PHP_INI_DIR"; chmod 1733 "$WORK/php-sessions"
    cat >"$PHP_INI_DIR/90-bench.ini" <<EOF
; bench/run: the same for php-cgi (bulkhead), php-fpm and mod_php.
opcache.enable = 1
opcache.enable_cli = 0
session.save_path = "$WORK/php-sessions"
EOF
    chmod 0644 "$PHP_INI_DIR/90-bench.ini"
}

# make_wiki DIR UID: Debian's DokuWiki as one tree (the recipe of tests/util/php.rs):
# links resolved, Debian's preload.php (config in /etc) and install.php removed, the
# config in DIR/conf, the data in DIR/data, a start page; owned by UID, data 0700.
make_wiki() {
    local d=$1 uid=$2 f
    cp -rL /usr/share/dokuwiki "$d" || return 1
    rm -f "$d/inc/preload.php" "$d/install.php"
    mkdir -p "$d/conf"
    for f in /etc/dokuwiki/* /etc/dokuwiki/.htaccess; do
        case ${f##*/} in apache.conf|lighttpd.conf|local.php|acl.auth.php|users.auth.php) continue ;; esac
        [[ -f $f ]] && cp -L "$f" "$d/conf/"
    done
    cp -rL /var/lib/dokuwiki/data "$d/data" || return 1
    cat >"$d/conf/local.php" <<'EOF'
<?php
$conf['title'] = 'bulkhead bench wiki';
$conf['savedir'] = './data';
$conf['useacl'] = 0;
EOF
    cat >"$d/data/pages/start.txt" <<'EOF'
====== Benchmark start page ======

This page is served by DokuWiki for **bench/run**. It has a [[wiki:syntax|link]],
a list and some //formatting//:

  * one
  * two
  * three

<code>
a code block
</code>
EOF
    chown -R "$uid:$uid" "$d"
    chmod 0700 "$d/data" "$d/conf"
}

make_php_world() {
    local d=$WORK/php/www/a
    # b: only so that the Apache config shared with the throughput part finds its root.
    mkdir -p "$d" "$WORK/php/www/b"
    chmod 0755 "$WORK/php" "$WORK/php/www" "$d" "$WORK/php/www/b"
    printf '<?php echo posix_geteuid();\n' >"$d/whoami.php"
    make_wiki "$d/wiki" 2001 || return 1
    chown 2001:2001 "$d" "$d/whoami.php"; chmod 0644 "$d/whoami.php"
}

conf_bulkhead_php() {  # conf_bulkhead_php PORT METRICS-PORT [NAME MANAGER-LINES]
    local port=$1 mport=$2 d=$WORK/${3:-bh-php} manager=${4:-'command = ["/usr/bin/php-cgi"]'}
    mkdir -p "$d/run"
    cat >"$d/bulkhead.toml" <<EOF
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:$port"]
runtime_dir = "$d/run"

# The shipped defaults (2 multiplexers; processors min 1 / max 10, max_requests_per_child
# 10000; backends min 0 / max 8, max_requests 10000, idle_timeout 60,
# requests_per_connection 100); only the bench's ini added to Debian's.
[environments.a]
user = 2001
group = 2001

[environments.a.fastcgi]
$manager
extensions = [".php"]
env = { PHP_INI_SCAN_DIR = ":$PHP_INI_DIR" }

[status]
metrics_listen = "127.0.0.1:$mport"

[[vhosts]]
server_name = "a.test"
environment = "a"
document_root = "$WORK/php/www/a"
EOF
    chmod -R a+rX "$d"
}

conf_nginx_php() {
    local port=$1 d=$WORK/nginx-php www=$WORK/php/www/a
    mkdir -p "$d/tmp"
    cat >"$d/php-fpm.conf" <<EOF
[global]
pid = $d/php-fpm.pid
error_log = $WORK/fpm-php.error.log
daemonize = no

[a]
user = 2001
group = 2001
listen = $d/a.sock
listen.mode = 0666
pm = ondemand
pm.max_children = 8
pm.max_requests = 10000
pm.process_idle_timeout = 60s
EOF
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
user nobody nogroup;
pid $d/nginx.pid;
error_log $WORK/nginx-php.error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 5;
    keepalive_requests 1000000;
    types { text/html html; }
    default_type application/octet-stream;
    client_body_temp_path $d/tmp/body;
    fastcgi_temp_path $d/tmp/fastcgi;
    proxy_temp_path $d/tmp/proxy;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        server_name a.test;
        root $www;
        location ~ \.php\$ {
            fastcgi_pass unix:$d/a.sock;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
            fastcgi_param REQUEST_METHOD \$request_method;
            fastcgi_param QUERY_STRING \$query_string;
            fastcgi_param REQUEST_URI \$request_uri;
            fastcgi_param DOCUMENT_URI \$document_uri;
            fastcgi_param DOCUMENT_ROOT \$document_root;
            fastcgi_param CONTENT_TYPE \$content_type;
            fastcgi_param CONTENT_LENGTH \$content_length;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param SERVER_NAME \$server_name;
            fastcgi_param SERVER_PORT \$server_port;
            fastcgi_param REMOTE_ADDR \$remote_addr;
            fastcgi_param REMOTE_PORT \$remote_port;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param REDIRECT_STATUS 200;
        }
    }
}
EOF
}

conf_apache_php() {
    local d=$WORK/apache-php
    # The throughput part's config, for tenant a only, with mod_php.
    conf_apache "$1" apache-php "$WORK/php/www" "
LoadModule php_module $APACHE_MODS/libphp8.2.so
<FilesMatch \"\\.php\$\">
    SetHandler application/x-httpd-php
</FilesMatch>"
    PIDFILE[apache-php]=$d/apache.pid
}

# tree_cpu ROOT...: utime+stime+cutime+cstime ticks over the process trees: the
# children a server has reaped (php-cgi recycled, mpm-itk children exiting after their
# connection) are counted in their parent's cutime/cstime.
tree_cpu() {
    local root e line rest t=0
    for root in "$@"; do
        for e in $(tree "$root"); do
            { read -r line <"/proc/${e%%:*}/stat"; } 2>/dev/null || continue
            rest=${line##*) }
            # shellcheck disable=SC2086
            set -- $rest
            t=$((t + ${12} + ${13} + ${14} + ${15}))
        done
    done
    echo "$t"
}

php_roots() {  # the process trees a PHP server is made of
    case $1 in
        nginx-php) echo "${PID[nginx-php]} ${PID[fpm-php]}" ;;
        *) echo "${PID[$1]}" ;;
    esac
}

run_wrk_php() {  # run_wrk_php SERVER SCENARIO SECONDS OUTFILE
    local s=$1 scen=$2 dur=$3 out=$4 base="http://127.0.0.1:${PORT[$1]}" path
    local args=(-t1 -c"$CONNS" -d"${dur}s" --latency --timeout 10s -H 'Host: a.test')
    case $scen in php-*) path=/whoami.php ;; wiki-*) path=/wiki/doku.php ;; esac
    [[ $scen == *-close ]] && args+=(-H 'Connection: close')
    timeout -k 3 $((dur + 20)) "${PIN_CLI[@]}" wrk "${args[@]}" "$base$path" >"$out" 2>&1
}

# measure_php SERVER SCENARIO RUN: one wrk run -> php-runs.tsv
#   server scenario run rps p50 p99 requests non2xx sockerr cpu_us_per_req rss_kb pss_kb nprocs wrk_exit
measure_php() {
    local s=$1 scen=$2 run=$3 out=$WORK/wrk/$1.$2.$3.txt wpid rc mem parsed c0 c1 cpu r roots
    roots=$(php_roots "$s")
    # shellcheck disable=SC2086
    c0=$(tree_cpu $roots)
    run_wrk_php "$s" "$scen" "$DURATION" "$out" &
    wpid=$!
    sleep "$(awk -v d="$DURATION" 'BEGIN{print d/2}')"
    local rss=0 pss=0 n=0 a b c
    for r in $roots; do read -r a b c <<<"$(tree_mem "$r")"; rss=$((rss + a)); pss=$((pss + b)); n=$((n + c)); done
    mem="$rss $pss $n"
    wait "$wpid"; rc=$?
    # shellcheck disable=SC2086
    c1=$(tree_cpu $roots)
    parsed=$(awk -f "$LIB/wrk-parse.awk" "$out")
    read -r rps p50 p99 total n2xx errs <<<"$parsed"
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v n="$total" 'BEGIN{ if (n + 0 > 0) printf "%.1f", (b - a) / hz * 1e6 / n; else print "NA" }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$scen" "$run" "${parsed// /$'\t'}" "$cpu" "${mem// /$'\t'}" "$rc" >>"$WORK/php-runs.tsv"
    log "$(printf '%-10s %-10s run %s: %8s req/s  p50 %6s ms  p99 %7s ms  CPU %7s us/req  non-2xx %s  sock-err %s' \
        "$s" "$scen" "$run" "$rps" "$p50" "$p99" "$cpu" "$n2xx" "$errs")"
}

php_preflight() {  # php_preflight SERVER: whoami answers 2001, the wiki its start page
    local s=$1 port=${PORT[$1]} code
    code=$(http_get "$port" a.test /whoami.php "$WORK/$s.check")
    [[ $code == 200 && $(cat "$WORK/$s.check") == 2001 ]] ||
        { fail "$s" "GET a.test/whoami.php answered '$code' '$(head -c 80 "$WORK/$s.check")' (expected 200 '2001')"; return 1; }
    code=$(http_get "$port" a.test /wiki/doku.php "$WORK/$s.check")
    [[ $code == 200 ]] && grep -q 'Benchmark start page' "$WORK/$s.check" ||
        { fail "$s" "GET a.test/wiki/doku.php answered '$code' without the start page"; return 1; }
}

run_php() {
    local s scen r n k port mport mport2 order=()
    log "php: whoami.php and DokuWiki's start page, keep-alive and a new connection per request"
    php_setup
    if [[ ! -e /usr/share/dokuwiki/doku.php || ! -x /usr/bin/php-cgi ]]; then
        part_fail php "php-cgi or dokuwiki is not installed"; return 0
    fi
    make_php_world || { part_fail php "copying DokuWiki failed"; return 0; }
    : >"$WORK/php-runs.tsv"
    for s in "${PHP_SERVERS[@]}"; do STATUS[$s]=ok; REASON[$s]=""; done
    PORT[bh-php]=$(free_port) && PORT[bh-fpm]=$(free_port) && PORT[nginx-php]=$(free_port) &&
        PORT[apache-php]=$(free_port) && mport=$(free_port) && mport2=$(free_port) ||
        { part_fail php "no free port found"; return 0; }
    if [[ -n $BH_BUILD_ERR ]]; then
        fail bh-php "$BH_BUILD_ERR"
    else
        conf_bulkhead_php "${PORT[bh-php]}" "$mport"
        RUST_LOG=${RUST_LOG:-info} start_server bh-php "$BULKHEAD_BIN" serve --config "$WORK/bh-php/bulkhead.toml"
        wait_ready bh-php && php_preflight bh-php
    fi
    if [[ -n $BH_BUILD_ERR ]]; then
        fail bh-fpm "$BH_BUILD_ERR"
    elif [[ -n $FPM_BIN ]]; then
        conf_bulkhead_php "${PORT[bh-fpm]}" "$mport2" bh-fpm "manager = \"php-fpm\"
command = [\"$FPM_BIN\"]"
        RUST_LOG=${RUST_LOG:-info} start_server bh-fpm "$BULKHEAD_BIN" serve --config "$WORK/bh-fpm/bulkhead.toml"
        wait_ready bh-fpm && php_preflight bh-fpm
    else
        fail bh-fpm "php-fpm is not installed"
    fi
    if [[ -n $FPM_BIN ]] && have nginx; then
        conf_nginx_php "${PORT[nginx-php]}"
        start_server fpm-php env "PHP_INI_SCAN_DIR=:$PHP_INI_DIR" "$FPM_BIN" --nodaemonize \
            --fpm-config "$WORK/nginx-php/php-fpm.conf" --prefix "$WORK/nginx-php"
        STATUS[fpm-php]=ok
        if wait_ready fpm-php; then
            PIDFILE[nginx-php]=$WORK/nginx-php/nginx.pid
            start_server nginx-php nginx -p "$WORK/nginx-php/" -c "$WORK/nginx-php/nginx.conf" -e "$WORK/nginx-php.error.log"
            wait_ready nginx-php && php_preflight nginx-php
        else
            fail nginx-php "php-fpm did not start"
        fi
    else
        fail nginx-php "nginx or php-fpm is not installed"
    fi
    if have apache2 && [[ -e $APACHE_MODS/mpm_itk.so && -e $APACHE_MODS/libphp8.2.so ]]; then
        conf_apache_php "${PORT[apache-php]}"
        start_server apache-php env "PHP_INI_SCAN_DIR=:$PHP_INI_DIR" apache2 -f "$WORK/apache-php/apache2.conf" -DFOREGROUND
        wait_ready apache-php && php_preflight apache-php
    else
        fail apache-php "apache2, libapache2-mpm-itk or libapache2-mod-php8.2 is not installed"
    fi
    for s in "${PHP_SERVERS[@]}"; do
        if [[ ${STATUS[$s]} == ok ]]; then order+=("$s"); log "$s: ready (pid ${PID[$s]}), whoami and the wiki answered"
        else part_fail php "$s: ${REASON[$s]}"; fi
    done
    mkdir -p "$WORK/wrk"
    for scen in "${PHP_SCENARIOS[@]}"; do
        for s in "${order[@]}"; do
            alive "$s" || continue
            log "$s $scen: warm-up ${WARMUP}s"
            run_wrk_php "$s" "$scen" "$WARMUP" "$WORK/wrk/$s.$scen.warmup.txt"
        done
        for ((r = 1; r <= RUNS; r++)); do
            n=${#order[@]}
            for ((k = 0; k < n; k++)); do
                s=${order[$(((k + r - 1) % n))]}
                alive "$s" || continue
                measure_php "$s" "$scen" "$r"
                sleep 0.5
            done
        done
    done
    bulkhead_log_check bh-php php
    printf 'php_bhfpm\t%s\n' "the same bulkhead with manager = \"php-fpm\" ($FPM_BIN): one master, pm = ondemand, pm.max_children 8, pm.max_requests 10000, pm.process_idle_timeout 60s" >>"$WORK/meta-php.tsv"
    printf 'php_bulkhead\t%s\n' "${BULKHEAD_PROFILE:-n/a}; the shipped defaults: 2 multiplexers, processors min 1 / max 10 with max_requests_per_child 10000; php-cgi backends min_backends 0, max_backends 8, max_requests 10000, idle_timeout 60, requests_per_connection 100" >>"$WORK/meta-php.tsv"
    printf 'php_fpm\t%s behind %s (1 worker); one pool for uid 2001: pm = ondemand, pm.max_children = 8, pm.max_requests = 10000, pm.process_idle_timeout = 60s\n' \
        "$("$FPM_BIN" -v 2>/dev/null | head -1 | awk '{print $1, $2}')" "$(nginx -v 2>&1 | sed 's/^nginx version: //')" >>"$WORK/meta-php.tsv"
    printf 'php_apache\t%s; prefork + mpm-itk (AssignUserID #2001 #2001) + mod_php 8.2; StartServers = connections + 10, MaxConnectionsPerChild 0\n' \
        "$(apache2 -v 2>/dev/null | sed -n 's/^Server version: //p')" >>"$WORK/meta-php.tsv"
    printf 'php_ini\tDebian'"'"'s php.ini of each SAPI (cgi, fpm, apache2) plus %s: %s\n' "$PHP_INI_DIR/90-bench.ini" \
        "$(grep -v '^;' "$PHP_INI_DIR/90-bench.ini" | tr '\n' ';' | sed 's/;$//; s/;/; /g')" >>"$WORK/meta-php.tsv"
    printf 'php_opcache\tphp-cgi -m: %s; opcache.enable for cgi: %s, fpm: %s\n' \
        "$(/usr/bin/php-cgi -m 2>/dev/null | grep -q 'Zend OPcache' && echo 'Zend OPcache listed' || echo 'no Zend OPcache')" \
        "$(printf '<?php echo ini_get("opcache.enable");' >"$WORK/php-ini.check.php"; PHP_INI_SCAN_DIR=:$PHP_INI_DIR /usr/bin/php-cgi -q "$WORK/php-ini.check.php" 2>/dev/null)" \
        "$(PHP_INI_SCAN_DIR=:$PHP_INI_DIR "$FPM_BIN" -i 2>/dev/null | sed -n 's/^opcache.enable => \([^ ]*\).*/\1/p' | head -1)" >>"$WORK/meta-php.tsv"
    for s in bh-php bh-fpm nginx-php fpm-php apache-php; do [[ ${STATUS[$s]:-} == ok ]] && stop_server "$s"; done
    return 0
}
