"""The one exception tree of pycircuit.

Every exception pycircuit raises on purpose derives from :class:`CircuitError`.
Exceptions raised by *remote application code* are re-raised as their own
class when the caller can import it (with the remote traceback attached as a
note), else as :class:`RemoteError`.
"""

from __future__ import annotations

__all__ = [
    "CircuitError",
    "NetworkError",
    "RemoteError",
    "ProtocolError",
    "StaleAddressError",
    "SerializationError",
    "RemoteImportError",
    "NoSuchMethodError",
    "ReleasedError",
    "ServiceError",
    "SpawnError",
    "ElementError",
]


class CircuitError(Exception):
    """Root of every pycircuit exception."""


class NetworkError(CircuitError):
    """A connection to a runtime was lost or refused.

    Once raised for a worker, that worker is dead for this process: every later
    call to it raises this at once.
    """


class RemoteError(CircuitError):
    """Remote application code raised an exception whose class the caller
    cannot import. ``remote_type`` names it; the remote traceback is a note."""

    def __init__(self, remote_type: str, message: str):
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.message = message

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (RemoteError, (self.remote_type, self.message))


class ProtocolError(CircuitError):
    """The peer speaks another wire-protocol version or broke the protocol."""


class StaleAddressError(NetworkError):
    """The address names a runtime that no longer listens there (wrong worker
    ID or PID at the right host:port)."""


class SerializationError(CircuitError):
    """A value could not be encoded or decoded."""


class RemoteImportError(SerializationError, ImportError):
    """A module needed to decode a value cannot be imported on that host."""


class NoSuchMethodError(CircuitError, AttributeError):
    """A cross-call named a method the object does not have (or may not be
    called remotely: names starting with an underscore are private)."""


class ReleasedError(CircuitError):
    """The reference names an object its owner no longer holds."""


class ServiceError(CircuitError):
    """listen/dial misuse: a name listened twice, or an unknown service."""


class SpawnError(CircuitError):
    """A worker could not be started."""


class ElementError(CircuitError):
    """An anchor or element operation failed (occupied anchor, bad path,
    unknown element, ...)."""
