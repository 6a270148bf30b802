#!/usr/bin/env python3
"""CPU time of a server's process tree by role, for bench/cpu-per-request's php scenario.

    rolecpu.py snap ROOT-PID > FILE        one line per process: pid role ticks cticks
    rolecpu.py diff BEFORE AFTER REQUESTS  µs of CPU per request by role

Roles from /proc/PID/cmdline: `bulkhead ROLE` (supervisor for `serve`, processor,
multiplexer, ...), php-cgi, else the command's name. ticks = utime+stime; cticks =
cutime+cstime (what the process reaped: a php-cgi recycled after max_requests is
counted in the supervisor's, reported as `reaped`). A process in both snapshots
counts its difference; one only in AFTER (started during the run) counts whole.
"""
import os
import sys


ROLES = ("processor", "multiplexer", "fd-keeper", "ns-holder", "fastcgi-backend")


def tree(root):
    kids = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(e))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def role(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    if not argv:
        return "?"
    name = os.path.basename(argv[0])
    # bulkhead under any name (an A/B copy): its role is its first argument.
    if len(argv) > 1 and argv[1] == "serve":
        return "supervisor"
    if len(argv) > 1 and argv[1] in ROLES:
        return argv[1]
    return name.split(":")[0]


def snap(root):
    for p in tree(root):
        try:
            with open("/proc/%d/stat" % p) as f:
                f_ = f.read().rsplit(")", 1)[1].split()
            r = role(p)
        except (OSError, IndexError):
            continue
        # fields after ")": state=0 ... utime=11 stime=12 cutime=13 cstime=14
        print(p, r, int(f_[11]) + int(f_[12]), int(f_[13]) + int(f_[14]))


def load(path):
    d = {}
    with open(path) as f:
        for line in f:
            pid, r, t, c = line.split()
            d[int(pid)] = (r, int(t), int(c))
    return d


def diff(a, b, reqs):
    a, b = load(a), load(b)
    hz = os.sysconf("SC_CLK_TCK")
    by = {}
    reaped = 0
    for pid, (r, t, c) in b.items():
        t0, c0 = (a[pid][1], a[pid][2]) if pid in a else (0, 0)
        by[r] = by.get(r, 0) + t - t0
        reaped += c - c0
    # A child reaped during the run was counted in `a` by its own ticks: what it
    # spent during the run is its cticks at the reaper minus those.
    for pid, (r, t, c) in a.items():
        if pid not in b:
            reaped -= t
    by["reaped"] = max(reaped, 0)
    us = lambda ticks: ticks / hz * 1e6 / reqs
    parts = ["%s %.1f" % (r, us(t)) for r, t in sorted(by.items()) if t]
    total = sum(by.values())
    print("total %.1f us/req: %s" % (us(total), ", ".join(parts)))


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap(int(sys.argv[2]))
    else:
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
