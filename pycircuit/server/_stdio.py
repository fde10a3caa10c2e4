"""What process and docker elements share: standard-stream bookkeeping.

:class:`._proc.ProcElement` (an OS process behind pipes) and
:class:`._docker.DockerElement` (a container behind attach connections) differ
in how they start, deliver signals and move bytes, but give their callers the
same contract: ordered stdin writes, bounded in time (a reader that never
reads cannot hold a writer's thread past its timeout), whose close waits for
a write in flight; bounded stdout/stderr buffers that can be read or
discarded; ``wait`` that returns once the process has ended (exited or
killed), whatever the state of its streams; a later "done" moment (ended and
streams finished, by each element's rule) that fires ``on_done`` once for
auto-scrubbed elements; and a scrub that detaches waiters and writers and
discards output. That
contract lives here once, so the two cannot drift apart; each element supplies
only the transport-specific steps through the small ``_…`` hooks below.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from collections.abc import Callable

from ..errors import ElementError

__all__ = ["BufferedOutput", "StdioElement"]


class BufferedOutput:
    """stdout or stderr: a pump thread (the subclass's ``_pump``) feeds a bounded
    buffer. Closing discards buffered and future data while the pump keeps
    draining, so the producer never blocks on output nobody will read."""

    limit: int  # bytes buffered before the producer feels back-pressure

    def __init__(self, thread_name: str) -> None:
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._unbounded = False  # the producer is gone: what is in flight is bounded, take it all
        self._taken = False  # a read has returned data ...
        self._eof_seen = False  # ... and a read has returned the end (b"")
        # Last: the pump may run at once and needs the subclass's fields, set before us.
        threading.Thread(target=self._pump, name=thread_name, daemon=True).start()

    def _pump(self) -> None:
        raise NotImplementedError

    def _wait_for_room(self) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or self._unbounded or len(self._buf) < self.limit
            )

    def _append(self, data: bytes | bytearray) -> None:
        with self._cond:
            if not self._closed:
                self._buf += data
            self._cond.notify_all()

    def _mark_eof(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _drained(self) -> None:
        """Called (without our lock) when a read has found the buffer empty after EOF."""

    @property
    def arrived(self) -> bool:
        """The end of the stream has arrived (what came may still be unread)."""
        with self._cond:
            return self._eof

    @property
    def drained(self) -> bool:
        """Read to EOF (a reader that took data has also been given the end,
        so it is never cut off by what follows), closed, or ended with
        nothing ever written."""
        with self._cond:
            return self._closed or (
                self._eof and not self._buf and (self._eof_seen or not self._taken)
            )

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ElementError("max_bytes must be a positive integer")
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._eof or self._closed, timeout):
                raise ElementError("timeout")
            if self._closed:
                return b""
            data = bytes(self._buf[:max_bytes])
            del self._buf[:max_bytes]
            if data:
                self._taken = True
            else:
                self._eof_seen = True
            self._cond.notify_all()  # the pump may be waiting for room
            drained = self._eof and not self._buf
        if drained:
            self._drained()
        return data

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._buf.clear()
            self._cond.notify_all()


class StdioElement:
    """Base of process-like elements. Subclasses set ``kind``, provide
    ``_exited`` (the process or container has ended) and the hooks that raise
    NotImplementedError here."""

    kind: str
    _exited: bool

    def __init__(self, on_done: Callable[[Any], None]) -> None:
        self._on_done = on_done
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._done = False
        self._scrubbed = False
        self._stdin_closed = False  # by the user (or scrub)
        self._stdin_busy = False  # a write is in flight: its writer finishes the close
        self._stdin_wlock = threading.Lock()  # one writer at a time keeps writes whole and ordered
        self._outputs: dict[str, BufferedOutput] = {}

    # ----------------------------------------------------------------- hooks

    def _require_started(self) -> None:
        raise NotImplementedError

    def _peek_locked(self) -> dict:
        raise NotImplementedError

    def peek(self) -> dict:
        raise NotImplementedError

    def _outputs_done_locked(self) -> bool:
        """Whether, the process having ended, the element is done."""
        raise NotImplementedError

    def _what(self) -> str:
        """Names the element in log messages."""
        raise NotImplementedError

    def _before_on_done(self) -> None:
        """Runs (without the lock) just before an automatic scrub's ``on_done``."""

    def _scrub_stdin_locked(self) -> None:
        raise NotImplementedError

    def _stdin_target_locked(self) -> Any:
        """What ``_stdin_send`` writes to; may refuse the write by raising."""
        raise NotImplementedError

    def _stdin_send(self, target: Any, data: memoryview, deadline: float | None) -> int:
        """Write what goes before ``deadline`` (``time.monotonic``; None: all of it)
        and return how much that was; raise ElementError when stdin is broken."""
        raise NotImplementedError

    def _release_stdin_locked(self) -> None:
        """Let go of stdin as far as its state allows; never while a write is in flight."""
        raise NotImplementedError

    # ----------------------------------------------------------------- lifecycle

    def _check_done(self) -> None:
        with self._lock:
            if self._done or not self._exited or not self._outputs_done_locked():
                return
            self._done = True
            self._cond.notify_all()
            # A user scrub already detached us: the anchor may hold something else now.
            fire = self._auto_scrub and not self._scrubbed
            what = self._what()
        if fire:
            self._before_on_done()
            try:
                self._on_done(self)
            except Exception:
                # The subclass's module logger, as before the two shared this code.
                logging.getLogger(type(self).__module__).exception(
                    "on_done callback of %s failed", what
                )

    @property
    def _auto_scrub(self) -> bool:
        raise NotImplementedError

    def _detach(self) -> list[BufferedOutput] | None:
        """The common part of ``scrub``: the outputs it closed, None when already scrubbed."""
        with self._lock:
            if self._scrubbed:
                return None
            self._scrubbed = True
            self._scrub_stdin_locked()
            self._cond.notify_all()
            outputs = list(self._outputs.values())
        for out in outputs:
            out.close()
        return outputs

    # ----------------------------------------------------------------- queries

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}

    def _ended_locked(self) -> bool:
        # _done alone: a start that failed, where nothing will ever run.
        return self._exited or self._done

    def wait(self, timeout: float | None = None) -> dict:
        """The state (as ``peek``) once the process has ended, whether or not
        stdin was closed or the outputs read (they stay readable); "aborted"
        after a scrub, "timeout" when time runs out."""
        with self._lock:
            if self._scrubbed:
                raise ElementError("aborted")
            # A scrub that comes after the end does not rob pending waiters of the result.
            if not self._cond.wait_for(lambda: self._ended_locked() or self._scrubbed, timeout):
                raise ElementError("timeout")
            if not self._ended_locked():
                raise ElementError("aborted")
            return self._peek_locked()

    # ----------------------------------------------------------------- control

    def _check_signalable_locked(self) -> None:
        self._require_started()
        if self._exited:
            raise ElementError("process already finished")

    # ----------------------------------------------------------------- standard streams

    def _shut_stdin_locked(self) -> None:
        self._stdin_closed = True
        if not self._stdin_busy:
            self._release_stdin_locked()

    def stdin_write(self, data: bytes, timeout: float | None = None) -> int:
        """Write ``data`` to standard input; returns how many bytes went in before
        ``timeout`` ran out (all of them with ``timeout=None``). Writes are
        ordered and whole against other writers as far as they get in one call;
        the caller writes the rest again. A process that never reads thus
        holds a writer at most ``timeout`` (the kernel always gives one), and a
        scrub ends a write at once with "aborted"."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ElementError("stdin takes bytes")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ElementError("timeout must be a non-negative number")
        self._require_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._stdin_wlock.acquire(timeout=-1 if timeout is None else timeout):
            return 0  # another writer's call is in flight: nothing of ours went in yet
        try:
            with self._lock:
                if self._stdin_closed:
                    raise ElementError("stdin closed")
                if self._scrubbed:
                    raise ElementError("aborted")
                target = self._stdin_target_locked()
                self._stdin_busy = True
            try:
                return self._stdin_send(target, memoryview(data).cast("B"), deadline)
            finally:
                with self._lock:
                    self._stdin_busy = False
                    self._release_stdin_locked()
        finally:
            self._stdin_wlock.release()

    def stdin_close(self) -> None:
        """Idempotent; a write in flight finishes first (its writer then closes stdin)."""
        self._require_started()
        with self._lock:
            self._shut_stdin_locked()

    def _output(self, stream: str) -> BufferedOutput:
        self._require_started()
        out = self._outputs.get(stream)
        if out is None:
            raise ElementError(f"unknown output stream {stream!r} (stdout or stderr)")
        return out

    def read(self, stream: str, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` of ``stream``; blocks until some data or EOF (``b""``).
        After ``close_stream`` or ``scrub`` it returns ``b""``."""
        return self._output(stream).read(max_bytes, timeout)

    def close_stream(self, stream: str) -> None:
        """Discard the rest of ``stream`` ("stdin" closes standard input)."""
        if stream == "stdin":
            self.stdin_close()
        else:
            self._output(stream).close()
