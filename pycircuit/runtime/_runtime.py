"""The runtime: one per process (client, worker or server).

It listens on a TCP port, keeps one RPyC connection per peer runtime, owns the
lease table of the objects it has handed out, the proxies it holds for other
runtimes' objects, and its named services. Every cross-call is one RPyC
request carrying one frame (see ``_wire``) whose payload is a value stream
(see ``_codec``).

The ``Runtime`` class is built in layers, one module each: ``_refs``
(leases, proxies, the release loop), ``_conns`` (accept, dial, HELLO, lost
peers), ``_calls`` (making and serving calls), and here services, export,
closing and this process's runtime. Upper layers add to a runtime through
its hooks, never the other way round: ``observe_calls`` (``_hooks``: how
``spawn`` keeps a worker alive), ``on_refused`` (how a server logs
refusals), ``on_peer_lost``, ``add_static``, and ``on_install`` for services
every process runtime gets (``acid``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import CircuitError, ServiceError
from ..xref._x import X, XPerm
from . import _codec, _wire
from ._addr import WorkerAddr
from ._calls import CallsCore, resolve_method
from ._config import HANDLE_KERNEL, HANDLE_MAIN, HANDLE_ROOT, RuntimeConfig
from ._conns import close_quietly
from ._future import Future
from ._threads import THREADS

__all__ = [
    "HANDLE_KERNEL",
    "HANDLE_MAIN",
    "HANDLE_ROOT",
    "Future",
    "Runtime",
    "RuntimeConfig",
    "current",
    "install",
    "on_install",
    "resolve_method",
]

log = logging.getLogger(__name__)


class Runtime(CallsCore):
    def __init__(self, cfg: RuntimeConfig, on_refused: Callable[[str], None] | None = None) -> None:
        """``on_refused(why)`` hears every connection refused (without it,
        they are logged at INFO: a server passes its rate-limited log)."""
        super().__init__(cfg, on_refused)
        self._services: dict[str, XPerm] = {}
        if cfg.role == "client" and self.is_open:
            log.warning(
                "this program listens on %s without a cluster key (its circuit is remote and has none): "
                "anyone who can reach that address can call into it",
                cfg.host,
            )
        self.add_static(HANDLE_ROOT, _RootService(self))
        # No thread of its own for accepting (the reactor's), releasing or
        # the watchdog (both started when first needed).
        self.start_accepting()
        THREADS.warm()  # the first connections start their threads without waiting

    # -- services -----------------------------------------------------------
    def listen(self, name: str, receiver: Any) -> XPerm:
        if not isinstance(name, str) or not name:
            raise ServiceError("a service name is a non-empty str")
        with self._lock:
            if name in self._services:
                raise ServiceError(f"service {name!r} is already listened to in {self.url}")
            x = self.local_ref(receiver, perm=True)
            assert isinstance(x, XPerm)
            self._services[name] = x
        return x

    def dial(self, addr: WorkerAddr, name: str) -> X:
        if addr.id == self.id:
            return self.service(name)
        x = self.call_remote(addr, HANDLE_ROOT, "dial", (name,), {})
        assert isinstance(x, X)
        return x

    def service(self, name: str) -> X:
        """Our own service ``name``."""
        x = self._services.get(name)
        if x is None:
            raise ServiceError(f"no service {name!r} in {self.url}")
        return x

    # -- export -------------------------------------------------------------
    def export(self, payload: tuple[Any, ...], stack: str) -> bytes:
        def encode_x(x: X) -> _wire.XrefDesc:
            if not isinstance(x, XPerm):
                raise CircuitError(
                    f"only permanent references can be exported; {x!r} is not (use perm_ref)"
                )
            return _wire.encode_xref(x.addr, x.handle, True)

        return _wire.encode_export(_codec.dumps((tuple(payload), stack), (X,), encode_x))

    def import_(self, blob: bytes) -> tuple[tuple[Any, ...], str]:
        def decode_x(desc: object) -> X:
            owner, handle, _perm = _wire.decode_xref(desc)
            if owner.id == self.id:
                return self.local_x(handle, True)
            return self.proxy(owner, handle, True)

        payload, stack = _codec.loads(_wire.decode_export(blob), decode_x)
        return payload, stack

    def close(self) -> None:
        """Stop listening, close every connection (without a close
        handshake: a stalled peer must not hold us) and stop the release
        thread. Proxies of other runtimes' objects are dead afterwards."""
        self._closed = True
        self.stop_accepting()
        close_quietly(self._sock)
        with self._lock:
            peers = list(self._all_peers)
        for p in peers:
            p.conn.abort()
        self.stop_releasing()

    def counters(self) -> dict[str, int]:
        """Figures of this runtime for monitoring: calls served, open
        connections, objects it owns with leases granted on them, proxies
        (leases) it holds on others' objects, and replies carrying references
        it holds whose receivers have not acknowledged them yet."""
        with self._lock:
            return {
                "calls_served": self._calls_served,
                "connections": len(self._all_peers),
                "objects_owned": len(self._table),
                "leases_owned": self._table.lease_count(),
                "leases_held": len(self._proxies),
                "acks_awaited": self.acks_awaited(),
            }


class _RootService:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def dial(self, name: str) -> X:
        return self._rt.service(name)

    def ping(self) -> str:
        return self._rt.id


# -- this process's runtime --------------------------------------------------
_current: Runtime | None = None
_current_lock = threading.RLock()  # hooks run holding it; one may ask for current()
_on_install: list[Callable[[Runtime], None]] = []


def on_install(fn: Callable[[Runtime], None]) -> None:
    """Run ``fn(rt)`` on this process's runtime when it is made or
    installed (at once if it already is): how an upper layer gives every
    runtime a service (``acid``) without this layer importing it. A hook
    asked for again is not run twice."""
    with _current_lock:
        if fn in _on_install:
            return
        _on_install.append(fn)
        if _current is not None:
            fn(_current)


def _installed(rt: Runtime) -> Runtime:
    for fn in _on_install:  # holding _current_lock: each hook runs once per runtime
        fn(rt)
    return rt


def current(create: bool = True, host: str = "127.0.0.1", tls: Any = None) -> Runtime | None:
    """This process's runtime (a client runtime is made on first need)."""
    global _current
    if _current is None and create:
        with _current_lock:
            if _current is None:
                rt = _current = Runtime(RuntimeConfig(host=host, role="client", tls=tls))
                _installed(rt)
    return _current


def install(rt: Runtime) -> Runtime:
    """Make ``rt`` this process's runtime (servers and workers)."""
    global _current
    with _current_lock:
        if _current is not None:
            raise CircuitError("this process already has a pycircuit runtime")
        _current = rt
        return _installed(rt)
