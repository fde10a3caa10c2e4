"""A cluster of N servers on loopback (N = 10 and 50; quick 5 and 10).

* join: server 0 starts; the other N−1 start at once with ``-j`` its URL.
  Timed from the first start until every server's ``Client(url).hosts()``
  lists all N (polled every 20 ms); the time until all N printed their URL
  is shown too.
  If they do not all list each other within 60 s of being up, the row says
  how many did. (information) The CPU the N servers use at rest, over 2 s
  after convergence: membership probes every server every 0.4 s, all to all.
* leave: a ``@leave`` subscription on server 0
  (``client.walk([id0, "w"]).make_on_leave()``); the last server is killed
  with SIGKILL; timed until ``recv(timeout=30)`` returns its path.

Every server (and its zygote) is stopped in ``finally``: terminate, kill
after a grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from common import LOOPBACK, Section, clock, log, read_line, terminate_all

CONVERGE_TIMEOUT = 60.0  # from the moment all servers are up
LEAVE_TIMEOUT = 30.0
IDLE_SAMPLE = 2.0  # seconds over which the servers' CPU use at rest is measured


def _start(extra: list[str], errlog) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pycircuit.cli", "start", "-a", f"{LOOPBACK}:0", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog,
                            env=dict(os.environ), close_fds=True)


def one_cluster(n: int, tracker, pycircuit) -> dict:
    procs: list[subprocess.Popen] = []
    errlog = tempfile.TemporaryFile()
    try:
        t0 = clock()
        p0 = _start([], errlog)
        procs.append(p0)
        tracker.remember(p0.pid)
        url0 = read_line(p0, 60, "server 0")
        for _ in range(n - 1):
            p = _start(["-j", url0], errlog)
            procs.append(p)
            tracker.remember(p.pid)
        urls = [url0] + [read_line(p, 120, "a joining server") for p in procs[1:]]
        t_up = clock()
        for p in procs:
            tracker.remember(p.pid)  # and its zygote
        clients = [pycircuit.Client(u) for u in urls]
        pending = set(range(n))
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                if len(clients[i].hosts()) == n:
                    pending.discard(i)
                if time.monotonic() > deadline:
                    break
            if pending:
                time.sleep(0.02)
        t_all = clock()
        converged = not pending
        busy = None
        if converged:
            ps = [psutil.Process(p.pid) for p in procs]
            c0 = sum(sum(q.cpu_times()[:2]) for q in ps)
            time.sleep(IDLE_SAMPLE)
            busy = (sum(sum(q.cpu_times()[:2]) for q in ps) - c0) / IDLE_SAMPLE

        observer = clients[0]
        sub = observer.walk([observer.server_id, "w"]).make_on_leave()
        victim, vid = procs[-1], clients[-1].server_id
        t1 = clock()
        os.kill(victim.pid, signal.SIGKILL)
        others = []  # servers reported gone that were not killed (an overloaded member misses its TTL)
        t_leave = None
        while True:
            left = LEAVE_TIMEOUT - (clock() - t1) / 1e9
            if left <= 0:
                break
            try:
                got = sub.recv(timeout=left)
            except pycircuit.CircuitError:
                break  # timed out
            if got == f"/{vid}":
                t_leave = clock() - t1
                break
            others.append(got)
        return {"n": n, "all_started_s": (t_up - t0) / 1e9, "all_listed_s": (t_all - t0) / 1e9,
                "converged": converged, "listing_all": n - len(pending), "cpu_at_rest_cores": busy,
                "leave_us": None if t_leave is None else t_leave / 1e3, "spurious_leaves": others}
    except BaseException:
        errlog.seek(0)
        tail = errlog.read()[-2000:].decode("utf-8", "replace")
        if tail.strip():
            log(f"cluster of {n}: server stderr (tail):\n{tail}")
        raise
    finally:
        tree = []
        for p in procs:
            try:
                tree += psutil.Process(p.pid).children(recursive=True)
            except psutil.Error:
                pass
        terminate_all([psutil.Process(p.pid) for p in procs if p.poll() is None])
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        _, alive = psutil.wait_procs(tree, timeout=5)
        terminate_all(alive)
        errlog.close()


def run(ctx) -> Section:
    sec = Section("cluster")
    pycircuit = ctx.circuit().pycircuit  # this process's runtime is the embedded client's
    sizes = (5, 10) if ctx.quick else (10, 50)
    res = {}
    for n in sizes:
        log(f"cluster: {n} servers …")
        try:
            res[n] = one_cluster(n, ctx.tracker, pycircuit)
        except Exception as e:  # noqa: BLE001 - the other size still counts
            res[n] = f"{type(e).__name__}: {e}"
            sec.failures.append(f"cluster of {n}: {res[n]}")
    sec.raw = {str(k): v for k, v in res.items()}
    for n, r in res.items():
        m = f"cluster of {n} servers on loopback (-j server 0)"
        if isinstance(r, str):
            sec.skip(m, "failed", r)
            continue
        if r["converged"]:
            sec.add(m, "all listed by every server's hosts()", r["all_listed_s"] * 1e6, None)
        else:
            sec.skip(m, "all listed by every server's hosts()",
                     f"NOT within {CONVERGE_TIMEOUT:.0f} s of start-up: {r['listing_all']} of {n} servers "
                     f"listed all {n} after {r['all_listed_s']:.0f} s")
        sec.add(m, "(info) all started (URL printed)", r["all_started_s"] * 1e6, None, info=True)
        if r["cpu_at_rest_cores"] is not None:
            sec.add(m, f"(info) CPU used by all servers at rest (of {os.cpu_count()} cores)",
                    r["cpu_at_rest_cores"], None, unit="cores", info=True)
        if r["leave_us"] is not None:
            sec.add(m, "SIGKILL of one → its @leave event", r["leave_us"], None)
        else:
            sec.skip(m, "SIGKILL of one → its @leave event", f"NOT within {LEAVE_TIMEOUT:.0f} s")
        if r["spurious_leaves"]:
            sec.add(m, "(info) live servers reported to @leave meanwhile", len(r["spurious_leaves"]), None,
                    unit="count", info=True)
    return sec
