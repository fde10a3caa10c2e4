"""Spawn on the local host to the first result.

* Warm: the median over many spawns in one process after a few warm-up
  spawns (pycircuit: ``c.spawn(host, None, one)``, 50; quick 10), each
  after 50 ms of rest (pycircuit's server keeps forked spare workers ready;
  back-to-back spawns, which outrun the refill, are shown too). Peers:
  a multiprocessing fork ``Process`` sending 1 through a ``Pipe``, mitogen
  ``router.fork()`` + ``call(one)``, an execnet ``popen`` gateway running
  ``channel.send(1)``, Ray actor creation + first call if Ray is
  importable, and (information) mitogen ``router.local()``; also for
  information pycircuit spawning ``os.getpid``, which the worker need not
  import (``one`` makes a fresh worker import ``bench_helpers``). Each child is
  reaped after the clock stops; a pycircuit worker exits by itself.
* Cold: the first spawn in a fresh interpreter, after ``connect()`` (or the
  peer's setup), run by ``bench/cold.py`` 5 times (quick 2); median.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import bench_helpers as H
from common import BENCH_DIR, Section, Target, clock, log, median, stats


GAP = 0.05  # seconds of rest before each timed spawn


def repeat(fn, n: int, warm: int, gap: float = GAP) -> dict:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        time.sleep(gap)
        out.append(fn())
    return stats(out)


def spawn_one(circuit) -> int:
    """One spawn of ``bench_helpers.one`` to its first result, in ns."""
    t0 = clock()
    v, _ = circuit.spawn(H.one, keep=False)
    t = clock() - t0
    if v != 1:
        raise AssertionError("spawned function returned something else")
    return t


def cold(peer: str, n: int, tracker) -> dict:
    runs = []
    for _ in range(n):
        p = subprocess.Popen(
            [sys.executable, os.path.join(BENCH_DIR, "cold.py"), peer],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        tracker.remember(p.pid)
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        if p.returncode != 0:
            raise RuntimeError(f"bench/cold.py {peer} failed (exit {p.returncode})")
        runs.append(json.loads(out.decode().strip().splitlines()[-1]))
    return {
        k[:-3] + "_us": median([r[k] for r in runs]) / 1e3
        for k in ("setup_ns", "first_ns", "second_ns")
    } | {"n": n}


def run(ctx) -> Section:
    sec = Section("spawn")
    n, warm = ctx.n(50, 10), ctx.n(5, 3)
    n_slow = ctx.n(10, 3)
    peers: dict[str, dict | str] = {}

    from peers import mp_peer

    log(f"spawn: multiprocessing fork ×{n} …")
    peers["multiprocessing fork Process+Pipe"] = repeat(mp_peer.spawn_once, n, warm)
    try:
        from peers import mitogen_peer
    except ImportError as e:
        peers["mitogen router.fork()"] = peers["(info) mitogen router.local()"] = f"skipped: {e}"
    else:
        log(f"spawn: mitogen fork ×{n}, local ×{n_slow} …")
        sp = mitogen_peer.Spawner(ctx.tracker)
        try:
            peers["mitogen router.fork()"] = repeat(lambda: sp.once("fork"), n, warm)
            peers["(info) mitogen router.local()"] = repeat(lambda: sp.once("local"), n_slow, 1)
        finally:
            sp.close()
    try:
        from peers import execnet_peer
    except ImportError as e:
        peers["execnet popen gateway"] = f"skipped: {e}"
    else:
        log(f"spawn: execnet popen ×{n_slow} …")
        peers["execnet popen gateway"] = repeat(execnet_peer.spawn_once, n_slow, 1)
    from peers import ray_peer

    why = ray_peer.unavailable()
    if why:
        peers["Ray actor"] = why
    else:
        log(f"spawn: Ray actor ×{n_slow} …")
        peers["Ray actor"] = repeat(ray_peer.spawn_once, n_slow, 1)
        ray_peer.shutdown()

    circuit = ctx.circuit()
    log(f"spawn: pycircuit ×{n} …")

    def pc_once():
        return spawn_one(circuit)

    pc = repeat(pc_once, n, warm)

    def pc_getpid():  # a function the worker has imported already: no import on unpickling
        t0 = clock()
        v, addr = circuit.spawn(os.getpid, keep=False)
        t = clock() - t0
        if v != addr.pid:
            raise AssertionError("spawned os.getpid returned something else")
        return t

    pc_noimport = repeat(pc_getpid, n, warm)
    pc_b2b = repeat(pc_once, n, warm, gap=0)
    n_cold = ctx.n(5, 2)
    colds = {}
    for peer in ("pycircuit", "mp", "mitogen", "execnet"):
        log(f"spawn: cold first spawn, {peer} ×{n_cold} …")
        try:
            colds[peer] = cold(peer, n_cold, ctx.tracker)
        except Exception as e:
            colds[peer] = f"skipped: {type(e).__name__}: {e}"
    sec.raw = {
        "pycircuit": pc,
        "pycircuit_os_getpid": pc_noimport,
        "pycircuit_back_to_back": pc_b2b,
        "peers": peers,
        "cold": colds,
    }

    m = "spawn → first result (warm), median"
    sec.add(m, "— (absolute target)", pc["median_us"], None, target=Target("< 3 ms", limit=3000))
    for name, st in peers.items():
        if isinstance(st, str):
            sec.skip(m, name, st)
        else:
            sec.add(m, name, pc["median_us"], st["median_us"], info=name.startswith("(info)"))
    sec.add(
        m,
        "(info) pycircuit spawning os.getpid instead (nothing to import)",
        pc_noimport["median_us"],
        None,
        info=True,
    )
    sec.add(
        m,
        "(info) pycircuit spawns back to back (no rest between them)",
        pc_b2b["median_us"],
        None,
        info=True,
    )
    m = "spawn → first result (warm), p99"
    for name, st in peers.items():
        if not isinstance(st, str) and not name.startswith("(info)"):
            sec.add(m, name, pc["p99_us"], st["p99_us"])
    m = "cold first spawn (fresh process, after connect), median"
    pcc = colds["pycircuit"]
    if isinstance(pcc, str):
        sec.skip(m, "pycircuit", pcc)
    else:
        for key, name in (
            ("mp", "multiprocessing fork (first fork)"),
            ("mitogen", "mitogen router.fork()"),
            ("execnet", "execnet popen gateway"),
        ):
            c = colds[key]
            if isinstance(c, str):
                sec.skip(m, name, c)
            else:
                sec.add(m, name, pcc["first_us"], c["first_us"])
        sec.add(
            m,
            "(info) pycircuit: connect() before it (embedded server)",
            pcc["setup_us"],
            None,
            info=True,
        )
        sec.add(m, "(info) pycircuit: the second spawn after it", pcc["second_us"], None, info=True)
    return sec
