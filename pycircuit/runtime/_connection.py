"""One connection between two runtimes: pycircuit messages in RPyC frames.
Layer: runtime (uses ``_stream`` below it and ``_wire``; ``_serve`` drives
it, ``_peer`` calls through it).

Every frame carries one pycircuit message (``_wire.MSG_*``: request, reply
or fault, with a sequence number and an operation); anything else is a
protocol error that fails the connection. RPyC's protocol (brine, netrefs,
its handler tables) never runs: this class owns its locks, send queue and
request table, and uses RPyC only as the stream and channel below it.

Reading: any thread may read a frame for all (the one holding the receive
lock); a thread waiting for its reply reads until it comes, and others
wait until the reader has dispatched a frame. A reply is delivered to its
``Pending`` by whoever read it; a request read by a thread that waits for
its own reply runs elsewhere (see ``Callers``). Sending: a thread that
finds the send lock free writes at once; otherwise it queues its frame and
the lock's holder writes it before it leaves.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from ..errors import ProtocolError, SerializationError
from . import _wire
from ._stream import FLUSHER, FRAME_AND_MESSAGE, BufferedStream, FrameChannel, Parts, tune_socket

log = logging.getLogger(__name__)

# A message body: bytes-like, or a tuple of bytes-like parts sent one after
# the other (so a large payload is never copied into a joined frame).
Body: TypeAlias = "bytes | bytearray | memoryview | tuple[Any, ...]"
# A request's handler gets its body (bytes, or a memoryview of a large one).
Handler: TypeAlias = "Callable[[Any], Body | None]"


class Pending:
    """A request's reply to come: ``conn.wait(pending)`` gives its body.
    ``on_ready`` (if set) runs in the thread that delivers it, after it
    released the receive lock; it must not block on this connection."""

    __slots__ = ("ready", "is_exc", "obj", "on_ready")

    def __init__(self) -> None:
        self.ready = False
        self.is_exc = False
        self.obj: Any = None
        self.on_ready: Callable[[], None] | None = None

    def settle(self, is_exc: bool, obj: Any) -> None:
        """Mark the reply in; the caller then runs ``on_ready``.

        ``ready`` is stored last and read without a lock by waiters, which
        then read ``obj``: under the GIL one thread's stores are seen by
        the others in program order. A free-threaded (PEP 703) build
        promises no such order for plain attributes: ``ready`` would need
        release/acquire semantics (e.g. stored and read under a lock the
        waiter also holds while it reads ``obj``)."""
        self.is_exc = is_exc
        self.obj = obj
        self.ready = True

    def __call__(self, is_exc: bool, obj: Any) -> None:
        """Settle and run ``on_ready`` (for replies that never came: the
        link failed, or a reader gave up)."""
        self.settle(is_exc, obj)
        cb = self.on_ready
        if cb is not None:
            cb()


class RequestFailed(ProtocolError):
    """The peer's handler for a request raised; the message is its text."""


class Callers(Protocol):
    """What a connection asks of the threads that serve it (``ServeGroup``)."""

    def waiting_here(self) -> bool:
        """Is this thread waiting for a reply on this connection?"""
        ...

    def hand_off(self, run: Callable[[], None]) -> None:
        """Run a request in another thread."""
        ...

    def conn_closed(self) -> None:
        """The connection was closed (by any thread)."""
        ...


def _nothing(op: int) -> None:
    return None


