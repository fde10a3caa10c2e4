"""Spare workers: forked and registered ahead of demand, so that a spawn
costs one message to a spare instead of a fork, a boot and a registration.

The pool keeps ``SpareConfig.floor`` spares at rest. A spawn that finds none
ready doubles the target (up to ``ceiling``): a burst of spawns soon finds
spares forked while the previous ones ran. It then waits for the first spare
already on its way rather than forking one more (which would only compete
for the same CPU). After ``decay`` seconds without running out, the target
halves and the spares above it are retired. Layer: server (the server gives
the pool its ways to make, hand out and retire a worker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..runtime._threads import THREADS
from ..spawn._spawner import WorkerRecord

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpareConfig:
    floor: int = 2  # spares kept at rest
    ceiling: int = 16  # spares kept at most, under a burst of spawns (0: no spares at all)
    # A spare taken leaves its replacement's fork this long, so that the fork
    # does not take the CPU the spawner's call to the spare needs right now.
    refill_delay: float = 0.01
    decay: float = 5.0  # seconds without running out before the target halves


class SparePool:
    def __init__(
        self,
        cfg: SpareConfig,
        make: Callable[[], WorkerRecord | None],
        assign: Callable[[WorkerRecord, list], bool],
        retire: Callable[[WorkerRecord], None],
        stopped: threading.Event,
    ) -> None:
        self._cfg = cfg
        self._make, self._assign, self._retire = make, assign, retire
        self._stopped = stopped
        self._cond = threading.Condition(threading.Lock())
        self._ready: list[WorkerRecord] = []
        self._coming = 0
        self._target = cfg.floor
        self._last_miss = time.monotonic()

    def count(self) -> int:
        with self._cond:
            return len(self._ready)

    def target(self) -> int:
        with self._cond:
            return self._target

    def take(self, paths: list, timeout: float) -> WorkerRecord | None:
        """A spare handed to ``paths``; when none is ready but some are on
        their way, the first of them (waiting up to ``timeout``). None: no
        spare to be had; the caller forks a worker of its own."""
        deadline = time.monotonic() + timeout
        with self._cond:
            missed = not self._ready
            if missed:
                self._miss()
        if missed:
            self._fill()
        while True:
            with self._cond:
                while not self._ready:
                    left = deadline - time.monotonic()
                    if self._coming == 0 or self._stopped.is_set() or left <= 0:
                        return None
                    self._cond.wait(left)
                rec = self._ready.pop()  # the newest: its threads and pages are still warm
                some_left = bool(self._ready)
            if self._assign(rec, paths):
                self._replenish(some_left, missed)
                return rec
            # it died meanwhile (its exit is reported as usual): try the next

    def take_ready(self, paths: list, k: int) -> list[WorkerRecord]:
        """Up to ``k`` spares ready now, handed to ``paths`` (a batch of
        spawns forks the rest at once instead of waiting for spares)."""
        taken: list[WorkerRecord] = []
        with self._cond:
            missed = len(self._ready) < k
            if missed:
                self._miss()
        while len(taken) < k:
            with self._cond:
                if not self._ready:
                    break
                rec = self._ready.pop()
            if self._assign(rec, paths):
                taken.append(rec)
        if missed:
            self._fill()
        else:
            self._replenish(self.count() > 0, False)
        return taken

    def discard(self, rec: WorkerRecord) -> None:
        """A spare exited before it was handed out."""
        with self._cond:
            if rec in self._ready:
                self._ready.remove(rec)

    def fill(self) -> None:
        """Fork spares up to the target (at start, and after a take)."""
        self._fill()

    # -- inside --------------------------------------------------------------
    def _miss(self) -> None:  # holding _cond
        self._target = min(self._cfg.ceiling, max(self._cfg.floor, 1, 2 * self._target))
        self._last_miss = time.monotonic()

    def _replenish(self, some_left: bool, missed: bool) -> None:
        if not missed:
            self._decay()
        if some_left:
            THREADS.start(self._fill_later, "pycircuit-spare")
        else:
            self._fill()

    def _decay(self) -> None:
        retire: list[WorkerRecord] = []
        with self._cond:
            now = time.monotonic()
            if self._target > self._cfg.floor and now - self._last_miss > self._cfg.decay:
                self._target = max(self._cfg.floor, self._target // 2)
                self._last_miss = now  # the next halving after another quiet period
                while len(self._ready) > self._target:
                    retire.append(self._ready.pop(0))  # the oldest go
        for rec in retire:
            self._retire(rec)

    def _fill_later(self) -> None:
        if not self._stopped.wait(self._cfg.refill_delay):
            self._fill()

    def _fill(self) -> None:
        with self._cond:
            want = self._target - len(self._ready) - self._coming
            if want <= 0 or self._stopped.is_set():
                return
            self._coming += want
        for _ in range(want):
            THREADS.start(self._make_one, "pycircuit-spare")

    def _make_one(self) -> None:
        rec = None
        try:
            rec = self._make()
        finally:
            with self._cond:
                self._coming -= 1
                if rec is not None:
                    self._ready.append(rec)
                self._cond.notify_all()  # a spawn waiting for a spare, or for none to come
