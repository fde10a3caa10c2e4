"""Chaos, bounded (about 30 s, loopback only): caller threads with deadlines
against workers that a driver SIGKILLs, SIGSTOPs and SIGCONTs at random.

Invariants: every call ends by its deadline (plus a margin) with a value, a
pycircuit error or TimeoutError; no caller thread hangs; afterwards the
surviving owners' lease tables are back to where they started, no worker
process is left, and this process's descriptors and threads are back to
their level at the start (give or take a few)."""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time

import psutil

import pycircuit

from conftest import wait_until

RUN = 12.0  # seconds of load
DEADLINE = 1.5  # per call
MARGIN = 5.0  # a call may overrun its deadline by this much (a loaded machine), never more
WORKERS = 4
CALLERS = 6


class Svc:
    def echo(self, v):
        return v

    def nap(self, s):
        time.sleep(s)
        return s

    def make(self):
        return pycircuit.ref(Svc())

    def table(self):
        from pycircuit.runtime._runtime import current

        return current().table_size()


def _serve():
    pycircuit.listen("svc", Svc())
    pycircuit.run_in_back(threading.Event().wait)
    return os.getpid()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_chaos(servers):
    url = servers.start("--spares", "0")
    rng = random.Random(20261202)
    with pycircuit.connect(url) as c:
        host = c.hosts()[0]
        # warm up what this process keeps for good (threads, pools, the server link)
        pid, addr = c.spawn(host, None, _serve)
        pycircuit.dial(addr, "svc").make().echo(1)
        pycircuit.kill(addr)
        gc.collect()
        fds0, threads0 = _fds(), threading.active_count()

        workers: dict[int, pycircuit.X] = {}
        base: dict[int, int] = {}
        lock = threading.Lock()

        def spawn_one():
            p, a = c.spawn(host, None, _serve)
            x = pycircuit.dial(a, "svc")
            with lock:
                workers[p] = x
                base[p] = x.table()

        for _ in range(WORKERS):
            spawn_one()

        stop = threading.Event()
        problems: list[str] = []
        outcomes = {"value": 0, "circuit": 0, "timeout": 0}

        def caller(seed: int):
            r = random.Random(seed)
            while not stop.is_set():
                with lock:
                    live = list(workers.values())
                if not live:
                    continue
                x = r.choice(live)
                op = r.choice(["echo", "nap", "make"])
                args = {"echo": (r.random(),), "nap": (r.random() * 0.3,), "make": ()}[op]
                t0 = time.monotonic()
                try:
                    v = pycircuit.call_within(DEADLINE, x, op, *args)
                    if op == "make" and r.random() < 0.5:  # use the reference once, then drop it
                        pycircuit.call_within(DEADLINE, v, "echo", 1)
                    del v
                    kind = "value"
                except TimeoutError:
                    kind = "timeout"
                except pycircuit.CircuitError:
                    kind = "circuit"
                except BaseException as e:  # an invariant broken: reported below
                    problems.append(f"{op}: {type(e).__name__}: {e}")
                    kind = "circuit"
                took = time.monotonic() - t0
                if took > (2 if op == "make" else 1) * DEADLINE + MARGIN:
                    problems.append(f"{op} took {took:.1f} s")
                with lock:
                    outcomes[kind] += 1

        threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(CALLERS)]
        for t in threads:
            t.start()
        stopped: set[int] = set()
        end = time.monotonic() + RUN
        try:
            while time.monotonic() < end:
                with lock:
                    pids = list(workers)
                action = rng.random()
                if pids and action < 0.2:  # kill one and replace it
                    p = rng.choice(pids)
                    os.kill(p, signal.SIGKILL)
                    with lock:
                        workers.pop(p, None)
                        base.pop(p, None)
                    stopped.discard(p)
                    spawn_one()
                elif pids and action < 0.6:  # stop one for a while
                    p = rng.choice(pids)
                    os.kill(p, signal.SIGSTOP)
                    stopped.add(p)
                elif stopped:
                    p = stopped.pop()
                    os.kill(p, signal.SIGCONT)
                stop.wait(rng.uniform(0.1, 0.6))
        finally:
            for p in stopped:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass  # killed meanwhile
            stop.set()
            for t in threads:
                t.join(DEADLINE + MARGIN + 10)
        assert not [t for t in threads if t.is_alive()], "a caller thread hangs"
        assert not problems, problems[:5]
        assert outcomes["value"] > 50 and outcomes["timeout"] + outcomes["circuit"] > 0, outcomes

        # the survivors' lease tables go back to where they started
        gc.collect()
        with lock:
            survivors = dict(workers)
        for p, x in survivors.items():
            wait_until(
                lambda x=x, p=p: (gc.collect(), x.table())[1] == base[p],
                15,
                what=f"worker {p}'s lease table back to {base[p]}",
            )
        for x in survivors.values():
            pycircuit.kill(x.addr)
        workers.clear()  # the closures above still see the dict: empty it, not the name
        del x, survivors
        server = psutil.Process(pycircuit.WorkerAddr.parse(url).pid)

        def no_workers():
            try:
                return all(
                    all(k.status() == psutil.STATUS_ZOMBIE for k in z.children())
                    for z in server.children()
                )
            except psutil.NoSuchProcess:  # one exited while we looked: look again
                return False

        wait_until(no_workers, 15, what="no worker process left")
        gc.collect()
        wait_until(
            lambda: _fds() <= fds0 + 4, 15, what=f"descriptors back to {fds0} (now {_fds()})"
        )
        wait_until(
            lambda: threading.active_count() <= threads0 + 8,
            15,
            what=f"threads back to {threads0} (now {threading.active_count()})",
        )
