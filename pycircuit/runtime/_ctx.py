"""Encoding and decoding of one message's values, with the cross-interfaces
inside them: leases granted on the way out, acquired on the way in (see the
handoff rule in ``_runtime``). Layer: runtime."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from ..errors import CircuitError, SerializationError
from ..xref._x import X, XPerm
from . import _codec, _wire
from ._addr import WorkerAddr

if TYPE_CHECKING:
    from ._peer import Peer
    from ._runtime import Runtime


class _EncodeCtx:
    def __init__(self, rt: Runtime, peer: Peer):
        self.rt = rt
        self.peer = peer
        self.granted: list[int] = []
        self.pins: list[X] = []

    def encode_x(self, x: X) -> tuple:
        owner = x._owner
        if x._local is not None:
            if not isinstance(x, XPerm):
                with self.rt._lock:
                    self.rt._table.grant(x._handle, self.peer.id)
                self.granted.append(x._handle)
        elif owner.id != self.peer.id and not isinstance(x, XPerm):
            self.pins.append(x)
        return (owner.host, owner.port, owner.pid, owner.id, x._handle, isinstance(x, XPerm))

    def dumps(self, value: Any) -> bytes:
        try:
            return _codec.dumps(value, (X,), self.encode_x)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with self.rt._lock:
            for h in self.granted:
                self.rt._table.release(h, self.peer.id, 1)
        self.granted.clear()


class _DecodeCtx:
    def __init__(self, rt: Runtime, sender: Peer):
        self.rt = rt
        self.sender = sender
        self.acquire: dict[WorkerAddr, Counter] | None = None  # made on first need
        self.proxies: dict[tuple[str, int], X] = {}

    def decode_x(self, desc: tuple) -> X:
        try:
            host, port, pid, oid, handle, perm = desc
            owner = WorkerAddr(str(host), int(port), int(pid), str(oid))
        except (TypeError, ValueError):
            raise SerializationError(f"malformed cross-interface descriptor {desc!r}") from None
        rt = self.rt
        if oid == rt.id:
            return rt._local_x(handle, bool(perm))
        proxy = rt._proxy(owner, handle, bool(perm))
        if not perm:
            if oid == self.sender.id:
                with rt._lock:
                    proxy._cell[0] += 1
            else:
                if self.acquire is None:
                    self.acquire = defaultdict(Counter)
                self.acquire[owner][handle] += 1
                self.proxies[(oid, handle)] = proxy
        return proxy

    def loads(self, data: bytes) -> Any:
        return _codec.loads(data, self.decode_x)

    def finish(self) -> None:
        """Take our own leases on third-party references, from their owners."""
        if self.acquire is None:
            return
        for owner, wanted in self.acquire.items():
            try:
                granted = _wire.decode_leases(
                    self.rt.peer(owner).invoke(
                        _wire.OP_ACQUIRE, _wire.encode_leases(list(wanted.items()))
                    )
                )
            except CircuitError:
                continue  # the proxies raise NetworkError/ReleasedError when used
            with self.rt._lock:
                for handle, n in granted:
                    self.proxies[(owner.id, handle)]._cell[0] += n
