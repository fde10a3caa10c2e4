"""A cluster of N servers on loopback, ``--spares 0`` (N = 10 and 60; quick 5 and 10).

* join: server 0 starts; the other N−1 start at once with ``-j`` its URL.
  Timed from the moment all N printed their URL until every server's
  ``Client(url).hosts()`` lists all N (polled every 20 ms); the time from
  the first start is shown too. If they do not all list each other within
  60 s of being up, the row says how many did.
* idle CPU: what the N servers (and their zygotes) use at rest, with psutil
  over 10 s after convergence, in % of one core (target at 60: <= 15 %).
* leave: a ``@leave`` subscription on server 0
  (``client.walk([id0, "w"]).make_on_leave()``); the last server is killed
  with SIGKILL; timed until ``recv(timeout=30)`` returns its path, and until
  no other server's ``hosts()`` lists it (target at 60: <= 4 s).

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

from common import LOOPBACK, Section, Target, clock, log, read_line, terminate_all

CONVERGE_TIMEOUT = 60.0  # from the moment all servers are up
LEAVE_TIMEOUT = 30.0
IDLE_SAMPLE = 10.0  # seconds over which the servers' CPU use at rest is measured


def _start(extra: list[str], errlog) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pycircuit.cli",
            "start",
            "-a",
            f"{LOOPBACK}:0",
            "--spares",
            "0",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errlog,
        env=dict(os.environ),
        close_fds=True,
    )


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
            ps += [c for q in ps for c in q.children(recursive=True)]  # zygotes

            def cpu() -> float:
                total = 0.0
                for q in ps:
                    try:
                        total += sum(q.cpu_times()[:2])
                    except psutil.Error:
                        pass
                return total

            c0 = cpu()
            time.sleep(IDLE_SAMPLE)
            busy = (cpu() - c0) / IDLE_SAMPLE

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
        t_gone = None
        rest = clients[:-1]
        while (clock() - t1) / 1e9 < LEAVE_TIMEOUT:
            if all(vid not in [h.id for h in c.hosts()] for c in rest):
                t_gone = clock() - t1
                break
            time.sleep(0.02)
        return {
            "n": n,
            "all_started_s": (t_up - t0) / 1e9,
            "all_listed_s": (t_all - t0) / 1e9,
            "converged": converged,
            "listing_all": n - len(pending),
            "cpu_at_rest_cores": busy,
            "leave_us": None if t_leave is None else t_leave / 1e3,
            "spurious_leaves": others,
            "listed_after_up_s": (t_all - t_up) / 1e9,
            "gone_us": None if t_gone is None else t_gone / 1e3,
        }
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
    sizes = (5, 10) if ctx.quick else (10, 60)
    res = {}
    for n in sizes:
        log(f"cluster: {n} servers …")
        try:
            res[n] = one_cluster(n, ctx.tracker, pycircuit)
        except Exception as e:
            res[n] = f"{type(e).__name__}: {e}"
            sec.failures.append(f"cluster of {n}: {res[n]}")
    sec.raw = {str(k): v for k, v in res.items()}
    for n, r in res.items():
        m = f"cluster of {n} servers on loopback (-j server 0, --spares 0)"
        if isinstance(r, str):
            sec.skip(m, "failed", r)
            continue
        if r["converged"]:
            sec.add(
                m,
                "all listed by every server's hosts(), from the last start",
                r["listed_after_up_s"] * 1e6,
                None,
                target=Target("≤ 10 s", limit=10e6) if n == 60 else None,
            )
            sec.add(
                m,
                "(info) all listed by every server's hosts(), from the first start",
                r["all_listed_s"] * 1e6,
                None,
                info=True,
            )
        else:
            sec.skip(
                m,
                "all listed by every server's hosts()",
                f"NOT within {CONVERGE_TIMEOUT:.0f} s of start-up: {r['listing_all']} of {n} servers "
                f"listed all {n} after {r['all_listed_s']:.0f} s",
            )
        sec.add(m, "(info) all started (URL printed)", r["all_started_s"] * 1e6, None, info=True)
        if r["cpu_at_rest_cores"] is not None:
            sec.add(
                m,
                f"CPU used by all servers at rest over {IDLE_SAMPLE:g} s (of {os.cpu_count()} cores)",
                r["cpu_at_rest_cores"],
                None,
                unit="cores",
                target=Target("≤ 15 % of one core", limit=0.15) if n == 60 else None,
            )
        if r["gone_us"] is not None:
            sec.add(
                m,
                "SIGKILL of one → gone from every other server's hosts()",
                r["gone_us"],
                None,
                target=Target("≤ 4 s", limit=4e6) if n == 60 else None,
            )
        else:
            sec.skip(
                m,
                "SIGKILL of one → gone from every other server's hosts()",
                f"NOT within {LEAVE_TIMEOUT:.0f} s",
            )
        if r["leave_us"] is not None:
            sec.add(m, "SIGKILL of one → its @leave event", r["leave_us"], None)
        else:
            sec.skip(m, "SIGKILL of one → its @leave event", f"NOT within {LEAVE_TIMEOUT:.0f} s")
        if r["spurious_leaves"]:
            sec.add(
                m,
                "(info) live servers reported to @leave meanwhile",
                len(r["spurious_leaves"]),
                None,
                unit="count",
                info=True,
            )
    return sec
