"""How exceptions raised by remote application code travel.

The exception is pickled by value when possible; the class name, message and
formatted traceback always travel beside it, so a caller that cannot import
the class still gets a RemoteError with the remote traceback attached.
"""

from __future__ import annotations

import sys
import traceback

from ..errors import RemoteError
from . import _codec


def encode_exception(exc: BaseException, origin: str) -> bytes:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tname = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        blob = _codec.dumps(exc)
    except Exception:
        blob = None
    return _codec.dumps((blob, tname, str(exc), tb, origin))


def decode_exception(payload: bytes) -> BaseException:
    blob, tname, message, tb, origin = _codec.loads(payload)
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = _codec.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(tname, message)
    else:
        exc = _rebind_main(exc)
    note = f"remote traceback (from {origin}):\n{tb.rstrip()}"
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # no add_note yet: the attribute 3.11 reads, kept for the caller
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]  # 3.10 stubs lack it
    return exc


def _rebind_main(exc: BaseException) -> BaseException:
    """An exception class defined in the caller's ``__main__`` travels to the
    worker by value and comes back as a copy of the class; give the caller its
    own class again so ``except MyError`` works."""
    cls = type(exc)
    if cls.__module__ != "__main__":
        return exc
    mine = getattr(sys.modules.get("__main__"), cls.__qualname__, None)
    if (
        mine is None
        or mine is cls
        or not (isinstance(mine, type) and issubclass(mine, BaseException))
    ):
        return exc
    try:
        new = mine.__new__(mine)
        new.args = exc.args
        if hasattr(exc, "__dict__"):
            new.__dict__.update(exc.__dict__)
        return new
    except Exception:
        return exc
