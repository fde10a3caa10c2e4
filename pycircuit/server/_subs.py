"""Membership subscriptions (``@join`` / ``@leave``): a queue of server paths.

Standalone and thread-safe; the server publishes membership events into it
and its kernel service hands ``recv`` to remote callers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from ..errors import ElementError

__all__ = ["Subscription", "MAX_PENDING"]

# A subscriber that never reads must not grow the server without bound: past
# this many pending events the oldest are dropped.
MAX_PENDING = 10_000


class Subscription:
    def __init__(
        self, kind: str, source: str, initial: Iterable[str] = (), max_pending: int = MAX_PENDING
    ) -> None:
        if kind not in ("@join", "@leave"):
            raise ElementError(f"unknown subscription kind {kind!r} (@join or @leave)")
        self.kind = kind
        self._source = source
        self._cond = threading.Condition()
        self._pending: deque[str] = deque(maxlen=max_pending)
        self._closed = False
        for event in initial:
            self.publish(event)

    def publish(self, event: str) -> None:
        """Queue ``event``; ignored once the subscription is closed."""
        if not isinstance(event, str):
            raise ElementError("subscription events are strings")
        with self._cond:
            if not self._closed:
                self._pending.append(event)
                self._cond.notify()

    def recv(self, timeout: float | None = None) -> str:
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._closed, timeout)
            if self._closed:
                raise ElementError("subscription closed")
            if not self._pending:
                raise ElementError("timeout")
            return self._pending.popleft()

    def close(self) -> None:
        """Pending events are discarded; blocked and later receives fail."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    def scrub(self) -> None:
        self.close()

    def peek(self) -> dict:
        with self._cond:
            return {"Source": self._source, "Pending": len(self._pending), "Closed": self._closed}

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}
