"""Fleets of workers: bursts of spawns, how many threads idle connections
cost, and the first spawn of a program.

* Back to back: 60 spawns to the first result with no rest between them
  (quick 20), the function from a module of the user's (``bench_helpers``,
  which the zygote has not imported), median; peers: a multiprocessing fork
  ``Process`` + ``Pipe`` and mitogen ``router.fork()``, back to back too.
* A burst of daemon workers: 300 (quick 100; full also 1,000) workers that
  stay alive, under anchors, spawned from 8 threads; wall time until every
  one has returned its first result. Peer: 300 multiprocessing fork
  ``Process``es started from 8 threads, each sending one message up. Then
  all are killed; the time until the processes are gone is shown for
  information.
* Threads: an idle worker's threads, and the client's threads while it
  holds a connection to every worker of the burst (a call to each); each
  the lowest count seen over 6 s (threads started for a burst linger 2 s).
* First spawn: ``connect()`` to an embedded server plus the first spawn
  (``bench/cold.py pycircuit``), and the first spawn of a fresh process that
  connects to a running server (``bench/cold.py pycircuit-running``).
"""

from __future__ import annotations

import os
import threading
import time

import psutil

import bench_helpers as H
from common import Section, Target, log, stats, wait_gone


def _settled(count, seconds: float = 6.0) -> int:
    """The lowest of ``count()`` over a few seconds: threads a process started
    for a burst exit once idle (RuntimeConfig/ServeConfig linger times)."""
    low = count()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.25)  # sampling a count, not waiting for an event
        low = min(low, count())
    return low


def _b2b(fn, n: int) -> dict:
    fn()  # one warm-up
    return stats([fn() for _ in range(n)])


def _in_threads(job, n: int, threads: int) -> float:
    """Run ``job(i)`` for i in range(n) from ``threads`` threads, each taking
    the next index; seconds until all are done."""
    nxt = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            job(i)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def _burst_pycircuit(circuit, n: int, threads: int) -> tuple[float, list, float, int]:
    """(seconds to spawn n daemon workers from ``threads`` threads, their
    addresses, seconds to kill them all, client threads while connected)."""
    import pycircuit

    c, host = circuit.c, circuit.host
    addrs: list = [None] * n
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            v, a = c.spawn(host, f"/bench/fleet/{i}", H.fleet_one, i)
            if v != i:
                errors.append(f"worker {i} returned {v!r}")
            addrs[i] = a
        except Exception as e:  # reported below as a failure of the row
            errors.append(f"{type(e).__name__}: {e}")

    took = _in_threads(one, n, threads)
    if errors:
        raise RuntimeError(f"{len(errors)} spawns failed, e.g. {errors[0]}")
    # hold a connection to each: one call each (the acid service's ping)
    xs = [pycircuit.dial(a, "acid") for a in addrs]
    for x in xs:
        x.call("ping")
    held = _settled(threading.active_count)  # the connections gone idle, still held
    del xs
    procs = []
    for a in addrs:
        try:
            procs.append(psutil.Process(a.pid))
        except psutil.NoSuchProcess:
            pass
    t1 = time.perf_counter()
    for a in addrs:
        c.kill(a)
    stray = wait_gone(procs)
    killed = time.perf_counter() - t1
    if stray:
        log(f"warning: {len(stray)} fleet workers had to be signalled")
    for i in range(n):
        try:
            c.walk(f"/bench/fleet/{i}").scrub()
        except Exception:  # the anchor may be gone with its worker already
            pass
    return took, addrs, killed, held


def _batch_pycircuit(circuit, n: int) -> float:
    """Seconds to start n daemon workers with one ``spawn_many``."""
    c, host = circuit.c, circuit.host
    t = time.perf_counter()
    out = c.spawn_many(host, "/bench/batch", H.fleet_one, [(i,) for i in range(n)])
    took = time.perf_counter() - t
    if [v for v, _ in out] != list(range(n)):
        raise RuntimeError("spawn_many returned other values")
    procs = []
    for _, a in out:
        try:
            procs.append(psutil.Process(a.pid))
        except psutil.NoSuchProcess:
            pass
    for _, a in out:
        c.kill(a)
    if wait_gone(procs):
        log("warning: batch workers had to be signalled")
    return took


def _burst_mp(n: int, threads: int) -> float:
    from peers.mp_peer import CTX

    procs: list = []
    lock = threading.Lock()

    def one(i: int) -> None:
        a, b = CTX.Pipe()
        p = CTX.Process(target=H.mp_fleet_child, args=(b, i))
        p.start()
        if a.recv() != i:
            raise AssertionError("multiprocessing child said something else")
        with lock:
            procs.append((p, a, b))

    took = _in_threads(one, n, threads)
    for p, a, b in procs:
        try:
            a.send(None)  # go
        except OSError:
            pass  # it is gone already
        a.close()
        b.close()
    for p, _, _ in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    if len(procs) != n:
        raise RuntimeError(f"only {len(procs)} of {n} multiprocessing children started")
    return took


