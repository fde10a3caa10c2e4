"""multiprocessing with the ``fork`` start method: a ``Pool(1)`` answering
``apply`` (calls; ``apply_async`` is its asynchronous API), a ``Process``
sending its first result through a ``Pipe`` (spawn), and an idle forked
``Process`` (footprint).
"""

from __future__ import annotations

import multiprocessing

import bench_helpers as H
from common import GRACE, clock
from peers import CallPeer

CTX = multiprocessing.get_context("fork")


class MpPool(CallPeer):
    name = "multiprocessing Pool.apply"
    has_async = True

    def __init__(self):
        self.pool = None

    def start(self, tracker):
        self.pool = CTX.Pool(1)
        self.server_pid = self.pool.apply(H.getpid)
        tracker.remember(self.server_pid)

    def caller(self):
        apply, echo = self.pool.apply, H.echo
        return lambda x: apply(echo, (x,))

    def async_calls(self, n, window):
        apply_async, echo = self.pool.apply_async, H.echo
        pending = []
        for i in range(n):
            if len(pending) >= window:
                pending.pop(0).get()
            pending.append(apply_async(echo, (i,)))
        for r in pending:
            r.get()

    def value_echo(self, v):
        return self.pool.apply(H.echo, (v,))

    def value_send(self, v):
        return self.pool.apply(H.size, (v,))

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def stop_process(p) -> None:
    if p is None:
        return
    if p.is_alive():
        p.terminate()
        p.join(GRACE)
        if p.is_alive():
            p.kill()
            p.join()
    try:
        p.close()
    except ValueError:
        pass


def spawn_once() -> int:
    """Spawn to first result: fork a Process, receive its 1 from a Pipe.
    The child is joined after the clock stops. Returns ns."""
    p = a = b = None
    try:
        t0 = clock()
        a, b = CTX.Pipe(duplex=False)
        p = CTX.Process(target=H.mp_child, args=(b,))
        p.start()
        r = a.recv()
        t = clock() - t0
        p.join(GRACE)
    finally:
        for c in (a, b):
            if c is not None:
                c.close()
        stop_process(p)
    if r != 1:
        raise AssertionError("fork child returned something else")
    return t


def idle_process(tracker):
    """The footprint peer: a forked Process idling on a Pipe. Returns (pid, stop)."""
    a, b = CTX.Pipe()
    p = CTX.Process(target=H.mp_idle, args=(b,))
    p.start()
    tracker.remember(p.pid)
    pid = a.recv()

    def stop():
        a.close()
        b.close()
        p.join(GRACE)
        stop_process(p)

    return pid, stop
