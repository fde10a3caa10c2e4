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

__all__ = ["ProcHandle"]

_log = logging.getLogger(__name__)


class ProcHandle:
    """Open with :meth:`open`; :meth:`send` signals, :meth:`exited` polls,
    :meth:`close` releases the pidfd (all thread-safe)."""

    def __init__(self, pid: int, fd: int | None, ctime: int | None):
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
        stat = _stat(pid)
        if stat is None or (parent is not None and stat[0] != parent):
            if fd is not None:
                os.close(fd)
            return None
        return cls(pid, fd, stat[1])

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
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self._ctime

    def fileno(self) -> int | None:
        return self._fd

    def exited(self) -> bool:
        """Whether the process has ended (a zombie counts as ended)."""
        with self._lock:
            if self._fd is not None:
                return bool(select.select([self._fd], [], [], 0)[0])
            if self._ctime is None or not self._same():
                return True
        stat = _stat(self.pid)
        return stat is None or stat[2] == "Z"

    def close(self) -> None:
        with self._lock:
            fd, self._fd, self._ctime = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"ProcHandle({self.pid}, {'pidfd' if self._fd is not None else 'ctime'})"


def _stat(pid: int) -> tuple[int, int, str] | None:
    """``pid``'s parent, start time (clock ticks after boot: it tells a
    reused pid from the process we saw) and state letter; None if there is
    no such process. One read of ``/proc/PID/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # no such process (or not ours to see)
        return None
    fields = data.rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
    return int(fields[1]), int(fields[19]), fields[0].decode()
