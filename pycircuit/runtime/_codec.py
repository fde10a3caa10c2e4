"""Value streams: how arguments and results travel (pure: no sockets,
threads or rpyc).

A value stream is one tag byte and a pickle:

* ``b"p"`` — a plain pickle holding no cross-interface (the common case,
  decoded by ``pickle.loads`` itself);
* ``b"P"`` — the C pickler, holding cross-interfaces;
* ``b"D"`` — dill, for what only travels by value: lambdas, closures,
  functions and classes defined in ``__main__`` and instances of those.

Cross-interfaces inside a value, at any depth, are not pickled: the encoder
asks ``encode_x(x)`` for a small descriptor tuple and the decoder turns it
back into an object with ``decode_x(descriptor)``. Both callbacks belong to
the runtime; this module only finds the references.
"""

from __future__ import annotations

import functools
import io
import importlib
import pickle
import sys
import threading
import types
from typing import Any
from collections.abc import Callable

from ..errors import CircuitError, RemoteImportError, SerializationError

TAG_PLAIN = b"p"
TAG_PICKLE = b"P"
TAG_DILL = b"D"
_PROTO = pickle.HIGHEST_PROTOCOL

Descriptor = tuple[Any, ...]  # what the runtime's hook makes of a cross-interface
EncodeX = Callable[[Any], Descriptor]
DecodeX = Callable[[Descriptor], Any]


class _NeedDill(Exception):
    pass


def _xref(descriptor: Descriptor) -> Any:  # pragma: no cover - replaced by Unpickler.find_class
    raise SerializationError("cross-interface decoded outside a runtime")


def _by_value_only(obj: Any) -> bool:
    """True for objects the C pickler would pickle by a reference that does
    not resolve on another host."""
    if isinstance(obj, (types.FunctionType, type)):
        mod = getattr(obj, "__module__", None)
        qn = getattr(obj, "__qualname__", "")
        return mod == "__main__" or mod is None or "<locals>" in qn or "<lambda>" in qn
    return type(obj).__module__ == "__main__"


class _FastPickler(pickle.Pickler):
    """Reused per thread: making a Pickler costs more than a small dump."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        super().__init__(self._buf, _PROTO)
        self._x_types: tuple[type, ...] = ()
        self._encode_x: EncodeX = _no_x
        self.saw_x = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self._x_types):
            self.saw_x = True
            return _xref, (self._encode_x(obj),)
        if _by_value_only(obj):
            raise _NeedDill
        return NotImplemented

    def encode(self, value: Any, x_types: tuple[type, ...], encode_x: EncodeX) -> bytes:
        self._x_types, self._encode_x, self.saw_x = x_types, encode_x, False
        buf = self._buf
        try:
            buf.write(TAG_PICKLE)  # patched to TAG_PLAIN below if no X was seen
            self.dump(value)
            data = buf.getbuffer()
            data[0:1] = TAG_PICKLE if self.saw_x else TAG_PLAIN
            del data
            return buf.getvalue()
        finally:
            self.clear_memo()
            self._encode_x = _no_x
            buf.seek(0)
            buf.truncate()


_ATOMS = frozenset((type(None), bool, int, float, str, bytes))
_tls = threading.local()


def is_plain(value: Any, depth: int = 2) -> bool:
    """Cheap check for small values of builtin atoms (most call arguments):
    such a value cannot hold a cross-interface."""
    t = type(value)
    if t in _ATOMS:
        return True
    if not depth:
        return False
    if t is tuple or t is list:
        if len(value) > 8:
            return False
        for v in value:
            if type(v) not in _ATOMS and not is_plain(v, depth - 1):
                return False
        return True
    if t is dict:
        if len(value) > 8:
            return False
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _ATOMS and not is_plain(v, depth - 1)):
                return False
        return True
    return False


@functools.cache
def _dill() -> tuple[type, type]:
    """dill's pickler and unpickler with our hooks, made on first use: most
    processes never need dill, and importing it costs more than the rest of
    this module (a command-line client's start-up)."""
    import dill

    class DillPickler(dill.Pickler):  # type: ignore[misc]  # dill ships no type information
        def __init__(self, f: io.BytesIO, x_types: tuple[type, ...], encode_x: EncodeX) -> None:
            super().__init__(f, _PROTO, recurse=True)
            self._x_types = x_types
            self._encode_x = encode_x

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, self._x_types):
                return _xref, (self._encode_x(obj),)
            if (
                type(obj) is types.ModuleType
                and obj.__name__ != "__main__"
                and obj.__name__ in sys.modules
            ):
                # dill saves a module outside site-packages *with its whole
                # __dict__* (so an editable install or a project module drags its
                # locks and thread-locals along); import it by name instead.
                return importlib.import_module, (obj.__name__,)
            return NotImplemented

    # dill's Unpickler is a pickle.Unpickler: the hook of ours comes first in the MRO.
    class DillUnpickler(_FastUnpickler, dill.Unpickler):  # type: ignore[misc]  # no types
        pass

    return DillPickler, DillUnpickler


