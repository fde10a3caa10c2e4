"""One thread per process that watches idle sockets and runs timers, so
that an idle connection costs no thread. Layer: runtime (uses ``_threads``;
``_serve`` parks idle connections here, ``_conns`` accepts here).

A socket is watched one-shot (``watch``): when it turns readable (data,
EOF or an error all count) it is unregistered first, then its callback
runs in the reactor thread. A listening socket is watched for good
(``listen``). Callbacks and timers (``call_later``) must be quick and must
not block: they hand work to a pool thread (``THREADS.start``). The thread
starts on first use and again after a fork (threads do not survive one).

Every change to the selector is made by the reactor thread itself (other
threads queue it and wake the loop), so the selector needs no lock and a
socket's registration changes in the order it was asked for.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._threads import THREADS

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class Reactor:
    """The process's selector loop: one-shot watches, persistent listeners, timers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: deque[tuple[str, Any, Callback | None]] = deque()
        self._timers: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self._started = False
        self._sel: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # -- any thread -----------------------------------------------------------
    def watch(self, sock: Any, fn: Callback) -> None:
        """Run ``fn`` once, when ``sock`` turns readable (a closed socket:
        at once). A socket has one watch; a new one replaces it."""
        self._queue(("watch", sock, fn))

    def listen(self, sock: Any, fn: Callback) -> None:
        """Run ``fn`` each time ``sock`` is readable, until ``unwatch``."""
        self._queue(("listen", sock, fn))

    def unwatch(self, sock: Any) -> None:
        """Stop watching ``sock`` (nothing if it is not watched)."""
        self._queue(("unwatch", sock, None))

    def call_later(self, delay: float, fn: Callback) -> None:
        """Run ``fn`` in the reactor thread after ``delay`` seconds."""
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), fn))
            self._ensure_started()
        self._wake()

    def _queue(self, op: tuple[str, Any, Callback | None]) -> None:
        # GIL or not: a deque's append is atomic (locked per object in a
        # free-threaded build); the loop pops only from its other end.
        self._ops.append(op)
        with self._lock:
            self._ensure_started()
        self._wake()

    def _wake(self) -> None:
        w = self._wake_w
        if w is None:
            return
        try:
            w.send(b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is woken already
        except OSError:  # closed under us by a fork's reset: the new loop reads the queue anyway
            log.debug("waking the reactor failed", exc_info=True)

    def _ensure_started(self) -> None:  # holding _lock
        if self._started:
            return
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._started = True
        threading.Thread(target=self._loop, name="pycircuit-reactor", daemon=True).start()

    def _after_fork(self) -> None:
        # The parent's thread is gone and its selector is the parent's: start
        # afresh on first use. What was queued or watched was the parent's.
        self._lock = threading.Lock()
        self._ops = deque()
        self._timers = []
        self._started = False
        self._sel = self._wake_r = self._wake_w = None

    # -- the reactor thread ---------------------------------------------------
    def _loop(self) -> None:
        sel, wake_r = self._sel, self._wake_r
        assert sel is not None and wake_r is not None
        while True:
            self._apply_ops(sel)
            with self._lock:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                events = sel.select(timeout)
            except OSError:  # EINTR is retried by selectors; anything else: look again
                log.exception("the reactor's select failed")
                events = []
            for key, _ in events:
                if key.fileobj is wake_r:
                    try:
                        while wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass  # drained: nothing left to read
                    continue
                persistent, fn = key.data
                if not persistent:
                    self._unregister(sel, key.fileobj)
                self._run(fn)
            self._run_timers()

    def _apply_ops(self, sel: selectors.BaseSelector) -> None:
        ops = self._ops
        while ops:
            kind, sock, fn = ops.popleft()
            self._unregister(sel, sock)
            if kind == "unwatch" or fn is None:
                continue
            try:
                sel.register(sock, selectors.EVENT_READ, (kind == "listen", fn))
            except (ValueError, OSError):  # closed already: its reader learns that at once
                self._run(fn)
            except KeyError:
                # The fd of a socket closed without unwatch was reused:
                # the old entry is stale (epoll dropped it on close).
                self._forget_fd(sel, sock)
                sel.register(sock, selectors.EVENT_READ, (kind == "listen", fn))

    @staticmethod
    def _unregister(sel: selectors.BaseSelector, sock: Any) -> None:
        try:
            key = sel.get_key(sock)
        except (KeyError, ValueError):
            return  # not watched (or closed and never watched)
        if key.fileobj is sock:
            sel.unregister(sock)

    @staticmethod
    def _forget_fd(sel: selectors.BaseSelector, sock: Any) -> None:
        fd = sock.fileno()
        for key in list(sel.get_map().values()):
            if key.fd == fd:
                sel.unregister(key.fileobj)

    def _run_timers(self) -> None:
        now = time.monotonic()
        due: list[Callback] = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for fn in due:
            self._run(fn)

    @staticmethod
    def _run(fn: Callback) -> None:
        try:
            fn()
        except Exception:  # one callback's bug must not stop the loop every idle socket relies on
            log.exception("a reactor callback failed")


REACTOR = Reactor()
os.register_at_fork(after_in_child=REACTOR._after_fork)
# The reservoir refills its parked threads from the reactor's timers, off
# the paths that take them (see ``Reservoir.set_refiller``).
THREADS.set_refiller(REACTOR.call_later)
