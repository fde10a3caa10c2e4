"""The zygote: a warm, single-threaded process that forks workers.

A fresh interpreter needs ~70 ms to import rpyc and dill; a fork of a process
that already imported them gives a worker in a few milliseconds. The server
itself has threads, and forking a threaded process is unsafe (locks held by
other threads stay held in the child), so each server starts one zygote that
never starts a thread.

Protocol (one JSON object per line): the server writes the zygote's
arguments first, ``[server URL, server ID, host, key path]`` (so that a
zygote may be started, and do its imports, before the server knows its own
URL), then orders, ``{"token": T, "dir": D}``; the zygote writes events to its
stdout, ``{"ev": "forked", "token": T, "pid": P}`` and
``{"ev": "exit", "pid": P, "status": S}`` (``S`` is the raw wait status).
``{"compile": [paths]}`` asks it to keep compiled code for those source
files (see ``_codecache``). The zygote exits when its stdin closes, that is
when the server dies.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
from typing import Any

# Imported here, before any fork, so that workers start warm.
import dill  # noqa: F401
import psutil  # noqa: F401
import rpyc  # noqa: F401

from ..acid import _sampler  # noqa: F401
from ..runtime import _runtime  # noqa: F401
from ..runtime._limits import raise_nofile
from . import _codecache, _worker


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


def _warm() -> None:
    """Run once here what every worker runs first: what a first use sets up
    (OpenSSL's HMAC, pickle's and dill's dispatch tables) is then shared
    with the workers instead of built again in each."""
    from ..runtime import _auth, _codec

    _auth.mac(bytes(32), b"warm", bytes(16), bytes(16))
    _codec.loads(_codec.dumps((os.getpid, (1, "x", b"y", 2.0, None), {"k": [True]})))
    _codec.loads(_codec.dumps(lambda: None))  # the dill path


def _first_line() -> tuple[list[str], bytes]:
    """The arguments line, read before anything is forked; and what came after it."""
    got = b""
    while b"\n" not in got:
        chunk = os.read(0, 65536)
        if not chunk:  # the server went before it told us anything
            os._exit(0)
        got += chunk
    line, rest = got.split(b"\n", 1)
    return [str(a) for a in json.loads(line)], rest


def main() -> None:
    raise_nofile()  # the workers forked below inherit it: one descriptor per connection
    argv, pending = _first_line()
    server_url, server_id, host, *rest = argv
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
    _warm()
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
    inp: Any = os.fdopen(0, "rb", buffering=0)  # a file, selected beside a bare fd
    while True:
        try:
            # orders read with the arguments line are served without waiting
            ready, _, _ = select.select([inp, rfd], [], [], 0 if b"\n" in pending else None)
        except InterruptedError:  # a signal woke us; its wakeup byte is read next round
            continue
        if rfd in ready:
            try:
                while os.read(rfd, 512):
                    pass
            except BlockingIOError:  # the wakeup pipe is drained
                pass
            _reap(out)
        if inp in ready or b"\n" in pending:
            chunk = os.read(0, 65536) if inp in ready else b""
            if inp in ready and not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                order = json.loads(line)
                if "compile" in order:
                    for path in order["compile"]:
                        _codecache.remember(path)
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    os.close(rfd)
                    os.close(wfd)
                    _worker.child_main(
                        server_url,
                        server_id,
                        host,
                        order["token"],
                        order["dir"],
                        key,
                        spare=bool(order.get("spare")),
                    )
                    os._exit(70)  # not reached: child_main exits itself
                _emit(out, ev="forked", token=order["token"], pid=pid)


if __name__ == "__main__":
    main()
