"""mitogen: a child context made by ``router.local()`` (a fresh
interpreter bootstrapped over a pipe) for the calls, and by
``router.fork()`` (a fork of this process) for spawning. Calls are
``context.call(fn, *args)`` with module-level functions of
``bench_helpers``, whose source mitogen ships to the child on first use;
``call_async`` is its asynchronous API. Concurrent caller threads share the
context, as they share pycircuit's connection.
"""

from __future__ import annotations

import mitogen.master

import bench_helpers as H
from common import clock, terminate_all
from peers import CallPeer


class _Router:
    def __init__(self):
        self.broker = mitogen.master.Broker()
        self.router = mitogen.master.Router(self.broker)
        self.contexts = []

    def local(self):
        ctx = self.router.local()
        self.contexts.append(ctx)
        return ctx

    def fork(self):
        ctx = self.router.fork()
        self.contexts.append(ctx)
        return ctx

    def close(self):
        import psutil

        procs = []
        for ctx in self.contexts:
            try:
                procs.append(psutil.Process(ctx.call(H.getpid)))
            except Exception:
                pass
            try:
                ctx.shutdown(wait=True)
            except Exception:
                pass
        self.contexts.clear()
        try:
            self.broker.shutdown()
            self.broker.join()
        except Exception:
            pass
        if procs:
            _, alive = psutil.wait_procs(procs, timeout=2)
            terminate_all(alive)


class Mitogen(CallPeer):
    name = "mitogen local()"
    has_async = True

    def __init__(self):
        self.r = None

    def start(self, tracker):
        self.r = _Router()
        self.ctx = self.r.local()
        self.server_pid = self.ctx.call(H.getpid)
        tracker.remember(self.server_pid)
        self.ctx.call(H.echo, 0)  # ships bench_helpers

    def caller(self):
        call, echo = self.ctx.call, H.echo
        return lambda x: call(echo, x)

    def async_calls(self, n, window):
        call_async, echo = self.ctx.call_async, H.echo
        pending = []
        for i in range(n):
            if len(pending) >= window:
                pending.pop(0).get().unpickle()
            pending.append(call_async(echo, i))
        for r in pending:
            r.get().unpickle()

    def value_echo(self, v):
        return self.ctx.call(H.echo, v)

    def value_send(self, v):
        return self.ctx.call(H.size, v)

    def close(self):
        if self.r is not None:
            self.r.close()


class Spawner:
    """Spawn to first result with ``router.fork()`` (and ``router.local()``):
    make the context, ``call(one)``; it is shut down after the clock stops."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.r = _Router()

    def once(self, how: str = "fork") -> int:
        t0 = clock()
        ctx = self.r.fork() if how == "fork" else self.r.local()
        r = ctx.call(H.one)
        t = clock() - t0
        self.tracker.remember(ctx.call(H.getpid))
        ctx.shutdown(wait=True)
        self.r.contexts.remove(ctx)
        if r != 1:
            raise AssertionError("mitogen child returned something else")
        return t

    def close(self):
        self.r.close()


def idle_fork(tracker):
    """The footprint peer (information): an idle ``router.fork()`` child.
    Returns (pid, stop)."""
    r = _Router()
    try:
        ctx = r.fork()
        pid = ctx.call(H.getpid)
    except BaseException:
        r.close()
        raise
    tracker.remember(pid)
    return pid, r.close
