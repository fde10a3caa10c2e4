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
        # A connection we dialled sends its HELLO and its first requests at
        # once; the HELLO's answer (it comes first: answers keep their
        # order) is checked before any reply is used (``confirm``). Until
        # then ``id`` is the runtime we dialled, not yet known to be there.
        self.confirmed = True
        self._hello: Pending | None = None
        self._hello_error: BaseException | None = None
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
            refusal = self._refusal()
            if refusal is not None:  # refused at HELLO: say why, not just "dead"
                raise refusal
            raise NetworkError(f"runtime {self.addr} is dead (its connection was lost)")
        try:
            return self.conn.request(op, body)
        except Exception as e:
            refusal = self._refusal()
            if refusal is not None:
                raise refusal from None
            raise self._failure(op, e) from None

    def _refusal(self) -> Exception | None:
        """What our HELLO's answer said against us, if it did (a runtime
        that refuses a HELLO closes the connection after its answer: the
        answer, not the closing, says why the requests behind it failed).
        Called once the connection failed: the answer is in, or never comes."""
        if self._hello is not None:
            try:
                self.confirm()
            except Exception as e:
                return e
        err = self._hello_error
        return err if isinstance(err, Exception) else None

    def _value(self, op: int, pending: Pending) -> bytes:
        if not self.confirmed:
            self.confirm()
        try:
            return self.conn.wait(pending)
        except Exception as e:
            raise self._failure(op, e) from None

    def say_hello(self, frame: bytes) -> None:
        """Send our HELLO to the runtime we dialled, without waiting for
        its answer (see ``confirm``)."""
        self.confirmed = False
        self._hello = self._send(_wire.OP_HELLO, frame)

    def confirm(self) -> None:
        """Wait for the answer to our HELLO (at once if it is in) and raise
        what it says if it refused us or is another runtime; a no-op once
        confirmed. Any thread may call it, any number of times."""
        hello = self._hello
        if hello is None:
            err = self._hello_error  # stored before _hello is cleared
            if err is not None:
                raise err
            return
        try:
            answer = self.conn.wait(hello)
        except Exception as e:
            lost = NetworkError(f"cannot reach {self.addr}: {self._failure(_wire.OP_HELLO, e)}")
            err = self.rt.hello_failed(self, lost)
        else:
            err = self.rt.hello_answered(self, answer)
        if err is not None:
            self._hello_error = err
        self._hello = None
        if err is not None:
            raise err

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
        NetworkError, and the peer is then known lost; a connection whose
        HELLO was refused fails its requests with what the refusal said)."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
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
