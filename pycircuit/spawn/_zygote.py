"""The zygote: a warm, single-threaded process that forks workers.

A fresh interpreter takes long to import rpyc and dill; a fork of a process
that already imported them gives a worker in a few milliseconds. The server
itself has threads, and forking a threaded process is unsafe (locks held by
other threads stay held in the child), so each server has one zygote that
never starts a thread: forked from the server before the server starts any
(``_orders.fork_zygote``), or, to replace one that died, started afresh
(``_orders.start_zygote``).

The server drives it through its stdin, a socket (``_orders``: the
arguments, then fork and compile orders, each fork order with the worker's
end of its link to the server); the zygote writes events to its stdout, one
JSON object a line: ``{"ev": "forked", "token": T, "pid": P}`` and
``{"ev": "exit", "pid": P, "status": S}`` (``S`` is the raw wait status).
The zygote exits when its stdin closes, that is when the server dies.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
from typing import Any

# Imported here, before any fork, so that workers start warm.
import dill  # noqa: F401
import psutil  # noqa: F401
import rpyc  # noqa: F401

from ..acid import _sampler  # noqa: F401
from ..runtime import _runtime  # noqa: F401
from ..runtime._limits import raise_nofile
from . import _codecache, _worker
from ._orders import receive


def _emit(out, **event) -> None:
    out.write(json.dumps(event).encode() + b"\n")


def _reap(out) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children left to reap
            return
        if pid == 0:
            return
        _emit(out, ev="exit", pid=pid, status=status)


def _warm(host: str) -> None:
    """Run once here what every worker runs first: what a first use sets up
    (OpenSSL's HMAC, pickle's and dill's dispatch tables, the answer about
    the workers' host) is then shared with the workers instead of built
    again in each."""
    from ..runtime import _auth, _codec
    from ..runtime._addr import is_loopback

    is_loopback(host)
    _auth.mac(bytes(32), b"warm", bytes(16), bytes(16))
    _codec.loads(_codec.dumps((os.getpid, (1, "x", b"y", 2.0, None), {"k": [True]})))
    _codec.loads(_codec.dumps(lambda: None))  # the dill path


def _arguments(ctl: socket.socket) -> list[str]:
    """The arguments, read before anything is forked."""
    args, fd = receive(ctl)
    if fd is not None:
        os.close(fd)
    if args is None:  # the server went before it told us anything
        os._exit(0)
    return [str(a) for a in args]


def main() -> None:
    raise_nofile()  # the workers forked below inherit it: one descriptor per connection
    ctl = socket.socket(fileno=0)
    server_url, server_id, host, *rest = _arguments(ctl)
    key: Any = rest[0] if rest else ""  # the cluster key file, if the server has one
    if key:  # loaded once: forked workers inherit it (a few ms each otherwise)
        from ..runtime._tls import load_key

        try:
            key = load_key(key)
        except Exception:
            pass  # each worker loads it by path, and reports why it cannot
    if not key:  # read once here: forked workers inherit the same-user secret
        from ..runtime._auth import user_secret

        user_secret()
    _codecache.install()
    _warm(host)
    # Everything imported so far is shared with every worker: keep the
    # collector from touching (and so copying) those pages in each child.
    gc.collect()
    gc.freeze()
    _codecache.reset_misses()
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we go
    out = os.fdopen(1, "wb", buffering=0)
    while True:
        try:
            ready, _, _ = select.select([ctl.fileno(), rfd], [], [])
        except InterruptedError:  # a signal woke us; its wakeup byte is read next round
            continue
        if rfd in ready:
            try:
                while os.read(rfd, 512):
                    pass
            except BlockingIOError:  # the wakeup pipe is drained
                pass
            _reap(out)
        if ctl.fileno() not in ready:
            continue
        order, link = receive(ctl)
        if order is None:
            return
        if "compile" in order:
            for path in order["compile"]:
                _codecache.remember(path)
        else:
            _fork(order, link, ctl, (rfd, wfd), (server_url, server_id, host, key), out)
        if link is not None:
            os.close(link)  # the worker's now (or nobody's: the server sees its end close)


def _fork(
    order: dict, link: int | None, ctl: socket.socket, wakeup: tuple, args: tuple, out: Any
) -> None:
    """Fork the worker of ``order``; ``link``: its end of its server link."""
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        ctl.detach()  # fd 0: the worker points it at /dev/null
        for fd in wakeup:
            os.close(fd)
        server_url, server_id, host, key = args
        _worker.child_main(
            server_url,
            server_id,
            host,
            order["token"],
            order["files"],
            key,
            spare=bool(order.get("spare")),
            link=link,
        )
        os._exit(70)  # not reached: child_main exits itself
    _emit(out, ev="forked", token=order["token"], pid=pid)


if __name__ == "__main__":
    main()