def run(ctx) -> Section:
    from metrics.spawn import cold, spawn_one

    sec = Section("fleet")
    circuit = ctx.circuit()
    n = ctx.n(60, 20)

    def pc_once() -> int:
        return spawn_one(circuit)

    from peers import mp_peer

    log(f"fleet: {n} back-to-back spawns, pycircuit and peers …")
    pc = _b2b(pc_once, n)
    peers: dict[str, dict | str] = {
        "multiprocessing fork Process+Pipe": _b2b(mp_peer.spawn_once, n)
    }
    try:
        from peers import mitogen_peer
    except ImportError as e:
        peers["mitogen router.fork()"] = f"skipped: {e}"
    else:
        sp = mitogen_peer.Spawner(ctx.tracker)
        try:
            peers["mitogen router.fork()"] = _b2b(lambda: sp.once("fork"), n)
        finally:
            sp.close()
    m = f"{n} spawns back to back, each to its first result, median"
    sec.add(m, "— (absolute target)", pc["median_us"], None, target=Target("≤ 4 ms", limit=4000))
    for name, st in peers.items():
        if isinstance(st, str):
            sec.skip(m, name, st)
        else:
            sec.add(m, name, pc["median_us"], st["median_us"])

    # An idle worker's threads.
    _, addr = circuit.spawn(H.idle_daemon)
    try:
        idle_threads = _settled(psutil.Process(addr.pid).num_threads)
    finally:
        circuit.kill(addr)
    sec.add(
        "threads of an idle worker",
        "— (absolute target)",
        idle_threads,
        None,
        unit="count",
        target=Target("≤ 4", limit=4),
    )

    sizes = [ctx.n(300, 100)] + ([] if ctx.quick else [1000])
    raw: dict = {"back_to_back": pc, "peers": peers, "idle_worker_threads": idle_threads}
    for size in sizes:
        log(f"fleet: {size} daemon workers under anchors from 8 threads …")
        base = threading.active_count()
        took, _, killed, held = _burst_pycircuit(circuit, size, 8)
        m = f"{size} daemon workers under anchors, from 8 threads: all up"
        limit = {300: 1.5e6, 1000: 5e6}.get(size)
        tgt = Target(f"≤ {limit / 1e6:g} s", limit=limit) if limit else None
        sec.add(m, "— (absolute target)", took * 1e6, None, target=tgt)
        log(f"fleet: {size} multiprocessing children from 8 threads …")
        mp_took: float | None = None
        try:
            mp_took = _burst_mp(size, 8)
            sec.add(m, "multiprocessing fork Process+Pipe", took * 1e6, mp_took * 1e6)
        except Exception as e:
            sec.skip(m, "multiprocessing fork Process+Pipe", f"failed: {type(e).__name__}: {e}")
        log(f"fleet: {size} daemon workers with one spawn_many …")
        batch = _batch_pycircuit(circuit, size)
        mb = f"{size} daemon workers under anchors, one spawn_many: all up"
        if mp_took is None:
            sec.add(mb, "(info)", batch * 1e6, None, info=True)
        else:
            sec.add(mb, "multiprocessing fork Process+Pipe, 8 threads", batch * 1e6, mp_took * 1e6)
        sec.add(
            f"{size} daemon workers: all killed and gone", "(info)", killed * 1e6, None, info=True
        )
        sec.add(
            f"client threads holding {size} worker connections",
            f"— (absolute target; {base} before)",
            held,
            None,
            unit="count",
            target=Target("≤ 64", limit=64) if size == 300 else None,
        )
        raw[f"burst_{size}"] = {
            "up_s": took,
            "batch_up_s": batch,
            "killed_s": killed,
            "client_threads": held,
        }

    n_cold = ctx.n(5, 2)
    os.environ["BENCH_CIRCUIT_URL"] = circuit.host.url
    for peer, metric, limit in (
        ("pycircuit", "connect() to an embedded server + the first spawn", 200_000),
        ("pycircuit-running", "first spawn after connect() to a running server", 20_000),
    ):
        log(f"fleet: {metric} ×{n_cold} …")
        try:
            r = cold(peer, n_cold, ctx.tracker)
        except Exception as e:
            sec.skip(metric, "— (absolute target)", f"failed: {type(e).__name__}: {e}")
            continue
        value = r["first_us"] + (r["setup_us"] if peer == "pycircuit" else 0)
        sec.add(
            metric,
            "— (absolute target)",
            value,
            None,
            target=Target(f"≤ {limit / 1000:g} ms", limit=limit),
        )
        raw[f"cold_{peer}"] = r
    sec.raw = raw
    return sec
