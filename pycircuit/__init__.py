"""pycircuit: the Circuit for Python.

Layers, bottom up (a module imports only from layers below it):

1. ``errors``: the one exception tree.
2. ``runtime`` (wire format, value codec, links, the runtime) and ``xref``
   (cross-interfaces and the lease table); the pure modules among them
   (``_wire``, ``_codec``, ``_addr``, ``_leases``) touch no sockets or threads.
3. ``acid`` (debugging service) and ``spawn`` (zygote, worker life, remains).
4. ``server`` (anchors, kernel service) and ``_client``/``_api`` (this API).
5. ``cli`` (the ``pycircuit`` command).
"""

from . import errors
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
    try_dial,
)
from ._client import Anchor, Client, Host, connect
from ._elements import Chan, Container, Nameserver, Proc, ProcStat, Subscription
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
from .runtime._addr import WorkerAddr
from .runtime._runtime import Future
from .server._proc import Cmd
from .xref._x import X, XPerm

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Client",
    "Host",
    "Anchor",
    "spawn",
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
