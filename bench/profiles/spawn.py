#!/usr/bin/env python
"""How many round trips a spawn takes, and when each happens.

    python bench/profiles/spawn.py [--spawns N]

Re-runs itself with bench/profiles/trace_site first on $PYTHONPATH and
$BENCH_TRACE_DIR set, so that this process, the embedded server, its zygote
and every worker log their RPyC traffic (see trace_site/sitecustomize.py).
Then N warm spawns of ``one`` (after 5 unlogged-for-statistics warm-ups),
0.1 s apart, and for each: the RPyC requests sent by every process between
the call and its return, and the connections opened. Prints the counts
(median over spawns), and the timeline of the median spawn.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)


def drive(n: int) -> None:
    sys.path.insert(0, BENCH)
    import common  # noqa: F401 - environment
    import bench_helpers as H
    import psutil
    import pycircuit

    from sitecustomize import _log  # the tracer of this process (loaded at start-up)

    c = pycircuit.connect()
    try:
        host = c.hosts()[0]
        for _ in range(5):
            c.spawn(host, None, H.one)
        server = c._embedded.proc.pid
        zyg = [p.pid for p in psutil.Process(server).children()]
        print(
            f"roles server={server} zygote={','.join(map(str, zyg))} client={os.getpid()}",
            flush=True,
        )
        for i in range(n):
            _log(f"SPAWN-START {i}")
            c.spawn(host, None, H.one)
            _log(f"SPAWN-END {i}")
            time.sleep(0.1)
    finally:
        c.close()


def analyse(d: str, roles_line: str) -> None:
    roles = dict(kv.split("=") for kv in roles_line.split()[1:])
    name = {int(roles["server"]): "server", int(roles["client"]): "client"}
    for z in roles["zygote"].split(","):
        if z:
            name[int(z)] = "zygote"
    events = []
    for path in glob.glob(os.path.join(d, "*.log")):
        pid = int(os.path.basename(path)[:-4])
        with open(path) as f:
            for line in f:
                t, ev = line.rstrip("\n").split(" ", 1)
                events.append((int(t), pid, ev))
    events.sort()
    spans, start = [], None
    for t, pid, ev in events:
        if ev.startswith("SPAWN-START"):
            start = t
        elif ev.startswith("SPAWN-END") and start is not None:
            spans.append((start, t))
            start = None
    per = []
    for s, e in spans:
        inside = [
            (t, pid, ev) for t, pid, ev in events if s <= t <= e and not ev.startswith("SPAWN")
        ]
        label = dict(name)
        for _, pid, _ in inside:  # workers by order of appearance
            if pid not in label:
                label[pid] = f"worker{sum(1 for v in label.values() if v.startswith('worker')) + 1}"
        inside = [(t, label[pid], ev) for t, pid, ev in inside]
        reqs = collections.Counter(who for t, who, ev in inside if ev.startswith("req "))
        conns = sum(1 for _, _, ev in inside if ev.startswith("connect"))
        per.append((e - s, sum(reqs.values()), reqs, conns, inside, s))
    per.sort(key=lambda x: x[0])
    med = per[len(per) // 2]
    tot = sorted(p[1] for p in per)
    print(
        f"{len(per)} warm spawns traced; duration median {med[0] / 1e6:.2f} ms "
        f"(min {per[0][0] / 1e6:.2f}, max {per[-1][0] / 1e6:.2f}) — tracing adds a little"
    )
    print(
        f"RPyC requests per spawn (all processes): median {tot[len(tot) // 2]}, min {tot[0]}, max {tot[-1]}"
    )
    print(f"  in the median spawn, by sender: {dict(med[2])}; TCP connections opened: {med[3]}")
    print("\ntimeline of the median spawn (ms since spawn() was called):")
    for t, who, ev in med[4]:
        print(f"  {(t - med[5]) / 1e6:7.2f}  {who:8} {ev}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=25)
    ap.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        drive(args.spawns)
        return
    d = tempfile.mkdtemp(prefix="bench-spawn-trace-")
    try:
        env = dict(os.environ, BENCH_TRACE_DIR=d)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(HERE, "trace_site"), BENCH]
            + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--drive", "--spawns", str(args.spawns)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if p.returncode != 0:
            sys.exit(p.stderr)
        roles = [ln for ln in p.stdout.splitlines() if ln.startswith("roles ")][0]
        analyse(d, roles)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
