"""Life of a worker process, from fork to exit.

A worker is forked by its server's zygote, makes its runtime, registers with
the server (which then lists it in the anchor namespace and tells the
spawning client its address), runs the one spawned function that the client
sends to its ``HANDLE_MAIN`` object, and exits once that function has been
answered and every ``run_in_back`` function has returned. It also exits if
its server goes away: a worker never outlives the host's server.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import traceback
from typing import Any
from collections.abc import Callable

from ..errors import CircuitError, SpawnError
from ..runtime._addr import WorkerAddr
from ..runtime._runtime import HANDLE_MAIN, Runtime, RuntimeConfig, current, install
from . import _codecache

# A worker whose spawner never sends the function (it died in between) gives up.
MAIN_TIMEOUT = 60.0

EXIT_OK = 0
EXIT_NO_MAIN = 3
EXIT_SERVER_LOST = 4
EXIT_BOOT_FAILED = 5

_server_url: str | None = None


def server_url() -> str | None:
    """In a worker: the URL of its host's server (the default dial target)."""
    return _server_url


class WorkerMain:
    """Runs the spawned function; the object at HANDLE_MAIN of a worker."""

    def __init__(self, rt: Runtime):
        self._rt = rt
        self.assigned = threading.Event()
        self.kernel: Any = None  # the server's kernel, once dialled
        self._preloaded = set(sys.modules)  # what the zygote had imported

    def warm(self) -> None:
        """The server's first call to a spare: it only exercises the path."""

    def assign(self) -> None:
        """The server handed this (spare) worker to a spawner: its function
        is due now."""
        self.assigned.set()

    def run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        self.assigned.set()
        lc = self._rt.lifecycle
        with lc.lock:
            if lc.main_started:
                raise SpawnError("this worker already ran its function")
            lc.main_started = True
        try:
            return fn(*args, **kwargs)
        finally:
            # The runtime marks main done once the reply has been sent.
            self._rt._tl.main_replied = True
            self._report_sources()

    def _report_sources(self) -> None:
        """Tell the server which source modules this worker had to import
        (the function's own module, those it imported): its zygote keeps
        their compiled code for the next workers (see ``_codecache``)."""
        k = self.kernel
        paths = _codecache.new_sources(self._preloaded)
        if k is None or not paths:
            return
        try:
            self._rt.post_remote(k.addr, k.handle, "cache_code", paths)
        except CircuitError:
            pass  # the server is going: nothing to learn for


def run_in_back(fn: Callable, *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` in a background thread of this worker and keep the worker
    alive until it returns."""
    rt = current(create=False)
    if rt is None or rt.cfg.role != "worker":
        raise CircuitError(
            "run_in_back works only inside a spawned worker function (this process is not a worker)"
        )
    if not callable(fn):
        raise TypeError("run_in_back needs a callable")
    lc = rt.lifecycle
    with lc.lock:
        lc.background += 1

    def body() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException:
            traceback.print_exc()
        finally:
            with lc.lock:
                lc.background -= 1
                lc.check()

    threading.Thread(target=body, name="pycircuit-back", daemon=True).start()


def _redirect_stdio(wdir: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(os.path.join(wdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (
            AttributeError,
            ValueError,
        ):  # replaced by the user's own stream: keep its buffering
            pass


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # exiting now anyway; a stream that cannot flush has nowhere to report to
            pass
    os._exit(code)


def child_main(
    server_url_: str,
    server_id: str,
    host: str,
    token: str,
    wdir: str,
    key: Any = "",
    spare: bool = False,
) -> None:
    """Entry point of a freshly forked worker; never returns. With ``key``
    (the server's cluster key: a loaded ClusterKey or its file path) the
    worker speaks TLS. A ``spare`` waits to be assigned before its function
    deadline starts."""
    global _server_url
    try:
        os.setsid()  # signals aimed at the server's process group spare workers
        _redirect_stdio(wdir)
        stack_file = open(os.path.join(wdir, "stack"), "w+")
        # Stacks of a worker stuck in C code holding the GIL: the server sends
        # SIGUSR1 and reads this file (the acid service needs the GIL).
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
        faulthandler.enable(file=sys.stderr, all_threads=True)
        _server_url = server_url_
        tls = key or None
        if isinstance(tls, str):
            from ..runtime._tls import load_key

            tls = load_key(tls)
        rt = install(
            Runtime(RuntimeConfig(host=host, role="worker", host_label=server_id, tls=tls))
        )
        main = WorkerMain(rt)
        rt._table.add_static(HANDLE_MAIN, main)
        server = WorkerAddr.parse(server_url_)
        kernel = rt.dial(server, "circuit")
        link = rt.peer(
            server
        )  # the connection we dialled: a peer merely claiming the server's ID is not it
        rt.on_peer_lost.append(lambda p: p is link and _exit(EXIT_SERVER_LOST))
        kernel.register(token, rt.url)
        main.kernel = kernel
    except BaseException:
        traceback.print_exc()
        _exit(EXIT_BOOT_FAILED)
    if spare:  # forked ahead of demand: waits (without a deadline) to be handed out
        main.assigned.wait()
    lc = rt.lifecycle
    if not lc.finished.wait(MAIN_TIMEOUT):
        with lc.lock:
            started = lc.main_started
        if not started:
            print("pycircuit: no function arrived; exiting", file=sys.stderr)
            _exit(EXIT_NO_MAIN)
        lc.finished.wait()
    _exit(EXIT_OK)
