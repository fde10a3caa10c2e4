"""Trivial cross-call: echo of a small int.

* Round trip: every subject in turn runs a block of 250 sequential calls,
  round-robin until each has made n (5000; quick 500), so that drift of the
  machine hits all alike. Median and p99. Then the same again twice with
  the calling thread and the serving process pinned, to one CPU and to two
  (see ``pinned_latency``): unpinned, a run measures whichever placement
  the scheduler chose.
* Pipelined throughput: 8 caller threads × m calls (400; quick 60) started
  together; calls/s over the wall time, median of 3 repetitions (quick 1).
  Where a peer has an asynchronous API it is also measured with 8 calls in
  flight from one thread (pycircuit's ``x.call_async``).
"""

from __future__ import annotations

import os
import threading

from common import Section, Target, clock, log, median, stats

THREADS = 8
WINDOW = 8


def _check(r, want, name):
    if r != want:
        raise AssertionError(f"{name} echo returned {r!r}, not {want!r}")


def latency(subjects, n: int, warm: int, block: int = 250) -> dict:
    callers = [(name, peer.caller()) for name, peer, _ in subjects]
    for name, call in callers:
        for i in range(warm):
            _check(call(i), i, name)
    samples = {name: [] for name, _ in callers}
    done = 0
    while done < n:
        k = min(block, n - done)
        for name, call in callers:
            out = samples[name]
            for j in range(done, done + k):
                t0 = clock()
                r = call(j)
                out.append(clock() - t0)
                _check(r, j, name)
        done += k
    return {name: stats(s) for name, s in samples.items()}


def _pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (threads started later inherit it)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return  # gone
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # a thread that just ended


def pinned_latency(subjects, n: int, warm: int, cpus: tuple[int, int]) -> dict:
    """``latency`` with the calling thread on ``cpus[0]`` and the serving
    process on ``cpus[1]``. On a VM, a round trip between two processes
    costs very different times when both share a CPU (the woken process
    runs at once, no wake-up of an idle CPU) or not; unpinned, which of the
    two a run gets is up to the scheduler, so these rows pin it."""
    mine = os.sched_getaffinity(0)
    everywhere = set(range(os.cpu_count() or 1))
    try:
        os.sched_setaffinity(0, {cpus[0]})
        for _, peer, _ in subjects:
            _pin(peer.server_pid, {cpus[1]})
        return latency(subjects, n, warm)
    finally:
        os.sched_setaffinity(0, mine)
        for _, peer, _ in subjects:
            _pin(peer.server_pid, everywhere)


