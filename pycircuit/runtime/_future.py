"""``pycircuit.Future``: the result of ``X.call_async``, a standard
``concurrent.futures.Future``.

It is done as soon as the reply arrives, whoever reads it: a pool thread
of the connection, or the thread calling ``result()``, which reads the
connection itself while it waits (the same fast path as a blocking call).
A reply carrying no references is decoded by the thread that read it; one
carrying references is decoded in a thread of its own, because taking
leases means more round trips on connections the reading thread must stay
free to read. ``result(timeout)`` raises ``TimeoutError`` and leaves the
call running: its reply still settles the Future, and one that nobody reads
is dropped with the Future, its references released.

Layer: runtime (``_link`` delivers replies into ``Pending.on_ready``).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from . import _wire
from ._threads import THREADS

_FINISHED = cf._base.FINISHED  # the base class's own state name (stable since 3.2)

if TYPE_CHECKING:
    from ._link import Pending
    from ._peer import Peer


class Future(cf.Future):
    """The result of ``X.call_async``: a ``concurrent.futures.Future``.

    ``done()`` turns true when the reply arrives; ``result(timeout)`` and
    ``exception(timeout)`` raise ``TimeoutError`` when it has not, leaving
    the call running; ``add_done_callback``, ``concurrent.futures.wait`` and
    ``as_completed`` and ``asyncio.wrap_future`` work. It cannot be
    cancelled: the request has left."""

    def __init__(self) -> None:
        super().__init__()
        # Left PENDING rather than RUNNING (cancel() is refused below): one
        # lock round less on the path of every call.
        self._peer: Peer | None = None
        self._pending: Pending | None = None
        self._decode: Callable[[Any], Any] | None = None
        self._inline: Callable[[Any], bool] | None = None
        # The first caller of _arrived wins: next() on an itertools.count is one C
        # call, atomic under the GIL; a free-threaded (PEP 703) build needs a
        # lock or a compare-and-set here. None: settled at birth.
        self._claim: itertools.count[int] | None = itertools.count()

    @classmethod
    def of_call(
        cls,
        peer: Peer,
        pending: Pending,
        decode: Callable[[Any], Any],
        inline: Callable[[Any], bool],
    ) -> Future:
        """The Future of a request in flight: ``decode(body)`` gives its
        value (or raises); ``inline(body)`` says it may run in the thread
        that read the reply (no network I/O)."""
        f = cls()
        f._peer, f._pending, f._decode, f._inline = peer, pending, decode, inline
        pending.on_ready = f._arrived
        if pending.ready:  # arrived before on_ready was set: _arrived runs once either way
            f._arrived()
        return f

    @classmethod
    def settled(cls, fn: Callable[[], Any]) -> Future:
        f = cls()
        f._claim = None
        f._settle(fn)
        return f

    def _arrived(self) -> None:
        claim = self._claim
        assert claim is not None, "a settled Future has no reply to wait for"
        if next(claim):
            return
        p, peer = self._pending, self._peer
        assert p is not None and peer is not None
        # Break the Pending -> Future reference (on_ready is this bound
        # method): without it every Future is a cycle left to the collector.
        p.on_ready = None
        if p.is_exc:
            err = p.obj
            assert isinstance(err, BaseException)
            self.set_exception(peer.failure(_wire.OP_CALL, err))
            self._decode = self._inline = None
            return
        body = p.obj
        if self._inline is not None and self._inline(body):
            self._settle(self._decode, body)  # type: ignore[arg-type]
        else:
            THREADS.start(lambda: self._settle(self._decode, body), "pycircuit-reply")  # type: ignore[arg-type]

    def _settle(self, produce: Callable[..., Any], *args: Any) -> None:
        try:
            value = produce(*args)
        except BaseException as e:  # the call's error, kept for result()
            self.set_exception(e)
        else:
            self.set_result(value)
        # The encode context (pins of references sent with the call) lives
        # in _decode: it goes now, not when the Future is collected.
        self._decode = self._inline = None

    def _read(self, timeout: float | None) -> float | None:
        """Read the connection in this thread until the reply is in or
        ``timeout`` passes; the time left of it."""
        pending, peer = self._pending, self._peer
        if pending is None or peer is None or pending.ready:
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            peer.read_until(pending, deadline)
        except BaseException as e:  # the connection failed: that is the call's outcome
            if not pending.ready:
                pending(True, e)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _FINISHED:
            return super().result(self._read(timeout))
        if self._exception is not None:
            return super().result()  # raises it, as the base class does
        return self._result  # the common case, without the lock

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != _FINISHED:
            timeout = self._read(timeout)
        return super().exception(timeout)

    def cancel(self) -> bool:
        return False  # the request has left; its reply will settle this Future

    def __repr__(self) -> str:
        return f"<pycircuit.Future {'done' if self._state == _FINISHED else 'pending'}>"
