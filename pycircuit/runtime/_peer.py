"""One connection to another runtime: its RPyC endpoint and the Peer that
calls through it. Layer: runtime (uses ``_link``; the Runtime owns peers)."""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import rpyc
from rpyc.core import netref as rpyc_netref

from ..errors import NetworkError, ProtocolError
from ._addr import WorkerAddr
from ._link import ServeGroup, make_connection

if TYPE_CHECKING:
    from ._runtime import Runtime


class _Endpoint(rpyc.Service):
    """The only object a peer can reach through RPyC. A peer calls the
    endpoint itself (RPyC's HANDLE_CALL on the root) with an operation name
    and a bytes frame: one request a call, and no per-method attribute
    lookups when a connection starts."""

    def __init__(self, rt: "Runtime", peer: "Peer"):
        self._ops = {
            "hello": lambda f: rt._on_hello(peer, f),
            "call": lambda f: rt._on_call(peer, f),
            "release": lambda f: rt._on_release(peer, f),
            "acquire": lambda f: rt._on_acquire(peer, f),
            "ack": lambda t: rt._on_ack(peer, t),
        }

    def __call__(self, op, arg):
        handler = self._ops.get(op)
        if handler is None:
            raise ProtocolError(f"unknown endpoint operation {op!r}")
        return handler(arg)


# The root of every peer is an _Endpoint: give RPyC its netref class up
# front, or each new connection pays a HANDLE_INSPECT round trip for it.
_ENDPOINT_NAME = f"{_Endpoint.__module__}.{_Endpoint.__qualname__}"
rpyc_netref.builtin_classes_cache[_ENDPOINT_NAME] = rpyc_netref.class_factory((_ENDPOINT_NAME, 0, 0), [])


class Peer:
    """One connection to another runtime."""

    def __init__(self, rt: "Runtime", sock: socket.socket):
        self.rt = rt
        self.id: str | None = None
        self.addr: WorkerAddr | None = None
        self.role = ""
        self.dead = False
        self.conn = make_connection(sock, _Endpoint(rt, self))
        self.group = ServeGroup(self.conn, "peer", self._closed, rt._after_serve)
        self._root = None

    def _closed(self, err):
        self.rt._peer_lost(self, err)

    def _endpoint(self):
        # No lock around the fetch: while it waits for the peer, this thread
        # may serve a nested request that needs it too (a callback), and
        # would deadlock on itself. Racing fetches are harmless.
        root = self._root
        if root is None:
            root = self._root = self.conn.root
        return root

    def invoke(self, name: str, arg) -> Any:
        """One synchronous RPyC request to the peer's endpoint."""
        self.group.call_begin()  # before sending: pool threads leave the reply to us
        try:
            return self._value(name, self._send(name, arg))
        finally:
            self.group.call_end()
            self.rt._after_serve()  # this thread may have served a request while waiting

    def invoke_async(self, name: str, arg) -> Any:
        """Send a request; ``wait`` for its reply later (from any thread)."""
        return self._send(name, arg)

    def wait(self, name: str, pending: Any) -> Any:
        self.group.call_begin()
        try:
            return self._value(name, pending)
        finally:
            self.group.call_end()
            self.rt._after_serve()

    def _send(self, name: str, arg) -> Any:
        if self.dead:
            raise NetworkError(f"runtime {self.addr} is dead (its connection was lost)")
        try:
            return self.conn.endpoint_request(self._endpoint(), name, arg)
        except Exception as e:
            raise self._failure(name, e) from None

    def _value(self, name: str, pending: Any) -> Any:
        try:
            return pending.value
        except Exception as e:
            raise self._failure(name, e) from None

    def _failure(self, name: str, e: Exception) -> Exception:
        if isinstance(e, (ProtocolError, NetworkError)):
            return e
        if isinstance(e, (EOFError, OSError)) or self.conn.closed:
            self.rt._peer_lost(self, e)
            return NetworkError(f"lost connection to {self.addr}: {e or type(e).__name__}")
        return ProtocolError(f"peer {self.addr} failed a {name} request: {type(e).__name__}: {e}")

    def post(self, name: str, arg) -> None:
        """Fire and forget."""
        if self.dead:
            return
        try:
            self.conn.endpoint_request(self._endpoint(), name, arg)
        except Exception:
            pass