def threads_throughput(peer, threads: int, per_thread: int) -> float:
    """calls/s of ``threads`` threads each making ``per_thread`` calls."""
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def body():
        cleanup = None
        try:
            call, cleanup = peer.thread_caller()
            call(-1)
        except BaseException as e:
            errors.append(e)
            start.abort()
            return
        try:
            start.wait()
            for i in range(per_thread):
                _check(call(i), i, peer.name)
        except BaseException as e:
            errors.append(e)
        finally:
            try:
                cleanup()
            except Exception:
                pass

    ts = [threading.Thread(target=body, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    try:
        start.wait(60)
    except threading.BrokenBarrierError:
        for t in ts:
            t.join(30)
        raise errors[0] if errors else RuntimeError(f"{peer.name}: caller threads did not start")
    t0 = clock()
    for t in ts:
        t.join(300)
    t1 = clock()
    if errors:
        raise errors[0]
    return threads * per_thread / ((t1 - t0) / 1e9)


def async_throughput(peer, n: int, window: int) -> float:
    peer.async_calls(min(50, n), window)  # warm-up
    t0 = clock()
    peer.async_calls(n, window)
    return n / ((clock() - t0) / 1e9)


def run(ctx) -> Section:
    sec = Section("call")
    subjects = ctx.subjects()
    live = [s for s in subjects if s[1] is not None]
    n, warm = ctx.n(5000, 500), ctx.n(500, 100)
    per_thread, reps = ctx.n(400, 60), ctx.n(3, 1)

    log(f"cross-call round trip: {len(live)} subjects × {n} calls …")
    lat = latency(live, n, warm)
    sec.raw["latency"] = lat
    pc = lat["pycircuit"]

    pinned: dict[str, dict] = {}
    pinnable = [s for s in live if s[1].server_pid is not None]
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) >= 2:
        for label, cpus in (
            ("one CPU", (usable[0], usable[0])),
            ("two CPUs", (usable[0], usable[1])),
        ):
            log(
                f"cross-call round trip, caller and server pinned to {label}: {len(pinnable)} subjects × {n} calls …"
            )
            pinned[label] = pinned_latency(pinnable, n, warm, cpus)
    sec.raw["pinned_latency"] = pinned

    log(f"pipelined throughput: {THREADS} threads × {per_thread} calls × {reps} …")
    tput: dict[str, list[float]] = {name: [] for name, _, _ in live}
    for _ in range(reps):
        for name, peer, _ in live:
            tput[name].append(threads_throughput(peer, THREADS, per_thread))
    tp = {name: median(v) for name, v in tput.items()}
    sec.raw["threads_calls_per_s"] = tput

    asy: dict[str, float] = {}
    for name, peer, _ in live:
        if peer.has_async:
            log(f"  async API of {name}, {WINDOW} in flight …")
            asy[name] = median(
                [async_throughput(peer, THREADS * per_thread, WINDOW) for _ in range(reps)]
            )
    sec.raw["async_calls_per_s"] = asy

    conn: dict[str, dict] = {}
    for name, peer, _ in live:
        if peer.has_connect:
            log(f"  new connection and its first call, {name} …")
            conn[name] = stats(peer.connect_calls(ctx.n(300, 60)))
    sec.raw["connect"] = conn

    peers = [s for s in subjects if s[0] != "pycircuit"]

    def target(name: str) -> Target | None:
        if name == "Pyro5 msgpack":
            return Target("≤ Pyro5 msgpack", factor=1.0)
        if name.startswith("raw RPyC"):
            return Target("≤ 1.1× raw RPyC", factor=1.1)
        return None

    m1 = "cross-call round trip (echo int), median"
    for name, peer, why in peers:
        if peer is None:
            sec.skip(m1, name, why)
            continue
        sec.add(
            m1, name, pc["median_us"], lat[name]["median_us"], target=target(name), info=peer.info
        )
    for label, res in pinned.items():
        m = f"cross-call round trip, both processes pinned to {label}, median"
        for name, peer, why in peers:
            if peer is None:
                continue
            if name not in res:
                sec.skip(m, name, "serving process unknown: not pinned")
                continue
            sec.add(
                m,
                name,
                res["pycircuit"]["median_us"],
                res[name]["median_us"],
                target=target(name),
                info=peer.info,
            )
    if not pinned:
        sec.skip("cross-call round trip, pinned", "all", "fewer than 2 usable CPUs")
    m2 = "cross-call round trip (echo int), p99"
    for name, peer, _ in peers:
        if peer is not None:
            sec.add(m2, name, pc["p99_us"], lat[name]["p99_us"], info=peer.info)
    m3 = f"pipelined, {THREADS} caller threads (calls/s, higher is better)"
    for name, peer, _ in peers:
        if peer is not None:
            sec.add(m3, name, tp["pycircuit"], tp[name], unit="calls/s", info=peer.info)
    m5 = "new connection and its first call (connect, authenticate, call), median"
    for name, peer, _ in peers:
        if peer is not None and name in conn and "pycircuit" in conn:
            sec.add(
                m5, name, conn["pycircuit"]["median_us"], conn[name]["median_us"], info=peer.info
            )
    m4 = f"async API, {WINDOW} calls in flight from one thread (calls/s, higher is better)"
    for name, peer, _ in peers:
        if peer is not None and name in asy:
            sec.add(m4, name, asy["pycircuit"], asy[name], unit="calls/s", info=peer.info)
    return sec
