# Parse `wrk --latency` output into one line:
#   rps p50_ms p99_ms requests non2xx socket_errors
# Missing figures are printed as "NA" (the caller treats a run without
# Requests/sec as failed).
function to_ms(s,   v) {
    v = s + 0
    if (s ~ /us$/) return v / 1000
    if (s ~ /ms$/) return v
    if (s ~ /m$/)  return v * 60000
    if (s ~ /h$/)  return v * 3600000
    if (s ~ /s$/)  return v * 1000
    return v
}
BEGIN { rps = "NA"; p50 = "NA"; p99 = "NA"; total = "NA"; n2xx = 0; errs = 0; dist = 0 }
/Latency Distribution/ { dist = 1; next }
dist && $1 == "50%" { p50 = to_ms($2) }
dist && $1 == "99%" { p99 = to_ms($2); dist = 0 }
/ requests in / { total = $1 }
/Non-2xx or 3xx responses:/ { n2xx = $NF + 0 }
/Socket errors:/ {
    # Socket errors: connect 0, read 0, write 0, timeout 0
    for (i = 4; i <= NF; i += 2) { v = $i; gsub(/,/, "", v); errs += v + 0 }
}
/Requests\/sec:/ { rps = $2 + 0 }
END { printf "%s %s %s %s %d %d\n", rps, p50, p99, total, n2xx, errs }
