"""A handle on one worker process that can never signal another one.

Pids are reused (``pid_max`` is often 32768), and a worker is reaped by its
zygote, not by the server: between that and the server hearing of it, a
plain ``os.kill(pid)`` could hit whatever process got the pid next. A pidfd
(Linux >= 5.3) names the process itself: once it is gone, signalling it
fails with ESRCH. Where pidfds are missing the start time is checked before
each signal instead (a small window remains there).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading

import psutil

__all__ = ["ProcHandle"]

_log = logging.getLogger(__name__)


class ProcHandle:
    """Open with :meth:`open`; :meth:`send` signals, :meth:`exited` polls,
    :meth:`close` releases the pidfd (all thread-safe)."""

    def __init__(self, pid: int, fd: int | None, ctime: float | None):
        self.pid = pid
        self._fd = fd
        self._ctime = ctime
        self._lock = threading.Lock()  # a closed fd number may be reused: never use it after close

    @classmethod
    def open(cls, pid: int, parent: int | None = None) -> ProcHandle | None:
        """A handle on ``pid`` if it is alive (and, given ``parent``, that
        process's child: a pid reused by a stranger is refused); else None."""
        fd = None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already: nothing to signal, ever
            return None
        except (AttributeError, OSError) as e:  # no pidfds here: fall back to the start time
            _log.debug("pidfd_open(%d) unavailable (%s); checking start times instead", pid, e)
        try:
            p = psutil.Process(pid)
            ctime = p.create_time()
            if parent is not None and p.ppid() != parent:
                raise psutil.NoSuchProcess(pid)
        except psutil.Error:
            if fd is not None:
                os.close(fd)
            return None
        return cls(pid, fd, ctime)

    def send(self, sig: int) -> bool:
        """Signal the process; False when it is gone (never another process)."""
        with self._lock:
            if self._fd is not None:
                try:
                    signal.pidfd_send_signal(self._fd, sig)
                    return True
                except ProcessLookupError:  # it has ended: the answer is False, not an error
                    return False
            if self._ctime is None or not self._same():
                return False
            try:
                os.kill(self.pid, sig)
                return True
            except ProcessLookupError:  # it has ended: the answer is False, not an error
                return False

    def _same(self) -> bool:
        try:
            return psutil.Process(self.pid).create_time() == self._ctime
        except psutil.Error:  # no such process (or not ours to see): not the same one
            return False

    def fileno(self) -> int | None:
        return self._fd

    def exited(self) -> bool:
        """Whether the process has ended (a zombie counts as ended)."""
        with self._lock:
            if self._fd is not None:
                return bool(select.select([self._fd], [], [], 0)[0])
            if self._ctime is None or not self._same():
                return True
        try:
            return psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.Error:  # no such process any more: it has ended
            return True

    def close(self) -> None:
        with self._lock:
            fd, self._fd, self._ctime = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"ProcHandle({self.pid}, {'pidfd' if self._fd is not None else 'ctime'})"
