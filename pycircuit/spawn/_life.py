"""When a worker may exit: once its main function has been answered and
every ``run_in_back`` function has returned. The runtime knows nothing of
this; it tells a ``WorkerLife`` (its call observer, see
``runtime._hooks``) about the calls it serves. Layer: spawn."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import SpawnError
from ..runtime._config import HANDLE_MAIN
from ..runtime._hooks import CallObserver
from ..runtime._threads import ThreadCounts

_log = logging.getLogger(__name__)


class WorkerLife(CallObserver):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.main_started = False
        self.main_done = False
        self.background = 0
        self.serving = ThreadCounts()  # calls each thread served whose reply has not left yet
        self._handoffs = 0  # replies carrying third-party references, not yet acked
        self.finished = threading.Event()
        self._tl = threading.local()  # .main_replied: this thread's call was main's
        # Run in the serving thread once main's reply has left, before the
        # worker may finish (a daemon worker never does).
        self.after_main: Callable[[], None] | None = None

    # -- the worker's side ------------------------------------------------
    def start_main(self) -> None:
        with self.lock:
            if self.main_started:
                raise SpawnError("this worker already ran its function")
            self.main_started = True

    def main_returned(self) -> None:
        """In the thread serving main: main is done once its reply has left."""
        self._tl.main_replied = True

    def started(self) -> bool:
        with self.lock:
            return self.main_started

    def background_started(self) -> None:
        with self.lock:
            self.background += 1

    def background_ended(self) -> None:
        with self.lock:
            self.background -= 1
            self._check()

    # -- the runtime's side -----------------------------------------------
    def call_received(self) -> None:
        self.serving.up()

    def call_failed(self, handle: int) -> None:
        if handle == HANDLE_MAIN:  # a worker whose function cannot start is done
            self._tl.main_replied = True

    def call_replied(self) -> None:
        self.serving.down()
        tl = self._tl
        main = getattr(tl, "main_replied", False)
        if main:
            tl.main_replied = False
            if self.after_main is not None:
                try:
                    self.after_main()
                except Exception:  # a hook's failure must not keep the worker alive
                    _log.exception("after the main function's reply")
        # Deleted first, then main_done read: whichever of this thread and
        # the one finishing main or a background function comes last sees
        # the other's change and finishes the worker.
        if main or self.main_done:
            with self.lock:
                if main:
                    self.main_done = True
                self._check()

    def handoffs(self, delta: int) -> None:
        with self.lock:
            self._handoffs += delta
            self._check()

    def _check(self) -> None:  # holding self.lock
        # Without the serving test, a call that makes the last background
        # function return (say, setting its event) would lose its reply.
        # Without the handoffs test, a worker returning a reference it holds
        # would drop its lease before the receiver acquired its own.
        if self.main_done and self.background == 0 and not self.serving and self._handoffs == 0:
            self.finished.set()
