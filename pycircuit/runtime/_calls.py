"""Cross-calls: making them (blocking, posted, or as a Future) and serving
them. Layer: runtime (the top of the ``Runtime`` class's cores, above
``_conns`` and ``_refs``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NoSuchMethodError, ProtocolError, ReleasedError, RemoteImportError
from ..errors import SerializationError
from ..xref._leases import NOT_HELD
from ..xref._x import X, local_object
from . import _codec, _wire
from ._addr import WorkerAddr
from ._config import RuntimeConfig
from ._conns import ConnsCore
from ._ctx import DecodeCtx, EncodeCtx
from ._future import Future
from ._remote_exc import decode_exception, encode_exception

if TYPE_CHECKING:
    from ._peer import Peer


def resolve_method(obj: Any, method: str) -> Callable[..., Any]:
    if not method or method.startswith("_"):
        raise NoSuchMethodError(
            f"no method {method!r} on type {type(obj).__qualname__} (private names are not remote)"
        )
    fn = getattr(obj, method, None)
    if fn is None or not callable(fn):
        raise NoSuchMethodError(f"no method {method!r} on type {type(obj).__qualname__}")
    return fn


def _or_abort(ctx: EncodeCtx, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``; if it fails, the leases granted for the call go back."""
    try:
        return step(*args)
    except BaseException:
        ctx.abort()
        raise


_REPLY_TAG = _wire.REPLY_HEAD_SIZE


def _reply_is_plain(raw: Any) -> bool:
    """Can this reply be decoded without network I/O (an error, or a value
    with no references inside)? Peeks at the head; a malformed reply fails
    at once in decoding, no I/O either."""
    return bool(raw[:1] != b"\x00" or raw[_REPLY_TAG : _REPLY_TAG + 1] == _codec.TAG_PLAIN)


