"""Life of a worker process, from fork to exit.

A worker is forked by its server's zygote, makes its runtime, registers with
the server (which then lists it in the anchor namespace and tells the
spawning client its address), runs the one spawned function that the client
sends to its ``HANDLE_MAIN`` object, and exits once that function has been
answered and every ``run_in_back`` function has returned (``_life``). It
also exits if its server goes away: a worker never outlives the host's
server.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..acid import serve_everywhere
from ..errors import CircuitError
from ..runtime._addr import WorkerAddr
from ..runtime._config import HANDLE_KERNEL, HANDLE_MAIN
from ..runtime._runtime import Runtime, RuntimeConfig, install
from . import _codecache
from ._life import WorkerLife
from ._orders import output_path

__all__ = ["HANDLE_MAIN", "WorkerConfig", "WorkerMain", "child_main", "run_in_back", "server_url"]


@dataclass(frozen=True)
class WorkerConfig:
    # A worker whose spawner never sends the function (it died in between)
    # gives up after this long; a spawn normally sends it within
    # milliseconds, and a slow one on a loaded host within seconds.
    main_timeout: float = 60.0


EXIT_OK = 0
EXIT_NO_MAIN = 3
EXIT_SERVER_LOST = 4
EXIT_BOOT_FAILED = 5

_server_url: str | None = None
_life: WorkerLife | None = None  # this process's, if it is a worker


def server_url() -> str | None:
    """In a worker: the URL of its host's server (the default dial target)."""
    return _server_url


class WorkerMain:
    """Runs the spawned function; the object at HANDLE_MAIN of a worker."""

    def __init__(self, rt: Runtime, life: WorkerLife) -> None:
        self._rt = rt
        self._life = life
        self.assigned = threading.Event()
        self.server: WorkerAddr | None = None  # the server, once registered with

    def warm(self) -> None:
        """The server's first call to a spare: it only exercises the path."""

    def assign(self) -> None:
        """The server handed this (spare) worker to a spawner: its function
        is due now."""
        self.assigned.set()

    def run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        self.assigned.set()
        self._life.start_main()
        try:
            return fn(*args, **kwargs)
        finally:
            self._life.main_returned()  # done once the reply has left (WorkerLife)

    def report_sources(self) -> None:
        """Tell the server which source modules this worker had to import
        (the function's own module, those it imported): its zygote keeps
        their compiled code for the next workers (see ``_codecache``).
        Called once the function's reply has left (``WorkerLife.after_main``):
        the spawner need not wait for it. Never raises."""
        server = self.server
        paths = _codecache.new_sources()
        if server is None or not paths:
            return
        try:
            self._rt.post_remote(server, HANDLE_KERNEL, "cache_code", paths)
        except CircuitError:
            pass  # the server is going: nothing to learn for


def run_in_back(fn: Callable, *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` in a background thread of this worker and keep the worker
    alive until it returns."""
    life = _life
    if life is None:
        raise CircuitError(
            "run_in_back works only inside a spawned worker function (this process is not a worker)"
        )
    if not callable(fn):
        raise TypeError("run_in_back needs a callable")
    life.background_started()

    def body() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException:
            # Product output: the traceback goes to the worker's saved stderr.
            traceback.print_exc()
        finally:
            life.background_ended()

    threading.Thread(target=body, name="pycircuit-back", daemon=True).start()


def _redirect_stdio(files: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(output_path(files, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        try:
            if reconfigure is not None:  # else replaced by the user's own stream
                reconfigure(line_buffering=True)
        except ValueError:  # a stream that cannot: keep its buffering
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
    files: str,
    key: Any = "",
    spare: bool = False,
    cfg: WorkerConfig = WorkerConfig(),
    link: int | None = None,
) -> None:
    """Entry point of a freshly forked worker; never returns. With ``key``
    (the server's cluster key: a loaded ClusterKey or its file path) the
    worker speaks TLS. A ``spare`` waits to be assigned before its function
    deadline starts. ``files``: the path prefix of its ``.stdout`` and
    ``.stderr`` files. ``link``: a socket descriptor connected to the server
    (see ``_orders``); without it the worker dials the server's URL."""
    global _server_url, _life
    try:
        os.setsid()  # signals aimed at the server's process group spare workers
        _redirect_stdio(files)
        # Stacks of a worker stuck in C code holding the GIL: the server sends
        # SIGUSR1 and reads this file through /proc (the acid service needs
        # the GIL). A memfd: no inode to allocate on the disk for each worker.
        stack_fd = os.memfd_create("pycircuit-stack")
        faulthandler.register(signal.SIGUSR1, file=stack_fd, all_threads=True)
        faulthandler.enable(file=sys.stderr, all_threads=True)
        _server_url = server_url_
        tls = key or None
        if isinstance(tls, str):
            from ..runtime._tls import load_key

            tls = load_key(tls)
        life = _life = WorkerLife()
        rt = Runtime(RuntimeConfig(host=host, role="worker", host_label=server_id, tls=tls))
        rt.observe_calls(life)
        main = WorkerMain(rt, life)
        rt.add_static(HANDLE_MAIN, main)
        serve_everywhere()
        install(rt)
        server = WorkerAddr.parse(server_url_)
        # the connection we dialled: a peer merely claiming the server's ID is not it
        if link is not None:
            server_link = rt.dial_link(server, socket.socket(fileno=link))
        else:
            server_link = rt.peer(server)

        def on_lost(p: object) -> None:
            if p is server_link:
                _exit(EXIT_SERVER_LOST)

        rt.on_peer_lost.append(on_lost)
        rt.call_remote(server, HANDLE_KERNEL, "register", (token, rt.url, stack_fd), {})
        main.server = server
        life.after_main = main.report_sources
    except BaseException:
        traceback.print_exc()  # product output: the worker's saved stderr says why it did not boot
        _exit(EXIT_BOOT_FAILED)
    if spare:  # forked ahead of demand: waits (without a deadline) to be handed out
        main.assigned.wait()
    if not life.finished.wait(cfg.main_timeout):
        if not life.started():
            # Product output: the worker's saved stderr, shown with its remains.
            print("pycircuit: no function arrived; exiting", file=sys.stderr)
            _exit(EXIT_NO_MAIN)
        life.finished.wait()
    _exit(EXIT_OK)
