"""The cost of ``pycircuit web`` at rest: a server of its own with 100 idle
workers (quick 30) under 10 anchors, the real ``pycircuit web`` dialled into
it, and one page open (an SSE client reading ``/events``, as the browser
does; the browser's own CPU is not counted).

CPU of the server and of the web process (``psutil`` times) over 10 s
(quick 4 s), once with no page open (the view must not poll then) and
once with the page open, 6 s after the first snapshot went out (at rest
the view polls every 3 s instead of every 1 s). The
target counts server + web with the page open; the zygote and the idle
workers are shown for information. Also (information): a ``/metrics``
scrape and a ``/api/state`` snapshot, median of 5.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import psutil

import bench_helpers as H
from common import LOOPBACK, Section, Target, clock, log, median, read_line, terminate_all

TARGET = Target("< 1 % of a core", limit=1.0)


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _busy(groups: dict[str, list[psutil.Process]], seconds: float) -> dict[str, float]:
    """% of one core each group used over ``seconds``."""
    before = {k: _cpu(v) for k, v in groups.items()}
    time.sleep(seconds)
    return {k: 100.0 * (_cpu(v) - before[k]) / seconds for k, v in groups.items()}


class _Page(threading.Thread):
    """An open page, as far as the web process can tell: an SSE stream read
    to the end; counts the bytes and events it gets."""

    def __init__(self, port: int, token: str):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
        self.conn.request("GET", "/events", headers={"Authorization": f"Bearer {token}"})
        self.resp = self.conn.getresponse()
        self.events = 0
        self.bytes = 0
        self.first = threading.Event()

    def run(self) -> None:
        try:
            for line in self.resp:
                self.bytes += len(line)
                if line.startswith(b"event:"):
                    self.events += 1
                    self.first.set()
        except (OSError, ValueError, AttributeError):
            pass  # closed by close() (http.client may trip over its own closed file)

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()


def run(ctx) -> Section:
    import pycircuit

    sec = Section("web")
    n = ctx.n(100, 30)
    seconds = ctx.n(10, 4)
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "pycircuit.cli", "start", "-a", f"{LOOPBACK}:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
        )
        procs.append(server)
        url = read_line(server, 60, "server")
        ctx.tracker.remember(server.pid)
        c = pycircuit.Client(url)
        host = c.hosts()[0]
        log(f"web: {n} idle workers …")
        workers = [c.spawn(host, f"bench/web/{i % 10}", H.idle_daemon)[1] for i in range(n)]
        ctx.tracker.remember(server.pid)
        web = subprocess.Popen(
            [sys.executable, "-m", "pycircuit.cli", "web", "-d", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        procs.append(web)
        ctx.tracker.remember(web.pid)
        parts = urlsplit(read_line(web, 60, "pycircuit web"))
        token = parts.query.removeprefix("token=")
        sp = psutil.Process(server.pid)
        kids = sp.children(recursive=True)
        wpids = {w.pid for w in workers}
        groups = {
            "server": [sp],
            "web": [psutil.Process(web.pid)],
            "zygote": [k for k in kids if k.pid not in wpids and k.ppid() == server.pid],
            "workers": [k for k in kids if k.pid in wpids],
        }
        time.sleep(3.0)  # start-up done (imports, subscriptions)
        log(f"web: at rest, no page open ({seconds} s) …")
        closed = _busy(groups, seconds)
        page = _Page(parts.port, token)
        page.start()
        if not page.first.wait(30):
            raise RuntimeError("the page got no state within 30 s")
        time.sleep(6.0)  # the first polls are past, and the view has slowed to its pace at rest
        log(f"web: at rest, a page open ({seconds} s) …")
        e0, b0 = page.events, page.bytes
        opened = _busy(groups, seconds)
        pushed = (page.events - e0, page.bytes - b0)
        scrape, snap = [], []
        for path, out in (("/metrics", scrape), ("/api/state", snap)):
            for _ in range(5):
                conn = http.client.HTTPConnection(LOOPBACK, parts.port, timeout=60)
                t0 = clock()
                conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                size = len(conn.getresponse().read())
                out.append((clock() - t0) / 1e3)
                conn.close()
            out.append(size)
        page.close()
        for w in workers:
            c.kill(w)
    finally:
        terminate_all([psutil.Process(p.pid) for p in reversed(procs) if p.poll() is None])
    sec.raw = {
        "workers": n,
        "seconds": seconds,
        "no_page": closed,
        "page_open": opened,
        "pushed_events": pushed[0],
        "pushed_bytes": pushed[1],
    }
    m = f"CPU at rest, {n} workers, page open (% of a core)"
    sec.add(
        m, "server + web process", opened["server"] + opened["web"], None, unit="%", target=TARGET
    )
    for k in ("server", "web", "zygote", "workers"):
        sec.add(
            m,
            f"{k} alone" if k in ("server", "web") else f"{k} (all {n})" if k == "workers" else k,
            opened[k],
            None,
            unit="%",
            info=True,
        )
    m = f"(info) CPU at rest, {n} workers, no page open (% of a core)"
    sec.add(m, "server + web process", closed["server"] + closed["web"], None, unit="%", info=True)
    sec.add(
        f"(info) pushed to the open page in {seconds} s",
        "SSE events",
        pushed[0],
        None,
        unit="count",
        info=True,
    )
    sec.add(
        f"(info) pushed to the open page in {seconds} s",
        "bytes",
        pushed[1],
        None,
        unit="count",
        info=True,
    )
    sec.add(
        "(info) one request, median of 5",
        f"/metrics ({scrape[-1]:,} bytes)",
        median(scrape[:-1]),
        None,
        info=True,
    )
    sec.add(
        "(info) one request, median of 5",
        f"/api/state ({snap[-1]:,} bytes)",
        median(snap[:-1]),
        None,
        info=True,
    )
    return sec
