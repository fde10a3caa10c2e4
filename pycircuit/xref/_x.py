"""Cross-interface objects.

An ``X`` names an object in some runtime (its *owner*) by the owner's address
and a 64-bit handle. In the owner it wraps the object itself (and pins its
table entry); elsewhere it is a proxy that holds a lease, released when the
proxy is collected. ``XPerm`` is the permanent kind: never collected, so it can
be exported and revived later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SerializationError

if TYPE_CHECKING:
    from ..runtime._addr import WorkerAddr


class X:
    __slots__ = ("_rt", "_owner", "_handle", "_local", "_cell", "__weakref__")

    # Attribute names are private: every public one would hide a remote
    # method of that name (``x.m()`` calls ``m`` in the owner).
    def __init__(
        self,
        rt: Any,
        owner: WorkerAddr,
        handle: int,
        local: Any = None,
        cell: list[int] | None = None,
    ) -> None:
        self._rt = rt
        self._owner = owner
        self._handle = handle
        self._local = local
        self._cell = cell

    @property
    def addr(self) -> WorkerAddr:
        """The owner runtime's address (a WorkerAddr)."""
        return self._owner

    @property
    def handle(self) -> int:
        return self._handle

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the underlying object, wherever it lives."""
        if not isinstance(method, str):
            raise TypeError("method name must be a str")
        return self._rt.call_x(self, method, args, kwargs)

    def call_async(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Send the call and return a ``pycircuit.Future`` (a
        ``concurrent.futures.Future``) once the request is written (a large
        argument is written before this returns); many calls can be in
        flight on one connection. ``result(timeout)`` waits for the reply."""
        if not isinstance(method, str):
            raise TypeError("method name must be a str")
        return self._rt.call_x_async(self, method, args, kwargs)

    def __getattr__(self, name: str) -> _BoundCall:
        if name.startswith("_"):
            raise AttributeError(name)
        return _BoundCall(self, name)

    def __repr__(self) -> str:
        return f"{self._scheme}://H{self._handle:016x}@{self._owner.url}"

    __str__ = __repr__
    _scheme = "X"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X) and (self._owner.id, self._handle) == (
            other._owner.id,
            other._handle,
        )

    def __hash__(self) -> int:
        return hash((self._owner.id, self._handle))

    def __reduce__(self) -> Any:
        raise SerializationError(
            "a cross-interface travels only inside pycircuit calls (use pycircuit.export for a permanent one)"
        )


class XPerm(X):
    __slots__ = ()
    _scheme = "XPERM"


class _BoundCall:
    __slots__ = ("_x", "_name")

    def __init__(self, x: X, name: str):
        self._x = x
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._x._rt.call_x(self._x, self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<cross-call {self._name} of {self._x!r}>"


# For the runtime, which makes and encodes cross-interfaces. Functions, not
# attributes: see the comment in ``X.__init__``.


def local_object(x: X) -> Any:
    """The object itself if this runtime owns ``x``, else None."""
    return x._local


def lease_cell(x: X) -> list[int]:
    """A proxy's count of leases held, shared with its finaliser (which
    releases them); changed only under its runtime's lock."""
    assert x._cell is not None, "a local cross-interface holds no leases"
    return x._cell