class CallsCore(ConnsCore):
    def __init__(self, cfg: RuntimeConfig, on_refused: Callable[[str], None] | None = None) -> None:
        super().__init__(cfg, on_refused)
        self._max_reply = cfg.max_frame - 64  # room for the frame and reply heads
        # A rare lost increment (two serving threads at once) is fine for monitoring.
        self._calls_served = 0

    @property
    def host_label(self) -> str:
        return self.cfg.host_label or self.url

    # -- making calls -------------------------------------------------------
    def call_x(self, x: X, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        local = local_object(x)
        if local is not None:
            return resolve_method(local, method)(*args, **kwargs)
        return self.call_remote(x.addr, x.handle, method, args, kwargs)

    def call_remote(
        self,
        addr: WorkerAddr,
        handle: int,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        peer, ctx, frame = self._call_frame(addr, handle, method, args, kwargs)
        return self._reply_value(peer, ctx, _or_abort(ctx, peer.invoke, _wire.OP_CALL, frame))

    def post_remote(self, addr: WorkerAddr, handle: int, method: str, *args: Any) -> None:
        """Send a call without waiting for (or reading) its reply. Raises
        NetworkError only if the connection is already known to be lost."""
        # peer() raises for a runtime already known to be lost; post() sends
        # nothing on a connection lost since.
        self.peer(addr).post(
            _wire.OP_CALL, _wire.call_parts(handle, method, _codec.dumps((args, {})))
        )

    def call_x_async(
        self, x: X, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future:
        """Send a cross-call now; its Future gives the value (or raises)."""
        if local_object(x) is not None:
            return Future.settled(lambda: self.call_x(x, method, args, kwargs))
        return self.call_remote_async(x.addr, x.handle, method, args, kwargs)

    def call_remote_async(
        self,
        addr: WorkerAddr,
        handle: int,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Future:
        """``call_remote`` sent now; its Future gives the value (or raises)."""
        peer, ctx, frame = self._call_frame(addr, handle, method, args, kwargs)
        pending = _or_abort(ctx, peer.invoke_async, _wire.OP_CALL, frame)
        return Future.of_call(
            peer, pending, lambda raw: self._reply_value(peer, ctx, raw), _reply_is_plain
        )

    def _call_frame(
        self,
        addr: WorkerAddr,
        handle: int,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Peer, EncodeCtx, tuple[bytes, bytes]]:
        peer = self.peer(addr)
        ctx = EncodeCtx(self, peer)
        return peer, ctx, _wire.call_parts(handle, method, ctx.dumps((args, kwargs)))

    def _reply_value(self, peer: Peer, ctx: EncodeCtx, raw: bytes) -> Any:
        if not peer.confirmed:  # an async call's reply: the HELLO's answer came before it
            _or_abort(ctx, peer.confirm)
        reply = _wire.decode_reply(raw)
        if reply.status == _wire.STATUS_ERROR:
            raise decode_exception(reply.payload)
        if reply.payload[:1] == _codec.TAG_PLAIN:  # no references inside: nothing to acquire or ack
            return _codec.loads(reply.payload)
        dctx = DecodeCtx(self, peer)
        value = dctx.loads(reply.payload)
        dctx.finish()
        if reply.ack:
            peer.post(_wire.OP_ACK, _wire.encode_token(reply.ack))
        del ctx  # the pins of third-party references die only now
        return value

    # -- serving calls ------------------------------------------------------
    def handle_call(self, peer: Peer, frame: bytes) -> bytes | tuple[bytes, bytes]:
        # The observer hears call_replied from after_reply, which follows every call.
        self._observer.call_received()
        # A statistic: under the GIL a lost increment is possible only across a
        # thread switch inside +=, and a free-threaded build may lose a few more;
        # neither matters for a counter that is only displayed.
        self._calls_served += 1
        if peer.id is None:
            return _wire.encode_reply(
                _wire.STATUS_ERROR,
                0,
                encode_exception(ProtocolError("call before hello"), self.url),
            )
        peer.group.enter_call()
        call = None
        try:
            try:
                call = _wire.decode_call(frame)
                obj = self._table.find(call.handle)  # one dict lookup: no lock needed
                if obj is NOT_HELD:
                    raise ReleasedError(
                        f"reference H{call.handle:016x} is not (or no longer) held by {self.url}"
                    )
                method = resolve_method(
                    obj, call.method
                )  # before a byte of the arguments is unpickled
                try:
                    if call.payload[:1] == _codec.TAG_PLAIN:  # no references inside
                        args, kwargs = _codec.loads(call.payload)
                    else:
                        dctx = DecodeCtx(self, peer)
                        args, kwargs = dctx.loads(call.payload)
                        dctx.finish()
                except RemoteImportError as e:
                    raise RemoteImportError(f"{e} on host {self.host_label}") from None
                result = method(*args, **kwargs)
            except BaseException as e:  # application errors travel back; the runtime serves on
                if call is not None:
                    self._observer.call_failed(call.handle)
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
            if _codec.is_plain(result):  # nothing to grant or pin
                payload = _codec.dumps(result)
                if len(payload) > self._max_reply:
                    return self._too_large(payload)
                return _wire.reply_parts(_wire.STATUS_OK, 0, payload)
            ectx = EncodeCtx(self, peer)
            try:
                payload = ectx.dumps(result)
            except BaseException as e:  # the value cannot travel: its error does
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
            if len(payload) > self._max_reply:
                ectx.abort()
                return self._too_large(payload)
            token = 0
            if ectx.pins:
                token = (int.from_bytes(os.urandom(8), "big") >> 1) or 1
                self.await_ack(token, peer.id, ectx.pins)
            return _wire.reply_parts(_wire.STATUS_OK, token, payload)
        finally:
            peer.group.exit_call()

    def _too_large(self, payload: bytes) -> bytes:
        e = SerializationError(
            f"the reply of {len(payload)} bytes exceeds the maximum message size of "
            f"{self.cfg.max_frame} bytes (RuntimeConfig.max_frame)"
        )
        return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))

    def after_reply(self, op: int) -> None:
        """Runs in the serving thread once the reply to a request it served
        (of operation ``op``) has left, or could not."""
        if op == _wire.OP_CALL:
            self._observer.call_replied()
