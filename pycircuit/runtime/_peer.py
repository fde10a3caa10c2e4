"""One connection to another runtime: its RPyC endpoint and the Peer that
calls through it. Layer: runtime (uses ``_link``; the Runtime owns peers)."""

from __future__ import annotations

import logging
import socket
import time
from functools import partial
from typing import TYPE_CHECKING


from ..errors import CircuitError, NetworkError, ProtocolError
from . import _wire
from ._addr import WorkerAddr
from ._link import Pending, RequestFailed, ServeGroup, make_connection

if TYPE_CHECKING:
    from ._runtime import Runtime


log = logging.getLogger(__name__)


def _size(body: bytes | tuple[bytes, ...]) -> int:
    if type(body) is tuple:
        n = 0
        for p in body:
            n += len(p)
        return n
    return len(body)


class Peer:
    """One connection to another runtime."""

    def __init__(self, rt: Runtime, sock: socket.socket) -> None:
        self.rt = rt
        self._large = rt.cfg.large_request
        self.id: str | None = None
        self.addr: WorkerAddr | None = None
        self.role = ""
        self.dead = False
        self.conn = make_connection(sock, rt.cfg.max_frame, rt.cfg.link_silence)
        self.conn.handlers = {
            _wire.OP_HELLO: partial(rt.handle_hello, self),
            _wire.OP_CALL: partial(rt.handle_call, self),
            _wire.OP_RELEASE: partial(rt.handle_release, self),
            _wire.OP_ACQUIRE: partial(rt.handle_acquire, self),
            _wire.OP_ACK: lambda b: rt.handle_ack(self, _wire.decode_token(b)),
        }
        self.conn.after_reply = rt.after_reply
        self.group = ServeGroup(self.conn, "peer", self._closed)

    def first_request(self, deadline: float) -> bool:
        """Serve the dialer's first request (its HELLO) if it comes before
        ``deadline``; False if it did not, or the connection failed."""
        try:
            return self.conn.serve_first(deadline - time.monotonic())
        except Exception:  # EOF, reset, a broken frame: the caller closes and says why
            return False

    def _closed(self, err: BaseException | None) -> None:
        self.conn.fail_pending(err if isinstance(err, Exception) else EOFError("connection closed"))
        self.rt.peer_lost(self, err)

    def invoke(self, op: int, body: bytes | tuple[bytes, ...]) -> bytes:
        """One request to the peer; its reply's body."""
        if _size(body) >= self._large:
            # A send that may block: pool threads keep reading meanwhile, or
            # two runtimes sending each other large calls at once would both
            # sit in sendall, each waiting for the other to read.
            pending = self._send(op, body)
            self.group.call_begin()
        else:
            self.group.call_begin()  # before sending: pool threads leave the reply to us
            pending = None
        try:
            return self._value(op, pending if pending is not None else self._send(op, body))
        finally:
            self.group.call_end()

    def invoke_async(self, op: int, body: bytes | tuple[bytes, ...]) -> Pending:
        """Send a request; ``wait`` for its reply later (from any thread)."""
        return self._send(op, body)

    def wait(self, op: int, pending: Pending) -> bytes:
        self.group.call_begin()
        try:
            return self._value(op, pending)
        finally:
            self.group.call_end()

    def _send(self, op: int, body: bytes | tuple[bytes, ...]) -> Pending:
        if self.dead:
            raise NetworkError(f"runtime {self.addr} is dead (its connection was lost)")
        try:
            return self.conn.request(op, body)
        except Exception as e:
            raise self._failure(op, e) from None

    def _value(self, op: int, pending: Pending) -> bytes:
        try:
            return self.conn.wait(pending)
        except Exception as e:
            raise self._failure(op, e) from None

    def read_until(self, pending: Pending, deadline: float | None) -> None:
        """Read the connection in this thread until ``pending`` is ready
        or ``deadline`` passes (then return quietly)."""
        self.group.call_begin()
        try:
            self.conn.wait(pending, deadline)
        except TimeoutError:
            return  # the caller's deadline: the request stays in flight
        except RequestFailed:
            return  # delivered into pending: the Future reports it
        finally:
            self.group.call_end()

    def failure(self, op: int, e: BaseException) -> Exception:
        """What a caller of ``op`` sees for ``e`` (a lost connection is a
        NetworkError, and the peer is then known lost)."""
        return self._failure(op, e)

    def _failure(self, op: int, e: BaseException) -> Exception:
        if isinstance(e, RequestFailed):
            return ProtocolError(f"peer {self.addr} failed a {_wire.OP_NAMES[op]} request: {e}")
        if isinstance(e, CircuitError):  # ours already (a message too large, say)
            return e
        if isinstance(e, (EOFError, OSError)) or self.conn.closed:
            self.rt.peer_lost(self, e)
            return NetworkError(f"lost connection to {self.addr}: {e or type(e).__name__}")
        return ProtocolError(
            f"peer {self.addr} failed a {_wire.OP_NAMES[op]} request: {type(e).__name__}: {e}"
        )

    def post(self, op: int, body: bytes | tuple[bytes, ...]) -> None:
        """Fire and forget."""
        if self.dead:
            return
        try:
            self.conn.post(op, body)
        except Exception as e:  # fire and forget: a lost link is reported by its reader
            log.debug("post of %s to %s failed: %s", _wire.OP_NAMES.get(op, op), self.addr, e)
