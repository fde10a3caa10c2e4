"""Parked threads, for starting a thread on a latency path; per-thread
counts kept without a lock.

``threading.Thread.start`` returns only once the new thread has run (the
caller waits on an event the thread sets), which costs context switches
(bench/README.md, call path) paid in full by whoever is waiting: a new
connection's first reply, a spawn. A parked thread starts work when a lock
is released. A keeper thread (which pays ``Thread.start`` itself, off those
paths) keeps a few parked. Layer: runtime (no other pycircuit import).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class ThreadCounts(dict[int, int]):
    """``{thread id: count}`` where each thread changes only its own key,
    so the dict is empty exactly when no thread counts anything.

    No lock, because of the GIL: each single dict operation (get, store,
    delete, ``in``, ``len``) is atomic, and a read-modify-write of a key
    is safe because only its own thread writes it. Other threads only test
    the dict's truth (``len``), a snapshot. A free-threaded (PEP 703) build
    locks a dict per operation, so the single operations stay atomic there
    and this class needs no change; what changes is that the readers'
    snapshot is only as fresh as that build's memory order (the callers
    treat it as a hint and re-check under their own locks)."""

    def up(self) -> None:
        me = threading.get_ident()
        self[me] = self.get(me, 0) + 1

    def down(self) -> None:
        me = threading.get_ident()
        left = self[me] - 1
        if left:
            self[me] = left
        else:
            del self[me]

    def mine(self) -> bool:
        return threading.get_ident() in self


class _Slot:
    __slots__ = ("go", "fn", "name")

    def __init__(self):
        self.go = threading.Lock()
        self.go.acquire()  # released by give()
        self.fn: Callable[[], None] | None = None
        self.name = ""


@dataclass(frozen=True)
class ReservoirConfig:
    """``keep`` threads parked; a taken one is replaced ``refill_delay``
    seconds later, not while the work just handed out (a connection's first
    reply, say) needs the CPU. A thread whose work is done parks again if
    fewer than ``max_parked`` are; one parked beyond ``keep`` for
    ``linger`` seconds exits (an idle process keeps only ``keep``). A
    ``start`` that finds none parked doubles how many are refilled (up to
    ``max_parked``), until one lingers out: a burst (connections dialled
    back to back) then finds threads parked."""

    keep: int = 1
    refill_delay: float = 0.02
    max_parked: int = 8
    linger: float = 2.0


class Reservoir:
    """Threads parked for ``start``, refilled off the latency paths: by the
    timer ``set_refiller`` installed (the reactor's), else by a keeper thread."""

    def __init__(self, config: ReservoirConfig = ReservoirConfig()):
        self._cfg = config
        self._keep = config.keep  # how many a refill parks: see ReservoirConfig
        self._lock = threading.Lock()
        self._parked: list[_Slot] = []
        self._refill = threading.Condition(self._lock)
        self._keeper = False
        self._schedule: Callable[[float, Callable[[], None]], None] | None = None
        self._refill_due = False

    def set_refiller(self, schedule: Callable[[float, Callable[[], None]], None]) -> None:
        """Refill by ``schedule(delay, fn)`` (a timer that runs ``fn`` in a
        thread of its own) instead of a keeper thread of ours."""
        self._schedule = schedule

    def start(self, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` in a thread named ``name`` (a daemon), at once."""
        with self._lock:
            if self._parked:
                slot: _Slot | None = self._parked.pop()
            else:
                slot = None
                self._keep = min(max(2 * self._keep, 2), self._cfg.max_parked)
            schedule = len(self._parked) < self._keep and self._want_refill()
        if schedule and self._schedule is not None:
            self._schedule(self._cfg.refill_delay, self.refill)
        if slot is None:
            threading.Thread(target=fn, name=name, daemon=True).start()
            return
        slot.fn, slot.name = fn, name
        slot.go.release()

    def warm(self) -> None:
        """Have threads parked soon (returns at once)."""
        with self._lock:
            schedule = len(self._parked) < self._keep and self._want_refill()
        if schedule and self._schedule is not None:
            self._schedule(0.0, self.refill)

    def parked(self) -> int:
        """Threads parked now (a snapshot)."""
        return len(self._parked)

    def _want_refill(self) -> bool:  # holding _lock
        """Ask for a refill; True if the caller must schedule it (after
        letting go of the lock)."""
        if self._schedule is None:
            self._refill.notify()
            if not self._keeper:
                self._keeper = True
                threading.Thread(
                    target=self._keep_loop, name="pycircuit-threads", daemon=True
                ).start()
            return False
        if self._refill_due:
            return False
        self._refill_due = True
        return True

    def refill(self) -> None:
        """Park threads up to ``keep`` (pays ``Thread.start``: call it off
        the latency paths)."""
        with self._lock:
            self._refill_due = False
            need = self._keep - len(self._parked)
            slots = [_Slot() for _ in range(need)]
            self._parked[:0] = slots  # at the bottom: the stack's top stays warm
        for slot in slots:
            threading.Thread(
                target=self._parked_loop, args=(slot,), name="pycircuit-parked", daemon=True
            ).start()

    def _keep_loop(self) -> None:
        while True:
            with self._lock:
                if len(self._parked) >= self._keep:
                    while len(self._parked) >= self._keep:
                        self._refill.wait()
                    until = time.monotonic() + self._cfg.refill_delay  # see ReservoirConfig
                    while (left := until - time.monotonic()) > 0:
                        self._refill.wait(left)
            self.refill()

    def _park(self, slot: _Slot) -> bool:
        """Wait for work; False if this thread should exit (parked beyond
        ``keep`` for ``linger``)."""
        while not slot.go.acquire(timeout=self._cfg.linger):
            with self._lock:
                if slot in self._parked and len(self._parked) > self._cfg.keep:
                    self._parked.remove(slot)
                    self._keep = self._cfg.keep  # the burst is over
                    return False
            # Taken meanwhile (its go is released next), or one of the
            # ``keep``: wait without waking again (an idle process sleeps).
            slot.go.acquire()
            return True
        return True

    def _parked_loop(self, slot: _Slot) -> None:
        me = threading.current_thread()
        while self._park(slot):
            # the releaser stored fn first: a lock hand-over orders it, GIL or not
            fn, slot.fn = slot.fn, None
            me.name = slot.name
            try:
                if fn is not None:  # always set by start(); checked, not assumed
                    fn()
            except BaseException as e:  # as for a plain thread: reported, and the thread lives on
                threading.excepthook(threading.ExceptHookArgs((type(e), e, e.__traceback__, me)))
            fn = None  # a parked thread must not keep what the last job held alive (a reply's references)
            with self._lock:
                if len(self._parked) >= self._cfg.max_parked:
                    return
                me.name = "pycircuit-parked"
                self._parked.append(slot)

    def _after_fork(self) -> None:
        # Threads do not survive fork: a child starts empty.
        self._lock = threading.Lock()
        self._refill = threading.Condition(self._lock)
        self._parked = []
        self._keeper = False
        self._refill_due = False
        self._keep = self._cfg.keep


THREADS = Reservoir()
os.register_at_fork(after_in_child=THREADS._after_fork)
