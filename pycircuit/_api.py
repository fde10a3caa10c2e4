"""Module-level functions of the public API (they act on this process's
runtime and its default client)."""

from __future__ import annotations

import traceback
from typing import Any
from collections.abc import Callable, Iterable

from .acid import serve_everywhere
from .errors import CircuitError
from .runtime._addr import WorkerAddr
from .runtime._runtime import Runtime, current
from .spawn._worker import run_in_back
from .xref._x import X, XPerm

# Every runtime of a client program serves acid (debuggable by its address).
serve_everywhere()

__all__ = [
    "spawn",
    "spawn_many",
    "kill",
    "run_in_back",
    "ref",
    "perm_ref",
    "export",
    "import_",
    "listen",
    "dial",
    "try_dial",
]


def _runtime() -> Runtime:
    rt = current()
    assert rt is not None  # current() makes one when there is none
    return rt


def spawn(
    host: Any, anchor: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> tuple[Any, WorkerAddr]:
    """Run ``fn(*args, **kwargs)`` in a new worker on ``host`` (see Client.spawn)."""
    from ._client import default_client

    return default_client().spawn(host, anchor, fn, *args, **kwargs)


def spawn_many(
    host: Any,
    anchor: Any,
    fn: Callable[..., Any],
    arg_tuples: Iterable[tuple[Any, ...]],
    /,
    *,
    return_exceptions: bool = False,
) -> list[tuple[Any, WorkerAddr | None]]:
    """``fn(*args)`` for each ``args``, each in a new worker on ``host`` (see
    Client.spawn_many)."""
    from ._client import default_client

    return default_client().spawn_many(
        host, anchor, fn, arg_tuples, return_exceptions=return_exceptions
    )


def kill(addr: WorkerAddr | str) -> bool:
    """Kill the worker at ``addr``; quiet when it has already exited (like
    ``Popen.kill``): True if a live worker was signalled, else False."""
    from ._client import default_client

    return default_client().kill(addr)


def ref(obj: Any) -> X:
    """A cross-interface to ``obj``, collected when no holder is left."""
    if isinstance(obj, XPerm):
        raise CircuitError("ref of a permanent reference: it is permanent already")
    if isinstance(obj, X):
        return obj
    return _runtime().local_ref(obj, perm=False)


def perm_ref(obj: Any) -> XPerm:
    """A permanent cross-interface to ``obj``: never collected, exportable."""
    if isinstance(obj, XPerm):
        return obj
    if isinstance(obj, X):
        raise CircuitError("perm_ref of a non-permanent reference: make it from the object itself")
    x = _runtime().local_ref(obj, perm=True)
    assert isinstance(x, XPerm)  # perm=True makes one
    return x


def export(*payload: Any) -> bytes:
    """Bytes carrying ``payload`` (permanent references allowed, no others)
    and this stack, for ``import_`` in any process."""
    stack = "".join(traceback.format_stack()[:-1])
    return _runtime().export(payload, stack)


def import_(blob: bytes) -> tuple[tuple[Any, ...], str]:
    """``(payload, exporter's stack)`` from an ``export`` blob."""
    return _runtime().import_(blob)


def listen(name: str, receiver: Any) -> XPerm:
    """Serve ``receiver`` under ``name`` in this process."""
    return _runtime().listen(name, receiver)


def dial(addr: WorkerAddr | str, name: str) -> X:
    """The service ``name`` of the runtime at ``addr``."""
    return _runtime().dial(WorkerAddr.parse(addr), name)


def try_dial(addr: WorkerAddr | str, name: str) -> tuple[X | None, Exception | None]:
    """Like dial, but returns ``(None, error)`` instead of raising."""
    try:
        return dial(addr, name), None
    except Exception as e:
        return None, e


def call_within(seconds: float, x: X, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """``x.call(method, *args, **kwargs)``, but raise ``TimeoutError`` when
    no reply came within ``seconds``. The call goes on in its owner; its late
    reply is dropped (references in it released). A function, not a method
    of ``X``: ``x.name`` is a remote call, so no name there is safe to take."""
    if not isinstance(x, X):
        raise TypeError(f"call_within needs a cross-interface, not {type(x).__name__}")
    future = x.call_async(method, *args, **kwargs)
    try:
        return future.result(seconds)
    except TimeoutError:
        raise TimeoutError(f"{method!r} on {x!r}: no reply within {seconds:g} s") from None


async def acall(x: X, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """``await``-able ``x.call``, for asyncio code; bound it with
    ``asyncio.wait_for``/``asyncio.timeout`` (the call goes on in its owner,
    its late reply is dropped). The request is sent before the first
    ``await``: a large argument blocks the event loop while it is written."""
    import asyncio

    if not isinstance(x, X):
        raise TypeError(f"acall needs a cross-interface, not {type(x).__name__}")
    return await asyncio.wrap_future(x.call_async(method, *args, **kwargs))
