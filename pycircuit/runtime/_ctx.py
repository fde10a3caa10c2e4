"""Encoding and decoding of one message's values, with the cross-interfaces
inside them: leases granted on the way out, acquired on the way in (see the
handoff rule in ``_refs``). Layer: runtime."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from ..errors import CircuitError
from ..xref._x import X, XPerm, local_object
from . import _codec, _wire
from ._addr import WorkerAddr

if TYPE_CHECKING:
    from ._peer import Peer
    from ._conns import ConnsCore


class EncodeCtx:
    def __init__(self, rt: ConnsCore, peer: Peer) -> None:
        assert peer.id is not None, "values are encoded only for a peer that said HELLO"
        self.rt = rt
        self.peer = peer
        self.holder: str = peer.id
        self.granted: list[int] = []
        self.pins: list[X] = []

    def encode_x(self, x: X) -> _wire.XrefDesc:
        owner, handle, perm = x.addr, x.handle, isinstance(x, XPerm)
        if local_object(x) is not None:
            if not perm:
                self.rt.grant_lease(handle, self.holder)
                self.granted.append(handle)
        elif owner.id != self.holder and not perm:
            self.pins.append(x)
        return _wire.encode_xref(owner, handle, perm)

    def dumps(self, value: Any) -> bytes:
        try:
            return _codec.dumps(value, (X,), self.encode_x)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """The message will not be sent: the leases granted for it go back."""
        self.rt.return_leases(self.granted, self.holder)
        self.granted.clear()


class DecodeCtx:
    def __init__(self, rt: ConnsCore, sender: Peer) -> None:
        self.rt = rt
        self.sender = sender
        self.acquire: dict[WorkerAddr, Counter[int]] | None = None  # made on first need
        self.proxies: dict[tuple[str, int], X] = {}

    def decode_x(self, desc: object) -> X:
        owner, handle, perm = _wire.decode_xref(desc)
        rt = self.rt
        if owner.id == rt.id:
            return rt.local_x(handle, perm)
        proxy = rt.proxy(owner, handle, perm)
        if not perm:
            if owner.id == self.sender.id:
                rt.count_leases(proxy, 1)
            else:
                if self.acquire is None:
                    self.acquire = defaultdict(Counter)
                self.acquire[owner][handle] += 1
                self.proxies[(owner.id, handle)] = proxy
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
            for handle, n in granted:
                self.rt.count_leases(self.proxies[(owner.id, handle)], n)
