"""Many threads over ONE connection, both ways (the GIL assumptions of the
link: lock-free send queue, request table, per-thread counts). A client and
a spawned worker: 32 client threads call the worker with small and large
payloads, through references, with nested callbacks into the client (which
call the worker again) and with the worker's own threads calling back all
at once. Every result is checked, the whole run is bounded by a deadline,
and afterwards both lease tables are back where they started and the two
runtimes still share one connection."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import hashlib
import os
import random
import threading

import pytest

import pycircuit
from pycircuit.runtime._runtime import current

from conftest import wait_until

THREADS = 32
ROUNDS = 40
DEADLINE = 240.0  # the whole storm, on a loaded 2-core machine


def _blob(seed: int, size: int) -> bytes:
    return hashlib.shake_256(b"%d" % seed).digest(size)


class Remote:
    """Lives in the worker."""

    def echo(self, v):
        return v

    def digest(self, blob):
        return hashlib.sha256(blob).hexdigest()

    def via(self, cb, x):
        # worker -> client (-> worker again, from the client's handler)
        return cb.twice(x) + 1

    def fanout(self, cb, seed, k):
        # the worker's own threads call the client at once, large replies
        def one(j):
            got = cb.big(seed + j, 70_000 + j)
            return got == _blob(seed + j, 70_000 + j)

        with cf.ThreadPoolExecutor(k) as ex:
            return all(ex.map(one, range(k)))

    def make(self, n):
        return pycircuit.ref(Box(n))

    def table(self):
        gc.collect()
        return current().table_size()


class Box:
    def __init__(self, n):
        self.n = n

    def get(self):
        return self.n


class Local:
    """Lives in the client; the worker calls it back."""

    def __init__(self, w):
        self.w = w

    def twice(self, x):
        return 2 * self.w.echo(x)  # a nested call back into the worker

    def big(self, seed, size):
        return _blob(seed, size)


def _serve():
    pycircuit.listen("remote", Remote())
    pycircuit.run_in_back(threading.Event().wait)
    return os.getpid()


@pytest.fixture
def worker(server):
    with pycircuit.connect(server) as c:
        pid, addr = c.spawn(c.hosts()[0], None, _serve)
        try:
            yield pycircuit.dial(addr, "remote"), addr
        finally:
            pycircuit.kill(addr)


def _storm(w, cb, n: int) -> int:
    rnd = random.Random(n)
    checked = 0
    for r in range(ROUNDS):
        kind = (n + r) % 5
        if kind == 0:
            v = rnd.randrange(1 << 60)
            assert w.echo(v) == v
            assert w.echo(b"s%d" % v) == b"s%d" % v
        elif kind == 1:
            blob = _blob(n * 1000 + r, rnd.choice((100_000, 300_000, 1 << 20)))
            assert w.echo(blob) == blob
            assert w.digest(blob) == hashlib.sha256(blob).hexdigest()
        elif kind == 2:
            x = rnd.randrange(1000)
            assert w.via(cb, x) == 2 * x + 1
        elif kind == 3:
            assert w.fanout(cb, n * 100 + r, 3) is True
        else:
            box = w.make(n * 100 + r)
            assert box.get() == n * 100 + r
            f = w.call_async("echo", r)
            assert f.result(60) == r
            del box
        checked += 1
    return checked


def test_many_threads_over_one_connection_both_ways(worker):
    w, addr = worker
    rt = current()
    cb = pycircuit.ref(Local(w))
    assert w.via(cb, 1) == 3  # the worker has dialled back: the one connection is up both ways
    gc.collect()
    worker_table = w.table()
    client_table = rt.table_size()
    connections = rt.counters()["connections"]
    peer = rt.peer(addr)

    ex = cf.ThreadPoolExecutor(THREADS)
    try:
        fs = [ex.submit(_storm, w, cb, n) for n in range(THREADS)]
        done, not_done = cf.wait(fs, timeout=DEADLINE)
        assert not not_done, f"{len(not_done)} of {THREADS} threads hung"
        assert [f.result() for f in fs] == [ROUNDS] * THREADS
    finally:
        # not waiting for hung threads: killing the worker (the fixture) fails their calls
        ex.shutdown(wait=False, cancel_futures=True)

    assert rt.peer(addr) is peer and not peer.dead
    assert rt.counters()["connections"] == connections  # still one connection to the worker
    assert peer.conn.in_flight() == 0
    wait_until(
        lambda: (gc.collect(), w.table() == worker_table)[1],
        30,
        what="the worker's lease table back to its start",
    )
    wait_until(
        lambda: (gc.collect(), rt.table_size() == client_table)[1],
        30,
        what="the client's lease table back to its start",
    )
