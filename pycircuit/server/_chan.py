"""Channel elements: a FIFO of byte messages with Go channel semantics.

Standalone and thread-safe; the server's kernel service wraps it.

Every send appends its message to one queue. The first ``cap`` messages of
the queue are "in the buffer" (their senders have returned); later ones belong
to senders still blocked. A receive pops the head, which moves the next
blocked sender's message into the buffer -- so FIFO order, buffering and the
cap-0 rendezvous all fall out of the same rule.
"""

from __future__ import annotations

import threading
from collections import deque

from ..errors import ElementError

__all__ = ["ChanElement"]


class _Msg:
    __slots__ = ("data", "accepted", "dropped")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.accepted = False  # buffered or received: its sender may return
        self.dropped = False  # the channel closed before anyone took it


class ChanElement:
    kind = "chan"

    def __init__(self, cap: int) -> None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise ElementError("channel capacity must be a non-negative integer")
        self._cap = cap
        self._cond = threading.Condition()
        self._queue: deque[_Msg] = deque()
        self._closed = False
        self._aborted = False
        self._num_send = 0
        self._num_recv = 0

    def _accept_locked(self, msg: _Msg) -> None:
        if not msg.accepted:
            msg.accepted = True
            self._num_send += 1

    def _check_open_locked(self) -> None:
        if self._aborted:
            raise ElementError("channel aborted")
        if self._closed:
            raise ElementError("channel closed")

    def send(self, msg: bytes, timeout: float | None = None) -> None:
        """Return once a receiver took ``msg`` or it fits in the buffer."""
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise ElementError("channel messages are bytes")
        m = _Msg(bytes(msg))
        with self._cond:
            self._check_open_locked()
            self._queue.append(m)
            if len(self._queue) <= self._cap:
                self._accept_locked(m)
                self._cond.notify_all()
                return
            self._cond.notify_all()  # wake receivers waiting on an empty channel
            self._cond.wait_for(lambda: m.accepted or m.dropped or self._aborted, timeout)
            if m.accepted:
                return
            if self._aborted:
                raise ElementError("channel aborted")
            if m.dropped:
                raise ElementError("channel closed")
            self._queue.remove(m)
            raise ElementError("timeout")

    def recv(self, timeout: float | None = None) -> bytes:
        """The oldest message; after ``close`` the buffer drains, then "channel closed"."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closed or self._aborted, timeout)
            if self._aborted:
                raise ElementError("channel aborted")
            if not self._queue:
                raise ElementError("channel closed" if self._closed else "timeout")
            m = self._queue.popleft()
            self._accept_locked(m)  # a rendezvous: the blocked sender hands over directly
            if self._cap and len(self._queue) >= self._cap:
                self._accept_locked(
                    self._queue[self._cap - 1]
                )  # a blocked sender moves into the buffer
            self._num_recv += 1
            self._cond.notify_all()
            return m.data

    def close(self) -> None:
        """Buffered messages stay receivable; blocked senders fail with "channel closed"."""
        with self._cond:
            if self._aborted:
                raise ElementError("channel aborted")
            if self._closed:
                raise ElementError("channel already closed")
            self._closed = True
            while len(self._queue) > self._cap:
                self._queue.pop().dropped = True
            self._cond.notify_all()

    def scrub(self) -> None:
        """Abort: pending and later sends and receives fail with "channel aborted"."""
        with self._cond:
            self._aborted = True
            self._queue.clear()
            self._cond.notify_all()

    def peek(self) -> dict:
        with self._cond:
            return {
                "Cap": self._cap,
                "Closed": self._closed,
                "Aborted": self._aborted,
                "NumSend": self._num_send,
                "NumRecv": self._num_recv,
            }

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}
