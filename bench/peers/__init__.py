"""pycircuit's peers, one module each, behind one small interface.

A *call peer* serves ``echo`` and ``size`` in another process and is used by
the cross-call and by-value metrics; the same modules also hold each peer's
spawn and footprint measurements. ``available()`` lists the call peers in
table order, with a skip reason for those that cannot be imported.
"""

from __future__ import annotations

import importlib
from typing import Any
from collections.abc import Callable


class CallPeer:
    """One side of the cross-call and by-value comparisons."""

    name = "?"
    #: the peer has an asynchronous call API (measured with a window of calls in flight)
    has_async = False
    #: a reference for information, not a peer whose ratio counts
    info = False
    #: the process serving the calls (for the pinned round trips), once started
    server_pid: int | None = None

    def value_note(self, value: Any) -> str:
        """What its by-value rows do with ``value``, if not plain calls."""
        return ""

    def start(self, tracker) -> None:
        """Start the serving process; ``tracker.remember`` every pid."""

    def caller(self) -> Callable[[Any], Any]:
        """A function echoing its argument, for the calling thread."""
        raise NotImplementedError

    def thread_caller(self) -> tuple[Callable[[Any], Any], Callable[[], None]]:
        """Run inside each concurrent caller thread: (echo function, cleanup)."""
        return self.caller(), lambda: None

    def async_calls(self, n: int, window: int) -> None:
        """Echo 0..n-1 with up to ``window`` calls in flight (peers with an async API)."""
        raise NotImplementedError

    #: the peer measures a new connection and its first call (``connect_calls``)
    has_connect = False

    def connect_calls(self, n: int) -> list[float]:
        """n times: open a new connection, make one call on it (timed, in
        ns), close it (not timed)."""
        raise NotImplementedError

    def value_echo(self, v: Any) -> Any:
        """The value there and back."""
        raise NotImplementedError

    def value_send(self, v: Any) -> int:
        """The value there; its len() back."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# (module, class) in table order; pycircuit itself is not a peer.
CALL_PEERS = [
    ("rpyc_peer", "RawRpyc"),
    ("pyro_peer", "PyroMsgpack"),
    ("pyro_peer", "PyroSerpent"),
    ("execnet_peer", "Execnet"),
    ("mitogen_peer", "Mitogen"),
    ("mp_peer", "MpPool"),
    ("ray_peer", "RayActor"),
    ("socket_peer", "PlainSocket"),
]


def available() -> list[tuple[str, type | None, str]]:
    """(display name, class or None, skip reason) for every call peer."""
    out = []
    for mod, cls in CALL_PEERS:
        try:
            m = importlib.import_module(f"peers.{mod}")
            klass = getattr(m, cls)
            reason = m.unavailable() if hasattr(m, "unavailable") else ""
        except ImportError as e:
            out.append((cls, None, f"skipped: {e}"))
            continue
        out.append((klass.name, None if reason else klass, reason))
    return out
