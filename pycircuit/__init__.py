"""pycircuit: the Circuit for Python.

Layers, bottom up (a module imports only from layers below it):

1. ``errors`` (the one exception tree) and ``_spec`` (public value types the
   client and the server share, such as ``Cmd``).
2. ``runtime`` (wire format, value codec, links, the runtime) and ``xref``
   (cross-interfaces and the lease table); the pure modules among them
   (``_wire``, ``_codec``, ``_addr``, ``_leases``) touch no sockets or threads.
3. ``acid`` (debugging service) and ``spawn`` (zygote, worker life, remains).
4. ``server`` (anchors, kernel service) and ``_client``/``_api`` (this API).
5. ``cli`` (the ``pycircuit`` command).

The public names below are imported on first use (PEP 562), so that
``import pycircuit`` and the command line start fast; ``dir(pycircuit)``
and ``from pycircuit import *`` see them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors, spawn as _spawn_package
from .errors import (
    CircuitError,
    ElementError,
    NetworkError,
    NoSuchMethodError,
    ProtocolError,
    ReleasedError,
    RemoteError,
    RemoteImportError,
    SerializationError,
    ServiceError,
    SpawnError,
    StaleAddressError,
)

if TYPE_CHECKING:
    from ._api import (
        acall,
        call_within,
        dial,
        export,
        import_,
        kill,
        listen,
        perm_ref,
        ref,
        run_in_back,
        spawn,
        spawn_many,
        try_dial,
    )
    from ._client import Anchor, Client, Host
    from ._connect import connect
    from ._elements import Chan, Container, Nameserver, Proc, ProcStat, Subscription
    from ._spec import Cmd
    from .runtime._addr import WorkerAddr
    from .runtime._runtime import Future
    from .xref._x import X, XPerm

__version__ = "0.1.0"

# The subpackage ``spawn`` shares its name with the function ``spawn``. It is
# loaded now (it is only a docstring), so that a later import of one of its
# modules finds it in sys.modules and does not bind it over the function.
del _spawn_package
del globals()["spawn"]

# public name → the module that defines it (relative to this package)
_LAZY = {
    **dict.fromkeys(
        (
            "acall",
            "call_within",
            "dial",
            "export",
            "import_",
            "kill",
            "listen",
            "perm_ref",
            "ref",
            "run_in_back",
            "spawn",
            "spawn_many",
            "try_dial",
        ),
        "._api",
    ),
    **dict.fromkeys(("Anchor", "Client", "Host"), "._client"),
    "connect": "._connect",
    **dict.fromkeys(
        ("Chan", "Container", "Nameserver", "Proc", "ProcStat", "Subscription"), "._elements"
    ),
    "Cmd": "._spec",
    "WorkerAddr": ".runtime._addr",
    "Future": ".runtime._runtime",
    "X": ".xref._x",
    "XPerm": ".xref._x",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "connect",
    "Client",
    "Host",
    "Anchor",
    "spawn",
    "spawn_many",
    "run_in_back",
    "kill",
    "ref",
    "perm_ref",
    "X",
    "XPerm",
    "Future",
    "call_within",
    "acall",
    "export",
    "import_",
    "listen",
    "dial",
    "try_dial",
    "WorkerAddr",
    "errors",
    "Cmd",
    "Proc",
    "ProcStat",
    "Chan",
    "Subscription",
    "Container",
    "Nameserver",
    "CircuitError",
    "NetworkError",
    "RemoteError",
    "ProtocolError",
    "StaleAddressError",
    "SerializationError",
    "RemoteImportError",
    "ReleasedError",
    "ServiceError",
    "SpawnError",
    "ElementError",
    "NoSuchMethodError",
]
