"""pycircuit itself, the subject: one embedded local server for the whole
run (``pycircuit.connect()`` with nothing configured) and the call-peer
face of an ``Echo`` in a daemon worker (a cached ``X``; calls are
``x.call("echo", v)``). Concurrent caller threads share the ``X`` and so the
one connection to the worker; ``x.call_async`` is its asynchronous API.
"""

from __future__ import annotations

import os

import psutil

import bench_helpers as H
from common import LOOPBACK, log, wait_gone
from peers import CallPeer


class Circuit:
    """The embedded server and the workers this run keeps alive."""

    def __init__(self, tracker):
        import pycircuit

        self.pycircuit = pycircuit
        self.tracker = tracker
        self.c = pycircuit.connect()
        emb = getattr(self.c, "_embedded", None)
        self.server_pid = emb.proc.pid if emb is not None else None
        tracker.remember(self.server_pid)
        self.host = self.c.hosts()[0]
        if not self.host.url.startswith(f"circuit://{LOOPBACK}:"):
            self.close()
            raise RuntimeError(f"refusing a non-loopback host {self.host.url}")
        self.kept = []
        theirs, _ = self.c.spawn(self.host, None, H.where)
        self.worker_pycircuit = theirs
        if theirs != os.path.abspath(pycircuit.__file__):
            log(f"warning: workers run {theirs}, this process {pycircuit.__file__}")
        tracker.remember(self.server_pid)  # and now its zygote

    def spawn(self, fn, *args, anchor=None, keep=True):
        value, addr = self.c.spawn(self.host, anchor, fn, *args)
        if keep:
            self.kept.append(addr)
            self.tracker.remember(addr.pid, tree=False)
        return value, addr

    def kill(self, addr) -> None:
        try:
            self.c.kill(addr)
        except self.pycircuit.CircuitError:
            pass  # gone already
        if addr in self.kept:
            self.kept.remove(addr)

    def processes(self) -> dict:
        """pid of the server and of its zygote."""
        out = {"server": self.server_pid}
        try:
            kids = psutil.Process(self.server_pid).children()
            out["zygote"] = kids[0].pid if kids else None
        except psutil.Error:
            out["zygote"] = None
        return out

    def close(self) -> None:
        for addr in list(self.kept):
            self.kill(addr)
        tree = []
        if self.server_pid:
            try:
                tree = psutil.Process(self.server_pid).children(recursive=True)
            except psutil.Error:
                pass
        self.c.close()  # stops the embedded server; its zygote and workers follow
        stray = wait_gone(tree)
        if stray:
            log(f"warning: had to signal {len(stray)} leftover pycircuit process(es): {stray}")


class Pycircuit(CallPeer):
    name = "pycircuit"
    has_async = True

    def __init__(self, circuit: Circuit):
        self.circuit = circuit
        self.addr = None

    def start(self, tracker):
        self.x, self.addr = self.circuit.spawn(H.echo_daemon)
        self.server_pid = self.addr.pid
        self.call = self.x.call

    def caller(self):
        call = self.call
        return lambda v: call("echo", v)

    def async_calls(self, n, window):
        call_async = self.x.call_async
        pending = []
        for i in range(n):
            if len(pending) >= window:
                pending.pop(0).result()
            pending.append(call_async("echo", i))
        for f in pending:
            f.result()

    has_connect = True

    def connect_calls(self, n):
        """A runtime of its own dials the worker each time (TCP connect, the
        same-user authentication, HELLO) and pings it; then drops the link."""
        from common import clock
        from pycircuit.runtime._runtime import HANDLE_ROOT, Runtime, RuntimeConfig

        rt = Runtime(RuntimeConfig())
        out = []
        try:
            for _ in range(n):
                t0 = clock()
                if rt.call_remote(self.addr, HANDLE_ROOT, "ping", (), {}) != self.addr.id:
                    raise AssertionError("pycircuit ping on a new connection")
                out.append(clock() - t0)
                rt.drop(self.addr.id)
                rt.revive(self.addr.id)
        finally:
            rt.close()
        return out

    def value_echo(self, v):
        return self.call("echo", v)

    def value_send(self, v):
        return self.call("size", v)

    def close(self):
        self.x = self.call = None
        if self.addr is not None:
            self.circuit.kill(self.addr)
