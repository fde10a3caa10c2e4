"""The attach connections of a docker element: one hijacked connection
per standard stream (see :mod:`._docker` for why), and the output buffer
that demultiplexes docker's stream frames."""

from __future__ import annotations

import socket
import struct
from typing import Any
from collections.abc import Callable

from ..errors import ElementError
from ._stdio import BufferedOutput

__all__ = ["AttachConn", "AttachOutput"]

_OUTPUT_LIMIT = 1 << 20  # bytes buffered per output stream before the container feels back-pressure
_CHUNK = 1 << 16


class AttachConn:
    """One hijacked attach connection (socket-like)."""

    def __init__(self, api: Any, cid: str, **streams: int) -> None:
        self._io = api.attach_socket(cid, params={"stream": 1, **streams})
        # A socket.SocketIO over plain sockets (unix, tcp); an SSL socket for https.
        self.sock = getattr(self._io, "_sock", self._io)
        try:
            self.sock.settimeout(None)  # the client's request timeout must not cut a quiet stream
        except (AttributeError, OSError):  # not a socket we can tune (or closed): reads still work
            pass

    def shutdown(self, how: int) -> None:
        try:
            self.sock.shutdown(how)
        except OSError:  # already shut or closed: nothing left to shut
            pass

    def close(self) -> None:
        self.shutdown(socket.SHUT_RDWR)
        for f in (self._io, self.sock):
            try:
                f.close()
            except Exception:
                pass  # closing is best effort: a broken stream has nothing to flush


class AttachOutput(BufferedOutput):
    """stdout or stderr: the pump demultiplexes the attach connection (8-byte
    frame headers: stream, 0, 0, 0, big-endian length) into the buffer."""

    limit = _OUTPUT_LIMIT

    def __init__(self, name: str, conn: AttachConn, on_eof: Callable[[], None]) -> None:
        self._conn = conn
        self._on_eof = on_eof
        super().__init__(f"docker-{name}")

    def _pump(self) -> None:
        raw = bytearray()
        left = 0  # payload bytes still due in the current frame
        try:
            while True:
                self._wait_for_room()
                try:
                    chunk = self._conn.sock.recv(_CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                raw += chunk
                payload = bytearray()
                while raw:
                    if left == 0:
                        if len(raw) < 8:
                            break
                        left = struct.unpack(">I", raw[4:8])[0]
                        del raw[:8]
                        continue
                    n = min(left, len(raw))
                    payload += raw[:n]
                    del raw[:n]
                    left -= n
                if payload:
                    self._append(payload)
        finally:
            self._conn.close()
            self._mark_eof()
            self._on_eof()

    def unbound(self) -> None:
        """The container has exited: drain to EOF at once."""
        with self._cond:
            self._unbounded = True
            self._cond.notify_all()

    def wait_eof(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._eof, timeout)

    def abort(self) -> None:
        """Cut the connection (the pump then ends)."""
        self._conn.shutdown(socket.SHUT_RDWR)

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        # Stricter than the process element, which has always taken True for 1.
        if isinstance(max_bytes, bool):
            raise ElementError("max_bytes must be a positive integer")
        return super().read(max_bytes, timeout)