class Connection:
    """pycircuit messages over one RPyC channel, in both directions.

    ``handlers`` maps an operation to the function that answers its
    requests; ``after_reply(op)`` runs once a request's reply has left (or
    failed to); ``group`` (set by the ServeGroup) says which threads wait
    for replies."""

    def __init__(self, channel: FrameChannel):
        self._channel = channel
        self._stream: BufferedStream = channel.stream
        self._recv = channel.recv
        self._write = self._stream.write_message
        self._recvlock = threading.Lock()
        self._sendlock = threading.Lock()
        self._recv_event = threading.Condition(threading.Lock())
        self._send_queue: deque[tuple[bytes, Parts, int]] = deque()
        self._closed = False
        self._seq = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._recv_waiters = 0  # threads in _wait_for_reader (changed under _recv_event)
        self.group: Callers | None = None
        self.handlers: dict[int, Handler] = {}
        self.after_reply: Callable[[int], None] = _nothing

    @property
    def closed(self) -> bool:
        return self._closed

    def in_flight(self) -> int:
        """Requests sent whose reply has not come."""
        return len(self._pending)

    # -- sending ------------------------------------------------------------
    def request(self, op: int, body: Body) -> Pending:
        """Send a request; its reply will be delivered to the Pending."""
        pending = Pending()
        # GIL: next() on itertools.count is one C call, so no two threads
        # get the same number; a free-threaded build needs a lock here (3.13t
        # does not promise itertools objects are thread-safe). The dict
        # operations below are single operations on a built-in dict: atomic
        # under the GIL and locked per object in a free-threaded build; the
        # check-then-store is safe because numbers are unique.
        seq = next(self._seq) & _wire.MAX_SEQ
        while not seq or seq in self._pending:  # wrapped round to 0, or to a call still in flight
            seq = next(self._seq) & _wire.MAX_SEQ
        self._pending[seq] = pending
        try:
            self._send_message(_wire.MSG_REQUEST, seq, op, body)
        except BaseException:
            self._pending.pop(seq, None)
            raise
        return pending

    def post(self, op: int, body: Body) -> None:
        """Send a request that gets no reply."""
        self._send_message(_wire.MSG_REQUEST, 0, op, body)

    def _send_message(self, kind: int, seq: int, op: int, body: Body, flush: bool = False) -> None:
        parts = body if type(body) is tuple else (body,)
        n = _wire.MSG_HEAD_SIZE
        for p in parts:
            n += len(p)
        if n > self._stream.max_frame:
            raise SerializationError(
                f"a message of {n} bytes exceeds the maximum of "
                f"{self._stream.max_frame} (RuntimeConfig.max_frame)"
            )
        # kind, seq and op come from this module: packed unchecked
        self._send_frame((FRAME_AND_MESSAGE.pack(n, 0, kind, seq, op), parts, n), flush)

    def _send_frame(self, frame: tuple[bytes, Parts, int], flush: bool = False) -> None:
        """Write the frame now if nobody is writing; else queue it for the
        writer, which sends what was queued before it lets go of the lock.

        The queue is a deque used without a lock: under the GIL
        ``append``, ``popleft`` and its truth value are atomic, and a
        free-threaded build locks a deque per operation, so both hold.
        What makes it correct is the order: a queuer appends, then tries
        the lock; a writer releases, then looks at the queue. So a frame
        is never left queued with nobody to send it.

        With ``flush`` the frame has left when this returns: a queued one
        is waited for (the lock), and written here if still queued. A reply
        needs it: ``after_reply`` may end the process (a worker exits once
        its main function's reply has left)."""
        queue = self._send_queue
        if not queue and self._sendlock.acquire(False):
            try:
                self._write(*frame)
            finally:
                self._sendlock.release()
            if not queue:
                return
        else:
            queue.append(frame)
            if flush:
                with self._sendlock:
                    while queue:
                        self._write(*queue.popleft())
                return
        while queue:
            if not self._sendlock.acquire(False):
                return  # its holder sends what is queued
            try:
                if queue:
                    self._write(*queue.popleft())
            finally:
                self._sendlock.release()

    def close(self) -> None:
        """Close the socket at once, without a close handshake (a stalled
        peer must not hold us); readers see EOF and clean up, a blocked
        writer fails with EOFError. The locks stay with their holders."""
        if self._closed:
            return
        self._closed = True
        try:
            self._channel.close()
        except Exception:  # closing twice or a socket already reset: closed either way
            log.debug("closing a channel failed", exc_info=True)
        g = self.group
        if g is not None:
            g.conn_closed()

    abort = close

    # -- receiving ----------------------------------------------------------
    def poll(self, timeout: float | None) -> bool:
        """Data to read within ``timeout`` (None: wait), without taking
        the receive lock: a waiting caller may read it first."""
        return self._stream.poll(timeout)

    def buffered(self) -> bool:
        """Bytes read from the socket but not yet taken as frames?"""
        return self._stream.buffered()

    def socket(self) -> object:
        """The socket, to watch for readability (see ``_reactor``)."""
        return self._stream.sock

    def serve_first(self, timeout: float) -> bool:
        """Read and serve one frame if it starts arriving within ``timeout``
        (an accepted connection's HELLO); False if none came."""
        if timeout <= 0 or not self._stream.poll(timeout):
            return False
        self.serve_one()
        return True

    def wait(self, pending: Pending, deadline: float | None = None) -> Any:
        """The reply's body; raises RequestFailed or EOFError, or
        TimeoutError once ``deadline`` (``time.monotonic()``) has passed."""
        while not pending.ready:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            self.serve_one(pending, deadline)
        if pending.is_exc:
            raise pending.obj
        return pending.obj

    def fail_pending(self, exc: BaseException) -> None:
        """The connection is gone: every request still waiting fails with
        ``exc`` (a caller reading for itself learns it anyway; a Future
        whose caller does not read learns it only here)."""
        for seq in list(self._pending):
            p = self._pending.pop(seq, None)
            if p is not None and not p.ready:
                p(True, exc)

    def wake_readers(self) -> None:
        """Wake threads waiting for the reader (one stopped reading)."""
        with self._recv_event:
            self._recv_event.notify_all()

    def serve_one(self, pending: Pending | None = None, deadline: float | None = None) -> None:
        """Read and dispatch one frame, or wait while another thread reads.

        No select first: the caller either waits for a reply (which must
        come) or has just seen the socket readable. With a ``deadline``, it
        returns when that passes with nothing read."""
        if not self._recvlock.acquire(False) and not self._wait_for_reader(pending, deadline):
            return
        try:
            if pending is not None and pending.ready:  # dispatched meanwhile
                self._recvlock.release()
                return
            try:
                if deadline is not None and not self._stream.poll(
                    max(0.0, deadline - time.monotonic())
                ):
                    self._recvlock.release()
                    return
                data = self._recv()
            except BaseException as exc:
                self._recvlock.release()
                if isinstance(exc, EOFError):
                    self.close()
                raise
            self._dispatch(data)
        finally:
            # GIL: an unlocked read of a counter other threads change under
            # _recv_event; a stale 0 is harmless by _wait_for_reader's order
            # (count first, then retry the lock). A free-threaded build needs
            # this read kept after the lock release by its memory model (an
            # atomic load with acquire semantics, or reading under
            # _recv_event).
            if self._recv_waiters:
                self.wake_readers()

    def _wait_for_reader(self, pending: Pending | None, deadline: float | None = None) -> bool:
        """Another thread is reading: wait until it has dispatched a frame.
        True if the receive lock came free meanwhile (and is now ours).

        A reader reads ``_recv_waiters`` after releasing the lock, without
        taking ``_recv_event``: so count first, then try the lock again;
        a reader that missed the count released the lock before it."""
        ev = self._recv_event
        with ev:
            self._recv_waiters += 1
            try:
                if self._recvlock.acquire(False):
                    return True
                if pending is None or not pending.ready:
                    ev.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                return False
            finally:
                self._recv_waiters -= 1

    def _dispatch(self, data: Any) -> None:
        # Called holding the receive lock; must release it.
        try:
            kind, seq, op = _wire.decode_message_head(data)
        except Exception as e:
            self._recvlock.release()
            self.close()  # the peer speaks something else: nothing it sends can be trusted
            raise ProtocolError(f"not a pycircuit message ({e}): connection closed") from None
        # A large frame arrives as a bytearray: view its body, do not copy it.
        body = (
            data[_wire.MSG_HEAD_SIZE :]
            if type(data) is bytes
            else memoryview(data)[_wire.MSG_HEAD_SIZE :]
        )
        if kind == _wire.MSG_REQUEST:
            self._recvlock.release()
            g = self.group
            if g is not None and g.waiting_here():
                g.hand_off(lambda: self._serve_request(seq, op, body))
            else:
                self._serve_request(seq, op, body)
            return
        pending = self._pending.pop(seq, None)
        if pending is None:  # a reply to a request abandoned meanwhile (fail_pending)
            self._recvlock.release()
            return
        if kind == _wire.MSG_REPLY:
            pending.settle(False, body)
        else:
            pending.settle(True, RequestFailed(bytes(body).decode("utf-8", "replace")))
        # Released once the reply is marked ready (a waiter that then takes
        # the lock sees it), but before on_ready runs, which may decode a
        # value: other readers need not wait for that.
        self._recvlock.release()
        cb = pending.on_ready
        if cb is not None:
            cb()

    def _serve_request(self, seq: int, op: int, body: Any) -> None:
        try:
            try:
                handler = self.handlers.get(op)
                if handler is None:
                    raise ProtocolError(f"no handler for operation {_wire.OP_NAMES.get(op, op)}")
                out = handler(body)
            except Exception as e:  # the handler's error is the reply: a FAULT
                if seq:
                    self._send_message(
                        _wire.MSG_FAULT, seq, op, f"{type(e).__name__}: {e}".encode(), True
                    )
                return
            if seq:
                self._send_message(_wire.MSG_REPLY, seq, op, b"" if out is None else out, True)
        finally:
            self.after_reply(op)


def make_connection(
    sock: socket.socket, max_frame: int = 1 << 30, silence: float = 30.0
) -> Connection:
    """A connection over ``sock`` (tuned: see ``tune_socket``)."""
    tune_socket(sock, silence)
    return Connection(FrameChannel(BufferedStream(sock, max_frame)))


def refusal_frame(seq: int, op: int, body: bytes) -> bytes:
    """A whole REPLY frame, written on a raw socket to answer a request the
    link never got to read (see ``_runtime._refuse_hello``)."""
    n = _wire.MSG_HEAD_SIZE + len(body)
    return FRAME_AND_MESSAGE.pack(n, 0, _wire.MSG_REPLY, seq, op) + body + FLUSHER
