"""Where a client dials in and with which key: ``$CIRCUIT``, discovery by
multicast DNS, the cluster key, and the local address the circuit's workers
call back to."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from ._connect import ClientConfig
from .errors import CircuitError, NetworkError
from .runtime._runtime import current

__all__ = ["cluster_key", "url_from_env", "discover_url", "local_ip_toward"]


def cluster_key(key: str | None) -> Any:
    """The cluster key this process's runtime is to use: ``key``, else
    ``$CIRCUIT_KEY``; None for none. A runtime's key is fixed when it is
    made: an explicit key that differs from it is an error."""
    rt = current(create=False)
    if rt is None:
        path = key or os.environ.get("CIRCUIT_KEY")
        if not path:
            return None
        from .runtime._tls import load_key  # only with a key: TLS costs start-up time

        return load_key(path)
    if (
        key is not None
    ):  # $CIRCUIT_KEY gives way to the key of an existing runtime (say, a worker's)
        from .runtime._tls import load_key

        have = getattr(rt.cfg.tls, "fingerprint", None)
        if have != load_key(key).fingerprint:
            raise CircuitError(
                f"this process's pycircuit runtime already runs {'with another' if have else 'without a'} "
                f"cluster key; a process uses one key (connect with key= before anything else)"
            )
    return rt.cfg.tls


def url_from_env(discover: str | None, cfg: ClientConfig) -> str | None:
    """``$CIRCUIT``, then discovery on ``discover`` or ``$CIRCUIT_DISCOVER``,
    then (inside a worker) its own server; None when none of these says."""
    path = os.environ.get("CIRCUIT")
    if path:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:
            raise CircuitError(
                f"$CIRCUIT names {path!r}, which cannot be read: {e.strerror}"
            ) from None
    iface = discover or os.environ.get("CIRCUIT_DISCOVER")
    if iface:
        return discover_url(iface, cfg.discover_timeout)
    from .spawn._worker import server_url

    return server_url()  # inside a worker: its own server


def discover_url(iface: str, timeout: float = ClientConfig.discover_timeout) -> str:
    """A server's URL found by multicast DNS on one interface (a name such
    as ``eth0`` or an address); raises CircuitError if none answers."""
    from .server._discovery import browse, interface_address

    found: list[str] = browse(interface_address(iface), timeout=timeout, want=1)
    return found[0]


def local_ip_toward(host: str) -> str:
    """The address of this host that ``host`` sees us from."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1"
    except ValueError:  # a name, not an address: the route lookup below resolves it
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # UDP connect sends nothing; it picks the route
            addr: str = s.getsockname()[0]
            return addr
    except OSError as e:
        raise NetworkError(f"no route to circuit host {host}: {e.strerror or e}") from None
