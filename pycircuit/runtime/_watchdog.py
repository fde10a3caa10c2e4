"""The watchdog of the threads that serve connections: it appoints a new
reader for a connection whose reader has run one request too long.
Layer: runtime (``_serve`` makes the process's one, ``WATCHDOG``; its
thread comes from ``_threads``)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ._threads import THREADS

if TYPE_CHECKING:
    from ._serve import ServeConfig, ServeGroup


class Watchdog:
    """Appoints a new reader for a connection whose reading thread has been
    running a request for too long (``ServeConfig.watchdog_delay``). Lazy on
    purpose: waking a follower for every request costs more than the
    request (GIL hand-offs)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._cond = threading.Condition()
        self._groups: set[ServeGroup] = set()
        self._running = False

    def watch(self, group: ServeGroup) -> None:
        # GIL: a set membership test is one atomic operation; a stale answer
        # costs nothing (the loop re-checks under _cond). A free-threaded
        # build locks a set per operation, so this read stays safe there.
        if group in self._groups:
            return
        with self._cond:
            if group in self._groups:
                return
            self._groups.add(group)
            self._start()
            self._cond.notify()

    def _start(self) -> None:  # holding _cond
        # A parked thread from the reservoir: starting one costs the
        # request that needs it no wait (Thread.start would).
        if not self._running:
            self._running = True
            THREADS.start(self._loop, "pycircuit-watchdog")

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._groups = set()
        self._running = False

    def _loop(self) -> None:
        idle: dict[ServeGroup, int] = {}
        cfg = self.config
        while True:
            with self._cond:
                until = time.monotonic() + cfg.watchdog_linger
                while not self._groups:
                    if (left := until - time.monotonic()) <= 0:
                        self._running = False  # watch() starts another
                        return
                    self._cond.wait(left)
                until = time.monotonic() + cfg.watchdog_period
                while (left := until - time.monotonic()) > 0:  # a new group does not cut it short
                    self._cond.wait(left)
                groups = list(self._groups)
            now = time.monotonic()
            for g in groups:
                if g.maybe_appoint(now, cfg.watchdog_delay):
                    idle.pop(g, None)
                    continue
                looks = idle.get(g, 0) + 1
                if looks < cfg.watchdog_idle_looks:
                    idle[g] = looks
                    continue
                idle.pop(g, None)
                with self._cond:
                    self._groups.discard(g)
                    # watch() skips the lock when it sees g listed; a call
                    # that began meanwhile must not go unwatched.
                    if g.busy():
                        self._groups.add(g)