def dumps(value: Any, x_types: tuple[type, ...] = (), encode_x: EncodeX | None = None) -> bytes:
    """Encode ``value``; raises SerializationError before anything is sent."""
    if is_plain(value):
        return TAG_PLAIN + pickle.dumps(value, _PROTO)
    encode_x = _once(encode_x) if encode_x is not None else _no_x
    pickler = getattr(_tls, "pickler", None)
    was_busy = getattr(_tls, "busy", False)
    if pickler is None or was_busy:  # re-entered from encode_x
        pickler = _FastPickler()
        if not was_busy:
            _tls.pickler = pickler
    _tls.busy = True
    try:
        return pickler.encode(value, x_types, encode_x)
    except CircuitError:  # from encode_x: the hook's own verdict, unchanged
        raise
    except RecursionError:
        raise SerializationError("value is nested too deeply to serialize") from None
    except Exception:  # _NeedDill, PicklingError, TypeError, a failing __reduce__, ...: try dill
        pass
    finally:
        _tls.busy = was_busy  # a nested call must not free the outer pickler
    buf = io.BytesIO()
    buf.write(TAG_DILL)
    try:
        _dill()[0](buf, x_types, encode_x).dump(value)
    except CircuitError:
        raise
    except Exception as e:
        raise SerializationError(f"cannot serialize {type(value).__name__} value: {e}") from None
    return buf.getvalue()


def _no_x(x: Any) -> Descriptor:
    raise SerializationError("cross-interfaces cannot be encoded here")


def _once(encode_x: EncodeX) -> EncodeX:
    """``encode_x`` at most once per object per ``dumps``: a fast attempt that
    falls back to dill must not hand out a second lease for one reference."""
    done: dict[int, tuple[Any, Descriptor]] = {}

    def once(x: Any) -> Descriptor:
        hit = done.get(id(x))
        if hit is None:
            hit = done[id(x)] = (x, encode_x(x))  # keeps x alive, so its id stays its own
        return hit[1]

    return once


class _FastUnpickler(pickle.Unpickler):
    """Revives cross-interface descriptors through the caller's hook."""

    def __init__(self, f: io.BytesIO, decode_x: DecodeX) -> None:
        super().__init__(f)
        self._decode_x = decode_x

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_xref":
            return self._decode_x
        return super().find_class(module, name)


def loads(data: bytes, decode_x: DecodeX | None = None) -> Any:
    """Decode a value stream. A module that cannot be imported raises
    RemoteImportError naming it; anything else malformed SerializationError."""
    decode_x = decode_x or _no_x
    if not data:
        raise SerializationError("empty value stream")
    tag = data[:1]
    if tag == TAG_PLAIN:
        try:
            return pickle.loads(memoryview(data)[1:])
        except ModuleNotFoundError as e:
            raise RemoteImportError(f"cannot import module {e.name!r}") from None
        except Exception as e:
            raise SerializationError(f"cannot decode value: {type(e).__name__}: {e}") from None
    body = io.BytesIO(memoryview(data)[1:])
    up: pickle.Unpickler
    if tag == TAG_PICKLE:
        up = _FastUnpickler(body, decode_x)
    elif tag == TAG_DILL:
        up = _dill()[1](body, decode_x)
    else:
        raise SerializationError(f"unknown value stream tag {bytes(tag)!r}")
    try:
        return up.load()
    except (SerializationError, RemoteImportError):
        raise
    except ModuleNotFoundError as e:
        raise RemoteImportError(f"cannot import module {e.name!r}") from None
    except CircuitError:  # raised by decode_x (e.g. a dead owner): keeps its class
        raise
    except Exception as e:
        raise SerializationError(f"cannot decode value: {type(e).__name__}: {e}") from None
