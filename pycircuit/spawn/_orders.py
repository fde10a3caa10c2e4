"""The channel a server drives its zygote through.

The zygote's stdin is one end of a Unix ``SOCK_SEQPACKET`` socketpair, the
server holds the other (``ZygoteProc``). Every message is one JSON value,
and message boundaries are kept, so no framing is needed:

* first, the zygote's arguments, ``[server URL, server ID, host, key path]``
  (sent once the server knows its URL: the zygote starts, and does its
  imports, before);
* then orders: ``{"token": T, "dir": D, "spare": bool}`` to fork a worker,
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
import os
import socket
import subprocess
import sys
from typing import Any

__all__ = ["ZygoteProc", "receive", "start_zygote"]

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

    def __init__(self, popen: subprocess.Popen[bytes], ctl: socket.socket) -> None:
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
        if self._popen.poll() is not None:
            return
        self.hang_up()
        try:
            self._popen.wait(grace)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


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
