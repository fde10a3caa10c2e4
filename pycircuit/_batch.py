"""``Client.spawn_many``: one function over many argument tuples, a new
worker for each.

The batch goes to the server in requests of ``BATCH`` workers
(``kernel.spawn_many``: the spares it has, and forks for the rest ordered
at once), a few requests in flight; each request's thread then sends its
workers their calls (dialling a worker is a round trip), and the replies
are collected as Futures. Layer: client (next to ``_client``).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import Any

from .errors import CircuitError, SpawnError
from .runtime._addr import WorkerAddr
from .runtime._runtime import HANDLE_MAIN, Runtime

__all__ = ["spawn_many", "BATCH"]

# Workers asked of the server in one request. Small enough that the
# workers of one request boot while the calls of the previous are sent, and
# that a host is not asked to boot hundreds at once (they would only
# compete for its CPUs); the kernel refuses more than its MAX_BATCH.
BATCH = 16
_REQUESTS = 4  # requests in flight at once, each a thread that then sends its calls


def argument_tuples(arg_tuples: Iterable[tuple]) -> list[tuple]:
    """The batch, checked before any worker starts."""
    try:
        calls = list(arg_tuples)
    except TypeError:
        raise TypeError("spawn_many needs an iterable of argument tuples") from None
    for a in calls:
        if not isinstance(a, tuple):
            raise TypeError(
                f"spawn_many needs an iterable of argument tuples, not one holding a "
                f"{type(a).__name__} (write ({a!r},) for a single argument)"
            )
    return calls


def spawn_many(
    rt: Runtime,
    kernel: Any,
    anchors: list,
    fn: Callable[..., Any],
    calls: list[tuple],
    return_exceptions: bool,
) -> list[tuple[Any, WorkerAddr | None]]:
    """See ``Client.spawn_many``; ``kernel``: the host's ``circuit`` service."""
    chunks = [calls[i : i + BATCH] for i in range(0, len(calls), BATCH)]

    def start(chunk: list[tuple]) -> list[tuple[Any, WorkerAddr | None]]:
        try:
            urls = kernel.spawn_many(anchors, len(chunk))
        except SpawnError as e:  # none of this request's workers started
            return [(e, None)] * len(chunk)
        addrs = [WorkerAddr.parse(u) for u in urls]
        return [_send(rt, kernel, fn, addr, args) for addr, args in zip(addrs, chunk, strict=True)]

    sent: list[tuple[Any, WorkerAddr | None]] = []  # (Future or why not, address)
    with cf.ThreadPoolExecutor(min(_REQUESTS, len(chunks)), "pycircuit-batch") as pool:
        for part in pool.map(start, chunks):
            sent += part
    out: list[tuple[Any, WorkerAddr | None]] = []
    first_error: BaseException | None = None
    for pending, addr in sent:
        try:
            if not isinstance(pending, cf.Future):
                raise pending  # why its call was never sent
            value = pending.result()
        except Exception as e:  # the function's own error, or the call's
            if first_error is None:
                first_error = e
            value = e
        out.append((value, addr))
    if first_error is not None and not return_exceptions:
        raise first_error
    return out


def _send(rt: Runtime, kernel: Any, fn: Callable[..., Any], addr: WorkerAddr, args: tuple) -> tuple:
    try:
        return rt.call_remote_async(addr, HANDLE_MAIN, "run", (fn, args, {}), {}), addr
    except Exception as e:  # e.g. arguments that cannot be pickled: this item's error
        # Never sent: the worker would wait for its call until its deadline.
        try:
            kernel.kill(addr.id)
        except CircuitError:
            pass  # the server is gone too: its workers go with it
        return e, addr
