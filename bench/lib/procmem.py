#!/usr/bin/env python3
"""Memory of a server's process tree, by component, from /proc/PID/smaps_rollup.

    procmem.py ROOT-PID

prints TSV lines `component nprocs rss_kb pss_kb fds` for each kind of process in
the tree of ROOT-PID (ROOT-PID itself and all its descendants), then a `total` line.
Components: bulkhead supervisor / multiplexer / fd keeper / view holder / spare (exec'd `bulkhead processor`
still running as root, assigned to no environment) / processor; php-fpm master /
pool child; nginx master / worker; anything else by its command name.
`fds` is the number of open file descriptors summed over the component.
"""
import os
import sys


def procs():
    kids, info = {}, {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            ppid = int(st.rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % e, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open("/proc/%s/status" % e) as f:
                uid = next(int(l.split()[1]) for l in f if l.startswith("Uid:"))
        except (OSError, ValueError, StopIteration):
            continue
        pid = int(e)
        kids.setdefault(ppid, []).append(pid)
        info[pid] = (comm, argv, uid)
    return kids, info


def component(pid, root, comm, argv, uid):
    title = argv[0] if argv else comm
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("bulkhead"):
        if argv[1] == "multiplexer":
            return "multiplexer"
        if argv[1] == "fd-keeper":
            return "fd keeper"
        if argv[1] == "ns-holder":
            return "view holder"
        if argv[1] == "processor":
            return "spare" if uid == 0 else "processor"
        if pid == root:
            return "supervisor"
    if title.startswith("php-fpm: master"):
        return "php-fpm master"
    if title.startswith("php-fpm: pool"):
        return "php-fpm pool child"
    if title.startswith("nginx: master"):
        return "nginx master"
    if title.startswith("nginx: worker"):
        return "nginx worker"
    return comm


def rollup(pid):
    rss = pss = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for l in f:
                if l.startswith("Rss:"):
                    rss = int(l.split()[1])
                elif l.startswith("Pss:"):
                    pss = int(l.split()[1])
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None
    return rss, pss, fds


def main():
    root = int(sys.argv[1])
    kids, info = procs()
    if root not in info:
        sys.exit("procmem: no process %d" % root)
    order, queue = [], [root]
    while queue:
        p = queue.pop(0)
        order.append(p)
        queue.extend(sorted(kids.get(p, [])))
    groups = {}
    for p in order:
        comm, argv, uid = info[p]
        r = rollup(p)
        if r is None:
            continue
        g = groups.setdefault(component(p, root, comm, argv, uid), [0, 0, 0, 0])
        g[0] += 1
        g[1] += r[0]
        g[2] += r[1]
        g[3] += r[2]
    tot = [0, 0, 0, 0]
    for name, g in groups.items():
        print("%s\t%d\t%d\t%d\t%d" % (name, *g))
        tot = [x + y for x, y in zip(tot, g)]
    print("total\t%d\t%d\t%d\t%d" % tuple(tot))


if __name__ == "__main__":
    main()
