"""The channel a server drives its zygote through.

The zygote's stdin is one end of a Unix ``SOCK_SEQPACKET`` socketpair, the
server holds the other (``ZygoteProc``). Every message is one JSON value,
and message boundaries are kept, so no framing is needed:

* first, the zygote's arguments, ``[server URL, server ID, host, key path]``
  (sent once the server knows its URL: the zygote starts, and does its
  imports, before);
* then orders: ``{"token": T, "files": F, "spare": bool}`` to fork a worker
  (``F``: the path prefix of its ``.stdout`` and ``.stderr`` files),
  carrying one descriptor (``SCM_RIGHTS``): the worker's end of a
  socketpair whose other end the server serves (``Runtime.adopt_link``),
  the worker's link to its server, with no TCP connection and no
  authentication round trip to make; ``{"compile": [paths]}`` to keep
  compiled code for those sources (``_codecache``).

The zygote's events go up its stdout, a pipe, one JSON line each (see
``_zygote``). The zygote exits when its stdin closes: when the server dies.
Layer: spawn (the server side is used by ``_spawner``, the other by ``_zygote``).
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import select
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from ..runtime._children import stop_child


def output_path(files: str, stream: str) -> str:
    """Where a worker forked with ``files`` (its order's ``F``) writes its
    ``stdout`` or ``stderr``: the worker opens it, the server reads and
    removes it."""
    return f"{files}.{stream}"


__all__ = ["ZygoteProc", "fork_zygote", "receive", "start_zygote"]

# The largest message (a compile order of _codecache.MAX_REPORT paths is far below).
MAX_MESSAGE = 1 << 18
_FD_ROOM = socket.CMSG_SPACE(4 * array.array("i").itemsize)  # room for a few, one expected


def _send(sock: socket.socket, obj: Any, fd: int | None = None) -> None:
    data = json.dumps(obj).encode()
    if fd is None:
        sock.sendall(data)
    else:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def receive(sock: socket.socket) -> tuple[Any, int | None]:
    """The next message and the descriptor it carried (or None);
    ``(None, None)`` once the server has closed its end."""
    data, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, _FD_ROOM)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    fd = fds[0] if fds else None
    for extra in fds[1:]:  # never sent: not ours to keep open
        os.close(extra)
    if not data:
        if fd is not None:
            os.close(fd)
        return None, None
    return json.loads(data), fd


class ZygoteProc:
    """A zygote process, its control socket and its event pipe."""

    def __init__(self, popen: subprocess.Popen[bytes] | _Forked, ctl: socket.socket) -> None:
        self._popen = popen
        self._ctl = ctl
        self.pid = popen.pid
        assert popen.stdout is not None  # started with stdout=PIPE
        self.events = popen.stdout

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def send(self, obj: Any, fd: int | None = None) -> None:
        """One message, with ``fd`` passed along; OSError if the zygote is gone."""
        _send(self._ctl, obj, fd)

    def hang_up(self) -> None:
        """Close our end: the zygote exits (its workers live on)."""
        self._ctl.close()

    def stop(self, grace: float) -> None:
        """Hang up, give it ``grace`` seconds to exit, then kill it."""
        stop_child(self._popen, grace, self.hang_up)


def start_zygote() -> ZygoteProc:
    """A zygote process, importing what workers need while the server starts;
    it waits for its arguments (``Spawner`` sends them) before it forks."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # Workers move large frames: keep glibc from mmapping and unmapping a
    # fresh block for every one (bench/README.md, by-value rows).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 << 20))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "pycircuit.spawn._zygote"],
            stdin=theirs.fileno(),
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ZygoteProc(popen, ours)


def fork_zygote() -> ZygoteProc | None:
    """The zygote as a fork of this process, which must have no thread but
    the main one yet (None otherwise: use ``start_zygote``). It saves a
    second interpreter's start-up and the imports this process made
    already, CPU that the server's start and its client's need at the same
    time; the server calls it once it has imported the runtime, before it
    starts a thread."""
    if threading.active_count() != 1:
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write what is buffered again
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        code = 70
        try:
            os.dup2(theirs.fileno(), 0)
            os.dup2(w, 1)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as Popen's close_fds
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _malloc_like_start_zygote()
            _retitle(["python -m pycircuit.spawn._zygote", "pycircuit.spawn._zygote"])
            from . import _zygote

            # as a started zygote's: a worker's module that parses its
            # command line at import must not find the server's there
            sys.argv[:] = [_zygote.__file__]
            _zygote.main()
            code = 0
        except BaseException:
            logging.getLogger(__name__).exception("the zygote failed")
        finally:
            os._exit(code)
    theirs.close()
    os.close(w)
    return ZygoteProc(_Forked(pid, os.fdopen(r, "rb", buffering=0)), ours)


def _retitle(titles: list[str]) -> None:
    """Show the first of ``titles`` that fits as this process's command
    line (``ps``, ``/proc/PID/cmdline``), as a started zygote's reads,
    instead of the server's it was forked from: the server's own start
    argument count once (``pkill -f 'pycircuit start'``, tests). It is
    written over the memory the kernel shows (``arg_start``..``arg_end``,
    Linux >= 3.5); nothing changes where that cannot be done."""
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    except (OSError, IndexError, ValueError):  # no such figures here: the title stays the server's
        return
    for title in titles:
        data = title.replace(" ", "\0").encode() + b"\0"
        if len(data) <= end - start:
            ctypes.memmove(start, data.ljust(end - start, b"\0"), end - start)
            return


def _malloc_like_start_zygote() -> None:
    """In a forked zygote: glibc's thresholds as ``start_zygote``'s
    environment sets them (glibc reads the environment only as a process
    starts)."""
    import ctypes

    libc = ctypes.CDLL(None)
    for env, param, value in (
        ("MALLOC_MMAP_THRESHOLD_", -3, 64 << 20),  # M_MMAP_THRESHOLD
        ("MALLOC_TRIM_THRESHOLD_", -1, 128 << 20),  # M_TRIM_THRESHOLD
    ):
        if env not in os.environ:
            libc.mallopt(param, value)


class _Forked:
    """What ``ZygoteProc`` uses of a ``Popen``, for a child forked here."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._lock = threading.Lock()  # one reaper at a time, as Popen's

    def _reap(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:  # reaped by someone else: gone all the same
                    self.returncode = -1
                else:
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None and not self._exits_within(timeout):
            raise subprocess.TimeoutExpired(["zygote"], timeout)
        code = self._reap(0)
        assert code is not None
        return code

    def _exits_within(self, timeout: float) -> bool:
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # reaped already, or no pidfds here (Linux < 5.3): poll
            end = time.monotonic() + timeout
            while self.poll() is None and time.monotonic() < end:
                time.sleep(0.01)
            return self.returncode is not None
        try:
            return bool(select.select([fd], [], [], timeout)[0])
        finally:
            os.close(fd)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
